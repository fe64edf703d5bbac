"""Shared maths of all factors and the three abstract factor families.

* helpers: initializers, `place_on_device`, `compute_cov`, `append_homog`;
* `assign_moving_average` (moving_average.py): the one EMA update;
* `FisherFactor`: one covariance-like variable `cov` and its EMA update
  (Martens & Grosse 2015, §5: statistics are averaged over mini-batches);
* `InverseProvidingFactor`: also keeps damped matrix powers `(C + d·I)^e` in
  variables, refreshed by inverse-update ops (Martens & Grosse 2015, §4.2/§6.3);
* `DiagonalFactor`: one entry per parameter, powers computed on demand.

Non-finite values never enter the factor variables: a covariance estimate with
a NaN/Inf is not folded into the moving average (`non_finite_policy`), and an
inverse/matrix power that comes out non-finite is not written. Each skipped
write is counted in the factor's int64 variable `num_skipped_updates`.
"""

import abc
import contextlib
from typing import Any
from typing import Callable
from typing import List
from typing import Optional

import tensorflow.compat.v1 as tf

from kfac.ops import utils
from kfac.ops._factors import config
from kfac.ops._factors import moving_average
from kfac.ops._factors import naming
from kfac.ops._factors import second_moments
from kfac.ops._factors.scalars import cast_scalar

# --------------------------------------------------------------------------
# Helpers


def _static_size(shape, index: int) -> int:
    return tf.compat.dimension_value(tf.TensorShape(shape)[index])


def inverse_initializer(shape, dtype, partition_info=None):
    """Identity of size `shape[0]` (initial value of matrix-power variables)."""
    del partition_info  # Unused; part of the variable-initializer signature.
    return tf.eye(_static_size(shape, 0), dtype=tf.as_dtype(dtype))


def covariance_initializer(shape, dtype, partition_info=None):
    """Identity of size `shape[0]`, or zeros if `INIT_COVARIANCES_AT_ZERO`."""
    del partition_info  # Unused; part of the variable-initializer signature.
    size = _static_size(shape, 0)
    if config.INIT_COVARIANCES_AT_ZERO:
        return tf.zeros([size, size], dtype=tf.as_dtype(dtype))
    return tf.eye(size, dtype=tf.as_dtype(dtype))


def diagonal_covariance_initializer(shape, dtype, partition_info):
    """Ones of `shape` (zeros if `INIT_COVARIANCES_AT_ZERO`)."""
    del partition_info  # Unused; part of the variable-initializer signature.
    shape = tf.TensorShape(shape).as_list()
    if config.INIT_COVARIANCES_AT_ZERO:
        return tf.zeros(shape, dtype=tf.as_dtype(dtype))
    return tf.ones(shape, dtype=tf.as_dtype(dtype))


@contextlib.contextmanager
def place_on_device(device: Optional[str]):
    """`tf.device(device)` when `device` is a non-empty string, else nothing."""
    if device:
        with tf.device(device):
            yield
    else:
        yield


def compute_cov(tensor, tensor_right=None, normalizer=None) -> tf.Tensor:
    """Second moment of the rows of a 2-D tensor.

    With `X = tensor` (`[n, k]`) and `N = normalizer` (default: the dynamic row
    count of `X`), returns the symmetrised `(XᵀX/N + (XᵀX/N)ᵀ)/2`; with
    `Y = tensor_right` (`[n, m]`), returns the cross moment `XᵀY/N` (not
    symmetrised). `N` is cast to the tensor dtype.
    """
    if tensor_right is None:
        # Blocked, upper triangle only; exactly symmetric (second_moments).
        return second_moments.symmetric_second_moment(tensor, normalizer)
    tensor = tf.convert_to_tensor(tensor)
    if normalizer is None:
        normalizer = tf.shape(tensor)[0]
    normalizer = tf.cast(normalizer, tensor.dtype)
    return tf.matmul(tensor, tensor_right, transpose_a=True) / normalizer


def append_homog(tensor) -> tf.Tensor:
    """Appends a column of ones on the last axis: `[..., k] → [..., k+1]`.

    The homogeneous coordinate turns a bias into one more input row of the
    weight matrix (Martens & Grosse 2015, §2.1).
    """
    tensor = tf.convert_to_tensor(tensor)
    ones_shape = tf.concat([tf.shape(tensor)[:-1], [1]], axis=0)
    return tf.concat([tensor, tf.ones(ones_shape, dtype=tensor.dtype)], axis=-1)


