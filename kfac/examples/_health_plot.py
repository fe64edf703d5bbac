"""Curvature health over a comparison run: what is recorded and its plot.

A K-FAC run's record gets a `health` list: at every evaluation, the damping
and the damped condition number of every factor (`kfac.summaries`), keyed by
the factor's name ("<layer>/<factor>"); None where not finite (a factor whose
covariance is still zero has no pi split). With a norm constraint it also
holds the last step's clipping factor `κ` (below 1: the constraint bound
that step, whose size then no longer follows the learning rate).
`plot_health` draws, for each K-FAC run, the condition numbers against
steps (log scale, one line per factor) and, in a last panel, every run's
damping.
"""

import math
from typing import Dict
from typing import List
from typing import Sequence

import tensorflow.compat.v1 as tf

import kfac

DAMPING = "damping"
INVERSE_UPDATES = "inverse_updates"
CLIP_COEFFICIENT = "norm_constraint_coefficient"
# Health entries that are not a factor's condition number.
NOT_FACTORS = ("step", DAMPING, INVERSE_UPDATES, CLIP_COEFFICIENT)


def health_tensors(optimizer) -> Dict[str, object]:
    """`{"damping": λ, "<layer>/<factor>": condition number}` scalar Tensors;
    under the adaptive inverse schedule `"inverse_updates"`, the inverses
    computed so far over all factors; with a norm constraint
    `"norm_constraint_coefficient"`, the last step's clipping factor."""
    scalars = kfac.summaries.curvature_health(optimizer)
    tensors = {DAMPING: scalars["kfac/damping"]}
    if "kfac/" + CLIP_COEFFICIENT in scalars:
        tensors[CLIP_COEFFICIENT] = scalars["kfac/" + CLIP_COEFFICIENT]
    suffix = "/condition_number"
    counts = []
    for name, value in scalars.items():
        if name.endswith(suffix):
            tensors[name[len("kfac/"):-len(suffix)]] = value
        elif name.endswith("/" + INVERSE_UPDATES):
            counts.append(value)
    if counts:
        tensors[INVERSE_UPDATES] = tf.add_n(counts)
    return tensors


def _series(record: Dict, name: str) -> List[float]:
    return [math.nan if point[name] is None else point[name]
            for point in record["health"]]


def plot_health(records: Sequence[Dict], path: str) -> bool:
    """Saves the health panels of the records that have `health` to `path`.

    Returns False (and prints why) without matplotlib or without K-FAC runs.
    """
    runs = [record for record in records if record.get("health")]
    if not runs:
        return False
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        print("matplotlib is not installed: no health plot written "
              "(pip install matplotlib, or pip install -e '.[examples]').")
        return False
    figure, axes = pyplot.subplots(1, len(runs) + 1,
                                   figsize=(5.5 * (len(runs) + 1), 4.5),
                                   squeeze=False)
    axes = axes[0]
    for axis, record in zip(axes, runs):
        steps = [point["step"] for point in record["health"]]
        factors = [name for name in record["health"][0] if name not in NOT_FACTORS]
        for factor in factors:
            axis.plot(steps, _series(record, factor), label=factor)
        axis.set_yscale("log")
        axis.set_xlabel("steps")
        axis.set_ylabel("condition number of the damped factor")
        axis.set_title(record["name"])
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=6, ncol=2)
    damping_axis = axes[-1]
    for record in runs:
        damping_axis.plot([point["step"] for point in record["health"]],
                          _series(record, DAMPING), label=record["name"])
    damping_axis.set_yscale("log")
    damping_axis.set_xlabel("steps")
    damping_axis.set_ylabel("damping")
    damping_axis.grid(True, which="both", alpha=0.3)
    damping_axis.legend()
    figure.suptitle("Curvature health (kfac.summaries)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True
