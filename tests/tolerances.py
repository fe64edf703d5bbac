"""Comparisons whose tolerance scales with the size of the values compared.

An element-wise relative tolerance fails on the small entries of a vector
whose large entries dominate its rounding (or finite-difference) error: an
entry of 8e-5 beside entries of 1 carries an absolute error of about
`eps · 1`, not `eps · 8e-5`. `assert_close` therefore allows every entry an
absolute error of `rtol` times the largest magnitude of `expected`, which is
the accuracy a float32 (or finite-difference) computation of the whole
vector actually has, whatever the CPU and BLAS.
"""

import numpy as np


def assert_close(actual, expected, rtol: float) -> None:
    """`|actual − expected| ≤ rtol·(|expected| + max|expected|)` entry-wise."""
    expected = np.asarray(expected, dtype=np.float64)
    scale = float(np.max(np.abs(expected))) if expected.size else 0.0
    np.testing.assert_allclose(
        np.asarray(actual, dtype=np.float64), expected, rtol=rtol, atol=rtol * scale
    )
