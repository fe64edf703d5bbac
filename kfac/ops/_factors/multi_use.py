"""Kronecker factor of a fully connected layer used several times per example.

For weights shared across `T = num_uses` uses (e.g. the time steps of an RNN),
the rows of each tensor are `T·B`, use-major (a reshape of `[T, B, n]`).
The statistics are averaged over uses and batch. For the temporally
correlated "series" approximations (Martens, Ba & Johnson 2018, "Kronecker-
factored curvature approximations for recurrent neural networks", §3.4-3.5),
the factor also keeps the lag-1 cross moment `C₁ = E[ã_{t+1} ã_tᵀ]` and the
per-damping quantities of option 1 (`Lmat`, `psi`) and option 2 (`Pmat`,
`Kmat`, `mu`) derived from `C₀ = cov` and `C₁`.
"""

import tensorflow.compat.v1 as tf

from kfac.ops._factors import fully_connected
from kfac.ops._factors import naming
from kfac.ops._factors import positions
from kfac.ops._factors import statistics
from kfac.ops._utils import linalg
from kfac.ops._utils import non_finite


class FullyConnectedMultiKF(fully_connected.FullyConnectedKroneckerFactor):
    """`E[ã ãᵀ]` over all uses and examples, plus the series quantities.

    Args:
      tensors: per source, per tower, a `[num_uses·B, n]` Tensor (use-major rows).
      num_uses: number of uses `T` (needed for `cov_dt1`).
      has_bias: append a homogeneous coordinate (input factor with bias).
      position_statistics: (port addition) weighted or masked rows
        (`positions.PositionStatistics`, "use_major" layout); the lag-1
        moment then pairs the scaled rows, so a padded step pairs with nothing.
    """

    def __init__(
        self, tensors, num_uses=None, has_bias=False, position_statistics=None
    ):
        self._num_uses = naming.to_python_scalar(num_uses)
        self._cov_dt1 = None
        self._make_cov_dt1 = False
        self._option1quants_by_damping = {}  # {damping_id: (Lmat, psi)}
        self._option2quants_by_damping = {}  # {damping_id: (Pmat, Kmat, mu)}
        self._option1quants_registrations = set()  # {damping_id}
        self._option2quants_registrations = set()  # {damping_id}
        super(FullyConnectedMultiKF, self).__init__(
            tensors=tensors,
            has_bias=has_bias,
            position_statistics=position_statistics,
        )

    @property
    def _num_timesteps(self):
        return self._num_uses

    @property
    def _var_scope(self):
        return (
            "ff_fc_multi_"
            + naming.scope_string_from_params(
                tuple(statistics.flatten(self._tensors))
                + (self._num_timesteps, self._has_bias)
            )
            + positions.scope_suffix(self._position_statistics)
        )

    @property
    def _vec_shape(self):
        return [self._cov_shape[0]]

    # Lag-1 cross moment -----------------------------------------------------

    def register_cov_dt1(self) -> None:
        """Requests the lag-1 cross-moment variable `cov_dt1`.

        Raises:
          ValueError: `num_uses` is unknown (needed to split the rows by use).
        """
        if self._num_uses is None:
            raise ValueError(
                "FullyConnectedMultiKF.register_cov_dt1: num_uses must be given "
                "to compute the lag-1 cross moment, got None."
            )
        self._make_cov_dt1 = True

    def get_cov_dt1(self):
        if self._cov_dt1 is None:
            raise AssertionError(
                "get_cov_dt1: %s has no cov_dt1 variable (register_cov_dt1, then "
                "instantiate_cov_variables)." % self.name
            )
        return self._cov_dt1

    def instantiate_cov_variables(self) -> None:
        """Creates `cov` and, when requested, `cov_dt1` (zeros)."""
        super(FullyConnectedMultiKF, self).instantiate_cov_variables()
        if self._cov_dt1 is not None:
            raise AssertionError(
                "instantiate_cov_variables: %s already has cov_dt1." % self.name
            )
        if self._make_cov_dt1:
            with tf.variable_scope(self._var_scope):
                self._cov_dt1 = tf.get_variable(
                    "cov_dt1",
                    initializer=tf.zeros_initializer(),
                    shape=self._cov_shape,
                    trainable=False,
                    dtype=self._dtype,
                )
            if self.config.zero_debias:
                self._debias_variables_for(self._cov_dt1)

    def _compute_new_cov_dt1(self, source, tower):
        """`Ĉ₁ = futureᵀ present / (num_uses·B)`, `present = ã[:-B]`, `future = ã[B:]`.

        Dividing by all `num_uses·B` rows (not the `(num_uses−1)·B` products)
        equals zero-padding the sequence, which keeps the block PSD (Martens,
        Ba & Johnson 2018, appendix B.2).
        """
        rows, normalizer = self._rows(source, tower)
        total_rows = tf.shape(rows)[0]
        batch_size = total_rows // self._num_uses
        present = rows[: total_rows - batch_size]
        future = rows[batch_size:]
        return statistics.compute_cov(
            future,
            tensor_right=present,
            normalizer=total_rows if normalizer is None else normalizer,
        )

    def make_covariance_update_op(self, ema_decay, non_finite_policy="skip"):
        """The parent's cov update, grouped with the EMA of `cov_dt1` if it exists
        (each guarded against non-finite estimates by `non_finite_policy`)."""
        cov_update = super(FullyConnectedMultiKF, self).make_covariance_update_op(
            ema_decay, non_finite_policy=non_finite_policy
        )
        if self._cov_dt1 is None:
            return cov_update
        new_cov_dt1 = self._sum_sources_mean_towers(self._compute_new_cov_dt1)
        cov_dt1_update = self._moving_average_if_finite(
            self._cov_dt1, new_cov_dt1, ema_decay, non_finite_policy
        )
        # cov and cov_dt1 must stay consistent for the inverse ops: one op.
        return tf.group(cov_update, cov_dt1_update)

    # Series quantities --------------------------------------------------------

    def register_option1quants(self, damping_func) -> None:
        self._option1quants_registrations.add(self._register_damping(damping_func))

    def register_option2quants(self, damping_func) -> None:
        self._option2quants_registrations.add(self._register_damping(damping_func))

    def get_option1quants(self, damping_func):
        """`(Lmat, psi)` for this damping (KeyError if not registered)."""
        return self._option1quants_by_damping[naming.graph_func_to_id(damping_func)]

    def get_option2quants(self, damping_func):
        """`(Pmat, Kmat, mu)` for this damping (KeyError if not registered)."""
        return self._option2quants_by_damping[naming.graph_func_to_id(damping_func)]

    def _ordered(self, registrations):
        # Damping ids in registration order, for a stable variable/op order.
        return [
            damping_id
            for damping_id in self._damping_funcs_by_id
            if damping_id in registrations
        ]

    def instantiate_inv_variables(self) -> None:
        """Parent variables, then `Lmat_damp{D}`/`psi_damp{D}` (option 1) and
        `Pmat_damp{D}`/`Kmat_damp{D}`/`mu_damp{D}` (option 2).

        Port fix: the original named `Pmat` `"Lmat_damp{D}"`, which collides
        when both options are registered with one damping.
        """
        super(FullyConnectedMultiKF, self).instantiate_inv_variables()
        identity, ones = statistics.inverse_initializer, tf.ones_initializer()
        for damping_id in self._ordered(self._option1quants_registrations):
            self._option1quants_by_damping[damping_id] = (
                self._make_damped_variable(
                    "Lmat", damping_id, identity, self._cov_shape
                ),
                self._make_damped_variable("psi", damping_id, ones, self._vec_shape),
            )
        for damping_id in self._ordered(self._option2quants_registrations):
            self._option2quants_by_damping[damping_id] = (
                self._make_damped_variable(
                    "Pmat", damping_id, identity, self._cov_shape
                ),
                self._make_damped_variable(
                    "Kmat", damping_id, identity, self._cov_shape
                ),
                self._make_damped_variable("mu", damping_id, ones, self._vec_shape),
            )

    def _series_update_ops(self, damping_values):
        """Assign ops of the option-1/option-2 quantities.

        With `(λ, V)` the eigendecomposition of `C₀` and, per damping `d`,
        `S = (C₀ + d·I)^{-1/2} = V diag((λ+d)^{-1/2}) Vᵀ` (symmetrised):
        * option 1: `Ψ = S ((C₁ + C₁ᵀ)/2) S = U diag(ψ) Uᵀ` (`linalg.posdef_eig`),
          `Lmat = S U`, `psi = ψ`;
        * option 2: `Ψ = S C₁ S`, SVD `Ψ = Uₛ diag(σ) Eᵀ`, `mu = min(σ², 1)`
          (≤ 1 in exact arithmetic), `Pmat = (S C₁)ᵀ S = C₁ᵀ (C₀ + d·I)⁻¹`,
          `Kmat = S E`.
        Option 1's symmetrisation of `C₁` does not leak into option 2 (it did
        in the original when both were registered). The damped eigenvalues are
        floored (`linalg.floor_damped_eigenvalues`), and a quantity that is not
        finite (or comes from a non-finite `C₀`/`C₁`) is not written.
        """
        raw_cov_dt1 = tf.convert_to_tensor(self.get_cov_dt1())
        inputs_are_finite = non_finite.all_finite([self._cov, raw_cov_dt1])
        # Zeros for NaN/Inf keep eigh/svd from failing; nothing derived from a
        # non-finite input is written (`_assign_if_finite`).
        cov_dt1 = non_finite.replace_non_finite(raw_cov_dt1)
        eigenvalues, eigenvectors = self.get_eigendecomp()
        ops = []

        def assign(variable, value):
            ops.append(self._assign_if_finite(variable, value, inputs_are_finite))

        def inverse_sqrt(damping):
            damped = linalg.floor_damped_eigenvalues(eigenvalues, damping)
            inv_sqrt = tf.matmul(
                eigenvectors * damped**-0.5, eigenvectors, transpose_b=True
            )
            return (inv_sqrt + tf.transpose(inv_sqrt)) / 2.0

        for damping_id, (lmat, psi) in self._option1quants_by_damping.items():
            inv_sqrt = inverse_sqrt(damping_values[damping_id])
            symmetric_dt1 = (cov_dt1 + tf.transpose(cov_dt1)) / 2.0
            psi_hat = tf.matmul(tf.matmul(inv_sqrt, symmetric_dt1), inv_sqrt)
            psi_value, eigvecs = linalg.posdef_eig(
                psi_hat, self.config.posdef_eig_method
            )
            assign(lmat, tf.matmul(inv_sqrt, eigvecs))
            assign(psi, psi_value)

        for damping_id, (pmat, kmat, mu) in self._option2quants_by_damping.items():
            inv_sqrt = inverse_sqrt(damping_values[damping_id])
            inv_sqrt_dt1 = tf.matmul(inv_sqrt, cov_dt1)
            psi_hat = tf.matmul(inv_sqrt_dt1, inv_sqrt)
            # mu are the eigenvalues of Ψᵀ Ψ: square the singular values of Ψ.
            singular_values, _, right_vectors = tf.linalg.svd(psi_hat)
            assign(pmat, tf.matmul(inv_sqrt_dt1, inv_sqrt, transpose_a=True))
            assign(kmat, tf.matmul(inv_sqrt, right_vectors))
            assign(mu, tf.minimum(tf.square(singular_values), 1.0))
        return ops

    def make_inverse_update_ops(self):
        """One grouped op: the series quantities (if any), then the matrix powers
        (eigen path whenever the series quantities cached a decomposition)."""
        damping_values = self._damping_values()
        ops = []
        if self._option1quants_by_damping or self._option2quants_by_damping:
            ops.extend(self._series_update_ops(damping_values))
        ops.extend(self._matpower_update_ops(damping_values))
        self._eigendecomp = None
        return [tf.group(*ops)]
