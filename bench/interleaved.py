"""Timing several variants of a step in interleaved blocks (the benchmarks).

On a shared, noisy machine, consecutive measurements of one variant and then
another would charge each with whatever load the machine had at its time.
`median_seconds_per_step` runs short blocks of every variant in turn, forward
and backward in alternation so that none always runs first, and reports each
variant's median.
"""

import argparse
import statistics
import time
from typing import Callable
from typing import Dict


def add_arguments(parser: argparse.ArgumentParser, steps: int, blocks: int,
                  quick_steps: int, quick_blocks: int) -> None:
    """`--steps`, `--blocks` and `--quick` (which sets the quick values)."""
    parser.add_argument("--steps", type=int, default=steps,
                        help="steps per timed block")
    parser.add_argument("--blocks", type=int, default=blocks,
                        help="timed blocks per variant (the median is reported)")
    parser.add_argument("--quick", action="store_const", const=(quick_steps,
                                                                 quick_blocks),
                        help="%d blocks of %d steps" % (quick_blocks, quick_steps))


def parse(parser: argparse.ArgumentParser, argv=None) -> argparse.Namespace:
    """`parser.parse_args(argv)`, with `--quick` applied to steps and blocks."""
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.blocks = args.quick
    return args


def median_seconds_per_step(variants: Dict[str, Callable[[int], None]],
                            steps: int, blocks: int) -> Dict[str, float]:
    """`{name: median seconds per step}` of `variants[name](step)`.

    Every variant first runs one block untimed (TensorFlow finishes setting
    up a run the first time it sees it).
    """
    for run in variants.values():
        for step in range(steps):
            run(step)
    names = list(variants)
    per_step = {name: [] for name in names}
    for block in range(blocks):
        for name in names if block % 2 == 0 else names[::-1]:
            start = time.perf_counter()
            for step in range(steps):
                variants[name](step)
            per_step[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(times) for name, times in per_step.items()}
