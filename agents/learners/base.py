"""What a learner is to the run and to PBT, and the skeleton the PPO and IMPALA learners share.

`Learner` is the one declared interface, as TF-Agents' `Learner` and Acme's `core.Learner` declare theirs:
the trainer, the deployment's learner job and PBT use a learner through these members only. A learner owns
all of its training state: the network, the optimiser, the step counter and every hyperparameter that may
change while training runs, each a `tf.Variable` read inside the compiled step, so that a schedule or PBT
can assign it without a retrace. `hyperparameters()` names those variables: PBT finds what it moves there.

`OnPolicyLearner` is the skeleton of PPO (`agents.learners.ppo`) and IMPALA (`agents.learners.impala`):
the strategy, the dataset's iterator, the compiled step, the optimiser's learning-rate schedule, the
hyperparameter variables, the kickstarter plug (`kickstarter_fn`), the gradient step under a
`tf.distribute` strategy and the checkpointable state. A subclass builds its optimiser, registers its own
hyperparameters and writes `train_batch`.

`LearnerWrapper` is a learner around another one (RND around PPO, `agents.learners.rnd`), in the spirit
of Acme's learner wrappers: the interface reaches the inner learner, and the wrapper adds its own state
and hyperparameters.
"""

import abc
from typing import Any, Callable, Dict, Optional, Sequence

import tensorflow as tf

from protege.runtime import errors
from protege.runtime.properties import read_only

SCHEDULES = ('constant', 'linear')


class Learner(abc.ABC):
  """The interface of every learner (see the module docstring)."""

  @property
  @abc.abstractmethod
  def network(self):
    """The network being trained (the learner's own copy, built under `strategy.scope()`)."""

  @property
  @abc.abstractmethod
  def strategy(self) -> tf.distribute.Strategy:
    """The `tf.distribute.Strategy` the network and the learner's variables were built under."""

  @property
  @abc.abstractmethod
  def train_step(self) -> tf.Variable:
    """The number of `run()` calls made (an int64 variable, checkpointed)."""

  @property
  def kickstarter(self):
    """The `kickstarting.Kickstarter` this learner adds to its loss, or None."""
    return None

  @abc.abstractmethod
  def hyperparameters(self) -> Dict[str, tf.Variable]:
    """The scalar variables a schedule or PBT may assign, by name (e.g. 'learning_rate', 'entropy_coef')."""

  @abc.abstractmethod
  def checkpoint_items(self) -> Dict[str, Any]:
    """Everything a checkpoint must hold to resume training exactly where it stopped."""

  @abc.abstractmethod
  def run(self) -> Dict[str, tf.Tensor]:
    """One learner iteration on the next batch of the dataset; returns scalar metrics."""

  @abc.abstractmethod
  def current_learning_rate(self) -> tf.Tensor:
    """The learning rate the next iteration uses (its schedule applied)."""

  @abc.abstractmethod
  def release_iterator(self) -> None:
    """Drops the dataset's iterator (a later `run()` makes a new one). The run calls it once its input has
    ended, so the iterator's threads stop while the interpreter is whole, not at its exit."""

  @abc.abstractmethod
  def tracing_count(self) -> int:
    """How often the compiled step has been traced (PBT checks that assigning hyperparameters retraces
    nothing)."""

  def initialize_from_environment(self, environment, seed: int = 0, print_fn=print) -> None:
    """Prepares state that needs the environment before the first update of a new run (RND's observation
    statistics); nothing by default. Not called when a run resumes from a checkpoint."""
    del environment, seed, print_fn


