"""Figures for the closing notes of the convnet and full-optimizer issues.

  python bench/example_figures.py convnet  # 1 epoch: K-FAC vs SGD+momentum
  python bench/example_figures.py mlp      # regular momentum vs qmodel + LM

Both train on the Debian Fashion-MNIST folder with identical minibatch order
and report the mean training loss/accuracy over the last 50 steps and the
test-set loss/accuracy. Prints one markdown table.
"""

import sys

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from kfac.examples import _training
from kfac.examples import convnet
from kfac.examples import mlp
from kfac.examples import mnist


def _batches(images, labels, batch_size, num_steps, seed=0):
    rng = np.random.RandomState(seed)
    order = np.concatenate(
        [
            rng.permutation(len(images))
            for _ in range(num_steps * batch_size // len(images) + 1)
        ]
    )
    for step in range(num_steps):
        index = order[step * batch_size : (step + 1) * batch_size]
        yield images[index], labels[index]


def _evaluate(sess, loss, accuracy, x, y, images, labels, batch_size=1000):
    results = [
        sess.run(
            [loss, accuracy],
            {x: images[i : i + batch_size], y: labels[i : i + batch_size]},
        )
        for i in range(0, len(images), batch_size)
    ]
    return tuple(np.mean(results, axis=0))


def run(model_name, config_name, num_steps, batch_size):
    flatten = model_name == "mlp"
    train_x, train_y = mnist.load_mnist_arrays(None, "train", flatten_images=flatten)
    test_x, test_y = mnist.load_mnist_arrays(None, "test", flatten_images=flatten)
    build = mlp.build_model if flatten else convnet.build_model
    with tf.Graph().as_default():
        tf.set_random_seed(0)
        x = tf.placeholder(tf.float32, (None,) + train_x.shape[1:])
        y = tf.placeholder(tf.int64, [None])
        prev_x = tf.placeholder(tf.float32, (None,) + train_x.shape[1:])
        prev_y = tf.placeholder(tf.int64, [None])
        layers = kfac.LayerCollection()
        loss, accuracy = build(x, y, 10, layers)
        inv_update_op = cov_update_op = None
        global_step = tf.train.get_or_create_global_step()
        if config_name.startswith("sgd"):
            # "sgd@0.01": SGD with momentum 0.9 and that learning rate.
            sgd_learning_rate = float(config_name.partition("@")[2] or 0.03)
            train_op = tf.train.MomentumOptimizer(sgd_learning_rate, 0.9).minimize(
                loss, global_step
            )
        else:
            common = dict(
                learning_rate=0.1 if not flatten else 0.03,
                cov_ema_decay=0.95,
                damping=0.01,
                layer_collection=layers,
            )
            if config_name.startswith("kfac@"):
                # "kfac@0.03,0.01,0.001": learning rate, damping, norm constraint.
                lr, damping, constraint = map(float, config_name[5:].split(","))
                optimizer = _training.make_kfac_optimizer(
                    layers, lr, damping, 0.9, 0.95, constraint
                )
            elif config_name == "kfac":
                optimizer = _training.make_kfac_optimizer(
                    layers,
                    common["learning_rate"],
                    common["damping"],
                    0.9,
                    common["cov_ema_decay"],
                    norm_constraint=0.01 if not flatten else None,
                )
            else:
                common.update(learning_rate=1.0, damping=0.1)
                optimizer = kfac.KfacOptimizer(
                    momentum=0.0,
                    momentum_type="qmodel",
                    batch_size=batch_size,
                    **common,
                )

                # minimize() calls loss_fn inside the optimizer's own scope.
                model_scope = tf.get_variable_scope()

                def loss_fn(batch):
                    with tf.variable_scope(model_scope, reuse=tf.AUTO_REUSE):
                        return build(batch[0], batch[1], 10, kfac.LayerCollection())[0]

                optimizer.set_damping_adaptation_params(
                    is_chief=True, prev_train_batch=(prev_x, prev_y), loss_fn=loss_fn
                )
            (train_op, cov_update_op), inv_update_op = _training.kfac_step_ops(
                optimizer, loss, global_step
            )
        fetches = [loss, accuracy, train_op]
        if cov_update_op is not None:
            fetches.append(cov_update_op)
        history = []
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            previous = None
            for step, (bx, by) in enumerate(
                _batches(train_x, train_y, batch_size, num_steps)
            ):
                feed = {x: bx, y: by}
                feed.update(
                    {
                        prev_x: (previous or (bx, by))[0],
                        prev_y: (previous or (bx, by))[1],
                    }
                )
                values = sess.run(fetches, feed)
                # Inverses after the first covariance update, then every 20 steps.
                if inv_update_op is not None and step % 20 == 0:
                    sess.run(inv_update_op, feed)
                history.append(values[:2])
                previous = (bx, by)
            test_loss, test_accuracy = _evaluate(
                sess, loss, accuracy, x, y, test_x, test_y
            )
    train_loss, train_accuracy = np.mean(history[-50:], axis=0)
    return train_loss, train_accuracy, test_loss, test_accuracy


def main(argv):
    which = argv[1] if len(argv) > 1 else "convnet"
    sgd_grid = ("sgd@0.03", "sgd@0.01", "sgd@0.003")
    if which == "convnet":
        configs, num_steps, batch_size = ("kfac",) + sgd_grid, 469, 128  # one epoch
    else:
        configs, num_steps, batch_size = ("kfac", "kfac_qmodel") + sgd_grid, 500, 128
    configs = tuple(argv[2].split(",")) if len(argv) > 2 else configs
    print(
        "| model | optimizer | steps | train loss (last 50) | train acc | "
        "test loss | test acc |"
    )
    print("|---|---|---|---|---|---|---|")
    for config in configs:
        figures = run(which, config, num_steps, batch_size)
        print(
            "| {} | {} | {} | {:.4f} | {:.4f} | {:.4f} | {:.4f} |".format(
                which, config, num_steps, *figures
            ),
            flush=True,
        )


if __name__ == "__main__":
    main(sys.argv)
