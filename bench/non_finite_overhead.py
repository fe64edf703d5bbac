r"""Benchmark: per-step cost of the non-finite checks (`non_finite_policy`).

Builds the same small MLP (784-128-128-10, tanh, softmax cross-entropy, batch
128, float32, "gradients" estimation mode, momentum 0.9) once per policy:

* `None`: no checks (the original behaviour);
* `"skip"` (default): the training step and every covariance update are
  applied inside a `tf.cond` on `all(isfinite(...))`;
* `"raise"`: the same values are checked by an assertion.

and times what the training loop runs every step, `sess.run([train_op,
cov_update_op])`, for each policy in turn (`bench.interleaved`, so load
changes on a shared machine hit all of them alike). The inverse update is not timed: its
guard does not depend on the policy and it runs only every few steps. Reports
the median seconds per step and the ratio to `None`.

Run:
  python -m bench.non_finite_overhead            # about a minute on 2 CPU cores
  python -m bench.non_finite_overhead --quick    # a few seconds
"""

import argparse

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from bench import interleaved

POLICIES = (None, "skip", "raise")


def registered_tanh_mlp(x, sizes, rng, layer_collection):
    """The logits of a tanh MLP of layer `sizes` on `x` (weights from `rng`,
    scaled by 1/√fan_in; zero biases), its layers registered."""
    activations = x
    for index, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        weights = tf.get_variable(
            "w%d" % index, initializer=tf.constant(
                (rng.randn(fan_in, fan_out) / np.sqrt(fan_in)).astype(np.float32)))
        bias = tf.get_variable("b%d" % index, [fan_out],
                               initializer=tf.zeros_initializer())
        pre = tf.matmul(activations, weights) + bias
        layer_collection.register_fully_connected((weights, bias), activations, pre)
        activations = tf.tanh(pre) if index < len(sizes) - 2 else pre
    return activations


def build(policy, sizes, batch_size, seed=0):
    """(session, [train_op, cov_update_op]) for one policy, in its own graph."""
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        rng = np.random.RandomState(seed)
        x = tf.constant(rng.rand(batch_size, sizes[0]).astype(np.float32))
        labels = tf.constant(rng.randint(0, sizes[-1], size=batch_size))
        lc = kfac.LayerCollection()
        activations = registered_tanh_mlp(x, sizes, rng, lc)
        lc.register_categorical_predictive_distribution(activations)
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=activations))
        opt = kfac.KfacOptimizer(0.01, 0.95, 0.1, lc, momentum=0.9,
                                 non_finite_policy=policy)
        _, cov_update_op, _, inv_update_op, _, _ = opt.make_ops_and_vars()
        train_op = opt.minimize(loss, global_step=tf.train.get_or_create_global_step())
        config = tf.ConfigProto(intra_op_parallelism_threads=1,
                                inter_op_parallelism_threads=1)
        sess = tf.Session(graph=graph, config=config)
        sess.run(tf.global_variables_initializer())
        sess.run(cov_update_op)
        sess.run(inv_update_op)
    return sess, [train_op, cov_update_op]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--sizes", type=str, default="784,128,128,10")
    interleaved.add_arguments(parser, steps=20, blocks=15, quick_steps=5,
                              quick_blocks=5)
    args = interleaved.parse(parser, argv)
    sizes = [int(size) for size in args.sizes.split(",")]

    runs = {policy: build(policy, sizes, args.batch_size) for policy in POLICIES}
    seconds = interleaved.median_seconds_per_step(
        {policy: (lambda step, run=run: run[0].run(run[1]))
         for policy, run in runs.items()}, args.steps, args.blocks)
    for sess, _ in runs.values():
        sess.close()

    baseline = seconds[None]
    print("MLP %s, batch %d, train + covariance update per step, median of %d "
          "blocks of %d steps:" % ("-".join(map(str, sizes)), args.batch_size,
                                   args.blocks, args.steps))
    print("| non_finite_policy | ms / step | ratio to None |")
    print("|---|---|---|")
    for policy in POLICIES:
        print("| %s | %.2f | %.3f |" % (policy, 1e3 * seconds[policy],
                                        seconds[policy] / baseline))


if __name__ == "__main__":
    main()
