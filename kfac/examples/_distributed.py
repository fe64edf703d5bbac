"""The roles and stopping rule of a distributed K-FAC job (the ConvNet example).

As in the original: of `num_tasks` worker tasks, about 60% compute gradients
and update the weights through `tf.train.SyncReplicasOptimizer`, the others
(but the last) run K-FAC's covariance updates, and the last task runs the
inverse updates one at a time in a shuffled order shared by all workers
(`kfac.op_queue.OpQueue`). With fewer than 3 tasks every task computes
gradients and also updates the covariances, and the chief updates the
inverses.
"""

from typing import Callable
from typing import List
from typing import Optional
from typing import Tuple
from typing import Union

import numpy as np
import tensorflow.compat.v1 as tf

import kfac
from kfac.examples import _training

# Share of the worker tasks that compute gradients in distributed training.
GRADIENT_TASK_FRACTION = 0.6


class PreconditionOnceGradientsArrive(tf.train.Optimizer):
    """`optimizer`, whose update reads K-FAC's inverses only once the gradients exist.

    `tf.train.SyncReplicasOptimizer` applies the aggregated gradients in a
    thread of the chief that starts its next session run as soon as the last
    update is done. A resource variable is read by an op of its own, with no
    inputs, so the run would read the inverses at once: before or after the
    chief refreshes them between two steps, as the threads happen to run (the
    refreshed inverses then took effect a step late, or not). Here every op
    of the update waits for the gradients, as the original's reads of ref
    variables did. Everything else is `optimizer`'s.
    """

    def __init__(self, optimizer: tf.train.Optimizer):
        super().__init__(use_locking=False, name=optimizer.get_name())
        self._optimizer = optimizer

    def compute_gradients(self, *args, **kwargs):
        return self._optimizer.compute_gradients(*args, **kwargs)

    def apply_gradients(self, grads_and_vars, global_step=None, name=None):
        grads_and_vars = list(grads_and_vars)
        arrived = [grad.op for grad, _ in grads_and_vars if grad is not None]
        with tf.control_dependencies(arrived):
            return self._optimizer.apply_gradients(grads_and_vars, global_step, name)

    def get_slot(self, var, name):
        return self._optimizer.get_slot(var, name)

    def get_slot_names(self):
        return self._optimizer.get_slot_names()

    def variables(self):
        return self._optimizer.variables()


def is_gradient_task(task_id: int, num_tasks: int) -> bool:
    """True if this task computes gradients and updates the weights."""
    if num_tasks < 3:
        return True
    return 0 <= task_id < GRADIENT_TASK_FRACTION * num_tasks


def is_cov_update_task(task_id: int, num_tasks: int) -> bool:
    """True if this task updates K-FAC's covariance estimates."""
    if num_tasks < 3:
        return False
    return GRADIENT_TASK_FRACTION * num_tasks <= task_id < num_tasks - 1


def is_inv_update_task(task_id: int, num_tasks: int) -> bool:
    """True if this task updates K-FAC's inverses (the last task)."""
    if num_tasks < 3:
        return False
    return task_id == num_tasks - 1


def num_gradient_tasks(num_tasks: int) -> int:
    """Number of tasks whose gradients `SyncReplicasOptimizer` aggregates."""
    if num_tasks < 3:
        return num_tasks
    return int(np.ceil(GRADIENT_TASK_FRACTION * num_tasks))


class StopAtGlobalStepHook(tf.train.SessionRunHook):
    """Requests a stop once the global step has reached `last_step`.

    Like `tf.train.StopAtStepHook(last_step=...)`, but the global step is read
    again after every run. StopAtStepHook re-reads it only when the value
    fetched during the run was within one step of `last_step`, so a
    `SyncReplicasOptimizer` worker whose run spanned several global steps
    would start one more step, whose token never comes once the other
    workers have stopped.
    """

    def __init__(self, last_step: int):
        self._last_step = last_step
        self._global_step = None

    def begin(self):
        self._global_step = tf.train.get_global_step()
        if self._global_step is None:
            raise RuntimeError("StopAtGlobalStepHook needs a global step.")

    def after_create_session(self, session, coord):
        # A task (re)started after the job reached its last step stops before
        # its first run: that run would wait for a token no chief hands out.
        if session.run(self._global_step) >= self._last_step:
            coord.request_stop()

    def after_run(self, run_context, run_values):
        del run_values  # Unused.
        if run_context.session.run(self._global_step) >= self._last_step:
            run_context.request_stop()


