"""Small distributions for the predictive-distribution losses.

TF2 removed `tf.distributions` and the project may not use tensorflow_probability,
so `loss_functions` gets its log-probabilities and samples from these classes.
Each one is a light view of its parameters: it builds ops only when a method or
property is called, so a fresh object can be created wherever the ops must live
(inside a colocation scope, a `tf.cond` branch, ...).

All parameters broadcast against each other and against the values passed to
`log_prob`; the last axis is the event axis for `Categorical`/`OneHotCategorical`.
Sampling uses op-level seeds (`seed=None` means nondeterministic).

Non-finite parameters: the samplers never fail or return an out-of-range value
because of NaN/inf parameters (the original crashed inside a sampling op with an
unrelated "label out of range" error when the logits held NaN). Samples drawn
from non-finite parameters are finite but meaningless; the non-finite values are
still visible in `log_prob` (and hence in the loss and its gradients), where the
optimizer's finiteness check skips such steps.
"""

import math

import tensorflow.compat.v1 as tf


def _finite_or_zero(tensor: tf.Tensor) -> tf.Tensor:
    """Entries of `tensor` with NaN/inf replaced by 0."""
    return tf.where(tf.math.is_finite(tensor), tensor, tf.zeros_like(tensor))


def _sampleable_logits(logits: tf.Tensor) -> tf.Tensor:
    """Logits rows that `tf.random.categorical` can sample from.

    A row containing NaN or +inf, or no finite entry at all (all -inf), makes the
    sampling op return the out-of-range class id `num_classes`; such rows are
    replaced by zeros (uniform). Rows with some -inf entries (masked classes) are
    valid and kept unchanged.
    """
    finite = tf.math.is_finite(logits)
    invalid_entry = tf.logical_not(tf.logical_or(finite, tf.equal(logits, -math.inf)))
    valid_row = tf.logical_and(
        tf.logical_not(tf.reduce_any(invalid_entry, axis=-1, keepdims=True)),
        tf.reduce_any(finite, axis=-1, keepdims=True),
    )
    return tf.where(
        tf.broadcast_to(valid_row, tf.shape(logits)), logits, tf.zeros_like(logits)
    )


class Normal(object):
    """Independent normals `N(loc, scale²)`, element-wise.

    Args:
      loc: mean tensor.
      scale: standard deviation, broadcastable to `loc` (same dtype).
    """

    def __init__(self, loc: tf.Tensor, scale: tf.Tensor):
        self.loc = loc
        self.scale = scale

    def log_prob(self, value) -> tf.Tensor:
        """`−(value − loc)²/(2 scale²) − log scale − ½ log 2π`."""
        value = tf.cast(value, self.loc.dtype)
        standardized = (value - self.loc) / self.scale
        return (
            -0.5 * tf.square(standardized)
            - tf.math.log(self.scale)
            - 0.5 * math.log(2.0 * math.pi)
        )

    def sample(self, seed=None) -> tf.Tensor:
        """`loc + scale·ε`, `ε ~ N(0, I)`, shaped like `loc` broadcast with `scale`.

        Non-finite results (from non-finite parameters) are replaced by 0.
        """
        shape = tf.broadcast_dynamic_shape(tf.shape(self.loc), tf.shape(self.scale))
        noise = tf.random.normal(shape, seed=seed, dtype=self.loc.dtype)
        return _finite_or_zero(self.loc + self.scale * noise)


class Categorical(object):
    """Categorical distribution over the last axis of `logits`; values are class ids.

    Args:
      logits: `[..., num_classes]` unnormalised log-probabilities.
      dtype: integer dtype of the samples (default int32, as `tf.distributions`).
    """

    def __init__(self, logits: tf.Tensor, dtype=tf.int32):
        self.logits = logits
        self.dtype = dtype

    @property
    def probs(self) -> tf.Tensor:
        """`softmax(logits)` over the last axis."""
        return tf.nn.softmax(self.logits)

    def log_prob(self, value) -> tf.Tensor:
        """`log softmax(logits)[value]`, broadcasting `value` (`[...]`) and `logits`."""
        value = tf.convert_to_tensor(value)
        if value.dtype not in (tf.int32, tf.int64):
            value = tf.cast(value, tf.int64)
        logits = self.logits
        if not (
            value.shape.is_fully_defined()
            and logits.shape.is_fully_defined()
            and value.shape == logits.shape[:-1]
        ):
            # Broadcast both to a common batch shape; the fused op needs it.
            logits = logits * tf.ones_like(value[..., tf.newaxis], dtype=logits.dtype)
            value = value * tf.ones_like(logits[..., 0], dtype=value.dtype)
        # Raises for class ids outside [0, num_classes) on CPU.
        return -tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=value, logits=logits
        )

    def _sample_ids(self, seed) -> tf.Tensor:
        logits = _sampleable_logits(self.logits)
        num_classes = tf.shape(logits)[-1]
        flat_ids = tf.random.categorical(
            tf.reshape(logits, [-1, num_classes]), 1, seed=seed, dtype=tf.int64
        )
        return tf.reshape(flat_ids, tf.shape(logits)[:-1])

    def sample(self, seed=None) -> tf.Tensor:
        """One class id per row of `logits` (shape `logits.shape[:-1]`, `dtype`)."""
        return tf.cast(self._sample_ids(seed), self.dtype)


class OneHotCategorical(Categorical):
    """Categorical distribution whose values are one-hot vectors on the last axis.

    Args:
      logits: `[..., num_classes]` unnormalised log-probabilities.
      dtype: dtype of the one-hot samples (default: the logits' dtype).
    """

    def __init__(self, logits: tf.Tensor, dtype=None):
        super().__init__(logits, dtype=logits.dtype if dtype is None else dtype)

    def log_prob(self, value) -> tf.Tensor:
        """`Σ_c value_c · log softmax(logits)_c` (broadcasting)."""
        value = tf.cast(value, self.logits.dtype)
        return tf.reduce_sum(value * tf.nn.log_softmax(self.logits), axis=-1)

    def sample(self, seed=None) -> tf.Tensor:
        """One-hot samples shaped like `logits`."""
        return tf.one_hot(
            self._sample_ids(seed), tf.shape(self.logits)[-1], dtype=self.dtype
        )


class Bernoulli(object):
    """Independent Bernoulli variables with `P(1) = sigmoid(logits)`, element-wise.

    Args:
      logits: log-odds tensor.
      dtype: dtype of the 0/1 samples (default int32, as `tf.distributions`).
    """

    def __init__(self, logits: tf.Tensor, dtype=tf.int32):
        self.logits = logits
        self.dtype = dtype

    @property
    def probs(self) -> tf.Tensor:
        """`sigmoid(logits)`."""
        return tf.sigmoid(self.logits)

    def log_prob(self, value) -> tf.Tensor:
        """`y log p + (1−y) log(1−p) = y·logits − softplus(logits)` (stable form)."""
        value = tf.cast(value, self.logits.dtype)
        return value * self.logits - tf.nn.softplus(self.logits)

    def sample(self, seed=None) -> tf.Tensor:
        """`uniform < sigmoid(logits)` as 0/1 of `dtype` (0 where logits are NaN)."""
        uniform = tf.random.uniform(
            tf.shape(self.logits), seed=seed, dtype=self.logits.dtype
        )
        return tf.cast(tf.less(uniform, self.probs), self.dtype)
