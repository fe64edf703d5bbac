"""Micro-benchmark of the deep autoencoder: seconds per op, against an SGD step.

Part of `bench.autoencoder` (its `micro` result field): the median seconds of
single training ops of the best K-FAC configurations, timed on one fixed batch
after warm-up runs.
"""

import functools
import statistics
import time
from typing import Dict

import numpy as np
import tensorflow.compat.v1 as tf

from kfac.examples import autoencoder_mnist as ae


def median_seconds(run, repeats: int) -> float:
    """Median wall-clock seconds of `run()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def session_callables(ops: ae.TrainingGraph, sess: tf.Session, batch: np.ndarray):
    """`{name: callable}` of the ops of `ops` worth timing, with fixed feeds:
    `train_step`, and for a K-FAC graph with separate ops `train_and_cov_step`,
    `cov_update` and `inv_update`."""
    feeds = [ops.model.inputs, ops.prev_inputs]

    def make(fetch):
        return functools.partial(sess.make_callable(fetch, feeds), batch, batch)

    callables = {"train_step": make(ops.train_op)}
    if ops.cov_update_op is not None:
        callables.update(
            train_and_cov_step=make([ops.train_op, ops.cov_update_op]),
            cov_update=make(ops.cov_update_op),
            inv_update=sess.make_callable(ops.inv_update_op),
        )
    return callables


def _cycle_seconds(train_step, cycle: int, repeats: int) -> Dict[str, float]:
    """Mean and largest step time of a periodic op over `repeats` cycles.

    The largest is the median over cycles of each cycle's dearest step.
    """
    means, maxima = [], []
    for _ in range(repeats):
        times = []
        for _ in range(cycle):
            start = time.perf_counter()
            train_step()
            times.append(time.perf_counter() - start)
        means.append(sum(times) / cycle)
        maxima.append(max(times))
    return {"mean": statistics.median(means), "max": statistics.median(maxima)}


def micro_benchmark(
    kfac_specs: Dict[str, ae.OptimizerSpec],
    settings: ae.TrainSettings,
    images: np.ndarray,
    repeats: int,
) -> Dict:
    """Median seconds of single ops, and their ratios to the SGD step.

    `kfac_specs` maps a family ("kfac", "kfac_qmodel") to its configuration.
    Timed, after warm-up runs, on a fixed batch: an SGD (momentum) step; per
    family, with separate ops (`periodic=False`), the training step alone
    (`<family>_train_step`), the training step with the covariance update in
    one run (`<family>_train_and_cov_step`), the covariance update alone and
    one full inverse update; and the periodic training op as the grid runs it
    (covariance and inverse updates on its schedule): its mean step over a
    cycle of `inv_update_every` steps (`<family>_periodic_step`) and the
    cycle's largest step (`<family>_periodic_max_step`).
    """
    batch = images[: settings.batch_size]
    timings = {}
    graphs = [("sgd", ae.OptimizerSpec("sgd", 1e-4), False)]
    for family, spec in kfac_specs.items():
        graphs += [(family, spec, False), (family + "_periodic", spec, True)]
    for name, spec, periodic in graphs:
        ops = ae.build_training_graph(spec, settings, images.shape[1], periodic)
        with ops.graph.as_default(), tf.Session(graph=ops.graph) as sess:
            sess.run(tf.global_variables_initializer())
            ops.graph.finalize()
            callables = session_callables(ops, sess, batch)
            if periodic:
                train_step = callables["train_step"]
                cycle = spec.inv_update_every
                for _ in range(cycle + 1):
                    train_step()
                cycle_times = _cycle_seconds(train_step, cycle, repeats)
                timings[name + "_step"] = cycle_times["mean"]
                timings[name + "_max_step"] = cycle_times["max"]
                continue
            for op_name, run_op in callables.items():
                for _ in range(2):
                    run_op()
                timings["%s_%s" % (name, op_name)] = median_seconds(run_op, repeats)
    sgd = timings.pop("sgd_train_step")
    timings = dict(sgd_step=sgd, **timings)
    ratios = {name: seconds / sgd for name, seconds in timings.items()}
    return {
        "seconds": timings,
        "ratio_to_sgd_step": ratios,
        "repeats": repeats,
        "schedules": {
            family: {
                "inv_update_every": spec.inv_update_every,
                "cov_update_every": spec.cov_update_every,
                "spread_inverse_updates": spec.spread_inverse_updates,
            }
            for family, spec in kfac_specs.items()
        },
    }