def task_ops(
    task_id: int,
    num_tasks: int,
    train_op: tf.Operation,
    cov_update_op: tf.Operation,
    inv_update_op: tf.Operation,
    inv_update_queue: "kfac.op_queue.OpQueue",
) -> Tuple[Union[List[tf.Operation], Callable], Optional[tf.Operation]]:
    """`(step_fetches, periodic_op)` of this task for `run_training_loop`.

    With fewer than 3 tasks every task runs the training op and the covariance
    update and the chief (task 0) also refreshes all inverses periodically;
    otherwise the fetches follow the task's role (module docstring), the
    inverse task taking `inv_update_queue`'s next op each step.
    """
    if num_tasks < 3:
        # Every task computes gradients. The original then never updated
        # K-FAC's statistics (plain SGD with momentum); here each task also
        # updates the covariances and the chief refreshes the inverses.
        return [train_op, cov_update_op], inv_update_op if task_id == 0 else None
    computes_gradients = is_gradient_task(task_id, num_tasks)
    updates_covariances = is_cov_update_task(task_id, num_tasks)

    def learning_op(sess):
        if computes_gradients:
            return train_op
        if updates_covariances:
            return cov_update_op
        # An inverse update before any covariance update inverts the
        # identity initialisation: harmless.
        return inv_update_queue.next_op(sess)

    return learning_op, None


def task_session_config(master: str, task_id: int) -> Optional[tf.ConfigProto]:
    """The session config of worker `task_id` (None in process, `master=""`).

    On a real cluster a session talks to the parameter servers and its own
    task only, so a worker can (re)start while another task is down or done.
    """
    if not master:
        return None
    return tf.ConfigProto(device_filters=["/job:ps", "/job:worker/task:%d" % task_id])


def minimize_distributed(
    loss: tf.Tensor,
    accuracy: tf.Tensor,
    make_optimizer: Callable[[], "kfac.KfacOptimizer"],
    cluster_task: Tuple[int, int, int, str],
    checkpoint_dir: Optional[str],
    *,
    invert_every: int,
    save_checkpoint_steps: Optional[int],
    num_steps: Optional[int],
    **loop_kwargs,
) -> Optional[float]:
    """Trains `loss` as one worker task of the job; returns its last accuracy.

    `cluster_task` is `(task_id, num_worker_tasks, num_ps_tasks, master)`.
    `make_optimizer()` (called under the parameter servers'
    `replica_device_setter`) gives the K-FAC optimizer, which
    `SyncReplicasOptimizer` wraps; the task then runs its role's fetches
    (`task_ops`) in a `MonitoredTrainingSession` on `master` until the global
    step reaches `num_steps` (`StopAtGlobalStepHook`) or the input ends.
    The chief saves checkpoints to `checkpoint_dir` every
    `save_checkpoint_steps` global steps (None: every 10 minutes);
    `loop_kwargs` (`history`, `log_every`) go to `run_training_loop`.
    """
    task_id, num_worker_tasks, num_ps_tasks, master = cluster_task
    with tf.device(tf.train.replica_device_setter(num_ps_tasks)):
        global_step = tf.train.get_or_create_global_step()
        optimizer = make_optimizer()
        _, cov_update_op, inv_update_ops, inv_update_op, _, _ = (
            optimizer.make_ops_and_vars()
        )
        inv_update_queue = kfac.op_queue.OpQueue(inv_update_ops)
        sync_optimizer = tf.train.SyncReplicasOptimizer(
            opt=PreconditionOnceGradientsArrive(optimizer),
            replicas_to_aggregate=num_gradient_tasks(num_worker_tasks),
        )
        train_op = sync_optimizer.minimize(loss, global_step=global_step)

    is_chief = task_id == 0
    # The token queue starts with `replicas_to_aggregate` tokens by default,
    # so a worker's step may return before its update is applied (by the
    # chief's queue runner thread) and the next step races with it (reads
    # old or new weights, velocities, inverses). A single worker gains
    # nothing from the slack: it waits for its own update, deterministically.
    num_tokens = 0 if num_worker_tasks == 1 else -1
    hooks = [sync_optimizer.make_session_run_hook(is_chief, num_tokens=num_tokens)]
    if num_steps is not None:
        hooks.append(StopAtGlobalStepHook(last_step=num_steps))
    step_fetches, periodic_op = task_ops(
        task_id,
        num_worker_tasks,
        train_op,
        cov_update_op,
        inv_update_op,
        inv_update_queue,
    )
    tf.logging.info("Starting training.")
    with tf.train.MonitoredTrainingSession(
        master=master,
        is_chief=is_chief,
        config=task_session_config(master, task_id),
        checkpoint_dir=checkpoint_dir,
        hooks=hooks,
        stop_grace_period_secs=0,
        save_checkpoint_steps=save_checkpoint_steps,
        save_checkpoint_secs=None if save_checkpoint_steps else 600,
    ) as sess:
        return _training.run_training_loop(
            sess,
            step_fetches,
            loss,
            accuracy,
            periodic_op=periodic_op,
            period=invert_every,
            global_step=global_step,
            **loop_kwargs,
        )
