"""Tests for kfac/examples/convnet.py: the command line (`main` and its flags)."""

import pytest
import tensorflow.compat.v1 as tf
from example_helpers import parse_flags

from kfac.examples import convnet


def _parse_flags(argv):
    return parse_flags(convnet, argv)


def test_main_trains_on_fake_data(capsys):
    flag_values = _parse_flags(
        ["--use_fake_data", "--num_steps=2", "--batch_size=4", "--optimizer=sgd"]
    )
    accuracy = convnet.main([], flag_values=flag_values)
    assert 0.0 <= accuracy <= 1.0
    assert "final mini-batch accuracy: %s" % accuracy in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, function, expected_args, expected_kwargs",
    [
        (
            [],
            "train_mnist_single_machine",
            ("/d", 3),
            {"optimizer": "kfac", "logdir": None},
        ),
        (
            ["--optimizer=sgd"],
            "train_mnist_single_machine",
            ("/d", 3),
            {"optimizer": "sgd", "logdir": None},
        ),
        (
            ["--num_towers=2"],
            "train_mnist_multitower",
            ("/d", 3, 2),
            {"optimizer": "kfac", "logdir": None},
        ),
        (
            [
                "--distributed",
                "--task=1",
                "--num_worker_tasks=5",
                "--num_ps_tasks=2",
                "--master=grpc://localhost:2222",
            ],
            "train_mnist_distributed",
            (1, 5, 2, "grpc://localhost:2222", "/d", 3),
            {},
        ),
    ],
)
def test_main_dispatches_flags(
    monkeypatch, extra, function, expected_args, expected_kwargs
):
    calls = []

    def fake_train(*args, **kwargs):
        calls.append((args, kwargs))
        assert tf.get_default_graph() is not graph_outside  # main builds a fresh graph
        return 0.5

    monkeypatch.setattr(convnet, function, fake_train)
    flag_values = _parse_flags(
        [
            "--data_dir=/d",
            "--num_epochs=3",
            "--num_steps=7",
            "--batch_size=5",
            "--learning_rate=0.2",
            "--damping=0.3",
        ]
        + extra
    )
    graph_outside = tf.get_default_graph()
    assert convnet.main([], flag_values=flag_values) == 0.5
    [(args, kwargs)] = calls
    assert args == expected_args
    assert kwargs == dict(
        use_fake_data=False,
        batch_size=5,
        num_steps=7,
        learning_rate=0.2,
        damping=0.3,
        auto_register=True,
        **expected_kwargs,
    )


def test_main_rejects_distributed_sgd():
    flag_values = _parse_flags(["--distributed", "--optimizer=sgd"])
    with pytest.raises(
        ValueError, match="--distributed supports --optimizer=kfac only"
    ):
        convnet.main([], flag_values=flag_values)
