"""The README's usage snippet runs as written and reduces the loss."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _readme_snippet():
    with open(os.path.join(ROOT, "README.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)
    assert blocks, "README.md has no python code block"
    return blocks[0]


def _run(code):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.parametrize("disable_v2", [False, True], ids=["tf2", "disable_v2"])
def test_readme_snippet_reduces_the_loss(disable_v2):
    code = _readme_snippet()
    if disable_v2:
        code = (
            "import tensorflow.compat.v1 as _tf\n_tf.disable_v2_behavior()\n"
        ) + code
    output = _run(code)
    first = float(re.search(r"step 0 loss ([\d.eE+-]+)", output).group(1))
    final = float(re.search(r"final loss ([\d.eE+-]+)", output).group(1))
    assert final < 0.5 * first, output


def test_quickstart_demo_reduces_the_loss():
    from kfac.examples import quickstart

    losses = quickstart.main(num_steps=20, print_every=0)
    assert losses[-1] < 0.5 * losses[0]
