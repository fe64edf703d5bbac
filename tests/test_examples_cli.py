"""Tests for kfac/examples/_cli.py: flag tables and the shared `main` plumbing."""

import collections

import pytest
from absl import flags

from kfac.examples import _cli
from kfac.examples import mnist

TABLE = (
    _cli.DATA_DIR_FLAG,
    ("integer", "num_steps", 7, "Steps."),
    ("float", "learning_rate", None, "Learning rate."),
    ("bool", "use_fake_data", False, "Fake data."),
    ("enum", "optimizer", "kfac", "Optimizer.", ("kfac", "adam")),
)


def _parse(argv, table=TABLE):
    flag_values = flags.FlagValues()
    _cli.define_flags(table, flag_values)
    flag_values(["program"] + argv)
    return flag_values


def test_flag_table_defaults_and_parsed_values():
    assert _cli.flag_kwargs(TABLE, _parse([])) == {
        "data_dir": mnist.DEFAULT_DATA_DIR,
        "num_steps": 7,
        "learning_rate": None,
        "use_fake_data": False,
        "optimizer": "kfac",
    }
    parsed = _parse(
        [
            "--data_dir=/d",
            "--num_steps=3",
            "--learning_rate=0.5",
            "--use_fake_data",
            "--optimizer=adam",
        ]
    )
    assert _cli.flag_kwargs(TABLE, parsed) == {
        "data_dir": "/d",
        "num_steps": 3,
        "learning_rate": 0.5,
        "use_fake_data": True,
        "optimizer": "adam",
    }


def test_enum_flag_rejects_other_values():
    with pytest.raises(flags.IllegalFlagValueError, match=r"one of <kfac\|adam>"):
        _parse(["--optimizer=sgd"])


def test_defined_names_are_skipped():
    flag_values = flags.FlagValues()
    flags.DEFINE_integer("num_steps", 1, "Defined first.", flag_values=flag_values)
    flags.DEFINE_string("optimizer", "sgd", "Defined first.", flag_values=flag_values)
    _cli.define_flags(TABLE, flag_values)
    flag_values(["program"])
    assert flag_values.num_steps == 1 and flag_values.optimizer == "sgd"
    assert flag_values.data_dir == mnist.DEFAULT_DATA_DIR


def test_train_and_report_passes_every_flag_and_prints_the_result(capsys):
    Result = collections.namedtuple("Result", ["test_accuracy", "test_loss"])
    calls = []

    def train(**kwargs):
        calls.append(kwargs)
        return Result(0.875, 0.25)

    result = _cli.train_and_report(train, TABLE, _parse(["--num_steps=2"]))
    assert result == Result(0.875, 0.25)
    assert calls == [_cli.flag_kwargs(TABLE, _parse(["--num_steps=2"]))]
    assert calls[0]["num_steps"] == 2
    assert capsys.readouterr().out == "test accuracy: 0.8750  test loss: 0.2500\n"


def test_entry_points_define_the_table_and_train_with_it(capsys):
    Result = collections.namedtuple("Result", ["test_accuracy", "test_loss"])
    calls = []

    def train(**kwargs):
        calls.append(kwargs)
        return Result(0.5, 1.5)

    define_flags, main = _cli.entry_points(train, TABLE)
    flag_values = flags.FlagValues()
    define_flags(flag_values)
    flag_values(["program", "--optimizer=adam"])
    assert main(["program"], flag_values) == Result(0.5, 1.5)
    assert calls == [_cli.flag_kwargs(TABLE, flag_values)]
    assert calls[0]["optimizer"] == "adam"
    assert "test accuracy: 0.5000  test loss: 1.5000" in capsys.readouterr().out
    assert "--data_dir" in define_flags.__doc__ and "train" in main.__doc__
