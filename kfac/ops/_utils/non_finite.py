"""Guards against NaN/Inf reaching the weights or the K-FAC statistics.

One rule, used by the optimizer step and by the factors' moving averages: an
update whose new values are not all finite is not applied. What happens
instead is the `non_finite_policy`:

* `"skip"` (default): the update is skipped (the variables keep their values)
  and a counter variable is incremented, so users can read and log how often
  it happened;
* `"raise"`: the update op fails with an `InvalidArgumentError` whose message
  names the offending variables (or factor);
* `None`: no check at all (the original behaviour, for benchmarking).

Non-finite values appear when training diverges (huge logits, a learning rate
too large) or from bad data; a single NaN written into a weight or a factor
moving average would otherwise poison every later step.
"""

from typing import Any
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

SKIP = "skip"
RAISE = "raise"
NON_FINITE_POLICIES = (SKIP, RAISE, None)


def check_non_finite_policy(policy: Any, argument: str = "non_finite_policy") -> None:
    """ValueError unless `policy` is "skip", "raise" or None."""
    if not (policy is None or (isinstance(policy, str) and policy in (SKIP, RAISE))):
        raise ValueError(
            "{} must be one of {}; got {!r}.".format(
                argument, list(NON_FINITE_POLICIES), policy
            )
        )


def _floating_values(value) -> Optional[tf.Tensor]:
    """The floating-point values of `value` (dense Tensor, Variable or IndexedSlices).

    None for non-floating values (integer ids, counters), which are always finite.
    """
    if isinstance(value, tf.IndexedSlices):
        value = value.values
    value = tf.convert_to_tensor(value)
    if not (value.dtype.base_dtype.is_floating or value.dtype.base_dtype.is_complex):
        return None
    return value


def all_finite(values) -> tf.Tensor:
    """Scalar bool Tensor: every entry of every tensor in `values` is finite.

    Args:
      values: a Tensor, Variable or `IndexedSlices`, or a (nested) list of them.
        Non-floating tensors count as finite.
    """
    flags = []
    for value in tf.nest.flatten(values, expand_composites=False):
        value = _floating_values(value)
        if value is not None:
            flags.append(tf.reduce_all(tf.math.is_finite(value)))
    if not flags:
        return tf.constant(True)
    if len(flags) == 1:
        return flags[0]
    return tf.reduce_all(tf.stack(flags))


def replace_non_finite(tensor, value: float = 0.0) -> tf.Tensor:
    """`tensor` with each NaN/Inf entry replaced by `value` (shape kept)."""
    tensor = tf.convert_to_tensor(tensor)
    fill = tf.fill(tf.shape(tensor), tf.cast(value, tensor.dtype))
    return tf.where(tf.math.is_finite(tensor), tensor, fill)


def update_if_finite(
    named_values: Sequence[Tuple[str, Any]],
    update_fn: Callable[[], Any],
    skip_fn: Callable[[], Any],
    policy: Optional[str],
    description: str,
):
    """Builds `update_fn()`, applied only if all `named_values` are finite.

    Args:
      named_values: `(name, values)` pairs; `values` as for `all_finite`. The
        names identify the culprits in the "raise" error message.
      update_fn: builds the update; returns a Tensor (or a structure of them).
      skip_fn: builds what runs instead under "skip"; returns the same structure
        as `update_fn` (e.g. the unchanged values, after incrementing a counter).
      policy: "skip" → `tf.cond(all finite, update_fn, skip_fn)`; "raise" →
        `update_fn()` with a control dependency on an assertion; None →
        `update_fn()` unchecked.
      description: what holds the values, for the error message (e.g. "the
        gradient or update of variables").

    Returns:
      The result of the branch taken (the structure of `update_fn()`).
    """
    check_non_finite_policy(policy)
    if policy is None:
        return update_fn()
    names = [name for name, _ in named_values]
    flags = [all_finite(values) for _, values in named_values]
    if policy == SKIP:
        is_finite = tf.reduce_all(tf.stack(flags)) if flags else tf.constant(True)
        return tf.cond(is_finite, update_fn, skip_fn)
    if not flags:
        return update_fn()
    flags = tf.stack(flags)
    offending = tf.boolean_mask(tf.constant(names), tf.logical_not(flags))
    assertion = tf.debugging.Assert(
        tf.reduce_all(flags),
        [
            "K-FAC (non_finite_policy=raise): NaN or Inf in {}:".format(description),
            offending,
        ],
        summarize=len(names),
        name="assert_all_finite",
    )
    with tf.control_dependencies([assertion]):
        return update_fn()
