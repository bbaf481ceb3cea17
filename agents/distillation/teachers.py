"""What a teacher is: a frozen policy whose logits (and value) enter the distillation losses.

Kickstarting (Schmitt et al. 2018, arXiv 1803.03835; docs/kickstarting.md, "Teachers") needs of a teacher only
its action distribution on the student's observations, so a teacher's architecture is free. A `Teacher` gives
logits `[B, A]` on one step or `[T, B, A]` on a sequence, and a value when it has a critic; what its logits
are made of is its `kind` (`KINDS`: logits, a Categorical distribution, Q-values taught as softmax(Q/τ), or
its actions only, taught as an ε-smoothed one-hot; `teacher_targets` sets τ and ε). This module holds the
interface and the teachers built from a network (`NetworkTeacher`, and the codistillation `PeerTeacher`);
`teacher_loading.load_teacher` loads the others (PolicySaver exports, `saved_policy_teachers`, and Keras
models) and checks them against the student's specs (`check_observation_specs`, `check_action_specs`).

Teachers are frozen: their outputs are returned under `tf.stop_gradient`, and a `Teacher` tracks none of
its weights, so it adds nothing to a learner's `trainable_variables` or checkpoints (a restarted learner
reloads its teachers from their paths; restoring a student never overwrites a teacher's weights). The
SavedModel is loaded once, eagerly, outside any `tf.function` or strategy scope; the `Teacher` can then
be called inside the compiled training step, also in a `tf.distribute` replica context.

Layouts: one step is batch-major `[B, *obs_shape]`; a sequence is TIME-MAJOR `[T, B, *obs_shape]`, as
the losses take it (a recurrent teacher is unrolled over T from the state given, resetting its state
where `step_type` is FIRST).
"""

import re
from typing import Any, Dict, Optional, Sequence

import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import nest_utils

from protege.runtime import config as run_config
from protege.runtime import errors
from protege.runtime.properties import read_only

# What a teacher's logits are made of (`Teacher.kind`; `saved_policy_teachers` says when each is taken).
KIND_LOGITS = 'logits'
KIND_DISTRIBUTION = 'Categorical distribution'
KIND_Q_VALUES = 'Q-values softmax(Q/τ)'
KIND_ACTION_ONLY = 'action-only (ε-smoothed one-hot)'
KINDS = (KIND_LOGITS, KIND_DISTRIBUTION, KIND_Q_VALUES, KIND_ACTION_ONLY)

# The smallest normal float32: an ε = 0 one-hot's zeros become log(this) ≈ −87 instead of −inf, so a loss
# that forms p·(log p − log q) never meets 0·(−inf); softmax gives them back as 0 (below float32's epsilon).
_SMALLEST_PROBABILITY = float(np.finfo(np.float32).tiny)


def q_value_logits(q_values, temperature):
  """Logits of softmax(Q/τ): the Q-values `[..., A]` divided by the temperature τ > 0.

  Policy Distillation (Rusu et al. 2016, arXiv 1511.06295, Section 3) distils a DQN teacher through the
  KL divergence from softmax(Q_T/τ); a small τ sharpens the teacher's values into a near-greedy policy.
  """
  return tf.cast(q_values, tf.float32) / tf.cast(temperature, tf.float32)


def smoothed_one_hot_logits(actions, num_actions: int, smoothing):
  """Logits of (1 − ε)·onehot(a) + ε/A for integer actions `a` `[...]` in [0, A): `[..., A]`.

  Label smoothing (Szegedy et al. 2016) with ε = `smoothing` in [0, 1): the teacher's action keeps
  1 − ε + ε/A, every other action ε/A. Zero probabilities (ε = 0) become log of the smallest normal float32.
  """
  smoothing = tf.cast(smoothing, tf.float32)
  probabilities = ((1.0 - smoothing) * tf.one_hot(tf.cast(actions, tf.int32), num_actions, dtype=tf.float32)
                   + smoothing / num_actions)
  return tf.math.log(tf.maximum(probabilities, _SMALLEST_PROBABILITY))


