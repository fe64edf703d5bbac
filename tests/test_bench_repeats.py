"""bench/repeats.py: test accuracy of the same runs over repeated records."""

import json
import statistics

import pytest

from bench import repeats


def _record(seed, accuracies):
    """A `bench.convnet` record: `accuracies` is `{run name: {budget: acc}}`."""
    return {"settings": {"seed": seed, "budgets": [60.0, 180.0]},
            "runs": [{"name": name,
                      "budgets": [{"budget": budget, "test_accuracy": accuracy,
                                   "test_loss": 0.3}
                                  for budget, accuracy in at.items()]}
                     for name, at in accuracies.items()]}


RECORDS = [
    _record(0, {"sgd": {60.0: 0.90, 180.0: 0.92}, "adam": {60.0: 0.91, 180.0: 0.93},
                "kfac": {60.0: 0.89, 180.0: 0.94}, "kfac damping=1": {60.0: 0.80}}),
    _record(1, {"sgd": {60.0: 0.905, 180.0: 0.925}, "adam": {60.0: 0.90, 180.0: 0.92},
                "kfac": {60.0: 0.91, 180.0: 0.90}}),
    _record(2, {"kfac": {60.0: 0.92}, "sgd": {60.0: 0.90, 180.0: 0.93},
                "adam": {60.0: 0.915, 180.0: 0.91}}),
]


def _rows(table):
    """`{run name: its cells}` of a markdown table's body."""
    lines = table.strip().splitlines()[2:]
    cells = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines]
    return {row[0]: row[1:] for row in cells}


def test_budget_table_gives_each_seed_the_mean_the_sd_and_the_wins():
    table = repeats.budget_table(RECORDS, 60.0)
    assert table.splitlines()[0] == (
        "| test accuracy at 60 s | seed 0 | seed 1 | seed 2 | mean | sd | best in |")
    rows = _rows(table)
    # Only the runs every record has, in the first record's order.
    assert list(rows) == ["sgd", "adam", "kfac"]
    for name, values, wins in (("sgd", (0.90, 0.905, 0.90), 0),
                               ("adam", (0.91, 0.90, 0.915), 1),
                               ("kfac", (0.89, 0.91, 0.92), 2)):
        cells = rows[name]
        assert [float(cell) for cell in cells[:3]] == pytest.approx(values, abs=5e-5)
        assert float(cells[3]) == pytest.approx(statistics.mean(values), abs=5e-5)
        assert float(cells[4]) == pytest.approx(statistics.stdev(values), abs=5e-5)
        assert cells[5] == "{} of 3".format(wins)


def test_a_run_missing_a_budget_in_one_record_is_left_out_of_that_budget():
    rows = _rows(repeats.budget_table(RECORDS, 180.0))
    assert list(rows) == ["sgd", "adam"]
    assert [cell for cell in rows["sgd"][5:]] == ["2 of 3"]
    assert repeats.budget_table(RECORDS, 30.0) == ""


def test_report_reads_files_and_needs_two_records(tmp_path, capsys):
    paths = []
    for index, record in enumerate(RECORDS):
        path = tmp_path / "record{}.json".format(index)
        path.write_text(json.dumps(record))
        paths.append(str(path))
    repeats.main(paths)
    printed = capsys.readouterr().out
    heading, command, body = printed.split("\n\n", 2)
    assert heading == "# Test accuracy over repeated runs"
    assert command == "`python -m bench.repeats {}`".format(" ".join(paths))
    assert body.strip() == repeats.report(RECORDS).strip()
    assert "test accuracy at 60 s" in printed and "test accuracy at 180 s" in printed
    with pytest.raises(ValueError, match="at least 2 records"):
        repeats.report(RECORDS[:1])
