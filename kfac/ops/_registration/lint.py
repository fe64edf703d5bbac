"""The registration linter: mistakes that K-FAC would otherwise train through.

`lint_problems(layer_collection, loss, var_list)` inspects the graph (no
session) and returns `RegistrationProblem`s, each naming the tensors or
variables involved:

* "duplicate_loss": one tensor is the input of two registered losses (or two
  towers of one): the Fisher counts it twice;
* "loss_not_used": the training loss does not depend on a registered
  distribution's inputs; "unregistered_logits": it depends on the logits of a
  softmax or sigmoid cross-entropy that no distribution was registered for;
* "loss_scale": the cross-entropy of registered logits reaches the loss
  through a sum and no mean or division (K-FAC assumes the batch mean of the
  registered negative log-likelihood; a sum scales every step by the batch
  size). `check_loss_scale` measures the scale numerically instead;
* "layer_not_connected": a registered layer's outputs do not depend on its
  parameters, or on its inputs (scale-and-shift inputs are a recomputed
  normalisation and are not checked);
* "unregistered_variable": a trainable variable the loss depends on that no
  block covers, with the op that uses it.
"""

import dataclasses
import math
from typing import List

import tensorflow.compat.v1 as tf

from kfac.ops._registration.keys import name_of
from kfac.ops._utils.graph import SubGraph

_SOFTMAX_CROSS_ENTROPIES = (
    "SoftmaxCrossEntropyWithLogits",
    "SparseSoftmaxCrossEntropyWithLogits",
)
# Ops through which a per-example loss becomes a batch mean.
_AVERAGING_OPS = ("Mean", "RealDiv", "Div", "DivNoNan", "Mul", "Truediv")
_PASS_THROUGH = ("Identity", "Reshape", "Squeeze", "ExpandDims")


@dataclasses.dataclass(eq=False)
class RegistrationProblem:
    """One finding of the linter.

    Attributes:
      code: what kind of problem (see the module docstring).
      message: the explanation, naming the tensors involved.
      tensors: the tensors/variables involved.
    """

    code: str
    message: str
    tensors: tuple = ()

    def __str__(self) -> str:
        return "[{}] {}".format(self.code, self.message)


def _strip(tensor):
    """`tensor` without the Identity/Reshape ops in front of it (the dense-label
    softmax cross-entropy reshapes its logits to rows)."""
    while tensor.op.type in _PASS_THROUGH:
        tensor = tensor.op.inputs[0]
    return tensor


def _loss_tensors(layer_collection) -> list:
    """`(name, tower, loss, input tensor)` of every registered loss."""
    entries = []
    for name, towers in layer_collection.losses_by_name.items():
        for tower, loss in enumerate(towers):
            for tensor in tf.nest.flatten(loss.inputs):
                entries.append((name, tower, loss, tensor))
    return entries


def duplicate_losses(layer_collection) -> List[RegistrationProblem]:
    seen = {}
    problems = []
    for name, tower, _, tensor in _loss_tensors(layer_collection):
        where = "{!r} tower {}".format(name, tower)
        if tensor in seen:
            problems.append(
                RegistrationProblem(
                    "duplicate_loss",
                    "{} is registered as the input of two losses ({} and {}): "
                    "the Fisher counts it twice.".format(
                        tensor.name, seen[tensor], where
                    ),
                    (tensor,),
                )
            )
        else:
            seen[tensor] = where
    return problems


def _cross_entropy_logits(ops) -> list:
    """`(logits, cross-entropy op)` of the softmax/sigmoid cross-entropies."""
    found = []
    for op in ops:
        if op.type in _SOFTMAX_CROSS_ENTROPIES:
            found.append((_strip(op.inputs[0]), op))
        elif op.type == "Log1p":
            # tf.nn.sigmoid_cross_entropy_with_logits: log1p(exp(where(x >= 0, -x, x))).
            exp = op.inputs[0].op
            select = exp.inputs[0].op if exp.type == "Exp" else None
            if select is not None and select.type in ("Select", "SelectV2"):
                found.append((_strip(select.inputs[2]), op))
    return found


