"""Runs of the convnet benchmark's program shared by its test files."""

import os
import sys

from absl import flags

# `bench` is a top-level folder of the repository, not an installed package.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import convnet as bench  # noqa: E402


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
