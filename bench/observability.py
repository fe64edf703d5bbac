r"""Benchmark: what watching K-FAC costs per training step.

One model (the MLP 784-128-128-10 of `bench/non_finite_overhead.py`, batch
128, or the deep autoencoder 784-1000-500-250-30-250-500-1000-784, batch 512)
is built twice: once with the per-step statistics that the summaries read
(`_optimizer.step_statistics`, always on in the library) replaced by a no-op,
the baseline, and once as the library builds it. What the classic loop runs
every step, `sess.run([train_op, cov_update_op])`, is then timed in
interleaved blocks (`bench.interleaved`: load changes on a shared machine hit
every variant alike) for:

* `baseline`: no step statistics;
* `statistics`: the library's step (statistics recorded);
* `summaries/10`, `summaries/1`: plus the merged `make_summary_ops()` fetched
  with the step every 10th step / every step (as `MonitoredTrainingSession`'s
  summary hook fetches it).

Reports the median seconds per step and the ratio to `baseline`, then the
examples' progress bar: the time of one `ProgressBar.update` (drawing to a
terminal-like stream at most 5 times a second), measured over many calls,
as a fraction of a baseline step (a difference of step times would be lost
in their noise).

Run:
  python -m bench.observability                 # the MLP, about two minutes
  python -m bench.observability --model=autoencoder
  python -m bench.observability --quick
"""

import argparse
import io
import time

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from bench import interleaved
from bench import non_finite_overhead
from kfac.examples import _progress
from kfac.ops._optimizer import step_statistics

MODELS = {"mlp": ((784, 128, 128, 10), 128),
          "autoencoder": ((784, 1000, 500, 250, 30, 250, 500, 1000, 784), 512)}


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def build(sizes, batch_size, record_statistics, seed=0):
    """`(session, [train_op, cov_update_op], summary_op)` in a graph of its own."""
    original_record = step_statistics.StepStatistics.record
    if not record_statistics:
        step_statistics.StepStatistics.record = lambda self, *args, **kwargs: (
            tf.no_op())
    try:
        graph = tf.Graph()
        with graph.as_default():
            tf.set_random_seed(seed)
            rng = np.random.RandomState(seed)
            x = tf.constant(rng.rand(batch_size, sizes[0]).astype(np.float32))
            lc = kfac.LayerCollection()
            activations = non_finite_overhead.registered_tanh_mlp(x, sizes, rng, lc)
            if sizes[-1] == sizes[0]:  # the autoencoder: Bernoulli pixels
                lc.register_multi_bernoulli_predictive_distribution(activations)
                loss = tf.reduce_mean(tf.reduce_sum(
                    tf.nn.sigmoid_cross_entropy_with_logits(labels=x,
                                                            logits=activations), 1))
            else:
                labels = tf.constant(rng.randint(0, sizes[-1], size=batch_size))
                lc.register_categorical_predictive_distribution(activations)
                loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=labels, logits=activations))
            opt = kfac.KfacOptimizer(0.01, 0.95, 0.1, lc, momentum=0.9)
            _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
            train_op = opt.minimize(
                loss, global_step=tf.train.get_or_create_global_step())
            summary_op = opt.make_summary_ops(collections=[])
            sess = tf.Session(graph=graph)
            sess.run(tf.global_variables_initializer())
            sess.run(cov_update_op)
            sess.run(inv_update_op)
    finally:
        step_statistics.StepStatistics.record = original_record
    return sess, [train_op, cov_update_op], summary_op


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="mlp")
    interleaved.add_arguments(parser, steps=20, blocks=21, quick_steps=10,
                              quick_blocks=3)
    args = interleaved.parse(parser, argv)
    sizes, batch_size = MODELS[args.model]

    baseline = build(sizes, batch_size, record_statistics=False)
    library = build(sizes, batch_size, record_statistics=True)

    def variant(name):
        sess, fetches, summary_op = baseline if name == "baseline" else library
        every = {"summaries/10": 10, "summaries/1": 1}.get(name)

        def run(step):
            if every is not None and step % every == 0:
                sess.run(fetches + [summary_op])
            else:
                sess.run(fetches)

        return run

    variants = ("baseline", "statistics", "summaries/10", "summaries/1")
    seconds = interleaved.median_seconds_per_step(
        {name: variant(name) for name in variants}, args.steps, args.blocks)
    for sess, _, _ in (baseline, library):
        sess.close()

    base = seconds["baseline"]
    print("%s %s, batch %d, train + covariance update per step, median of %d "
          "blocks of %d steps:" % (args.model, "-".join(map(str, sizes)),
                                   batch_size, args.blocks, args.steps))
    print("| variant | ms / step | ratio to baseline |")
    print("|---|---|---|")
    for name in variants:
        print("| %s | %.2f | %.3f |" % (name, 1e3 * seconds[name],
                                        seconds[name] / base))
    bar = _progress.ProgressBar("kfac", total=10**9, stream=_Terminal())
    calls = 200000
    start = time.perf_counter()
    for step in range(calls):
        bar.update(step, 0.5)
    per_call = (time.perf_counter() - start) / calls
    print("ProgressBar.update: %.2f us per call, %.5f of a baseline step"
          % (1e6 * per_call, per_call / base))


if __name__ == "__main__":
    main()