@gin.configurable
def teacher_targets(q_temperature: float = 0.01, action_smoothing: float = 0.01,
                    action_only: bool = False) -> Dict[str, Any]:
  """How teachers that give no logits teach (gin); `load_teacher` takes these unless given its own.

  Args:
    q_temperature: τ > 0 of a Q-value teacher's softmax(Q/τ). Default 0.01, Rusu et al.'s (Policy
      Distillation, 2016, Section 4) best temperature for distilling DQN Q-values with the KL loss: the
      Q-values of near-equal actions differ by little (return units; 0.01–1 with clipped rewards), and at
      τ = 1 their softmax is close to uniform, a target that teaches almost nothing; τ = 0.01 sharpens it
      into the teacher's greedy policy while a gap of about τ between two actions still shows as a
      preference. The right τ scales with the teacher's return scale: raise it for Q-values of larger spread.
    action_smoothing: ε in [0, 1) of an action-only teacher's (1 − ε)·onehot(a) + ε/A. Default 0.01: the
      target stays the teacher's choice (its action keeps 99%), and no action's probability is 0, so a KL
      toward it stays finite and does not drive the student's other actions to probability 0 (a kickstarted
      student still explores them).
    action_only: Teach through a policy export's actions even when it gives logits, a distribution or
      Q-values (Rusu et al.'s NLL target: the teacher's choice without its preferences). Default False.

  Returns:
    `{'q_temperature', 'action_smoothing', 'action_only'}` as bound; checked by `check_target_settings`.
  """
  return {'q_temperature': q_temperature, 'action_smoothing': action_smoothing, 'action_only': action_only}


def check_target_settings(q_temperature: Optional[float] = None, action_smoothing: Optional[float] = None,
                          action_only: bool = False) -> None:
  """Raises ConfigError, one line naming the `teacher_targets` setting and the fix: τ must be a number > 0,
  ε a number in [0, 1), `action_only` a bool. None skips a value. `load_teacher` checks before it loads
  anything; the binaries check `teacher_targets()` before any other work."""
  if q_temperature is not None:
    run_config.check_number('teacher_targets.q_temperature', q_temperature, 0,
                            meaning='the temperature τ of a Q-value teacher\'s softmax(Q/τ)')
  if action_smoothing is not None:
    is_number = isinstance(action_smoothing, (int, float, np.floating)) and not isinstance(action_smoothing, bool)
    if not (is_number and 0.0 <= action_smoothing < 1.0):
      raise errors.ConfigError(f'teacher_targets.action_smoothing must be a number in [0, 1) (the ε of an '
                               f'action-only teacher\'s (1 − ε)·onehot + ε/A), got {action_smoothing!r}; fix it '
                               'in the gin file or --gin_bindings.')
  if not isinstance(action_only, bool):
    raise errors.ConfigError(f'teacher_targets.action_only must be True or False, got {action_only!r}; fix it '
                             'in the gin file or --gin_bindings.')


class Untracked:
  """Holds an object without TensorFlow's attribute tracking (so its variables stay out of checkpoints)."""

  def __init__(self, value):
    self.value = value


def _module_name(name: str) -> str:
  """A valid `tf.Module` name (a Python identifier) derived from `name`."""
  cleaned = re.sub(r'\W', '_', name)
  return cleaned if cleaned.isidentifier() else 'teacher_' + cleaned


