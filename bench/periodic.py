r"""Micro-benchmark: per-step cost of `PeriodicInvCovUpdateKfacOpt` schedules.

On the deep autoencoder of `kfac.examples.autoencoder_mnist` (784-1000-500-
250-30-250-500-1000-784, batch 512 by default, generated images from
`make_fake_images`, so it runs anywhere), times every step of a full cycle of

* `trainer`: a plain `KfacOptimizer` run as the example's `Trainer` runs it:
  training step and covariance update every step, all inverses every 10th
  step (covariance update, inverse update and training step as three runs);
* `periodic c=C i=I [spread]`: `PeriodicInvCovUpdateKfacOpt(invert_every=I,
  cov_update_every=C, spread_inverse_updates=...)`, one run of its training op
  per step, for (C, I) in (1, 10), (2, 10), (4, 10), spread off and on;

and an SGD-with-momentum step, all in this process, interleaved (one cycle of
each configuration per round) so that load changes on a shared machine hit
all of them alike. Per configuration and position in the cycle (20 steps, a
multiple of every schedule's period), the median over rounds is taken; the
report gives the mean over the cycle (the amortised cost of a step) and the
max (the slowest step), both as ratios to the median SGD step.

Run:
  python -m bench.periodic              # about 2-3 minutes on 2 CPU cores
  python -m bench.periodic --rounds 2   # quicker, noisier
"""

import argparse
import statistics
import time
from typing import Callable
from typing import Dict
from typing import List

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.examples import autoencoder_mnist as ae

CYCLE = 20
LEARNING_RATE = 0.01
DAMPING = 0.03
CONFIGS = [(1, 10, False), (1, 10, True), (2, 10, False), (2, 10, True),
           (4, 10, False), (4, 10, True)]


def _session(spec: ae.OptimizerSpec, settings: ae.TrainSettings, batch: np.ndarray):
    """`(session, ops)` of the example's training graph of `spec`, initialised."""
    ops = ae.build_training_graph(spec, settings, batch.shape[1])
    sess = tf.Session(graph=ops.graph)
    with ops.graph.as_default():
        sess.run(tf.global_variables_initializer())
    return sess, ops


def _sgd_step(settings: ae.TrainSettings, batch: np.ndarray) -> Callable:
    """`step(index)` running one SGD-with-momentum step on `batch`."""
    sess, ops = _session(ae.OptimizerSpec("sgd", 1e-3), settings, batch)
    train = sess.make_callable(ops.train_op, [ops.model.inputs])
    return lambda index: train(batch)


def _trainer_step(settings: ae.TrainSettings, batch: np.ndarray) -> Callable:
    """`step(index)` of the example's `Trainer` with a plain `KfacOptimizer`."""
    spec = ae.OptimizerSpec("kfac", LEARNING_RATE, damping=DAMPING,
                            inv_update_every=10)
    sess, ops = _session(spec, settings, batch)
    trainer = ae.Trainer(sess, spec, ops)
    return lambda index: trainer.step(index, batch, batch)


def _periodic_step(settings: ae.TrainSettings, batch: np.ndarray,
                   cov_update_every: int, invert_every: int,
                   spread: bool) -> Callable:
    """`step(index)` running the periodic optimizer's training op once."""
    spec = ae.OptimizerSpec(
        "kfac", LEARNING_RATE, damping=DAMPING, momentum=0.9,
        inv_update_every=invert_every, cov_ema_decay=0.95,
        cov_update_every=cov_update_every, spread_inverse_updates=spread,
        warm_start_covariances=False)
    sess, ops = _session(spec, settings, batch)
    ops.graph.finalize()
    train = sess.make_callable(ops.train_op, [ops.model.inputs])
    # The op's own counter decides the schedule; `index` only keeps in step.
    return lambda index: train(batch)


def measure(batch_size: int = 512, rounds: int = 4, seed: int = 0) -> Dict:
    """Median seconds per position of the cycle, per configuration (see module doc).

    Returns:
      `{"sgd": seconds, "configs": {label: [median seconds per position]}}`.
    """
    settings = ae.TrainSettings(batch_size=batch_size, seed=seed)
    batch = ae.make_fake_images(batch_size, seed=seed)
    steps = {"trainer": _trainer_step(settings, batch)}
    for cov_update_every, invert_every, spread in CONFIGS:
        label = "periodic c=%d i=%d%s" % (cov_update_every, invert_every,
                                          " spread" if spread else "")
        steps[label] = _periodic_step(settings, batch, cov_update_every,
                                      invert_every, spread)
    sgd = _sgd_step(settings, batch)
    # Warm-up: one cycle each (first runs finish setting up the callables).
    for step in list(steps.values()) + [sgd]:
        for index in range(CYCLE):
            step(index)
    times = {label: [[] for _ in range(CYCLE)] for label in steps}
    sgd_times = []
    for _ in range(rounds):
        for label, step in steps.items():
            for index in range(CYCLE):
                start = time.perf_counter()
                step(index)
                times[label][index].append(time.perf_counter() - start)
            for index in range(CYCLE):
                start = time.perf_counter()
                sgd(index)
                sgd_times.append(time.perf_counter() - start)
    return {
        "sgd": statistics.median(sgd_times),
        "configs": {label: [statistics.median(position) for position in per_step]
                    for label, per_step in times.items()},
    }


def report(result: Dict) -> List[str]:
    """Markdown lines: mean and max step time per cycle, as ratios to SGD."""
    sgd = result["sgd"]
    lines = ["SGD step: %.1f ms" % (1e3 * sgd), "",
             "| configuration | mean step / SGD | max step / SGD | mean ms | max ms |",
             "|---|---|---|---|---|"]
    for label, medians in result["configs"].items():
        mean, worst = float(np.mean(medians)), max(medians)
        lines.append("| %s | %.2f | %.2f | %.1f | %.1f |" % (
            label, mean / sgd, worst / sgd, 1e3 * mean, 1e3 * worst))
    return lines


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=4,
                        help="timed cycles per configuration (medians over them)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    result = measure(args.batch_size, args.rounds)
    print("\n".join(report(result)))
    print("\n(%d rounds of %d steps, batch %d, %.0f s)" % (
        args.rounds, CYCLE, args.batch_size, time.perf_counter() - start))


if __name__ == "__main__":
    main()
