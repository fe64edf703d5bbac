"""Module constants of fisher_factors / fisher_blocks forward to one config."""

from unittest import mock

from kfac.ops import fisher_blocks
from kfac.ops import fisher_factors
from kfac.ops._blocks import config as blocks_config
from kfac.ops._factors import config as factors_config


def test_assignment_reaches_the_config_the_library_reads():
    original = fisher_factors.TOWER_STRATEGY
    try:
        fisher_factors.TOWER_STRATEGY = "separate"
        assert factors_config.TOWER_STRATEGY == "separate"
    finally:
        fisher_factors.TOWER_STRATEGY = original
    assert factors_config.TOWER_STRATEGY == original


def test_mock_patch_object_restores_the_constants():
    with mock.patch.object(fisher_factors, "TOWER_STRATEGY", "separate"):
        assert factors_config.TOWER_STRATEGY == "separate"
    assert fisher_factors.TOWER_STRATEGY == "concat"
    assert factors_config.TOWER_STRATEGY == "concat"
    with mock.patch.object(fisher_blocks, "PI_TYPE", "off"):
        assert blocks_config.PI_TYPE == "off"
    assert fisher_blocks.PI_TYPE == "tracenorm"


def test_set_global_constants_is_visible_on_the_module():
    fisher_factors.set_global_constants(eigenvalue_decomposition_threshold=5)
    try:
        assert fisher_factors.EIGENVALUE_DECOMPOSITION_THRESHOLD == 5
    finally:
        fisher_factors.set_global_constants(eigenvalue_decomposition_threshold=2)
