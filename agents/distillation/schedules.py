"""Schedules of the kickstarting weights λ_k, and the learner-owned variables that hold them.

Kickstarting (Schmitt et al. 2018, arXiv 1803.03835) adds Σ_k λ_k · H×(π_Tk‖π_S) to the student's RL
loss. A constant λ_k is no better than plain distillation: the teacher's pull must fade so the student
can outgrow it. The paper lets population based training (PBT) choose each λ_k; with several teachers
the weights are expected to move together, so they are factorised as a global scale times a
per-teacher factor, λ_k = λ · λ̂_k (section 3 of the paper; docs/kickstarting.md, "λ schedules").

Two ways to drive the weights, both through `TeacherWeights`, whose λ's are non-trainable
`tf.Variable`s read when the compiled training step runs (a Python float captured by `tf.function`
would be frozen at trace time and a PBT change to it would silently do nothing):

* mode 'schedule': `update(step)` assigns each variable its schedule's value at `step`, in-graph;
* mode 'pbt': no schedule runs; a controller reads and writes the variables (`variables_by_name`,
  `assign`) between training steps, and `update(step)` leaves them alone.

Schedules are pure functions of the step: `constant_schedule`, `linear_decay` and `exponential_decay`
each return a callable `step -> float32 scalar tensor` that accepts a Python number or an integer/float
tensor (e.g. the learner's `train_step` variable) and works eagerly, in `tf.function` and under XLA.
"""

import collections
import math
import re
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import gin
import tensorflow as tf

from protege.runtime import errors
from protege.runtime.properties import read_only

# The key of the global scale λ in `TeacherWeights.variables_by_name()` when the weights are factorised.
SCALE = 'scale'

_MODES = ('schedule', 'pbt')


class Schedule:
  """A pure function of the training step, `step -> float32 scalar tensor`, with a readable repr.

  A schedule over the run (`linear_decay(decay_steps=None)`) is a function of the step and the run's length
  in steps, `fn(step, total_steps)`; `over(total_steps)` gives it that length (the learner's
  `total_iterations`, a number or a variable read when the step runs).
  """

  def __init__(self, fn: Callable[..., tf.Tensor], description: str, over_the_run: bool = False,
               total_steps=None):
    self._fn = fn
    self._description = description
    self._over_the_run = over_the_run
    self._total_steps = total_steps

  over_the_run = read_only("_over_the_run", "Whether the schedule follows the run's length (set by `over`).")

  def over(self, total_steps) -> 'Schedule':
    """This schedule on a run of `total_steps` steps (itself when it does not follow the run's length)."""
    if not self._over_the_run:
      return self
    return Schedule(self._fn, self._description, over_the_run=True, total_steps=total_steps)

  def __call__(self, step) -> tf.Tensor:
    """The value at `step` (a Python number or a scalar tensor of any real dtype), float32 scalar."""
    step = tf.convert_to_tensor(step)
    if step.shape.rank not in (None, 0):
      raise ValueError(f'{self._description} takes a scalar step, got shape {step.shape}.')
    if not (step.dtype.is_integer or step.dtype.is_floating):
      raise TypeError(f'{self._description} takes an integer or float step, got dtype {step.dtype.name}.')
    if not self._over_the_run:
      return self._fn(tf.cast(step, tf.float32))
    if self._total_steps is None:
      raise errors.ConfigError(f'{self._description} follows the run\'s length, which is unknown here: give '
                               'decay_steps, or use it in a learner (PPOLearner, IMPALALearner) that knows it.')
    return self._fn(tf.cast(step, tf.float32), tf.cast(self._total_steps, tf.float32))

  def __repr__(self) -> str:
    return self._description


def _finite_float(value, name: str, function: str) -> float:
  if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
    raise errors.ConfigError(f'{function}.{name} must be a finite number, got {value!r}.')
  return float(value)


def _positive(value, name: str, function: str) -> float:
  value = _finite_float(value, name, function)
  if value <= 0:
    raise errors.ConfigError(f'{function}.{name} must be > 0, got {value!r}.')
  return value


@gin.configurable
def constant_schedule(value: float = 1.0) -> Schedule:
  """The schedule `step -> value` (not named `constant`: gin already has `gin.constant`).

  Args:
    value: The constant. Default 1.0.

  Returns:
    A `Schedule`.
  """
  value = _finite_float(value, 'value', 'constant_schedule')
  return Schedule(lambda step: tf.constant(value, tf.float32), f'constant_schedule(value={value})')


