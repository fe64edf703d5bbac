"""Tests of the EKFAC / drift benchmark's configurations and its count of
inverse updates."""

import os
import sys

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import ekfac as bench  # noqa: E402
from kfac.examples import _health_plot as health_plot  # noqa: E402


def _kfac_run(steps, period, health=None):
    optimizer = {"kind": "kfac_qmodel", "inv_update_every": period}
    return {"steps": steps, "health": health or [], "config": {"optimizer": optimizer}}


def test_fixed_period_counts_every_factor_at_steps_0_period_2period():
    # Inverses at steps 0, 10, 20 of a 25-step run: 3 rounds of 16 factors.
    assert bench.inverse_updates(_kfac_run(25, 10)) == 3 * bench.NUM_FACTORS
    assert bench.inverse_updates(_kfac_run(21, 10)) == 3 * bench.NUM_FACTORS
    assert bench.inverse_updates(_kfac_run(20, 10)) == 2 * bench.NUM_FACTORS


def test_drift_schedule_counts_come_from_the_last_health_record():
    health = [{health_plot.INVERSE_UPDATES: 16.0}, {health_plot.INVERSE_UPDATES: 41.0}]
    assert bench.inverse_updates(_kfac_run(100, 50, health)) == 41


def test_sgd_has_no_inverse_updates():
    run = {"steps": 5, "config": {"optimizer": {"kind": "sgd"}}}
    assert bench.inverse_updates(run) is None


def test_specs_pair_kron_and_ekfac_at_equal_settings():
    runs = bench.specs()
    assert runs[0].kind == "sgd"
    for kind in ("kfac", "kfac_qmodel"):
        family = [spec for spec in runs if spec.kind == kind]
        assert [(s.approximation, s.inv_update_every) for s in family] == [
            (None, bench.INVERSE_PERIOD), ("ekfac", bench.INVERSE_PERIOD),
            ("ekfac", bench.LONG_PERIOD)]
        assert len({(s.learning_rate, s.damping, s.momentum) for s in family}) == 1
    assert len({spec.name for spec in runs}) == len(runs)


def test_damping_specs_run_kfac_at_the_first_damping_and_ekfac_at_each():
    runs = bench.damping_specs([0.03, 0.3])
    assert [spec.name for spec in runs] == [
        "sgd", "kfac kron damping=0.03", "kfac ekfac damping=0.03",
        "kfac ekfac damping=0.3"]
    assert [(s.approximation, s.damping) for s in runs[1:]] == [
        (None, 0.03), ("ekfac", 0.03), ("ekfac", 0.3)]
    assert all(s.momentum == 0.9 and not s.warm_start_covariances for s in runs[1:])


def test_drift_specs_bound_the_drift_schedule_by_the_long_period():
    runs = bench.drift_specs()
    drift = [spec for spec in runs if spec.max_drift is not None]
    assert [spec.max_drift for spec in drift] == [0.05, 0.1, 0.2]
    assert all(spec.inv_update_every == bench.LONG_PERIOD for spec in drift)
    assert [s.inv_update_every for s in runs[1:4]] == [5, 10, 20]