def _reaches_loss_through_sum_only(op, loss) -> bool:
    """The forward paths from `op` to `loss` sum without averaging."""
    stack, seen = [(out, False) for out in op.outputs], set()
    summed_paths = averaged_paths = 0
    while stack:
        tensor, summed = stack.pop()
        if tensor is loss:
            if summed:
                summed_paths += 1
            else:
                averaged_paths += 1
            continue
        for consumer in tensor.consumers():
            if (consumer, summed) in seen:
                continue
            seen.add((consumer, summed))
            if consumer.type in _AVERAGING_OPS:
                continue  # averaged (or rescaled): the convention may hold
            next_summed = summed or consumer.type in ("Sum", "AddN")
            stack.extend((out, next_summed) for out in consumer.outputs)
    return summed_paths > 0 and averaged_paths == 0


def loss_problems(layer_collection, loss) -> List[RegistrationProblem]:
    subgraph = SubGraph([loss])
    problems = []
    registered = {}
    for name, tower, _, tensor in _loss_tensors(layer_collection):
        registered[_strip(tensor)] = name
        if not subgraph.is_member(tensor):
            problems.append(
                RegistrationProblem(
                    "loss_not_used",
                    "The training loss {} does not depend on {}, the input of the "
                    "registered loss {!r} (tower {}).".format(
                        loss.name, tensor.name, name, tower
                    ),
                    (tensor, loss),
                )
            )
    ops = [op for op in loss.graph.get_operations() if subgraph.is_member(op)]
    for logits, op in _cross_entropy_logits(ops):
        if logits not in registered:
            problems.append(
                RegistrationProblem(
                    "unregistered_logits",
                    "The training loss {} depends on the logits {} (through {} op "
                    "{!r}) but no predictive distribution is registered for "
                    "them.".format(loss.name, logits.name, op.type, op.name),
                    (logits, loss),
                )
            )
        elif _reaches_loss_through_sum_only(op, loss):
            problems.append(
                RegistrationProblem(
                    "loss_scale",
                    "The cross-entropy of {} (op {!r}) is summed into the loss {} "
                    "with no mean: K-FAC assumes the mean over the batch of the "
                    "registered negative log-likelihood, so every step is "
                    "scaled by the batch size.".format(logits.name, op.name, loss.name),
                    (logits, loss),
                )
            )
    return problems


def layer_problems(layer_collection) -> List[RegistrationProblem]:
    problems = []
    for record in layer_collection.layer_registrations.values():
        if record.kind == "generic":
            continue
        for tower, tower_args in enumerate(record.towers):
            inputs, outputs = tower_args[:2]  # (inputs, outputs[, weights])
            subgraph = SubGraph(tf.nest.flatten(outputs))
            for var in record.variables:
                if isinstance(
                    var, tf.compat.v2.Variable
                ) and not subgraph.variable_uses(var):
                    problems.append(
                        RegistrationProblem(
                            "layer_not_connected",
                            "The outputs registered for {} (tower {}) do not depend "
                            "on its parameter {}.".format(
                                record.kind, tower, name_of(var)
                            ),
                            (var,),
                        )
                    )
            if record.kind == "scale_and_shift":
                continue
            for tensor in tf.nest.flatten(inputs):
                if isinstance(tensor, tf.Tensor) and not subgraph.is_member(tensor):
                    problems.append(
                        RegistrationProblem(
                            "layer_not_connected",
                            "The outputs registered for the {} layer of {} (tower "
                            "{}) do not depend on its inputs {}.".format(
                                record.kind,
                                ", ".join(name_of(v) for v in record.variables),
                                tower,
                                tensor.name,
                            ),
                            (tensor,),
                        )
                    )
    return problems


def first_consumer(var, subgraph: SubGraph):
    """The first op of `subgraph` using `var`'s value (past its read op); None
    if there is none or `var` is not a variable."""
    if not isinstance(var, tf.compat.v2.Variable):
        return None
    source = var.handle if hasattr(var, "handle") else var.value()
    for op in source.consumers():
        if not subgraph.is_member(op):
            continue
        if op.type == "ReadVariableOp":
            readers = [r for r in op.outputs[0].consumers() if subgraph.is_member(r)]
            return readers[0] if readers else op
        return op
    return None


