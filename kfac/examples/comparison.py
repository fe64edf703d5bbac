"""Comparing optimizers fairly: same batches, fixed evaluation set, time to a target.

Shared by the examples and the benchmarks: mini-batch order and evaluation
subset from fixed seeds, progress display, time-to-target tables, plots. A
run's *record* is a dict with at least `name`, `evals` (a list of
`{"step", "seconds", "loss"}`, loss None where it was not finite),
`final_loss` and `diverged`.
"""

import json
import math
import os
import platform
import sys
from typing import Dict
from typing import Iterator
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import numpy as np
import tensorflow.compat.v1 as tf
from absl import flags

from kfac.examples import _progress

REFERENCE = "sgd"


def finite_or_none(value: float) -> Optional[float]:
    """`value`, or None when it is NaN or infinite (JSON has no such numbers)."""
    return value if math.isfinite(value) else None


# ---------------------------------------------------------------- same data for all


def evaluation_subset(images: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A fixed random subset of `size` images (all of them if fewer)."""
    if size >= len(images):
        return images
    rng = np.random.RandomState(seed)
    return images[np.sort(rng.choice(len(images), size, replace=False))]


def minibatch_indices(
    num_examples: int, batch_size: int, seed: int
) -> Iterator[np.ndarray]:
    """Endless mini-batch row indices: a new permutation per epoch, remainder dropped.

    The same `seed` gives the same order, so every optimizer sees the same batches.
    """
    if not 0 < batch_size <= num_examples:
        raise ValueError(
            "batch_size must be in [1, {}] (the number of examples), got {}.".format(
                num_examples, batch_size
            )
        )
    rng = np.random.RandomState(seed)
    while True:
        order = rng.permutation(num_examples)
        for start in range(0, num_examples - batch_size + 1, batch_size):
            yield order[start : start + batch_size]


def evaluate_loss(run_loss, images: np.ndarray, chunk: int = 2500) -> float:
    """Mean loss over `images`, `run_loss(batch)` giving a batch's mean loss."""
    total = 0.0
    for start in range(0, len(images), chunk):
        batch = images[start : start + chunk]
        total += float(run_loss(batch)) * len(batch)
    return total / len(images)


# ---------------------------------------------------------------- reporting


class Progress:
    """One updating line on a terminal; one plain line per evaluation otherwise.

    Each line gives the run's name, its step, training seconds, evaluation
    loss, steps per second and, from the run's limits (`max_steps`,
    `max_seconds`: training stops at the first reached), the time left.
    """

    def __init__(self, stream=None, max_steps: Optional[int] = None,
                 max_seconds: Optional[float] = None):
        self._stream = stream or sys.stdout
        self._tty = hasattr(self._stream, "isatty") and self._stream.isatty()
        self._max_steps = max_steps
        self._max_seconds = max_seconds

    def _seconds_left(self, step: int, seconds: float) -> Optional[float]:
        rate = step / seconds if seconds > 0 else 0.0
        left = []
        if self._max_steps is not None and rate > 0:
            left.append((self._max_steps - step) / rate)
        if self._max_seconds is not None:
            left.append(self._max_seconds - seconds)
        return min(left) if left else None

    def update(self, name: str, step: int, seconds: float, loss: float):
        text = "{:<12s} step {:6d}  {:8.1f} s  eval loss {:10.4f}".format(
            name, step, seconds, loss
        )
        if seconds > 0:
            text += "  {:6.1f} steps/s".format(step / seconds)
        left = self._seconds_left(step, seconds)
        if left is not None:
            text += "  ETA " + _progress.format_duration(left)
        if self._tty:
            self._stream.write("\r\x1b[K" + text)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def finish(self):
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()


def final_loss(record: Dict) -> float:
    """The last evaluation loss (inf for a run that diverged or has no loss)."""
    loss = record.get("final_loss")
    return math.inf if loss is None or record.get("diverged") else loss


def best_loss(record: Dict) -> float:
    """The lowest evaluation loss of a run (inf if none is finite)."""
    losses = [e["loss"] for e in record["evals"] if e["loss"] is not None]
    return min(losses) if losses else math.inf


def time_to_target(record: Dict, target: float) -> Optional[Tuple[int, float]]:
    """`(step, seconds)` of the first evaluation with loss <= `target`, else None."""
    for evaluation in record["evals"]:
        if evaluation["loss"] is not None and evaluation["loss"] <= target:
            return evaluation["step"], evaluation["seconds"]
    return None


def _ratio(numerator, denominator) -> Optional[float]:
    if numerator is None or denominator is None or denominator <= 0:
        return None
    return numerator / denominator


def target_table(
    records: Sequence[Dict], target: float, references: Sequence[str] = (REFERENCE,)
) -> List[Dict]:
    """One row per record: how fast it reached `target`, relative to the references.

    Row fields: `name`, `final_loss`, `best_loss`, `steps` and `seconds` to
    the target (None if never reached), and `ratios[ref] = {"steps": ref's
    steps / this row's steps, "seconds": likewise}` for each reference name
    present in `records` (None where either did not reach the target).
    A ratio above 1 means this row needed fewer steps or seconds than `ref`.
    """
    rows = []
    for record in records:
        reached = time_to_target(record, target)
        rows.append(
            {
                "name": record["name"],
                "final_loss": finite_or_none(final_loss(record)),
                "best_loss": finite_or_none(best_loss(record)),
                "steps": reached[0] if reached else None,
                "seconds": reached[1] if reached else None,
            }
        )
    by_name = {row["name"]: row for row in rows}
    for row in rows:
        row["ratios"] = {
            ref: {
                "steps": _ratio(by_name[ref]["steps"], row["steps"]),
                "seconds": _ratio(by_name[ref]["seconds"], row["seconds"]),
            }
            for ref in references
            if ref in by_name
        }
    return rows


def format_table(
    rows: Sequence[Dict], target: float, references: Sequence[str] = (REFERENCE,)
) -> str:
    """A markdown table of `target_table` rows."""

    def show(value, spec):
        return "—" if value is None else format(value, spec)

    present = [ref for ref in references if rows and ref in rows[0]["ratios"]]
    header = [
        "optimizer",
        "final loss",
        "best loss",
        "steps to target",
        "seconds to target",
    ]
    for ref in present:
        header += ["{}/this steps".format(ref), "{}/this seconds".format(ref)]
    lines = [
        "Target: loss {:.4f}".format(target),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for row in rows:
        cells = [
            row["name"],
            show(row["final_loss"], ".4f"),
            show(row["best_loss"], ".4f"),
            show(row["steps"], "d"),
            show(row["seconds"], ".1f"),
        ]
        for ref in present:
            cells += [
                show(row["ratios"][ref]["steps"], ".2f"),
                show(row["ratios"][ref]["seconds"], ".2f"),
            ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_records(
    records: Sequence[Dict],
    path: str,
    target: Optional[float] = None,
    title: str = "Deep autoencoder",
    log_x: bool = False,
    max_loss: Optional[float] = None,
    log_y: bool = False,
) -> bool:
    """Saves loss against steps and against seconds to `path` (PNG).

    `log_x` draws both x axes on a log scale (step 0 is then left out);
    `max_loss` caps the y axis; `log_y` draws the losses on a log scale (the
    differences near the target become visible). Returns False (and prints
    why) when matplotlib is not installed.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot
    except ImportError:
        print(
            "matplotlib is not installed: no plot written "
            "(pip install matplotlib, or pip install -e '.[examples]')."
        )
        return False
    figure, axes = pyplot.subplots(1, 2, figsize=(12, 4.5))
    for record in records:
        points = [
            e
            for e in record["evals"]
            if e["loss"] is not None and not (log_x and e["step"] == 0)
        ]
        for axis, key in zip(axes, ("step", "seconds")):
            axis.plot(
                [e[key] for e in points],
                [e["loss"] for e in points],
                label=record["name"],
            )
    for axis, xlabel in zip(axes, ("steps", "training seconds")):
        if target is not None:
            axis.axhline(
                target, color="grey", linestyle=":", label="target %.4g" % target
            )
        if log_x:
            axis.set_xscale("log")
        if log_y:
            axis.set_yscale("log")
        if max_loss is not None:
            axis.set_ylim(top=max_loss)
        axis.set_xlabel(xlabel)
        axis.set_ylabel("evaluation loss")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return True


def environment() -> Dict:
    """Versions and machine facts stored with every record."""
    return {
        "tensorflow": tf.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
    }


def write_json(path: str, content: Dict):
    with open(path, "w") as json_file:
        json.dump(content, json_file, indent=1)
        json_file.write("\n")


def define_flags(table: Sequence[Tuple], flag_values=flags.FLAGS):
    """Defines `(type, name, default, help)` flags; names already defined are skipped.

    Skipping lets one program combine the flags of several modules.
    """
    for flag_type, name, default, help_text in table:
        if name not in flag_values:
            define = getattr(flags, "DEFINE_" + flag_type)
            define(name, default, help_text, flag_values=flag_values)
