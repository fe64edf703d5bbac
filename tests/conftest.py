"""Shared pytest fixtures for the kfac tests.

Every test runs in TF2 behaviour (resource variables, control flow v2) unless it
asks for the `tf_behavior` fixture, which runs it once with TF2 behaviour and once
after `tf.disable_v2_behavior()` (ref variables, control flow v1), as TF1 users do.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402


@pytest.fixture(autouse=True)
def _tf2_behavior_by_default():
    tf.enable_v2_behavior()
    yield
    tf.enable_v2_behavior()


@pytest.fixture(params=["v2", "v1"])
def tf_behavior(request):
    """Runs the test under both TF2 behaviour and `disable_v2_behavior()`."""
    if request.param == "v1":
        tf.disable_v2_behavior()
    return request.param


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture
def graph():
    """A fresh default graph for the duration of the test."""
    with tf.Graph().as_default() as g:
        yield g
