"""`InverseProvidingFactor`: a dense factor that keeps damped matrix powers.

Each registered `(exp, damping)` pair gets a variable holding `(C + d·I)^exp`,
refreshed by inverse-update ops (Martens & Grosse 2015, §4.2/§6.3).
"""

from typing import List

import tensorflow.compat.v1 as tf

from kfac.ops._factors import base
from kfac.ops._factors import naming
from kfac.ops._factors import second_moments
from kfac.ops._factors import statistics
from kfac.ops._factors.scalars import cast_scalar
from kfac.ops._utils import linalg
from kfac.ops._utils import non_finite
from kfac.ops._utils import sparse


def _as_damping_func(damping):
    """`damping` if it is a damping function, else one returning it, id `(damping,)`."""
    if callable(damping) and hasattr(damping, "func_id"):
        return damping

    def damping_func():
        return damping

    damping_func.func_id = (naming.to_python_scalar(damping),)
    return damping_func


class InverseProvidingFactor(base.FisherFactor):
    """A dense `[n, n]` factor that keeps variables for `(C + d·I)^e`.

    Each registered `(exp, damping)` pair gets one variable, named
    `matpower_exp{E}_damp{D}`; an inverse-update round refreshes all of them
    from the current `self._cov`: by a (robust) Cholesky inverse while there
    are only a few inverses, otherwise from one eigendecomposition
    `C = V diag(λ) Vᵀ` as `V diag((λ + d)^e) Vᵀ`.

    `register_eigenbasis()` asks for the eigenvectors `V` themselves, kept in
    the variable `eigenbasis` (identity at first) and refreshed by the same
    inverse-update round (EKFAC, George et al. 2018, needs only `V`).
    """

    def __init__(self):
        self._matpower_by_exp_and_damping = {}  # {(exp, damping_id): variable}
        self._matpower_registrations = set()  # {(exp, damping_id)}
        self._registration_order = []  # the same pairs, for a stable op order
        self._eigendecomp = None  # cached (clipped eigenvalues, eigenvectors)
        self._damping_funcs_by_id = {}  # {damping_id: damping_func}
        self._eigenbasis_registered = False
        self._eigenbasis = None  # the `eigenbasis` variable, once made
        super(InverseProvidingFactor, self).__init__()

    def register_eigenbasis(self) -> None:
        """Requests the variable `eigenbasis`: the eigenvectors `V` of `C` (as
        columns), refreshed with the matrix powers by `make_inverse_update_ops`."""
        self._eigenbasis_registered = True

    @property
    def eigenbasis(self):
        """The `[n, n]` eigenvector variable (identity before the first inverse
        update; None unless registered and instantiated)."""
        return getattr(self, "_eigenbasis", None)

    @property
    def _has_eigenbasis(self) -> bool:
        return getattr(self, "_eigenbasis_registered", False)

    def _register_damping(self, damping_func) -> tuple:
        """Records `damping_func` under its id (the first one wins); returns the id."""
        damping_id = naming.graph_func_to_id(damping_func)
        if damping_id not in self._damping_funcs_by_id:
            self._damping_funcs_by_id[damping_id] = damping_func
        return damping_id

    def register_matpower(self, exp, damping_func) -> None:
        """Requests a variable for `(C + d·I)^exp` (`exp == 1` is done on the fly)."""
        exp = naming.to_python_scalar(exp)
        if exp == 1:
            return
        damping_id = self._register_damping(damping_func)
        if (exp, damping_id) not in self._matpower_registrations:
            self._matpower_registrations.add((exp, damping_id))
            self._registration_order.append((exp, damping_id))

    def register_inverse(self, damping_func) -> None:
        self.register_matpower(-1, damping_func)

    def register_damped_inverse(self, damping) -> None:
        """`register_inverse` under its name in earlier contrib releases.

        `damping` may be a damping function (with a `func_id`) or, as there,
        the damping value itself (a number or scalar Tensor, identified by
        itself); `get_damped_inverse(damping)` returns the variable.
        """
        self.register_inverse(_as_damping_func(damping))

    def get_damped_inverse(self, damping):
        """The inverse variable registered by `register_damped_inverse(damping)`."""
        return self.get_inverse(_as_damping_func(damping))

    def _make_damped_variable(self, prefix: str, damping_id, initializer, shape):
        """Variable `<prefix>_damp{D}` in this factor's scope, D from the damping id."""
        damping_string = naming.graph_func_to_string(
            self._damping_funcs_by_id[damping_id]
        )
        with tf.variable_scope(self._var_scope):
            return tf.get_variable(
                naming.legal_op_name("%s_damp%s" % (prefix, damping_string)),
                initializer=initializer,
                shape=shape,
                trainable=False,
                dtype=self._dtype,
            )

    def instantiate_inv_variables(self) -> None:
        """Creates one identity-initialised variable per registered `(exp, damping)`.

        With `register_eigenbasis`, also the identity-initialised `eigenbasis`.
        Nothing else is created in the factor's scope; no later call creates
        a variable (the inverse updates count skipped writes in the counter
        `instantiate_cov_variables` made, or not at all without one).
        """
        for exp, damping_id in self._registration_order:
            if (exp, damping_id) in self._matpower_by_exp_and_damping:
                raise AssertionError(
                    "instantiate_inv_variables: %s already made its variables."
                    % self.name
                )
            exp_string = naming.scalar_or_tensor_to_string(exp)
            self._matpower_by_exp_and_damping[(exp, damping_id)] = (
                self._make_damped_variable(
                    "matpower_exp%s" % exp_string,
                    damping_id,
                    statistics.inverse_initializer,
                    self._cov_shape,
                )
            )
        if self._has_eigenbasis:
            if self.eigenbasis is not None:
                raise AssertionError(
                    "instantiate_inv_variables: %s already made its eigenbasis."
                    % self.name
                )
            with tf.variable_scope(self._var_scope):
                self._eigenbasis = tf.get_variable(
                    "eigenbasis",
                    initializer=statistics.inverse_initializer,
                    shape=self._cov_shape,
                    trainable=False,
                    dtype=self._dtype,
                )

    def _damping_values(self) -> dict:
        """Each registered damping function evaluated once, cast to the dtype."""
        return {
            damping_id: cast_scalar(func(), self._dtype)
            for damping_id, func in self._damping_funcs_by_id.items()
        }

    def _assign_if_finite(self, variable, value, cov_is_finite) -> tf.Operation:
        """`variable ← value`, unless `value` (or the covariance it was computed
        from) has a NaN/Inf: then `variable` keeps its value and the skip is
        counted in `num_skipped_updates`."""
        is_finite = tf.logical_and(cov_is_finite, non_finite.all_finite(value))
        count = self._count_skipped_updates(tf.logical_not(is_finite))
        # One op (the assignment itself), which also updates the counter.
        with tf.control_dependencies([count]):
            return variable.assign(
                tf.where(is_finite, value, variable), read_value=False
            )

    def _matpower_update_ops(self, damping_values: dict) -> List[tf.Operation]:
        """Assign ops for all matrix-power variables (see `make_inverse_update_ops`)."""
        matpowers = self._matpower_by_exp_and_damping
        num_inverses = sum(1 for exp, _ in matpowers if exp == -1)
        use_eig = (
            self._has_eigenbasis
            or bool(self._eigendecomp)
            or num_inverses < len(matpowers)
            or num_inverses >= self.config.eigenvalue_decomposition_threshold
        )
        cov = tf.convert_to_tensor(self._cov)
        cov_is_finite = non_finite.all_finite(cov)
        ops = []
        if use_eig:
            eigenvalues, eigenvectors = self.get_eigendecomp()
            for (exp, damping_id), matpower in matpowers.items():
                damping = damping_values[damping_id]
                if exp < 0:
                    # Floored, so that a singular cov with a tiny damping still
                    # gives finite powers (as the Cholesky path's fallback).
                    damped = linalg.floor_damped_eigenvalues(eigenvalues, damping)
                    # V diag(p) Vᵀ = (V√p)(V√p)ᵀ for p > 0: symmetric, so only
                    # the upper blocks are multiplied (second_moments).
                    value = second_moments.symmetric_outer_product(
                        eigenvectors * damped ** (exp / 2.0)
                    )
                else:
                    damped = eigenvalues + damping
                    value = tf.matmul(
                        eigenvectors * damped**exp, eigenvectors, transpose_b=True
                    )
                ops.append(self._assign_if_finite(matpower, value, cov_is_finite))
            if self.eigenbasis is not None:
                ops.append(
                    self._assign_if_finite(self.eigenbasis, eigenvectors, cov_is_finite)
                )
            # The assignments share one eigendecomposition: one op, one device.
            return [tf.group(*ops)]
        # A non-finite cov is never written by the guarded updates, but may come
        # from outside (a restored checkpoint, an assignment); its inverse is not
        # written, and zeros in its place keep the fallback eigh from failing.
        finite_cov = non_finite.replace_non_finite(cov)
        for (_, damping_id), matpower in matpowers.items():  # all exps are -1
            value = linalg.posdef_inv(
                finite_cov, damping_values[damping_id], self.config.posdef_inv_method
            )
            ops.append(self._assign_if_finite(matpower, value, cov_is_finite))
        return ops

    def make_inverse_update_ops(self) -> List[tf.Operation]:
        """Ops that refresh every matrix-power variable from the current `_cov`.

        Each damping function is evaluated once (so a damping `tf.Variable` is
        read when the op runs). The eigen path (one grouped op) is used when an
        eigendecomposition is already cached, when a power other than −1 is
        registered, or when there are at least
        `eigenvalue_decomposition_threshold` inverses (the factor's config);
        otherwise each inverse is `linalg.posdef_inv(cov, d, posdef_inv_method)`
        (by default a Cholesky inverse that falls back to a clipped
        eigendecomposition when not finite) and one op per inverse is returned.
        The cached eigendecomposition is cleared afterwards.

        Port improvements: negative powers on the eigen path use eigenvalues
        floored as in `linalg.floor_damped_eigenvalues` (finite for a singular
        cov and zero damping), and a power that still comes out non-finite (or
        a non-finite cov) leaves its variable unchanged, counted in
        `num_skipped_updates`.
        """
        ops = self._matpower_update_ops(self._damping_values())
        self._eigendecomp = None
        return ops

    def get_matpower(self, exp, damping_func):
        """The variable for `(C + d·I)^exp` (as fresh as the last inverse update).

        Raises:
          KeyError: the pair was not registered and instantiated.
        """
        exp = naming.to_python_scalar(exp)
        damping_id = naming.graph_func_to_id(damping_func)
        return self._matpower_by_exp_and_damping[(exp, damping_id)]

    def get_inverse(self, damping_func):
        return self.get_matpower(-1, damping_func)

    def get_eigendecomp(self):
        """Cached `(max(λ, EIGENVALUE_CLIPPING_THRESHOLD), V)` of `eigh(self._cov)`.

        `cov` is PSD by construction; clipping removes slightly negative
        eigenvalues caused by rounding.
        """
        if not self._eigendecomp:
            # eigh fails on a NaN/Inf input; a non-finite cov (which guarded
            # updates never write) gets zeros instead, and the writes of
            # anything derived from it are skipped by the callers.
            finite_cov = non_finite.replace_non_finite(self._cov)
            eigenvalues, eigenvectors = tf.linalg.eigh(finite_cov)
            clipped = tf.maximum(
                eigenvalues,
                cast_scalar(
                    self.config.eigenvalue_clipping_threshold, eigenvalues.dtype
                ),
            )
            self._eigendecomp = (clipped, eigenvectors)
        return self._eigendecomp

    def get_cov(self):
        return self._cov

    def _check_matrix(self, x, method: str) -> None:
        if x.shape.ndims != 2:
            raise ValueError(
                "%s: InverseProvidingFactors apply to matrix-shaped vectors; "
                "x must have rank 2, got shape %s." % (method, x.shape)
            )

    def left_multiply_matpower(self, x, exp, damping_func):
        """`(C + d·I)^exp · x` for a rank-2 Tensor `x`.

        Raises:
          ValueError: `x` is an `IndexedSlices` or not of rank 2.
        """
        if isinstance(x, tf.IndexedSlices):
            raise ValueError(
                "left_multiply_matpower: x must be a dense rank-2 Tensor, got "
                "IndexedSlices (left-multiplication is not supported for them)."
            )
        self._check_matrix(x, "left_multiply_matpower")
        if exp == 1:
            damping = cast_scalar(damping_func(), x.dtype)
            return tf.matmul(self._cov, x) + damping * x
        return tf.matmul(self.get_matpower(exp, damping_func), x)

    def right_multiply_matpower(self, x, exp, damping_func):
        """`x · (C + d·I)^exp` for a rank-2 Tensor or an `IndexedSlices` matrix.

        Raises:
          ValueError: a dense `x` not of rank 2.
        """
        if isinstance(x, tf.IndexedSlices):
            if exp == 1:
                cov = tf.convert_to_tensor(self._cov)
                damping = cast_scalar(damping_func(), cov.dtype)
                size = statistics.static_size(cov.shape, 0)
                damped_cov = cov + damping * tf.eye(size, dtype=cov.dtype)
                return sparse.matmul_sparse_dense(x, damped_cov)
            return sparse.matmul_sparse_dense(x, self.get_matpower(exp, damping_func))
        self._check_matrix(x, "right_multiply_matpower")
        if exp == 1:
            damping = cast_scalar(damping_func(), x.dtype)
            return tf.matmul(x, self._cov) + damping * x
        return tf.matmul(x, self.get_matpower(exp, damping_func))