class Teacher(tf.Module):
  """A frozen policy: observations in, logits (and a value) out, gradients stopped.

  Built by `teacher_loading.load_teacher`; a subclass implements `_step` for one batch-major step.
  Properties describe what the teacher was checked against: `observation_spec`, `action_spec` (its
  discrete actions), `num_actions`, `state_spec` (`()` when feed-forward), `has_value`, `name` and `source`
  (its path or a description, for messages).
  """

  def __init__(self, observation_spec, action_spec, num_actions: int, state_spec=(), has_value: bool = False,
               name: str = 'teacher', source: Optional[str] = None, kind: str = KIND_LOGITS,
               q_temperature: Optional[float] = None, action_smoothing: Optional[float] = None):
    """Records the specs; a subclass loads the weights.

    Args:
      observation_spec: The (nest of) `TensorSpec` the teacher takes, without batch dimensions.
      action_spec: The scalar integer `BoundedTensorSpec` of its discrete actions.
      num_actions: A, the width of its logits.
      state_spec: Its policy state spec; `()` for a feed-forward teacher. Default ().
      has_value: Whether `logits_and_value` returns a value. Default False.
      name: The teacher's name (`TeacherSet.names`, the keys of λ_k). Default 'teacher'.
      source: Where it came from, for messages. Default `name`.
      kind: What `_step` returns as its first output, one of `KINDS`: logits [B, A] (`KIND_LOGITS`,
        `KIND_DISTRIBUTION`), Q-values [B, A] (`KIND_Q_VALUES`, taught as softmax(Q/τ)) or actions [B]
        (`KIND_ACTION_ONLY`, taught as their ε-smoothed one-hot). Default `KIND_LOGITS`.
      q_temperature: τ > 0, for `KIND_Q_VALUES`.
      action_smoothing: ε in [0, 1), for `KIND_ACTION_ONLY`.
    """
    if kind not in KINDS:
      raise ValueError(f'Teacher kind {kind!r} is none of {KINDS}.')
    if kind == KIND_Q_VALUES:
      check_target_settings(q_temperature=q_temperature)
    if kind == KIND_ACTION_ONLY:
      check_target_settings(action_smoothing=action_smoothing)
    super().__init__(name=_module_name(name))
    self._kind = kind
    self._q_temperature = q_temperature
    self._action_smoothing = action_smoothing
    self._teacher_name = name
    self._observation_spec = observation_spec
    self._action_spec = action_spec
    self._num_actions = int(num_actions)
    self._state_spec = state_spec
    self._has_value = bool(has_value)
    self._source = source or name

  name = read_only("_teacher_name", "The teacher's name as given (the `tf.Module` scope uses a cleaned copy).")
  source = read_only('_source', 'The path (or a description) the teacher was loaded from.')
  kind = read_only("_kind",
                   "What the teacher's logits are made of: one of `KINDS` (`saved_policy_teachers` says when "
                   'each is taken).')

  @property
  def kind_description(self) -> str:
    """The kind with its parameter, for the line printed at load time, e.g. 'Q-values softmax(Q/τ), τ = 0.01'."""
    if self._kind == KIND_Q_VALUES:
      return f'{self._kind}, τ = {self._q_temperature:g}'
    if self._kind == KIND_ACTION_ONLY:
      return f'{self._kind}, ε = {self._action_smoothing:g}'
    return self._kind

  observation_spec = read_only("_observation_spec",
                               "The observation spec the teacher takes (matches the student's).")
  action_spec = read_only("_action_spec", "The discrete action spec the teacher acts over (matches the student's).")
  num_actions = read_only('_num_actions', 'A, the width of the logits.')
  state_spec = read_only("_state_spec", "The teacher's own policy state spec; `()` for a feed-forward teacher.")

  @property
  def is_recurrent(self) -> bool:
    """True when the teacher carries a policy state between steps."""
    return bool(tf.nest.flatten(self._state_spec))

  has_value = read_only('_has_value',
                        'True when the teacher has a critic and `logits_and_value` returns its value.')

  @property
  def trainable_variables(self):
    """Always empty: a teacher is frozen."""
    return ()

  @property
  def weights(self) -> list:
    """The variables that hold the teacher's weights, for reading them (`agents.data_free.teacher_support`);
    empty when a subclass does not expose them. Not tracked: no student optimiser or checkpoint holds them."""
    return []

  def get_initial_state(self, batch_size):
    """The teacher's initial policy state for `batch_size` rows (`()` when feed-forward)."""
    return self._initial_state(batch_size) if self.is_recurrent else ()

  def _initial_state(self, batch_size):
    return tf.nest.map_structure(
        lambda spec: tf.zeros(tf.concat([[batch_size], spec.shape], axis=0), spec.dtype), self._state_spec)

  def outer_rank(self, observation) -> int:
    """1 for one step `[B, *obs_shape]`, 2 for a time-major sequence `[T, B, *obs_shape]`; else raises."""
    try:
      rank = nest_utils.get_outer_rank(observation, self._observation_spec)
    except (ValueError, TypeError) as error:
      shapes = tf.nest.map_structure(lambda x: tuple(x.shape), observation)
      raise ValueError(f'Teacher {self._source!r} takes observations [B, ...] or [T, B, ...] of '
                       f'{self._observation_spec!r}, got shapes {shapes}.') from error
    if rank not in (1, 2):
      raise ValueError(f'Teacher {self._source!r} takes observations [B, ...] or [T, B, ...] of '
                       f'{self._observation_spec!r}, got {rank} outer dimensions.')
    return rank

  def logits_and_value(self, observation, step_type=None, policy_state=None):
    """The teacher's logits and value on one step or a time-major sequence, gradients stopped.

    Args:
      observation: `[B, *obs_shape]` (one step) or a time-major sequence `[T, B, *obs_shape]`.
      step_type: `StepType` values `[B]` or `[T, B]`; a recurrent teacher resets its state where FIRST.
        None means MID everywhere (no resets). Ignored by a feed-forward teacher.
      policy_state: The teacher's state for the `B` rows (from `get_initial_state` or the previous
        call); None means the initial state. Ignored by a feed-forward teacher.

    Returns:
      `(logits, value, next_state)`: float32 logits `[B, A]` or `[T, B, A]`; the value `[B]` or `[T, B]`,
      or None without a critic; the state after the last step (`()` when feed-forward).
    """
    outer_rank = self.outer_rank(observation)
    leaf = tf.nest.flatten(observation)[0]
    outer_shape = tf.shape(leaf)[:outer_rank]
    batch_size = outer_shape[-1]
    if step_type is None:
      step_type = tf.fill(outer_shape, tf.constant(ts.StepType.MID, tf.int32))
    step_type = tf.cast(step_type, tf.int32)
    if policy_state is None or not self.is_recurrent:
      policy_state = self.get_initial_state(batch_size)
    if outer_rank == 1:
      logits, value, next_state = self._checked_step(observation, step_type, policy_state)
    elif self.is_recurrent:
      logits, value, next_state = self._unroll(observation, step_type, policy_state)
    else:
      # Feed-forward over a sequence: fold [T, B] into one batch, faster than a loop over time.
      def fold(x):
        return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))

      logits, value, next_state = self._checked_step(tf.nest.map_structure(fold, observation),
                                                     fold(step_type), policy_state)
      logits = tf.reshape(logits, tf.concat([outer_shape, [self._num_actions]], axis=0))
      value = None if value is None else tf.reshape(value, outer_shape)
    static_outer = leaf.shape[:outer_rank]
    logits.set_shape(static_outer.concatenate([self._num_actions]))
    if value is not None:
      value.set_shape(static_outer)
    return (tf.stop_gradient(logits), None if value is None else tf.stop_gradient(value),
            tf.nest.map_structure(tf.stop_gradient, next_state))

  def _checked_step(self, observation, step_type, policy_state):
    outputs, value, next_state = self._step(observation, step_type, policy_state)
    if self._kind == KIND_Q_VALUES:
      logits = q_value_logits(outputs, self._q_temperature)
    elif self._kind == KIND_ACTION_ONLY:
      actions = tf.cast(outputs, tf.int64) - int(self._action_spec.minimum)
      logits = smoothed_one_hot_logits(actions, self._num_actions, self._action_smoothing)
    else:
      logits = tf.cast(outputs, tf.float32)
    if value is not None:
      value = tf.cast(value, tf.float32)
      if value.shape.rank == 2 and value.shape[-1] == 1:
        value = tf.squeeze(value, axis=-1)
    if self._has_value != (value is not None):
      raise RuntimeError(f'Teacher {self._source!r} returned a value: {value is not None}, expected '
                         f'has_value={self._has_value}.')
    return logits, value, next_state

  def _unroll(self, observation, step_type, policy_state):
    """Runs a recurrent teacher over a time-major sequence from `policy_state`."""
    batch_size = tf.shape(step_type)[1]
    initializer = (tf.zeros([batch_size, self._num_actions]), tf.zeros([batch_size]), policy_state)

    def step(carry, inputs):
      _, _, state = carry
      observation_t, step_type_t = inputs
      logits, value, next_state = self._checked_step(observation_t, step_type_t, state)
      outputs = (logits, tf.zeros_like(logits[:, 0]) if value is None else value, next_state)
      # A saved function's outputs can have a less static shape than the loop's inputs (a pruned Q-network's
      # [None, A] against a batch of 8), which tf.scan refuses: they get the inputs' static shapes (set at
      # trace time, no op per step; an incompatible shape raises).
      outputs = [tf.convert_to_tensor(output) for output in tf.nest.flatten(outputs)]
      for output, start in zip(outputs, tf.nest.flatten(initializer)):
        output.set_shape(start.shape)
      return tf.nest.pack_sequence_as(initializer, outputs)

    logits, values, states = tf.scan(step, (observation, step_type), initializer=initializer)
    final_state = tf.nest.map_structure(lambda s: s[-1], states)
    return logits, (values if self._has_value else None), final_state

  def _step(self, observation, step_type, policy_state):
    """One batch-major step: `(outputs, [B] value or None, next_state)`, the outputs as `kind` says (logits
    or Q-values `[B, A]`, or actions `[B]`). Subclasses implement it."""
    raise NotImplementedError

  def __repr__(self):
    return (f'{type(self).__name__}(name={self._teacher_name!r}, source={self._source!r}, '
            f'kind={self.kind_description!r}, num_actions={self._num_actions}, recurrent={self.is_recurrent}, '
            f'has_value={self._has_value})')


