"""bench/original.py: the classic loop's runs in their own processes, the
original's import under the TF1 aliasing, and the report's ratios."""

import pathlib
import types

import pytest

from bench import original as bench
from kfac.examples import autoencoder_mnist as ae

REPO = pathlib.Path(__file__).resolve().parents[1]


def _options(**changes):
    values = dict(original_dir=None, data_dir=None, use_fake_data=True,
                  timing_repeats=1, profile=False)
    values.update(changes)
    return types.SimpleNamespace(**values)


@pytest.fixture
def in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def _fake_original(folder: pathlib.Path) -> pathlib.Path:
    """A folder whose `kfac` package is this library, loaded from elsewhere."""
    package = folder / "kfac"
    package.mkdir()
    (package / "__init__.py").write_text(
        "import os\n"
        "__path__.append({!r})\n"
        "exec(open(os.path.join(__path__[-1], '__init__.py')).read())\n".format(
            str(REPO / "kfac")))
    return folder


def test_a_kfac_run_of_the_original_imports_it_from_the_folder_under_tf1(
        tmp_path, in_repo):
    folder = _fake_original(tmp_path)
    record = bench.run_child("original", "qmodel", _options(original_dir=str(folder)),
                             target=None, max_seconds=0.5)
    assert record["name"] == "original qmodel"
    assert record["kfac_file"] == str(folder / "kfac" / "__init__.py")
    assert record["tensorflow_module"].endswith("compat.v1")
    assert record["steps"] >= 1 and not record["diverged"]
    assert [e["step"] for e in record["evals"]] == list(
        range(0, bench.EVAL_EVERY * len(record["evals"]), bench.EVAL_EVERY))
    assert set(record["timings"]) == {"train", "train_and_cov", "inv"}
    assert all(seconds > 0 for seconds in record["timings"].values())


def test_an_sgd_run_stops_at_the_target(in_repo):
    record = bench.run_child("ours", "sgd", _options(), target=1e9, max_seconds=60.0)
    assert record["name"] == "sgd"
    assert record["kfac_file"].startswith(str(REPO / "kfac"))
    assert record["tensorflow_module"] == "tensorflow"
    # The first evaluation (step 0) is already below a target of 1e9.
    assert record["steps"] == 0 and len(record["evals"]) == 1
    assert set(record["timings"]) == {"train"}


def test_a_profiled_sgd_step_counts_the_autoencoders_products(in_repo):
    """An SGD step: the forward products, the weights' gradients and the
    inputs' gradients of every layer but the first (`B·in·out` each)."""
    record = bench.run_child("ours", "sgd", _options(profile=True), target=1e9,
                             max_seconds=60.0)
    sizes = [(kernel.shape[0], kernel.shape[1]) for kernel, _ in
             ae.initial_weights(784)]
    products = [bench.BATCH_SIZE * fan_in * fan_out for fan_in, fan_out in sizes]
    profile = record["profile"]
    assert profile["uncounted_products"] == 0
    assert profile["multiply_adds"] == 2 * sum(products) + sum(products[1:])
    assert 0 < profile["matmul_op_seconds"] <= profile["op_seconds"]


def test_import_original_refuses_a_folder_without_kfac(tmp_path):
    with pytest.raises(SystemExit, match="no kfac package"):
        bench.import_original(str(tmp_path))


def _run(name, seconds_to_target, train, train_and_cov, inv):
    return {"name": name, "final_loss": 200.0, "diverged": False,
            "to_target": (None if seconds_to_target is None
                          else {"step": 50, "seconds": seconds_to_target}),
            "timings": {"train": train, "train_and_cov": train_and_cov, "inv": inv}}


def test_speedups_divide_the_originals_seconds_by_ours_and_the_report_shows_them():
    runs = [
        {"name": "sgd", "final_loss": 227.0, "diverged": False,
         "to_target": {"step": 1000, "seconds": 60.0}, "timings": {"train": 0.01}},
        _run("original qmodel", 15.0, 0.04, 0.06, 0.3),
        _run("ours qmodel", 10.0, 0.02, 0.05, 0.1),
        _run("original regular", None, 0.03, 0.05, 0.3),
        _run("ours regular", 20.0, 0.03, 0.04, 0.2),
    ]
    rows = bench.speedups(runs)
    assert [row["optimizer"] for row in rows] == ["qmodel", "regular"]
    assert rows[0]["seconds_to_target"] == pytest.approx(1.5)
    assert rows[0]["train"] == pytest.approx(2.0)
    assert rows[0]["train_and_cov"] == pytest.approx(1.2)
    assert rows[0]["inv"] == pytest.approx(3.0)
    assert rows[1]["seconds_to_target"] is None
    assert rows[1]["inv"] == pytest.approx(1.5)
    text = bench.format_report({"target": 227.0, "runs": runs, "speedups": rows})
    assert "| ours qmodel | 50 | 10.0 | 200.00 | 20.0 | 50.0 | 100.0 |" in text
    assert "| sgd | 1000 | 60.0 | 227.00 | 10.0 | — | — |" in text
    assert "| qmodel | 2.00 | 1.20 | 3.00 | 1.50 |" in text
    assert "| regular | 1.00 | 1.25 | 1.50 | — |" in text
    assert "traced step" not in text
    runs[1]["profile"] = {"wall_seconds": 0.1, "op_seconds": 0.2,
                          "matmul_op_seconds": 0.15, "multiply_adds": 2e10,
                          "uncounted_products": 0}
    text = bench.format_report({"target": 227.0, "runs": runs, "speedups": rows})
    assert "| original qmodel | 100.0 | 200.0 | 75% | 20.00 | 400 |" in text
