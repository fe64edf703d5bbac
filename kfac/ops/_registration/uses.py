"""Registered uses of each variable, compared with the graph's uses.

A layer registered once per time step (or a `*_multi` registration) adds one
use per application; generic registrations add infinitely many, so they never
mismatch.
"""

import math

from kfac.ops._registration.keys import name_of


def registration_problems(variables, use_counts, variable_uses, first_use=None) -> list:
    """The messages of `LayerCollection.check_registration`, empty if none.

    Args:
      variables: the variables the optimizer updates (a list).
      use_counts: {variable -> registered uses}.
      variable_uses: `variable -> uses in the graph of the losses`.
      first_use: optional `variable -> op using it in that graph, or None`
        (named in the "not registered" message).

    Returns:
      One message per listed variable not registered or registered with a
      finite use count other than `variable_uses(var)`, then one naming the
      registered variables missing from `variables`.
    """
    problems = []
    for var in variables:
        registered = use_counts.get(var, 0)
        if registered == 0:
            op = first_use(var) if first_use is not None else None
            where = (
                "" if op is None else " (used by {} op {!r})".format(op.type, op.name)
            )
            problems.append(
                "Variable {} is not registered{}.".format(name_of(var), where)
            )
        elif not math.isinf(registered):
            used = variable_uses(var)
            if registered != used:
                problems.append(
                    "Variable {} registered with wrong number of uses ({} "
                    "registrations vs {} uses).".format(name_of(var), registered, used)
                )
    listed = set(variables)
    missing = [var for var, count in use_counts.items() if count and var not in listed]
    if missing:
        problems.append(
            "{} registered variables were not included in the list: {}.".format(
                len(missing), ", ".join(name_of(var) for var in missing)
            )
        )
    return problems