class OnPolicyLearner(Learner):
  """The skeleton PPO and IMPALA share (see the module docstring).

  Args:
    name: the class name used in errors (e.g. 'PPOLearner').
    network: an `ActorCriticNetwork` created under `strategy.scope()`.
    dataset_fn: `(tf.distribute.InputContext) -> tf.data.Dataset` of per-replica batches.
    strategy: the strategy the network was built under; None: the default strategy.
    total_iterations: number of `run()` calls the run will make; linear schedules reach 0 there.
    learning_rate: the optimiser's step size, a hyperparameter variable.
    learning_rate_schedule: 'constant' or 'linear' (decays to 0 at `total_iterations`).
    max_grad_norm: global-norm gradient clipping; None disables it.
    kickstarter_fn: None, or a factory `(observation_spec, action_spec, strategy=, student_network=,
      total_iterations=)` of a `kickstarting.Kickstarter`, called once the subclass's variables exist
      (`_attach_kickstarter`).
  """

  def __init__(self, name: str, network, dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
               strategy: Optional[tf.distribute.Strategy], total_iterations: int, learning_rate: float,
               learning_rate_schedule: str, max_grad_norm: Optional[float],
               kickstarter_fn: Optional[Callable[..., Any]]):
    check_schedule(f'{name}.learning_rate_schedule', learning_rate_schedule)
    self._strategy = strategy or tf.distribute.get_strategy()
    self._network = network
    self._dataset_fn = dataset_fn
    self._iterator = None
    self._learning_rate_schedule = learning_rate_schedule
    self._max_grad_norm = max_grad_norm
    self._kickstarter_fn = kickstarter_fn
    self._kickstarter = None
    self._recurrent = bool(tf.nest.flatten(network.state_spec))
    self._hyperparameters: Dict[str, tf.Variable] = {}
    self._checkpointed = []
    with self._strategy.scope():
      self._train_step = tf.Variable(0, dtype=tf.int64, trainable=False, name='train_step')
      self.total_iterations = tf.Variable(max(1, total_iterations), dtype=tf.int64, trainable=False,
                                          name='total_iterations')
    self.learning_rate = self._hyperparameter('learning_rate', learning_rate)
    # Without AutoGraph: the steps' loops are explicit `tf.while_loop`s, and converting TF-Agents' network
    # code costs seconds of tracing (measured 2 s vs 0.07 s for an MLP policy step).
    self._compiled_run = tf.function(self._run, autograph=False)

  # --- the interface ------------------------------------------------------------------------------

  network = read_only('_network', Learner.network.__doc__)
  strategy = read_only('_strategy', Learner.strategy.__doc__)
  train_step = read_only('_train_step', Learner.train_step.__doc__)
  kickstarter = read_only('_kickstarter', Learner.kickstarter.__doc__)
  max_grad_norm = read_only('_max_grad_norm', 'The global gradient-norm clip, or None for no clipping.')

  def hyperparameters(self) -> Dict[str, tf.Variable]:
    return dict(self._hyperparameters)

  def checkpoint_items(self) -> Dict[str, Any]:
    items = dict(network=self._network, optimizer=self.optimizer, train_step=self._train_step)
    items.update((name, self._hyperparameters[name]) for name in self._checkpointed)
    items.update(self._extra_checkpoint_items())
    if self._kickstarter is not None:
      items.update(self._kickstarter.checkpoint_items())
    return items

  def current_learning_rate(self) -> tf.Tensor:
    return self._scheduled(self.learning_rate, self._learning_rate_schedule)

  def iterator(self):
    """The distributed iterator over the dataset (made on first use)."""
    if self._iterator is None:
      self._iterator = iter(self._strategy.distribute_datasets_from_function(self._dataset_fn))
    return self._iterator

  def release_iterator(self) -> None:
    self._iterator = None

  def run(self) -> Dict[str, tf.Tensor]:
    return self._compiled_run(self.iterator())

  def tracing_count(self) -> int:
    return self._compiled_run.experimental_get_tracing_count()

  @abc.abstractmethod
  def train_batch(self, batch) -> Dict[str, tf.Tensor]:
    """One iteration on `batch` (per-replica values, cross-replica context), inside a compiled step:
    `run()` calls it on the dataset's next batch, a learner wrapper (e.g. RND) on a batch it rewrote."""

  # --- for subclasses -----------------------------------------------------------------------------

  def _hyperparameter(self, name: str, value: float, checkpoint: bool = True) -> tf.Variable:
    """A new scalar float32 hyperparameter variable `name`, listed by `hyperparameters()` and, with
    `checkpoint`, saved in checkpoints under `name`."""
    variable = self._variable(value, name)
    self._hyperparameters[name] = variable
    if checkpoint:
      self._checkpointed.append(name)
    return variable

  def _variable(self, value: float, name: str) -> tf.Variable:
    """A scalar float32 variable under the strategy, not a named hyperparameter (e.g. a value head's γ)."""
    with self._strategy.scope():
      return tf.Variable(value, dtype=tf.float32, trainable=False, name=name)

  def _build_optimizer(self, optimizer: tf.keras.optimizers.Optimizer) -> tf.keras.optimizers.Optimizer:
    """Builds `optimizer`'s slots for the network's variables under the strategy; it becomes `self.optimizer`."""
    with self._strategy.scope():
      optimizer.build(self._network.trainable_variables)
    self.optimizer = optimizer
    return optimizer

  def _attach_kickstarter(self) -> None:
    """Makes the kickstarter from `kickstarter_fn` (when given); call once the learner's variables exist."""
    if self._kickstarter_fn is not None:
      self._kickstarter = self._kickstarter_fn(
          self._network.input_tensor_spec, self._network.action_spec, strategy=self._strategy,
          student_network=self._network, total_iterations=self.total_iterations)

  def _extra_checkpoint_items(self) -> Dict[str, Any]:
    """Checkpointed state beyond the network, optimiser, step and hyperparameters; none by default."""
    return {}

  def _scheduled(self, variable, schedule: str) -> tf.Tensor:
    """`variable` under `schedule`: itself ('constant'), or decayed linearly to 0 at `total_iterations`."""
    if schedule == 'constant':
      return tf.identity(variable)
    progress = tf.cast(self._train_step, tf.float32) / tf.cast(self.total_iterations, tf.float32)
    return variable * tf.maximum(1.0 - progress, 0.0)

  def _run(self, iterator):
    return self.train_batch(next(iterator))

  def _repeat_updates(self, num_updates: int, update_fn: Callable[..., Dict[str, tf.Tensor]],
                      reduce_op: tf.distribute.ReduceOp, args: tuple = ()) -> Dict[str, tf.Tensor]:
    """Runs `update_fn(iteration, *args)` under the strategy (per-replica `args` reach each replica as its
    own values, which a closure would not) `num_updates` times in one traced `tf.while_loop`; returns each
    metric reduced over replicas with `reduce_op`, averaged over the updates. One traced copy of the
    update: tracing is a run's largest fixed cost on small tasks."""
    strategy = self._strategy
    metric_names = []  # filled while the loop body is traced

    def body(iteration, sums):
      metrics = strategy.run(update_fn, (iteration,) + tuple(args))
      metric_names[:] = sorted(metrics)
      stacked = tf.stack([strategy.reduce(reduce_op, metrics[name], axis=None) for name in metric_names])
      # The metrics' number is known only inside the body: the sums start empty ([0]).
      sums = tf.cond(tf.size(sums) > 0, lambda: sums + stacked, lambda: stacked)
      return iteration + 1, sums

    _, sums = tf.while_loop(lambda iteration, _: iteration < num_updates, body,
                            (tf.constant(0), tf.zeros([0])),
                            shape_invariants=(tf.TensorShape([]), tf.TensorShape([None])))
    return {name: total / num_updates
            for name, total in zip(metric_names, tf.unstack(sums, num=len(metric_names)))}

  def _apply_gradients(self, gradients: Sequence[tf.Tensor], reduce_op: tf.distribute.ReduceOp) -> tf.Tensor:
    """Per replica: reduces `gradients` over replicas with `reduce_op` before clipping (so the clipped step
    is the one-device step on the whole batch), clips them by global norm and applies them to the
    network's trainable variables; returns the global norm before clipping."""
    variables = self._network.trainable_variables
    replica_context = tf.distribute.get_replica_context()
    if replica_context.num_replicas_in_sync > 1:
      gradients = replica_context.all_reduce(reduce_op, list(gradients))
    if self._max_grad_norm is not None:
      gradients, norm = tf.clip_by_global_norm(gradients, self._max_grad_norm)
    else:
      norm = tf.linalg.global_norm(gradients)
    self.optimizer.apply_gradients(zip(gradients, variables), skip_gradients_aggregation=True)
    return norm


