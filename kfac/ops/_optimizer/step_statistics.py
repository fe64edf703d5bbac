"""What each training step did, kept in variables for summaries and reports.

A training step writes, alongside its update (also when the non-finite guard
skips it, so a bad step can be seen):

* `<name>/step_statistics/gradient_products`, float32 `[num_blocks, 3]`: for
  the parameters of each Fisher block (registration order), `⟨g, g⟩`,
  `⟨p, p⟩` and `⟨g, p⟩`, with `g` the gradient and `p` the preconditioned
  direction of the step: `F̂⁻¹g` ("regular", before KL clipping; "qmodel") or
  `F̂⁻¹v` ("adam", `v` the velocity). Norms and cosines follow from them.
* `<name>/step_statistics/qmodel_coefficients`, float32 `[2]`: the quadratic
  model's `(α, μ)` ("qmodel", or any momentum type with damping adaptation).
* `<name>/step_statistics/norm_constraint_coefficient`, float32 scalar: the KL
  clipping factor `κ` (with a `norm_constraint`).

The variables are made by the first training op that writes them (outside
any control flow), so a checkpoint written after it holds them.
"""

from typing import Any
from typing import Callable
from typing import List
from typing import Optional
from typing import Sequence
from typing import Tuple

import tensorflow.compat.v1 as tf

from kfac.ops._optimizer.vectors import dense
from kfac.ops._optimizer.vectors import inner_product
from kfac.ops._utils.containers import ensure_sequence

SCOPE = "step_statistics"


def _products(grad: Any, direction: Any) -> List[tf.Tensor]:
    """`[⟨g,g⟩, ⟨p,p⟩, ⟨g,p⟩]` of one variable (`inner_product`: the quadratic
    model's `⟨Δ,Δ⟩` and `⟨g,Δ⟩` are the same nodes. Not a `[1, N] × [N, 1]`
    matmul: that runs on one core and cost 3x `reduce_sum(g ∘ p)` on the
    autoencoder's weights, 3 ms of a 48 ms step)."""
    grad, direction = dense(grad), dense(direction)
    return [inner_product(grad, grad), inner_product(direction, direction),
            inner_product(grad, direction)]


def _block_row(grads: Sequence[Any], directions: Sequence[Any]) -> tf.Tensor:
    """`[⟨g,g⟩, ⟨p,p⟩, ⟨g,p⟩]` (float32) summed over a block's variables."""
    if not grads:
        return tf.zeros([3], tf.float32)
    per_variable = [_products(grad, direction)
                    for grad, direction in zip(grads, directions)]
    if len(per_variable) == 1:
        sums = per_variable[0]
    else:
        sums = [tf.add_n(list(column)) for column in zip(*per_variable)]
    return tf.cast(tf.stack(sums), tf.float32)


class StepStatistics(object):
    """The step-statistics variables of one optimizer and the op writing them.

    Args:
      variable_scope: the optimizer's scope; the variables live in
        "<scope>/step_statistics".
      block_params: `() -> [params key of each block]` (registration order),
        read when the first record op is built.
    """

    def __init__(self, variable_scope: Any,
                 block_params: Callable[[], List[Any]]) -> None:
        self._variable_scope = variable_scope
        self._block_params = block_params
        self._params = None
        self._pending = []
        self.gradient_products = None
        self.qmodel_coefficients = None
        self.norm_constraint_coefficient = None

    @property
    def block_params(self) -> Optional[List[Any]]:
        """The params key of each row of `gradient_products` (None until made)."""
        return self._params

    def _variable(self, name: str, shape: List[int]) -> tf.Variable:
        """A zero-initialised float32 variable, made outside any control flow."""
        with tf.init_scope(), tf.variable_scope(self._variable_scope), \
                tf.variable_scope(SCOPE):
            return tf.get_variable(name, shape=shape, dtype=tf.float32,
                                   initializer=tf.zeros_initializer(),
                                   trainable=False)

    def record(self, grads_and_vars: Sequence[Tuple[Any, Any]],
               directions_and_vars: Sequence[Tuple[Any, Any]],
               qmodel_coefficients: Optional[Tuple[Any, Any]] = None,
               clip_coefficient: Any = None) -> tf.Operation:
        """The op writing this step's statistics (see the module doc); the
        variables are made by the first call that has something to write."""
        if self._params is None:
            self._params = list(self._block_params())
            self.gradient_products = self._variable("gradient_products",
                                                    [len(self._params), 3])
        grads = {var: grad for grad, var in grads_and_vars}
        directions = {var: direction for direction, var in directions_and_vars}
        rows = []
        for params in self._params:
            variables = [var for var in ensure_sequence(params) if var in grads]
            rows.append(_block_row([grads[var] for var in variables],
                                   [directions[var] for var in variables]))
        writes = [tf.assign(self.gradient_products, tf.stack(rows)).op]
        if qmodel_coefficients is not None:
            if self.qmodel_coefficients is None:
                self.qmodel_coefficients = self._variable("qmodel_coefficients", [2])
            values = tf.stack([tf.cast(value, tf.float32)
                               for value in qmodel_coefficients])
            writes.append(tf.assign(self.qmodel_coefficients, values).op)
        if clip_coefficient is not None:
            if self.norm_constraint_coefficient is None:
                self.norm_constraint_coefficient = self._variable(
                    "norm_constraint_coefficient", [])
            writes.append(tf.assign(self.norm_constraint_coefficient,
                                    tf.cast(clip_coefficient, tf.float32)).op)
        op = tf.group(*writes, name="record_step_statistics")
        self._pending.append(op)
        return op

    def take_pending(self) -> List[tf.Operation]:
        """The record ops built since the last call (the training op being
        built must depend on them), and forgets them."""
        pending, self._pending = self._pending, []
        return pending