@gin.configurable
def linear_decay(initial: float = 1.0, final: float = 0.0, decay_steps: Optional[int] = None) -> Schedule:
  """The schedule `step -> initial + (final − initial) · min(step / decay_steps, 1)`.

  Goes in a straight line from `initial` at step 0 to `final` at `decay_steps` and stays there. Steps
  before 0 give `initial`.

  Args:
    initial: The value at step 0. Default 1.0.
    final: The value from `decay_steps` on. Default 0.0 (the teacher's pull vanishes, as in
      gin/kickstart_minatar_breakout.gin, where λ reaches 0 with the learning rate). A floor > 0 keeps a
      weak pull towards the teacher for the rest of training (gin/kickstart_minatar_multitask.gin: 0.1).
    decay_steps: Steps from `initial` to `final`, in the unit of the step passed (the learner's
      `train_step`: learner iterations, one per batch of trajectories, whatever its epochs and
      minibatches); > 0. None (default): the whole run, the learner's `total_iterations`, so λ reaches
      `final` with the learning rate, which the learners' linear schedule anneals over the same
      iterations. Released earlier, while the learning rate was still large, CartPole students left their
      teacher and collapsed (3 of 3 seeds at half the run; BENCHMARKS.md, 2026-12-03).

  Returns:
    A `Schedule`.
  """
  initial = _finite_float(initial, 'initial', 'linear_decay')
  final = _finite_float(final, 'final', 'linear_decay')

  def fn(step, total_steps):
    fraction = tf.clip_by_value(step / total_steps, 0.0, 1.0)
    return initial + (final - initial) * fraction

  if decay_steps is None:
    return Schedule(fn, f'linear_decay(initial={initial}, final={final}, decay_steps=the run)', over_the_run=True)
  decay_steps = _positive(decay_steps, 'decay_steps', 'linear_decay')
  return Schedule(lambda step: fn(step, decay_steps),
                  f'linear_decay(initial={initial}, final={final}, decay_steps={decay_steps:g})')


@gin.configurable
def exponential_decay(initial: float = 1.0, decay_rate: float = gin.REQUIRED, decay_steps: int = gin.REQUIRED,
                      minimum: float = 0.0, staircase: bool = False) -> Schedule:
  """The schedule `step -> max(initial · decay_rate^(step / decay_steps), minimum)`.

  Multiplies the value by `decay_rate` every `decay_steps` (smoothly, or in steps with `staircase`), as
  `tf.keras.optimizers.schedules.ExponentialDecay`, with a floor. Steps before 0 give `initial`.

  Args:
    initial: The value at step 0. Default 1.0.
    decay_rate: Factor per `decay_steps`, in (0, 1] to decay. Required.
    decay_steps: Steps per factor of `decay_rate` (the learner's `train_step` unit); > 0. Required.
    minimum: The floor the value never goes below. Default 0.0.
    staircase: If True the exponent is `floor(step / decay_steps)`. Default False.

  Returns:
    A `Schedule`.
  """
  initial = _finite_float(initial, 'initial', 'exponential_decay')
  decay_rate = _positive(decay_rate, 'decay_rate', 'exponential_decay')
  decay_steps = _positive(decay_steps, 'decay_steps', 'exponential_decay')
  minimum = _finite_float(minimum, 'minimum', 'exponential_decay')

  def fn(step):
    exponent = tf.maximum(step, 0.0) / decay_steps
    if staircase:
      exponent = tf.floor(exponent)
    return tf.maximum(initial * tf.pow(tf.constant(decay_rate, tf.float32), exponent), minimum)

  return Schedule(fn, f'exponential_decay(initial={initial}, decay_rate={decay_rate}, '
                      f'decay_steps={decay_steps:g}, minimum={minimum}, staircase={bool(staircase)})')


ScheduleLike = Union[Callable, float, int]


def _as_schedule(schedule: ScheduleLike) -> Callable:
  """A number becomes `constant_schedule(number)`; a callable is kept."""
  if isinstance(schedule, (int, float)) and not isinstance(schedule, bool):
    return constant_schedule(schedule)
  if not callable(schedule):
    raise TypeError(f'A λ schedule must be a number or a callable step -> value such as '
                    f'linear_decay(...), got {schedule!r}.')
  return schedule


