"""Shared pytest fixtures for the kfac tests.

Every test runs in TF2 behaviour (resource variables, control flow v2) unless it
asks for the `tf_behavior` fixture, which runs it once with TF2 behaviour and once
after `tf.disable_v2_behavior()` (ref variables, control flow v1), as TF1 users do.
"""

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow.compat.v1 as tf  # noqa: E402

# The original's module constants (the defaults of every KfacConfig made).
_MODULE_CONSTANTS = {
    "kfac.ops.fisher_factors": (
        "INIT_COVARIANCES_AT_ZERO",
        "ZERO_DEBIAS",
        "EIGENVALUE_DECOMPOSITION_THRESHOLD",
        "EIGENVALUE_CLIPPING_THRESHOLD",
        "TOWER_STRATEGY",
        "SUB_SAMPLE_INPUTS",
        "SUB_SAMPLE_PATCHES",
        "INPUTS_TO_EXTRACT_PATCHES_FACTOR",
        "MAX_NUM_PATCHES_PER_DIMENSION",
    ),
    "kfac.ops.fisher_blocks": ("NORMALIZE_DAMPING_POWER", "PI_TYPE"),
    "kfac.ops.utils": ("POSDEF_INV_METHOD", "POSDEF_EIG_METHOD"),
}


@pytest.fixture(autouse=True)
def _restore_module_constants():
    """Every test starts from, and leaves, the constants as they were."""
    import importlib

    modules = {name: importlib.import_module(name) for name in _MODULE_CONSTANTS}
    saved = {
        (name, constant): getattr(modules[name], constant)
        for name, constants in _MODULE_CONSTANTS.items()
        for constant in constants
    }
    yield
    for (name, constant), value in saved.items():
        setattr(modules[name], constant, value)


@pytest.fixture
def restore_constants(_restore_module_constants):
    """Named by tests that change a module constant (the autouse fixture restores)."""
    yield


@pytest.fixture(autouse=True)
def _tf2_behavior_by_default():
    tf.enable_v2_behavior()
    yield
    tf.enable_v2_behavior()


@pytest.fixture(params=["v2", "v1"])
def tf_behavior(request):
    """Runs the test under both TF2 behaviour and `disable_v2_behavior()`.

    TF refuses to re-enable TF2 behaviour once its global graph exists, and
    under v1 a session's helper threads (which do not see the test's
    `tf.Graph().as_default()`: the graph stack is thread-local) create it. The
    v1 case therefore runs in a fresh default graph and forgets the global one
    afterwards, so the next test can start in TF2 behaviour again.
    """
    if request.param == "v2":
        yield request.param
        return
    with _v1_behavior():
        yield request.param


@pytest.fixture
def v1_behavior():
    """The test runs after `disable_v2_behavior()` only (see `tf_behavior`)."""
    with _v1_behavior():
        yield


@contextlib.contextmanager
def _v1_behavior():
    tf.disable_v2_behavior()
    with tf.Graph().as_default():
        yield
    _forget_global_default_graph()


def _forget_global_default_graph():
    from tensorflow.python.framework import ops  # test-only private access

    ops._default_graph_stack._global_default_graph = None


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture
def graph():
    """A fresh default graph for the duration of the test."""
    with tf.Graph().as_default() as g:
        yield g
