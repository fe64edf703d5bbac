"""`LayerCollection`'s checks of a registration against the graph.

The original's `create_subgraph`/`check_registration` (variables registered
exactly, with all their uses), the port's linter (`lint_registration`,
`check_loss_scale`, `_registration/lint.py`) and `summary()`. A mixin of
`LayerCollection`: it reads the collection's own state.
"""

import tensorflow.compat.v1 as tf

from kfac.ops._registration import lint as lint_lib
from kfac.ops._registration import summary as summary_lib
from kfac.ops._registration.shapes import warn_registration
from kfac.ops._registration.uses import registration_problems
from kfac.ops._utils.graph import SubGraph


class RegistrationChecks(object):
    """`create_subgraph`, `check_registration`, the linter and `summary`."""

    def create_subgraph(self) -> None:
        """Records the `utils.SubGraph` of all loss inputs.

        Raises:
          ValueError: if no loss is registered.
        """
        if not self.losses:
            raise ValueError("Must have at least one registered loss.")
        inputs = tf.nest.flatten([loss.inputs for loss in self.losses])
        self._subgraph = SubGraph(inputs)

    def check_registration(
        self, variables, loss=None, lint=None, original_checks=True
    ) -> None:
        """Checks that `variables` are exactly the registered ones, with all uses.

        Creates the subgraph first if needed. Generic registrations count as
        infinitely many uses. Unlike the original, registered variables missing
        from `variables` are found by a set difference and named (API.md §12).

        Args:
          variables: the variables the optimizer updates.
          loss: (port addition) the training loss, for the linter.
          lint: (port addition) None, or "warn"/"raise": also run
            `lint_registration(loss, variables)` and issue a
            `RegistrationWarning` per problem, or raise one ValueError.
          original_checks: (port addition) False to run the linter only.

        Raises:
          ValueError: listing every problem found: a variable not registered; a
            registered use count different from `subgraph.variable_uses(var)`;
            registered variables missing from `variables`; with
            `lint="raise"`, the linter's problems.
        """
        variables = list(variables)
        if original_checks:
            if self._subgraph is None:
                self.create_subgraph()
            problems = registration_problems(
                variables,
                self._get_use_count_map(),
                self.subgraph.variable_uses,
                lambda var: lint_lib.first_consumer(var, self.subgraph),
            )
            if problems:
                raise ValueError(
                    "\n\t".join(
                        ["Found the following errors with variable registration:"]
                        + problems
                    )
                )
        if lint is not None:
            lint_lib.report(
                self.lint_registration(loss, variables), lint, warn_registration
            )

    def lint_registration(self, loss=None, var_list=None) -> list:
        """(Port addition) the registration linter's `RegistrationProblem`s.

        Graph inspection only (no session): a tensor registered as the input of
        two losses ("duplicate_loss"); with `loss`, a registered distribution
        the loss does not use ("loss_not_used"), softmax/sigmoid cross-entropy
        logits with no registered distribution ("unregistered_logits"), a
        cross-entropy summed into the loss without a mean ("loss_scale"), and
        trainable variables of `var_list` (default: all) the loss depends on
        that no block covers, with the op using each ("unregistered_variable");
        registered outputs that do not depend on the layer's parameters or
        inputs ("layer_not_connected").
        """
        return lint_lib.lint_problems(self, loss, var_list)

    def check_loss_scale(self, session, loss, feed_dict=None, rtol=0.05) -> list:
        """(Port addition) "loss_scale" problems measured on one batch.

        Compares `∂loss/∂inputs` of each registered loss with the gradient of
        its `evaluate()` (needs registered targets): K-FAC assumes `loss` is
        the batch mean of the registered negative log-likelihood. Builds a
        few gradient ops and runs them once in `session` with `feed_dict`.
        """
        return lint_lib.loss_scale_problems(self, session, loss, feed_dict, rtol)

    def summary(self) -> str:
        """(Port addition) one line per block and per loss.

        A block line: kind, approximation, parameter names and shapes, towers,
        uses per tower, factor sizes (`A in×in, G out×out` for Kronecker
        blocks; the entries of diagonal ones).
        """
        return summary_lib.summary_text(
            self._var_scope,
            list(self._layer_registrations.values()),
            len(self.fisher_blocks),
            self._loss_dict,
        )

    def __str__(self) -> str:
        return self.summary()