class LearnerWrapper(Learner):
  """A learner around `inner` (see the module docstring): the interface reaches the inner learner;
  a subclass adds its own hyperparameters (`_own_hyperparameters`) and state (`checkpoint_items`)."""

  def __init__(self, inner: Learner):
    self._inner = inner

  inner = read_only('_inner', 'The wrapped learner.')
  network = read_only('_inner.network', Learner.network.__doc__)
  strategy = read_only('_inner.strategy', Learner.strategy.__doc__)
  train_step = read_only('_inner.train_step', Learner.train_step.__doc__)
  kickstarter = read_only('_inner.kickstarter', Learner.kickstarter.__doc__)

  def hyperparameters(self) -> Dict[str, tf.Variable]:
    merged = self._inner.hyperparameters()
    merged.update(self._own_hyperparameters())
    return merged

  def _own_hyperparameters(self) -> Dict[str, tf.Variable]:
    return {}

  def checkpoint_items(self) -> Dict[str, Any]:
    return dict(self._inner.checkpoint_items())

  def current_learning_rate(self) -> tf.Tensor:
    return self._inner.current_learning_rate()

  def release_iterator(self) -> None:
    self._inner.release_iterator()


def check_schedule(name: str, schedule: str) -> None:
  """Refuses a schedule other than 'constant' or 'linear', naming the parameter."""
  if schedule not in SCHEDULES:
    raise errors.ConfigError(f"{name}={schedule!r} is unknown; use 'constant' or 'linear'.")
