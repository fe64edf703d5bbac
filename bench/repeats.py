"""Test accuracy of the same runs over repeated comparisons: one table per
budget with each record's accuracy per run, their mean and standard
deviation, and in how many records each run had the best accuracy.

  python -m bench.repeats docs/benchmark/convnet_regularized_b256.json \\
      docs/benchmark/convnet_best_wd_b256_seed1.json ...

The records are `bench.convnet` JSON files of runs repeated with other
`--seed`s (initial weights, batch order, evaluation subset); a run is
compared when every record has it (by name) with a test accuracy at the
budget.
"""

import json
import sys
from typing import Dict
from typing import List
from typing import Sequence

import numpy as np


def accuracies_at(record: Dict) -> Dict[str, Dict[float, float]]:
    """`{run name: {budget: test accuracy}}` of a record's runs."""
    return {run["name"]: {entry["budget"]: entry["test_accuracy"]
                          for entry in run.get("budgets", ())}
            for run in record["runs"]}


def shared_runs(tables: Sequence[Dict[str, Dict[float, float]]],
                budget: float) -> List[str]:
    """The names of the runs with a test accuracy at `budget` in every
    record's `accuracies_at` table, in the first table's order."""
    return [name for name in tables[0]
            if all(budget in table.get(name, {}) for table in tables)]


def budget_table(records: Sequence[Dict], budget: float) -> str:
    """The markdown table of one budget (see the module's docstring); ""
    when no run is shared."""
    tables = [accuracies_at(record) for record in records]
    names = shared_runs(tables, budget)
    if not names:
        return ""
    values = np.array([[table[name][budget] for table in tables] for name in names])
    best = values == values.max(axis=0, keepdims=True)
    seeds = ["seed {}".format(record["settings"]["seed"]) for record in records]
    header = ["test accuracy at {:g} s".format(budget)] + seeds + [
        "mean", "sd", "best in"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row, wins in zip(names, values, best):
        cells = [name] + ["{:.4f}".format(value) for value in row] + [
            "{:.4f}".format(row.mean()), "{:.4f}".format(row.std(ddof=1)),
            "{} of {}".format(wins.sum(), len(row))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def report(records: Sequence[Dict]) -> str:
    """One `budget_table` per budget of the first record, blank-line apart."""
    if len(records) < 2:
        raise ValueError(
            "repeats need at least 2 records, got {}.".format(len(records)))
    budgets = records[0]["settings"]["budgets"]
    return "\n".join(table for table in (budget_table(records, budget)
                                         for budget in budgets) if table)


def main(paths: Sequence[str]) -> None:
    records = []
    for path in paths:
        with open(path) as handle:
            records.append(json.load(handle))
    print("# Test accuracy over repeated runs\n\n`python -m bench.repeats {}`\n\n{}"
          .format(" ".join(paths), report(records)))


if __name__ == "__main__":
    main(sys.argv[1:])
