"""`DiagonalFactor`: one covariance entry per parameter, powers on demand."""

import tensorflow.compat.v1 as tf

from kfac.ops._factors import base
from kfac.ops._factors import statistics
from kfac.ops._factors.scalars import cast_scalar
from kfac.ops._utils import linalg
from kfac.ops._utils import sparse


class DiagonalFactor(base.FisherFactor):
    """A factor whose cov variable holds exactly one entry per parameter.

    Powers `(cov + d)^exp` are element-wise and computed on demand, so there
    are no inverse variables or inverse-update ops.
    """

    def __init__(self):
        self._damping_funcs_by_id = {}  # {damping_id: damping_func}
        super(DiagonalFactor, self).__init__()

    @property
    def _cov_initializer(self):
        return statistics.diagonal_covariance_initializer

    def make_inverse_update_ops(self) -> list:
        return []

    def instantiate_inv_variables(self) -> None:
        pass

    def register_matpower(self, exp, damping_func) -> None:
        pass

    def get_cov(self):
        """Dense `diag(reshape(cov, [-1]))`."""
        return tf.linalg.diag(tf.reshape(self._cov, [-1]))

    def left_multiply_matpower(self, x, exp, damping_func):
        """`P ∘ x` with `P = (cov + d)^exp` element-wise (for `exp < 0` the
        entries `cov + d` are floored as by `linalg.floor_damped_eigenvalues`).

        `x` may be an `IndexedSlices` matrix (rows of a `[n, m]` matrix, `P`
        flattened to its diagonal), a dense Tensor of exactly `P`'s shape, or
        (port extension, for embedding blocks) a `[n, m]` Tensor when `P` has
        shape `[n]`: the diagonal is broadcast over the columns.

        Raises:
          ValueError: a dense `x` of another shape.
        """
        cov = tf.convert_to_tensor(self._cov)
        damping = cast_scalar(damping_func(), cov.dtype)
        if exp < 0:
            # Floored as the eigenvalues of dense factors: zero entries with zero
            # damping give large finite values, not Inf.
            matpower = linalg.floor_damped_eigenvalues(cov, damping) ** exp
        else:
            matpower = (cov + damping) ** exp
        if isinstance(x, tf.IndexedSlices):
            return sparse.matmul_diag_sparse(tf.reshape(matpower, [-1]), x)
        x_shape = x.shape.as_list() if x.shape.ndims is not None else None
        power_shape = matpower.shape.as_list()
        if x_shape == power_shape:
            return matpower * x
        if (
            x_shape is not None
            and len(power_shape) == 1
            and len(x_shape) == 2
            and x_shape[0] == power_shape[0]
        ):
            return matpower[:, None] * x
        raise ValueError(
            "left_multiply_matpower: x must have the shape of the diagonal "
            "factor %s, got %s." % (power_shape, x.shape)
        )

    def right_multiply_matpower(self, x, exp, damping_func):
        raise NotImplementedError(
            "DiagonalFactor: only left_multiply_matpower is supported."
        )