def _as_damping_func(damping):
    """`damping` if it is a damping function, else one returning it, id `(damping,)`."""
    if callable(damping) and hasattr(damping, "func_id"):
        return damping

    def damping_func():
        return damping

    damping_func.func_id = (naming.to_python_scalar(damping),)
    return damping_func


def flatten(nested) -> List[Any]:
    """Leaves of nested lists/tuples, in order (PartitionedTensors are leaves)."""
    if isinstance(nested, (tuple, list)):
        return [leaf for item in nested for leaf in flatten(item)]
    return [nested]


# --------------------------------------------------------------------------
# Abstract factors


class FisherFactor(abc.ABC):
    """A covariance-like statistic with a moving-average update op.

    Subclasses supply exactly the abstract members below; the original tests
    subclass with only these (some as plain methods), so none may be added.
    `_cov` holds the covariance variable (None until instantiated); tests may
    assign a Tensor to it, and every read goes through `self._cov`.
    """

    def __init__(self):
        self._cov = None
        self._num_skipped_updates = None

    @property
    @abc.abstractmethod
    def _var_scope(self):
        """Unique variable-scope string of this factor."""

    @property
    def name(self) -> str:
        return self._var_scope

    @property
    @abc.abstractmethod
    def _cov_shape(self):
        """Shape of the cov variable."""

    @property
    @abc.abstractmethod
    def _num_sources(self):
        """Number of independent gradient sources summed in each estimate."""

    @property
    @abc.abstractmethod
    def _num_towers(self):
        """Number of towers averaged in each estimate."""

    @property
    @abc.abstractmethod
    def _dtype(self):
        """dtype of the cov variable."""

    @property
    def _cov_initializer(self):
        return covariance_initializer

    def instantiate_cov_variables(self) -> None:
        """Creates the non-trainable variables `<scope>/<_var_scope>/cov` and
        `.../num_skipped_updates` (int64 counter of skipped non-finite writes)."""
        if self._cov is not None:
            raise AssertionError(
                "instantiate_cov_variables: %s already has a cov variable." % self.name
            )
        with tf.variable_scope(self._var_scope):
            self._cov = tf.get_variable(
                "cov",
                initializer=self._cov_initializer,
                shape=self._cov_shape,
                trainable=False,
                dtype=self._dtype,
            )
        self._skipped_updates_counter()
        if config.ZERO_DEBIAS:
            self._debias_variables_for(self._cov)

    def _debias_variables_for(self, variable):
        """`(biased, local_step)` of `variable`'s debiased average, made once.

        Made with the variable (`instantiate_cov_variables`), so that an
        initializer run after instantiation covers them, and shared by every
        update op built later (thunks may be called many times).
        """
        state = self.__dict__.setdefault("_zero_debias_state", {})
        if variable.name not in state:
            state[variable.name] = moving_average.zero_debias_variables(variable)
        return state[variable.name]

    @property
    def num_skipped_updates(self):
        """int64 variable: covariance updates and inverse writes skipped because
        their new value was not finite (None before the variables exist)."""
        return getattr(self, "_num_skipped_updates", None)

    def _skipped_updates_counter(self):
        """The `num_skipped_updates` variable, created next to `cov`.

        Created outside any control flow (`init_scope`), in the current variable
        scope (the one `cov` was created in), so update ops may be built inside
        `tf.cond` (e.g. `utils.batch_execute`).
        """
        counter = getattr(self, "_num_skipped_updates", None)
        if counter is None:
            with tf.init_scope(), tf.variable_scope(self._var_scope):
                counter = tf.get_variable(
                    "num_skipped_updates",
                    shape=(),
                    dtype=tf.int64,
                    initializer=tf.zeros_initializer(),
                    trainable=False,
                )
            self._num_skipped_updates = counter
        return counter

    def _count_skipped_updates(self, num_skipped=1) -> tf.Operation:
        """Adds `num_skipped` (an int or a bool/int Tensor) to the counter.

        A factor whose cov variable was never instantiated (tests assign
        `_cov` directly) has no counter: the skip is not counted, and no
        variable is created behind an initializer the caller already ran.
        """
        counter = getattr(self, "_num_skipped_updates", None)
        if counter is None:
            return tf.no_op()
        increment = tf.cast(num_skipped, tf.int64)
        return counter.assign_add(increment, use_locking=True, read_value=False)

    def _moving_average_if_finite(
        self, variable, value, ema_decay, non_finite_policy
    ) -> tf.Tensor:
        """`assign_moving_average(variable, value, ema_decay)` unless `value` has a
        NaN/Inf: then, under "skip", `variable` keeps its value and the skip is
        counted; under "raise" the op fails naming this factor (see
        `utils.update_if_finite`). Evaluates to the value of `variable` after."""

        def update():
            debias = config.ZERO_DEBIAS
            debias_variables = self._debias_variables_for(variable) if debias else None
            return moving_average.assign_moving_average(
                variable,
                value,
                ema_decay,
                zero_debias=debias,
                debias_variables=debias_variables,
            )

        def skip():
            with tf.control_dependencies([self._count_skipped_updates()]):
                return tf.identity(variable.read_value())

        new_value = utils.update_if_finite(
            [(self.name, value)],
            update,
            skip,
            non_finite_policy,
            "the covariance estimate of factor",
        )
        # Control flow may forget the static shape; both branches have it.
        new_value.set_shape(variable.shape)
        return new_value

    @abc.abstractmethod
    def _compute_new_cov(self, source, tower):
        """The mini-batch estimate for one source and one tower."""

    def _sum_sources_mean_towers(self, compute_fn: Callable) -> tf.Tensor:
        """`(Σ_s Σ_t compute_fn(s, t)) / num_towers`.

        Under `TOWER_STRATEGY == "separate"` each term is built on its tower's
        data device. On TPU the result is averaged across replicas, so every
        replica folds the same statistic into its variable.
        """
        tower_strategy = config.checked_tower_strategy()
        contributions = []
        for source in range(self._num_sources):
            for tower in range(self._num_towers):
                device = (
                    self._get_data_device(tower)
                    if tower_strategy == "separate"
                    else None
                )
                with place_on_device(device):
                    contributions.append(compute_fn(source, tower))
        new_value = tf.add_n(contributions)
        if self._num_towers != 1:  # (a division by 1 is a pass over the matrix)
            new_value = new_value / float(self._num_towers)
        if utils.on_tpu():
            new_value = utils.cross_replica_mean(new_value)
        return new_value

    def make_covariance_update_op(self, ema_decay, non_finite_policy="skip"):
        """`cov ← ema_decay·cov + (1 − ema_decay)·Ĉ`, `Ĉ` summed over sources,
        averaged over towers; evaluates to the updated cov.

        Args:
          ema_decay: decay in [0, 1].
          non_finite_policy: what to do when `Ĉ` has a NaN/Inf: "skip" (keep
            `cov`, count it in `num_skipped_updates`), "raise" (the op fails with
            an InvalidArgumentError naming the factor) or None (no check).
        """
        new_cov = self._sum_sources_mean_towers(self._compute_new_cov)
        return self._moving_average_if_finite(
            self._cov, new_cov, ema_decay, non_finite_policy
        )

    @abc.abstractmethod
    def _get_data_device(self, tower):
        """Device of the data of `tower` (None or "" for no placement)."""

    @abc.abstractmethod
    def instantiate_inv_variables(self):
        """Creates the variables holding inverses / matrix powers."""

    @abc.abstractmethod
    def make_inverse_update_ops(self):
        """List of ops refreshing the inverse variables."""

    def get_cov_var(self):
        """The cov variable (None before `instantiate_cov_variables`)."""
        return self._cov

    @abc.abstractmethod
    def get_cov(self):
        """The (undamped) covariance as a dense matrix."""

    @abc.abstractmethod
    def left_multiply_matpower(self, x, exp, damping_func):
        """`(C + d·I)^exp · x`."""

    @abc.abstractmethod
    def right_multiply_matpower(self, x, exp, damping_func):
        """`x · (C + d·I)^exp`."""


