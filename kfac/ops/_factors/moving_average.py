"""The exponential moving average of the factors' statistics (Martens & Grosse
2015, §5: statistics are averaged over mini-batches), optionally debiased."""

from typing import Optional

import tensorflow.compat.v1 as tf

from kfac.ops._factors.scalars import cast_scalar


def read_after(variable, update_op) -> tf.Tensor:
    """The value of `variable` read after `update_op` ran."""
    with tf.control_dependencies([update_op]):
        return tf.identity(variable.read_value())


def zero_debias_variables(variable):
    """Creates `<variable>/biased` (zeros) and `<variable>/local_step` (0) beside it.

    Created in the outermost graph context, so the update may be built inside
    control flow (e.g. `batch_execute`'s `tf.cond`).
    """
    with tf.init_scope(), tf.name_scope(variable.op.name + "/"):
        with tf.colocate_with(variable):
            biased = tf.Variable(
                tf.zeros(variable.shape, dtype=variable.dtype.base_dtype),
                name="biased",
                trainable=False,
            )
            local_step = tf.Variable(
                tf.zeros([], dtype=variable.dtype.base_dtype),
                name="local_step",
                trainable=False,
            )
    return biased, local_step


def assign_moving_average(
    variable,
    value,
    decay,
    zero_debias: bool = False,
    name: Optional[str] = None,
    debias_variables=None,
) -> tf.Tensor:
    """Exponential moving average `v ← decay·v + (1 − decay)·value`.

    Written `v ← v − (1 − decay)·(v − value)`, as TensorFlow's moving average.
    With `zero_debias`, the standard (Adam-style) debiasing applies: a biased
    accumulator `b` (initially 0) and a step counter `t` are kept beside `v`,
    `b ← decay·b + (1 − decay)·value`, `t ← t + 1`, and `v ← b / (1 − decayᵗ)`
    (so the initial value of `v` does not enter the average).

    Works for ref and resource variables, in and out of control flow.

    Args:
      variable: the variable to update.
      value: the new estimate, same shape as `variable`.
      decay: scalar in [0, 1] (Python number or Tensor).
      zero_debias: whether to debias the average.
      name: optional name scope (default `"AssignMovingAvg"`).
      debias_variables: the `(biased, local_step)` pair kept for `variable`
        (made beside it when None), so that every update op built for one
        variable shares one debiasing state.

    Returns:
      A Tensor that evaluates to the updated value of `variable`.
    """
    with tf.name_scope(name, "AssignMovingAvg", [value, decay]):
        dtype = variable.dtype.base_dtype
        value = tf.convert_to_tensor(value, dtype=dtype)
        decay = cast_scalar(decay, dtype)
        if zero_debias:
            biased, local_step = debias_variables or zero_debias_variables(variable)
            update_biased = biased.assign_sub(
                (biased - value) * (1.0 - decay), read_value=False
            )
            update_step = local_step.assign_add(1.0, read_value=False)
            with tf.control_dependencies([update_biased, update_step]):
                debiased = biased.read_value() / (
                    1.0 - tf.pow(decay, local_step.read_value())
                )
            update = variable.assign(debiased, read_value=False)
        else:
            update = variable.assign_sub(
                (variable - value) * (1.0 - decay), read_value=False
            )
        return read_after(variable, update)
