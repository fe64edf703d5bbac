"""Runs of the convnet benchmark's program shared by its test files."""

import os
import sys

from absl import flags

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import convnet as bench  # noqa: E402
from bench import convnet_specs  # noqa: E402


def smoke_run(tmp_path, *mode_flags):
    """`(output_dir, record)` of `run_from_flags` with `mode_flags` on 40
    generated evaluation images, batch 8, 2 steps per run."""
    output_dir = str(tmp_path / "bench")
    flag_values = flags.FlagValues()
    bench.define_flags(flag_values)
    flag_values(["convnet", "--use_fake_data", *mode_flags, "--eval_size=40",
                 "--batch_size=8", "--max_steps=2", "--eval_every=1",
                 "--output_dir=" + output_dir])
    return output_dir, bench.run_from_flags(flag_values)


def best_mode_specs(mode, architecture):
    """The specs of `mode`, one of `convnet_specs.BEST_MODES`, on
    `architecture`, after checking that the comparison is named
    `<architecture>_<mode>` and reported against the best SGD and Adam runs."""
    name, specs, _, references = convnet_specs.comparison_specs(mode, architecture)
    assert name == architecture + "_" + mode and references == ("sgd", "adam")
    return specs
