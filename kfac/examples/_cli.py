"""Command-line plumbing shared by the examples: flag tables, `main`, `__main__`.

An example lists its flags in a table of `(type, name, default, help)` rows
(`type` as in absl's `DEFINE_<type>`), or `("enum", name, default, help,
choices)`; `define_flags` defines them and `flag_kwargs` reads them back as
keyword arguments named like the flags.
"""

from typing import Callable
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf
from absl import app
from absl import flags

from kfac.examples import comparison
from kfac.examples import mnist

DATA_DIR_FLAG = (
    "string",
    "data_dir",
    mnist.DEFAULT_DATA_DIR,
    "MNIST-format folder (default: Fashion-MNIST from `apt-get install %s`)."
    % mnist.DEBIAN_PACKAGE,
)
FAKE_DATA_FLAG = (
    "bool",
    "use_fake_data",
    False,
    "Train on random data instead of --data_dir.",
)
AUTO_REGISTER_FLAG = (
    "bool",
    "auto_register",
    True,
    "Register the layers with layer_collection.auto_register_layers() once the "
    "model is built (--noauto_register: the example's hand registrations).",
)
NUM_STEPS_FLAG = (
    "integer",
    "num_steps",
    None,
    "Stop after this many steps (default: all epochs).",
)


def define_flags(table: Sequence[Tuple], flag_values=flags.FLAGS) -> None:
    """Defines the flags of `table` in `flag_values`; names already defined are
    skipped (as `comparison.define_flags`, which also takes the rows but enums)."""
    comparison.define_flags([row for row in table if row[0] != "enum"], flag_values)
    for row in table:
        if row[0] == "enum" and row[1] not in flag_values:
            _, name, default, help_text, choices = row
            flags.DEFINE_enum(
                name, default, list(choices), help_text, flag_values=flag_values
            )


def flag_kwargs(table: Sequence[Tuple], flag_values=flags.FLAGS) -> dict:
    """`{name: value}` for every flag of `table`."""
    return {row[1]: flag_values[row[1]].value for row in table}


def train_and_report(train: Callable, table: Sequence[Tuple], flag_values):
    """`train(**flag_kwargs(table))`; prints the result's test accuracy and loss.

    Returns:
      What `train` returns (with `test_accuracy` and `test_loss` fields).
    """
    result = train(**flag_kwargs(table, flag_values))
    print(
        "test accuracy: %.4f  test loss: %.4f"
        % (result.test_accuracy, result.test_loss)
    )
    return result


def entry_points(train: Callable, table: Sequence[Tuple]):
    """`(define_flags, main)` of an example whose flags are `train`'s arguments.

    `define_flags(flag_values=flags.FLAGS)` defines the flags of `table`;
    `main(argv, flag_values=flags.FLAGS)` returns `train_and_report(train,
    table, flag_values)`, the signature `app.run` and the tests call.
    """

    def define(flag_values=flags.FLAGS) -> None:
        define_flags(table, flag_values)

    def main(argv, flag_values=flags.FLAGS):
        del argv  # Unused.
        return train_and_report(train, table, flag_values)

    define.__doc__ = "Defines the flags of `main`: %s." % ", ".join(
        "--" + row[1] for row in table
    )
    main.__doc__ = "Runs `%s` as the flags say; prints test accuracy and loss." % (
        train.__name__
    )
    return define, main


def flag_or_default(flag_values, name: str, defaults: dict, quick_defaults: dict):
    """The flag's value if given, else its `quick_defaults` value under
    `--quick` (where it has one), else its `defaults` value."""
    value = flag_values[name].value
    if value is not None:
        return value
    if flag_values.quick and name in quick_defaults:
        return quick_defaults[name]
    return defaults[name]


def record_main(run_from_flags: Callable):
    """`main(argv, flag_values=flags.FLAGS)` calling `run_from_flags(flag_values)`
    and returning None (the exit status `app.run` reports): the entry point of
    a comparison whose result is its printed report and written record."""

    def main(argv, flag_values=flags.FLAGS):
        del argv  # Unused.
        run_from_flags(flag_values)

    main.__doc__ = "`app.run` entry point: `%s` (returns None, the exit status)." % (
        run_from_flags.__name__
    )
    return main


def run(
    define: Callable[[], None], main: Callable, verbosity: int = tf.logging.INFO
) -> None:
    """What `python -m kfac.examples.<name>` does: logging at `verbosity`, the
    flags of `define()`, then `app.run(main)`."""
    tf.logging.set_verbosity(verbosity)
    define()
    app.run(main)