class InverseProvidingFactor(FisherFactor):
    """A dense `[n, n]` factor that keeps variables for `(C + d·I)^e`.

    Each registered `(exp, damping)` pair gets one variable, named
    `matpower_exp{E}_damp{D}`; an inverse-update round refreshes all of them
    from the current `self._cov`: by a (robust) Cholesky inverse while there
    are only a few inverses, otherwise from one eigendecomposition
    `C = V diag(λ) Vᵀ` as `V diag((λ + d)^e) Vᵀ`.
    """

    def __init__(self):
        self._matpower_by_exp_and_damping = {}  # {(exp, damping_id): variable}
        self._matpower_registrations = set()  # {(exp, damping_id)}
        self._registration_order = []  # the same pairs, for a stable op order
        self._eigendecomp = None  # cached (clipped eigenvalues, eigenvectors)
        self._damping_funcs_by_id = {}  # {damping_id: damping_func}
        super(InverseProvidingFactor, self).__init__()

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
                    inverse_initializer,
                    self._cov_shape,
                )
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
        is_finite = tf.logical_and(cov_is_finite, utils.all_finite(value))
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
            bool(self._eigendecomp)
            or num_inverses < len(matpowers)
            or num_inverses >= config.EIGENVALUE_DECOMPOSITION_THRESHOLD
        )
        cov = tf.convert_to_tensor(self._cov)
        cov_is_finite = utils.all_finite(cov)
        ops = []
        if use_eig:
            eigenvalues, eigenvectors = self.get_eigendecomp()
            for (exp, damping_id), matpower in matpowers.items():
                damping = damping_values[damping_id]
                if exp < 0:
                    # Floored, so that a singular cov with a tiny damping still
                    # gives finite powers (as the Cholesky path's fallback).
                    damped = utils.floor_damped_eigenvalues(eigenvalues, damping)
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
            # The assignments share one eigendecomposition: one op, one device.
            return [tf.group(*ops)]
        # A non-finite cov is never written by the guarded updates, but may come
        # from outside (a restored checkpoint, an assignment); its inverse is not
        # written, and zeros in its place keep the fallback eigh from failing.
        finite_cov = utils.replace_non_finite(cov)
        for (_, damping_id), matpower in matpowers.items():  # all exps are -1
            value = utils.posdef_inv(finite_cov, damping_values[damping_id])
            ops.append(self._assign_if_finite(matpower, value, cov_is_finite))
        return ops

    def make_inverse_update_ops(self) -> List[tf.Operation]:
        """Ops that refresh every matrix-power variable from the current `_cov`.

        Each damping function is evaluated once (so a damping `tf.Variable` is
        read when the op runs). The eigen path (one grouped op) is used when an
        eigendecomposition is already cached, when a power other than −1 is
        registered, or when there are at least
        `EIGENVALUE_DECOMPOSITION_THRESHOLD` inverses; otherwise each inverse is
        `utils.posdef_inv(cov, d)` (a Cholesky inverse that falls back to a
        clipped eigendecomposition when not finite) and one op per inverse is
        returned. The cached eigendecomposition is cleared afterwards.

        Port improvements: negative powers on the eigen path use eigenvalues
        floored as in `utils.floor_damped_eigenvalues` (finite for a singular
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
            finite_cov = utils.replace_non_finite(self._cov)
            eigenvalues, eigenvectors = tf.linalg.eigh(finite_cov)
            clipped = tf.maximum(
                eigenvalues,
                cast_scalar(config.EIGENVALUE_CLIPPING_THRESHOLD, eigenvalues.dtype),
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
                size = _static_size(cov.shape, 0)
                damped_cov = cov + damping * tf.eye(size, dtype=cov.dtype)
                return utils.matmul_sparse_dense(x, damped_cov)
            return utils.matmul_sparse_dense(x, self.get_matpower(exp, damping_func))
        self._check_matrix(x, "right_multiply_matpower")
        if exp == 1:
            damping = cast_scalar(damping_func(), x.dtype)
            return tf.matmul(x, self._cov) + damping * x
        return tf.matmul(x, self.get_matpower(exp, damping_func))


class DiagonalFactor(FisherFactor):
    """A factor whose cov variable holds exactly one entry per parameter.

    Powers `(cov + d)^exp` are element-wise and computed on demand, so there
    are no inverse variables or inverse-update ops.
    """

    def __init__(self):
        self._damping_funcs_by_id = {}  # {damping_id: damping_func}
        super(DiagonalFactor, self).__init__()

    @property
    def _cov_initializer(self):
        return diagonal_covariance_initializer

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
        entries `cov + d` are floored as by `utils.floor_damped_eigenvalues`).

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
            matpower = utils.floor_damped_eigenvalues(cov, damping) ** exp
        else:
            matpower = (cov + damping) ** exp
        if isinstance(x, tf.IndexedSlices):
            return utils.matmul_diag_sparse(tf.reshape(matpower, [-1]), x)
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