def variable_problems(layer_collection, loss, var_list) -> List[RegistrationProblem]:
    subgraph = SubGraph([loss])
    registered = set(layer_collection.registered_variables)
    problems = []
    for var in var_list:
        if var in registered or not subgraph.variable_uses(var):
            continue
        consumer = first_consumer(var, subgraph)
        problems.append(
            RegistrationProblem(
                "unregistered_variable",
                "The loss {} depends on the trainable variable {} (used by {} op "
                "{!r}), which no registered layer covers.".format(
                    loss.name, name_of(var), consumer.type, consumer.name
                ),
                (var,),
            )
        )
    return problems


def lint_problems(layer_collection, loss=None, var_list=None) -> list:
    """Every problem found (see the module docstring), in the order listed there."""
    problems = duplicate_losses(layer_collection)
    if loss is not None:
        problems += loss_problems(layer_collection, loss)
    problems += layer_problems(layer_collection)
    if loss is not None:
        if var_list is None:
            var_list = loss.graph.get_collection(tf.GraphKeys.TRAINABLE_VARIABLES)
        problems += variable_problems(layer_collection, loss, var_list)
    return problems


def report(problems, mode: str, warn) -> None:
    """`mode` "warn": `warn(message)` per problem; "raise": one ValueError."""
    if not problems:
        return
    if mode == "raise":
        raise ValueError(
            "\n\t".join(
                ["Found the following problems with the K-FAC registration:"]
                + [str(problem) for problem in problems]
            )
        )
    for problem in problems:
        warn(str(problem))


def loss_scale_problems(
    layer_collection, session, loss, feed_dict=None, rtol: float = 0.05
) -> List[RegistrationProblem]:
    """Measures the scale of `loss` against the registered losses on one batch.

    For each registered loss with targets, with `g = ∂loss/∂inputs` and `r =
    ∂(Σ registered evaluate())/∂inputs`, K-FAC's convention is `g = r / N`,
    `N` the number of examples over all towers; `<g, r> / <r, r> · N` is
    reported when it is not within `rtol` of 1 (about `N`: a loss summed over
    the batch; 0.5 or 2: e.g. a squared error registered with the wrong
    variance).
    """
    problems = []
    measured = []
    for name, tower, registered_loss, tensor in _loss_tensors(layer_collection):
        try:
            reference = registered_loss.evaluate()
        except ValueError:
            problems.append(
                RegistrationProblem(
                    "loss_scale",
                    "Cannot check the scale of loss {!r}: it was registered "
                    "without targets.".format(name),
                    (tensor,),
                )
            )
            continue
        (user_grad,) = tf.gradients(loss, [tensor])
        (reference_grad,) = tf.gradients(reference, [tensor])
        if user_grad is None:
            continue
        numerator = tf.reduce_sum(user_grad * reference_grad)
        denominator = tf.reduce_sum(tf.square(reference_grad))
        measured.append(
            (name, tower, tensor, numerator, denominator, tf.shape(tensor)[0])
        )
    values = session.run([m[3:] for m in measured], feed_dict)
    total_examples = sum(int(v[2]) for v in values)
    for (name, tower, tensor, _, _, _), (numerator, denominator, _) in zip(
        measured, values
    ):
        if denominator == 0:
            continue
        ratio = numerator / denominator * total_examples
        if not math.isfinite(ratio) or abs(ratio - 1) > rtol:
            problems.append(
                RegistrationProblem(
                    "loss_scale",
                    "The loss's gradient w.r.t. {} (loss {!r}, tower {}) is {:.4g} "
                    "times the batch mean of the registered negative "
                    "log-likelihood's ({:.4g} examples).{}".format(
                        tensor.name,
                        name,
                        tower,
                        ratio,
                        total_examples,
                        _scale_hint(ratio, total_examples, rtol),
                    ),
                    (tensor,),
                )
            )
    return problems


def _scale_hint(ratio, total_examples, rtol) -> str:
    if abs(ratio / total_examples - 1) <= rtol:
        return " It looks summed over the batch: use a mean."
    return " Check the reduction and, for a squared error, the registered variance."