def _variable_name(name: str) -> str:
  """A variable name TensorFlow accepts in graph mode ([A-Za-z0-9_.-] after the first character)."""
  cleaned = re.sub(r'[^A-Za-z0-9_.\-]', '_', name)
  return cleaned if re.match(r'[A-Za-z0-9.]', cleaned) else 'v' + cleaned


@gin.configurable
class TeacherWeights(tf.Module):
  """The kickstarting weights λ_k, one non-trainable `tf.Variable` per teacher (see the module docstring).

  Unfactorised (`scale_schedule=None`), teacher k's variable holds λ_k. Factorised, a variable `scale`
  holds the global λ and teacher k's variable the factor λ̂_k, and `values()` returns λ · λ̂_k
  (Kickstarting, section 3: PBT can then strengthen or weaken every teacher at once).

  The variables are created where the constructor runs (under a `strategy.scope()` they are mirrored),
  with `VariableAggregation.ONLY_FIRST_REPLICA`, so `update(step)` works in a replica context (every
  replica computes the same value from the same step) and a `tf.train.Checkpoint` of the learner saves
  them. They start at the schedules' values at step 0 in both modes.

  Usage in a learner:

    weights = TeacherWeights(teacher_set.names)       # gin binds schedules / mode
    ...
    @tf.function
    def train_step():
      weights.update(train_step_variable)               # no-op in mode 'pbt'
      lambdas = weights.values()                        # list of K float32 scalars
      loss = rl_loss + sum(l * h for l, h in zip(lambdas, cross_entropies))
  """

  def __init__(self, teacher_names: Sequence[str], schedules: Union[ScheduleLike, Sequence[ScheduleLike],
                                                                     Mapping[str, ScheduleLike]] = 1.0,
               scale_schedule: Optional[ScheduleLike] = None, mode: str = 'schedule',
               total_iterations=None, name: str = 'TeacherWeights'):
    """Creates the variables.

    Args:
      teacher_names: The teachers' names, in the order of `values()` (e.g. `TeacherSet.names`); unique.
      schedules: λ_k (or the factor λ̂_k when factorised) as a function of the step: one schedule for
        every teacher, a sequence with one per teacher, or a mapping teacher name -> schedule (teachers
        not named get 1.0). A number means a constant. In mode 'pbt' only the value at step 0 is used,
        as the variables' starting value. Default 1.0.
      scale_schedule: The global λ's schedule; giving one factorises the weights, λ_k = λ · λ̂_k. None
        (default) keeps one independent λ_k per teacher.
      mode: 'schedule' (default): `update(step)` assigns the schedules' values. 'pbt': the variables
        belong to an outside controller (`assign`, `variables_by_name`), and `update` changes nothing.
      total_iterations: The run's length in steps (a number or a variable), for schedules over the run
        (`linear_decay(decay_steps=None)`); the learners pass theirs. Set by code, not gin.
      name: Module name.

    Raises:
      ValueError: On empty or repeated teacher names, a teacher named 'scale' when factorised, a
        mapping naming an unknown teacher, a schedule count that is not the teacher count, an unknown
        mode, or a negative starting value.
    """
    super().__init__(name=name)
    names = [teacher_names] if isinstance(teacher_names, str) else list(teacher_names)
    if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
      raise errors.ConfigError('TeacherWeights.teacher_names must be one or more unique non-empty names, got '
                               f'{teacher_names!r}.')
    if mode not in _MODES:
      raise errors.ConfigError(f"TeacherWeights.mode must be 'schedule' or 'pbt', got {mode!r}.")
    factorised = scale_schedule is not None
    if factorised and SCALE in names:
      raise errors.ConfigError(f'A teacher may not be named {SCALE!r} when the weights are factorised (the '
                               'global scale λ has that key); rename it.')
    self._names = tuple(names)
    self._mode = mode
    # In mode 'pbt' only step 0 is read, where a schedule over the run is at its start whatever its length.
    total = total_iterations if total_iterations is not None or mode != 'pbt' else 1

    def over_the_run(schedule):
      return schedule.over(total) if isinstance(schedule, Schedule) and total is not None else schedule

    self._schedules = [over_the_run(schedule) for schedule in self._schedule_per_teacher(schedules)]
    self._scale_schedule = over_the_run(_as_schedule(scale_schedule)) if factorised else None

    def variable(schedule, key):
      initial = float(schedule(0))
      if initial < 0 or initial != initial:
        raise errors.ConfigError(f'TeacherWeights: the λ of {key!r} starts at {initial} ({schedule!r} at '
                                 'step 0); kickstarting weights must be >= 0.')
      return tf.Variable(initial, trainable=False, dtype=tf.float32, name=_variable_name(key),
                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    with self.name_scope:
      self._scale = variable(self._scale_schedule, SCALE) if factorised else None
      self._teacher_variables = tuple(variable(s, n) for s, n in zip(self._schedules, self._names))

  def _schedule_per_teacher(self, schedules) -> List[Callable]:
    if isinstance(schedules, Mapping):
      unknown = sorted(set(schedules) - set(self._names))
      if unknown:
        raise errors.ConfigError(f'TeacherWeights.schedules names unknown teachers {unknown}; the teachers '
                                 f'are {list(self._names)}.')
      return [_as_schedule(schedules.get(n, 1.0)) for n in self._names]
    if isinstance(schedules, Sequence) and not isinstance(schedules, str):
      if len(schedules) != len(self._names):
        raise errors.ConfigError(f'TeacherWeights got {len(schedules)} schedules for {len(self._names)} '
                                 f'teachers {list(self._names)}; give one per teacher, a single one, or a '
                                 'mapping by name.')
      return [_as_schedule(s) for s in schedules]
    return [_as_schedule(schedules)] * len(self._names)

  teacher_names = read_only("_names", "The teachers' names, in the order of `values()`.")
  mode = read_only("_mode", "'schedule' or 'pbt'.")

  @property
  def factorised(self) -> bool:
    """True when λ_k = λ · λ̂_k (a `scale_schedule` was given)."""
    return self._scale is not None

  def values(self) -> List[tf.Tensor]:
    """The K weights λ_k (λ · λ̂_k when factorised), float32 scalars read when the step runs."""
    if self._scale is None:
      return [tf.identity(v) for v in self._teacher_variables]
    scale = tf.identity(self._scale)
    return [scale * v for v in self._teacher_variables]

  def variables_by_name(self) -> Dict[str, tf.Variable]:
    """The variables a PBT controller reads and writes: teacher name -> λ_k (or λ̂_k), plus 'scale' -> λ."""
    by_name = collections.OrderedDict()
    if self._scale is not None:
      by_name[SCALE] = self._scale
    by_name.update(zip(self._names, self._teacher_variables))
    return by_name

  def update(self, step) -> List[tf.Tensor]:
    """Assigns every variable its schedule's value at `step` (mode 'schedule'); returns `values()`.

    In-graph: usable inside the compiled training step, with `step` a tensor or variable (its value is
    read when the step runs, so the function is traced once). In mode 'pbt' nothing is assigned.

    Args:
      step: The training step, a Python number or a scalar integer/float tensor.

    Returns:
      `values()` after the assignment.
    """
    if self._mode == 'schedule':
      pairs = list(zip(self._schedules, self._teacher_variables))
      if self._scale is not None:
        pairs.append((self._scale_schedule, self._scale))
      for schedule, variable in pairs:
        value = tf.cast(schedule(step), tf.float32)
        check = tf.debugging.assert_non_negative(
            value, message=f'TeacherWeights: a schedule gave a negative λ for {variable.name}')
        with tf.control_dependencies([check] if check is not None else []):
          variable.assign(value)
    return self.values()

  def assign(self, name: str, value) -> None:
    """Sets the variable `name` (a teacher name, or 'scale' when factorised) to `value` >= 0 (mode 'pbt').

    Raises:
      ValueError: In mode 'schedule' (the next `update` would overwrite the value), for an unknown
        name, or for a negative Python value (a negative tensor fails a `tf.debugging` assertion).
    """
    if self._mode != 'pbt':
      raise ValueError(f"TeacherWeights.assign({name!r}, ...) needs mode='pbt': in mode {self._mode!r} the "
                       f'next update(step) would overwrite the value.')
    by_name = self.variables_by_name()
    if name not in by_name:
      raise ValueError(f'TeacherWeights has no λ named {name!r}; the names are {list(by_name)}.')
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      if value < 0 or value != value:
        raise ValueError(f'TeacherWeights.assign({name!r}, {value!r}): kickstarting weights must be >= 0.')
      by_name[name].assign(float(value))
      return
    value = tf.cast(value, tf.float32)
    check = tf.debugging.assert_non_negative(
        value, message=f'TeacherWeights.assign({name!r}, ...): kickstarting weights must be >= 0')
    with tf.control_dependencies([check] if check is not None else []):
      by_name[name].assign(value)