class NetworkTeacher(Teacher):
  """A feed-forward or recurrent `ActorCriticNetwork` held as a teacher: its logits, no value.

  The network's weights are not tracked (they are not the student's to train or checkpoint). Used for
  population peers (`PeerTeacher`) and for a policy export rebuilt as a network
  (`agents.data_free.frame_networks.frame_teacher`, whose input is differentiable).
  """

  def __init__(self, network, name: str, source: Optional[str] = None):
    """Wraps `network` (its variables are created here)."""
    network.create_variables()
    action_spec = network.action_spec
    super().__init__(network.input_tensor_spec, action_spec,
                     num_actions=int(action_spec.maximum) - int(action_spec.minimum) + 1,
                     state_spec=network.state_spec, has_value=False, name=name, source=source)
    self._network = Untracked(network)

  @property
  def network(self):
    """The network whose variables hold the teacher's weights."""
    return self._network.value

  @property
  def weights(self) -> list:
    return list(self.network.variables)

  def _step(self, observation, step_type, policy_state):
    (logits, _), next_state = self.network(observation, step_type=step_type, network_state=policy_state,
                                           training=False)
    return logits, None, next_state


class PeerTeacher(NetworkTeacher):
  """A population peer's current policy as a teacher (codistillation; `TeacherSet.peers`).

  Holds a copy of the student's network (`Network.copy()`: the same architecture, its own variables, a
  recurrent core included), which `assign_weights` overwrites with a peer's weights while the student
  trains. Until the first assignment `active` is 0 and `TeacherSet.outputs` masks the teacher out. Neither
  the copy's weights nor `active` are tracked: they are not the student's to train or checkpoint (a
  restored member loads its peers again at its next ready).
  """

  def __init__(self, network, name: str):
    """Wraps `network`, a copy of the student's network (variables are created here)."""
    super().__init__(network, name=name, source=f'peer teacher {name!r}')
    self._active = Untracked(tf.Variable(0.0, trainable=False, name=f'{_module_name(name)}_active'))
    self.peer = None  # what `assign_weights` was last told the weights are (e.g. the peer's name)

  @property
  def active(self) -> tf.Variable:
    """float32 scalar variable: 1 once a peer's weights were assigned, 0 before (the teacher is masked)."""
    return self._active.value

  def assign_weights(self, weights: Sequence[np.ndarray], peer: Any = None) -> None:
    """Loads a peer's weights (its network's `variables`, in order) and activates the teacher.

    Raises:
      ValueError: if the count or a shape differs from this copy of the student's network (the peer has
        another architecture: every member of a population must build the same network).
    """
    variables = self.network.variables
    if len(weights) != len(variables):
      raise ValueError(f'{self.source}: peer {peer!r} sent {len(weights)} weight arrays, the student\'s '
                       f'network has {len(variables)}; every member must build the same network.')
    for variable, value in zip(variables, weights):
      if tuple(variable.shape) != tuple(np.shape(value)):
        raise ValueError(f'{self.source}: peer {peer!r} sent {variable.name} of shape {tuple(np.shape(value))}, '
                         f'the student\'s is {tuple(variable.shape)}; every member must build the same '
                         'network.')
    for variable, value in zip(variables, weights):
      variable.assign(np.asarray(value, variable.dtype.as_numpy_dtype))
    self.active.assign(1.0)
    self.peer = peer


# ------------------------------------------------------------------------------------------------------------
# What a teacher must match of its student.
# ------------------------------------------------------------------------------------------------------------


def discrete_action_count(spec, who: str, source: str) -> int:
  """A for a scalar integer `BoundedTensorSpec`, or a one-line error."""
  if (tf.nest.is_nested(spec) or not isinstance(spec, tensor_spec.BoundedTensorSpec)
      or not spec.dtype.is_integer or spec.shape.rank != 0):
    raise errors.PolicyLoadError(f'Kickstarting distils discrete policies: the {who} of teacher {source!r} '
                                 f'has action spec {spec!r}, not a scalar integer BoundedTensorSpec.')
  return int(spec.maximum) - int(spec.minimum) + 1


def check_action_specs(teacher_spec, student_spec, source: str) -> None:
  """Raises PolicyLoadError (one line naming both specs and `source`) unless the teacher acts over the
  student's discrete actions, with the same dtype."""
  teacher_actions = discrete_action_count(teacher_spec, 'teacher', source)
  student_actions = discrete_action_count(student_spec, 'student', source)
  if teacher_actions != student_actions:
    raise errors.PolicyLoadError(f'teacher {source!r} acts over {teacher_actions} actions ({teacher_spec!r}) '
                                 f'but the student over {student_actions} ({student_spec!r}): distil only '
                                 'between matching action spaces.')
  if teacher_spec.dtype != student_spec.dtype or int(teacher_spec.minimum) != int(student_spec.minimum):
    raise errors.PolicyLoadError(f'teacher {source!r} acts with {teacher_spec!r} but the student with '
                                 f'{student_spec!r}: distil only between matching action specs (same dtype '
                                 'and the same actions).')


def check_observation_specs(teacher_spec, student_spec, source: str) -> None:
  """Raises PolicyLoadError (one line naming both specs and `source`) unless the teacher observes what the
  student observes: the same structure, shapes and dtypes."""
  def same(a, b):
    return tf.TensorShape(a.shape) == tf.TensorShape(b.shape) and a.dtype == b.dtype
  try:
    tf.nest.assert_same_structure(teacher_spec, student_spec)
    matches = all(same(a, b) for a, b in zip(tf.nest.flatten(teacher_spec), tf.nest.flatten(student_spec)))
  except (ValueError, TypeError):
    matches = False
  if not matches:
    raise errors.PolicyLoadError(f'teacher {source!r} observes {teacher_spec!r} but the student observes '
                                 f'{student_spec!r}: distil only between matching observation specs (same '
                                 'shape and dtype).')


def probe_batch(observation_spec):
  """A batch of one zero observation of `observation_spec`, to probe a teacher's outputs with."""
  return tf.nest.map_structure(lambda s: tf.zeros([1] + list(s.shape), s.dtype), observation_spec)
