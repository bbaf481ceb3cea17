"""Teachers for kickstarting: frozen policies whose logits (and values) enter the distillation losses.

Kickstarting (Schmitt et al. 2018, arXiv 1803.03835; PAPERS.md §2) needs of a teacher only its action
distribution on the student's observations, so a teacher's architecture is free: `load_teacher` takes

* a policy exported by TF-Agents' `PolicySaver` (a directory holding `policy_specs.pbtxt`), such as the
  ones `train_main` writes with `agents.policies.export_policy`. Logits come from `PolicyStep.info`
  `['logits']` when the policy emits them (Protégé's policies do, also when exported greedy: the info
  carries the network's logits, the greedy action's point mass would carry none), otherwise from the
  saved `distribution`'s logits when it is Categorical. The value is `info['values'][head]` (or
  `info['value']`) when the policy has a critic. Recurrent policies keep their own state
  (`get_initial_state(batch_size)`), separate from the student's;
* a Keras model mapping observations `[B, *obs_shape]` to logits `[B, A]`, or to `(logits, value)`, or
  to a dict `{'logits': ..., 'value': ...}`; or the path of a saved Keras model (`.keras`, `.h5`, or a
  Keras SavedModel directory).

A teacher whose observation spec (shape and dtype) or action spec (dtype and set of discrete actions)
does not match the student's is rejected at load time with a one-line error naming both specs.

Teachers are frozen: their outputs are returned under `tf.stop_gradient`, and a `Teacher` tracks none of
its weights, so it adds nothing to a learner's `trainable_variables` or checkpoints (a restarted learner
reloads its teachers from their paths; restoring a student never overwrites a teacher's weights). The
SavedModel is loaded once, eagerly, outside any `tf.function` or strategy scope; the `Teacher` can then
be called inside the compiled training step, also in a `tf.distribute` replica context.

Codistillation (online distillation, Anil et al. 2018) makes population peers teachers: `TeacherSet.peers`
adds `PeerTeacher`s, copies of the student's own network whose weights a population member loads from its
best peers as they train (`pbt.codistillation`). A peer teacher teaches nothing until its first weights
arrive: its mask is 0 while `active` is.

Multi-task kickstarting routes observations: each task's expert teaches on its own task's rows only
(Kickstarting, section 3). `evaluate_on_task` and `route_by_task` gather the rows of a teacher's task,
run the teacher on those rows only, and scatter its logits back into a `[B, A]` (or `[T, B, A]`) tensor
with a mask that is 1 on the task's rows, so a loss Σ_k λ_k · mask_k · H×(π_Tk‖π_S) counts each teacher
on its own task. `TeacherSet` is the gin-configurable list of K teachers a learner holds.

Layouts: one step is batch-major `[B, *obs_shape]`; a sequence is TIME-MAJOR `[T, B, *obs_shape]`, as
the losses take it (a recurrent teacher is unrolled over T from the state given, resetting its state
where `step_type` is FIRST).
"""

import collections
import os
import re
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import gin
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import nest_utils

from runtime import errors

# What a teacher gives for the rows of one batch (see `evaluate_on_task`):
#   logits: float32 [B, A] or [T, B, A], gradients stopped (zeros on rows outside the teacher's task);
#   value:  float32 [B] or [T, B] (gradients stopped), or None when the teacher has no critic;
#   mask:   float32 [B] or [T, B], 1 on the rows the teacher teaches, 0 elsewhere;
#   state:  the teacher's next policy state, batch [B] (`()` for a feed-forward teacher).
TeacherOutput = collections.namedtuple('TeacherOutput', ['logits', 'value', 'mask', 'state'])

_EXTRINSIC = 'extrinsic'
# The names of `TeacherSet.peers`' teachers: 'peer_0', 'peer_1', ...
PEER_PREFIX = 'peer_'


class _Untracked:
  """Holds an object without TensorFlow's attribute tracking (so its variables stay out of checkpoints)."""

  def __init__(self, value):
    self.value = value


def _module_name(name: str) -> str:
  """A valid `tf.Module` name (a Python identifier) derived from `name`."""
  cleaned = re.sub(r'\W', '_', name)
  return cleaned if cleaned.isidentifier() else 'teacher_' + cleaned


class Teacher(tf.Module):
  """A frozen policy: observations in, logits (and a value) out, gradients stopped.

  Built by `load_teacher`; a subclass implements `_step` for one batch-major step. Properties describe
  what the teacher was checked against: `observation_spec`, `action_spec` (its discrete actions),
  `num_actions`, `state_spec` (`()` when feed-forward), `has_value`, `name` and `source` (its path or a
  description, for messages).
  """

  def __init__(self, observation_spec, action_spec, num_actions: int, state_spec=(), has_value: bool = False,
               name: str = 'teacher', source: Optional[str] = None):
    """Records the specs; a subclass loads the weights.

    Args:
      observation_spec: The (nest of) `TensorSpec` the teacher takes, without batch dimensions.
      action_spec: The scalar integer `BoundedTensorSpec` of its discrete actions.
      num_actions: A, the width of its logits.
      state_spec: Its policy state spec; `()` for a feed-forward teacher. Default ().
      has_value: Whether `logits_and_value` returns a value. Default False.
      name: The teacher's name (`TeacherSet.names`, the keys of λ_k). Default 'teacher'.
      source: Where it came from, for messages. Default `name`.
    """
    super().__init__(name=_module_name(name))
    self._teacher_name = name
    self._observation_spec = observation_spec
    self._action_spec = action_spec
    self._num_actions = int(num_actions)
    self._state_spec = state_spec
    self._has_value = bool(has_value)
    self._source = source or name

  @property
  def name(self) -> str:
    """The teacher's name as given (the `tf.Module` scope uses a cleaned copy)."""
    return self._teacher_name

  @property
  def source(self) -> str:
    """The path (or a description) the teacher was loaded from."""
    return self._source

  @property
  def observation_spec(self):
    """The observation spec the teacher takes (matches the student's)."""
    return self._observation_spec

  @property
  def action_spec(self):
    """The discrete action spec the teacher acts over (matches the student's)."""
    return self._action_spec

  @property
  def num_actions(self) -> int:
    """A, the width of the logits."""
    return self._num_actions

  @property
  def state_spec(self):
    """The teacher's own policy state spec; `()` for a feed-forward teacher."""
    return self._state_spec

  @property
  def is_recurrent(self) -> bool:
    """True when the teacher carries a policy state between steps."""
    return bool(tf.nest.flatten(self._state_spec))

  @property
  def has_value(self) -> bool:
    """True when the teacher has a critic and `logits_and_value` returns its value."""
    return self._has_value

  @property
  def trainable_variables(self):
    """Always empty: a teacher is frozen."""
    return ()

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
    logits, value, next_state = self._step(observation, step_type, policy_state)
    logits = tf.cast(logits, tf.float32)
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

    def step(carry, inputs):
      _, _, state = carry
      observation_t, step_type_t = inputs
      logits, value, next_state = self._checked_step(observation_t, step_type_t, state)
      return logits, (tf.zeros([batch_size]) if value is None else value), next_state

    initializer = (tf.zeros([batch_size, self._num_actions]), tf.zeros([batch_size]), policy_state)
    logits, values, states = tf.scan(step, (observation, step_type), initializer=initializer)
    final_state = tf.nest.map_structure(lambda s: s[-1], states)
    return logits, (values if self._has_value else None), final_state

  def _step(self, observation, step_type, policy_state):
    """One batch-major step: `([B, A] logits, [B] value or None, next_state)`. Subclasses implement it."""
    raise NotImplementedError

  def __repr__(self):
    return (f'{type(self).__name__}(name={self._teacher_name!r}, source={self._source!r}, '
            f'num_actions={self._num_actions}, recurrent={self.is_recurrent}, has_value={self._has_value})')


class SavedPolicyTeacher(Teacher):
  """A policy exported by TF-Agents' `PolicySaver`, called through its saved functions (`load_teacher`)."""

  def __init__(self, saved_policy, policy_specs, function_name: str, logits_from: str,
               value_head: Optional[str], name: str, source: str):
    """Wraps an already loaded policy; use `load_teacher`.

    Args:
      saved_policy: What `tf.saved_model.load` returned for the export.
      policy_specs: `{'time_step_spec', 'action_spec', 'policy_state_spec', 'info_spec'}` (TensorSpecs).
      function_name: 'distribution' or 'action', the saved function to call.
      logits_from: 'info' (`info['logits']`) or 'distribution' (the Categorical's logits).
      value_head: The key of the value in `info['values']`, '' for `info['value']`, None for no value.
      name: The teacher's name.
      source: The export's path.
    """
    action_spec = policy_specs['action_spec']
    super().__init__(policy_specs['time_step_spec'].observation, action_spec,
                     num_actions=int(action_spec.maximum) - int(action_spec.minimum) + 1,
                     state_spec=policy_specs['policy_state_spec'], has_value=value_head is not None,
                     name=name, source=source)
    self._policy = _Untracked(saved_policy)
    self._time_step_spec = policy_specs['time_step_spec']
    self._function_name = function_name
    self._logits_from = logits_from
    self._value_head = value_head

  @property
  def saved_policy(self):
    """What `tf.saved_model.load` returned for the export (its `model_variables` hold the weights)."""
    return self._policy.value

  def _initial_state(self, batch_size):
    return self._policy.value.get_initial_state(batch_size)

  def _step(self, observation, step_type, policy_state):
    time_step = _time_step(observation, step_type, self._time_step_spec)
    policy_step = getattr(self._policy.value, self._function_name)(time_step, policy_state)
    if self._logits_from == 'info':
      logits = policy_step.info['logits']
    else:
      logits = policy_step.action.logits_parameter()
    value = None
    if self._value_head == '':
      value = policy_step.info['value']
    elif self._value_head is not None:
      value = policy_step.info['values'][self._value_head]
    return logits, value, policy_step.state


class KerasTeacher(Teacher):
  """A Keras model as a feed-forward teacher (see `load_teacher` for the outputs it may have)."""

  def __init__(self, model, observation_spec, action_spec, num_actions: int, has_value: bool, name: str,
               source: str):
    """Wraps an already checked Keras model; use `load_teacher`."""
    super().__init__(observation_spec, action_spec, num_actions=num_actions, has_value=has_value, name=name,
                     source=source)
    self._model = _Untracked(model)
    inputs = getattr(model, 'inputs', None)
    self._input_dtype = inputs[0].dtype if inputs else None

  def _step(self, observation, step_type, policy_state):
    del step_type, policy_state  # Feed-forward.
    if self._input_dtype is not None:
      observation = tf.cast(observation, self._input_dtype)
    logits, value = _keras_logits_and_value(self._model.value(observation, training=False), self._source)
    return logits, value, ()


class NetworkTeacher(Teacher):
  """A feed-forward or recurrent `ActorCriticNetwork` held as a teacher: its logits, no value.

  The network's weights are not tracked (they are not the student's to train or checkpoint). Used for
  population peers (`PeerTeacher`) and for a policy export rebuilt as a network
  (`agents.data_free.frame_teacher`, whose input is differentiable).
  """

  def __init__(self, network, name: str, source: Optional[str] = None):
    """Wraps `network` (its variables are created here)."""
    network.create_variables()
    action_spec = network.action_spec
    super().__init__(network.input_tensor_spec, action_spec,
                     num_actions=int(action_spec.maximum) - int(action_spec.minimum) + 1,
                     state_spec=network.state_spec, has_value=False, name=name, source=source)
    self._network = _Untracked(network)

  @property
  def network(self):
    """The network whose variables hold the teacher's weights."""
    return self._network.value

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
    self._active = _Untracked(tf.Variable(0.0, trainable=False, name=f'{_module_name(name)}_active'))
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


def _keras_logits_and_value(outputs, source):
  """Splits a Keras teacher's outputs into `(logits, value or None)`; raises on other structures."""
  if isinstance(outputs, Mapping):
    if 'logits' not in outputs:
      raise errors.PolicyLoadError(f"Keras teacher {source!r} returns a dict without 'logits' (keys "
                                   f"{sorted(outputs)}); return {{'logits': [B, A], 'value': [B]}}.")
    return outputs['logits'], outputs.get('value')
  if isinstance(outputs, (list, tuple)):
    if len(outputs) == 1:
      return outputs[0], None
    if len(outputs) == 2 and all(tf.is_tensor(o) for o in outputs):
      return outputs[0], outputs[1]
    raise errors.PolicyLoadError(f'Keras teacher {source!r} returns {len(outputs)} outputs; return logits '
                                 '[B, A] or a pair (logits [B, A], value [B]).')
  return outputs, None


def _discrete_action_count(spec, who: str, source: str) -> int:
  """A for a scalar integer `BoundedTensorSpec`, or a one-line error."""
  if (tf.nest.is_nested(spec) or not isinstance(spec, tensor_spec.BoundedTensorSpec)
      or not spec.dtype.is_integer or spec.shape.rank != 0):
    raise errors.PolicyLoadError(f'Kickstarting distils discrete policies: the {who} of teacher {source!r} '
                                 f'has action spec {spec!r}, not a scalar integer BoundedTensorSpec.')
  return int(spec.maximum) - int(spec.minimum) + 1


def _check_action_specs(teacher_spec, student_spec, source: str) -> None:
  teacher_actions = _discrete_action_count(teacher_spec, 'teacher', source)
  student_actions = _discrete_action_count(student_spec, 'student', source)
  if teacher_actions != student_actions:
    raise errors.PolicyLoadError(f'teacher {source!r} acts over {teacher_actions} actions ({teacher_spec!r}) '
                                 f'but the student over {student_actions} ({student_spec!r}): distil only '
                                 'between matching action spaces.')
  if teacher_spec.dtype != student_spec.dtype or int(teacher_spec.minimum) != int(student_spec.minimum):
    raise errors.PolicyLoadError(f'teacher {source!r} acts with {teacher_spec!r} but the student with '
                                 f'{student_spec!r}: distil only between matching action specs (same dtype '
                                 'and the same actions).')


def _check_observation_specs(teacher_spec, student_spec, source: str) -> None:
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


def _select_value_head(info, value_head: Optional[str], source: str) -> Optional[str]:
  """The key of the teacher's value: a head of `info['values']`, '' for `info['value']`, or None."""
  heads = None
  if isinstance(info, Mapping) and isinstance(info.get('values'), Mapping):
    heads = list(info['values'])
  elif isinstance(info, Mapping) and 'value' in info:
    heads = ['']
  if not heads:
    if value_head is not None:
      raise errors.ConfigError(f'teacher {source!r} has no critic in its PolicyStep.info ({info!r}) but '
                               f'value_head={value_head!r} was asked for; leave value_head=None.')
    return None
  if value_head is None:
    if _EXTRINSIC in heads:
      return _EXTRINSIC
    if len(heads) == 1:
      return heads[0]
    raise errors.ConfigError(f'teacher {source!r} has value heads {heads} and none is {_EXTRINSIC!r}; choose '
                             'one with value_head.')
  if value_head not in heads:
    raise errors.ConfigError(f'teacher {source!r} has no value head {value_head!r}; its heads are {heads}.')
  return value_head


def _time_step(observation, step_type, time_step_spec) -> ts.TimeStep:
  """A policy's input: observation and step type, reward 0 and discount 1 (policies do not read them)."""
  batch_size = tf.shape(step_type)[0]

  def filled(spec, value):
    return tf.fill(tf.concat([[batch_size], spec.shape], axis=0), tf.constant(value, spec.dtype))

  return ts.TimeStep(step_type=tf.cast(step_type, time_step_spec.step_type.dtype),
                     reward=tf.nest.map_structure(lambda spec: filled(spec, 0), time_step_spec.reward),
                     discount=tf.nest.map_structure(lambda spec: filled(spec, 1), time_step_spec.discount),
                     observation=observation)


def _probe_batch(observation_spec):
  return tf.nest.map_structure(lambda s: tf.zeros([1] + list(s.shape), s.dtype), observation_spec)


def _load_saved_policy(path: str, student_observation_spec, student_action_spec, name: str,
                       value_head: Optional[str]) -> SavedPolicyTeacher:
  specs = policy_saver.specs_from_collect_data_spec(
      tensor_spec.from_pbtxt_file(os.path.join(path, policy_saver.POLICY_SPECS_PBTXT)))
  specs = {key: tensor_spec.from_spec(value) for key, value in specs.items()}
  _check_observation_specs(specs['time_step_spec'].observation, student_observation_spec, path)
  _check_action_specs(specs['action_spec'], student_action_spec, path)
  saved_policy = tf.saved_model.load(path)
  num_actions = _discrete_action_count(specs['action_spec'], 'teacher', path)

  # Probe the saved functions once on a zero observation: `distribution` is absent or raises when the
  # policy's distribution could not be serialised; then `action` with `info['logits']` is the way.
  probe = _time_step(_probe_batch(specs['time_step_spec'].observation), tf.constant([ts.StepType.FIRST]),
                     specs['time_step_spec'])
  state = saved_policy.get_initial_state(1)
  choice = None
  if hasattr(saved_policy, 'distribution'):
    try:
      step = saved_policy.distribution(probe, state)
    except (tf.errors.OpError, TypeError, ValueError):
      step = None
    if step is not None and isinstance(step.info, Mapping) and 'logits' in step.info:
      choice = ('distribution', 'info', step)
    elif step is not None and isinstance(step.action, tfp.distributions.Categorical):
      choice = ('distribution', 'distribution', step)
  if choice is None:
    step = saved_policy.action(probe, state)
    if not (isinstance(step.info, Mapping) and 'logits' in step.info):
      raise errors.PolicyLoadError(f"teacher {path!r} gives no logits: its PolicyStep.info has no 'logits' "
                                   'and its saved distribution is not Categorical; export a policy whose '
                                   'info carries its logits (agents.policies.export_policy does).')
    choice = ('action', 'info', step)
  function_name, logits_from, step = choice
  logits = step.info['logits'] if logits_from == 'info' else step.action.logits_parameter()
  if logits.shape[-1] != num_actions:
    raise errors.PolicyLoadError(f'teacher {path!r} emits logits of width {logits.shape[-1]} for its '
                                 f'{num_actions} actions ({specs["action_spec"]!r}); its export is '
                                 'inconsistent.')
  head = _select_value_head(step.info, value_head, path)
  return SavedPolicyTeacher(saved_policy, specs, function_name, logits_from, head, name=name, source=path)


def _load_keras(model, student_observation_spec, student_action_spec, name: str, source: str) -> KerasTeacher:
  num_actions = _discrete_action_count(student_action_spec, 'student', source)
  if tf.nest.is_nested(student_observation_spec):
    raise errors.PolicyLoadError(f'Keras teacher {source!r} takes one tensor but the student observes the '
                                 f'nest {student_observation_spec!r}; wrap the teacher in a Teacher '
                                 'subclass.')
  inputs = getattr(model, 'inputs', None)
  if inputs:
    if len(inputs) != 1:
      raise errors.PolicyLoadError(f'Keras teacher {source!r} has {len(inputs)} inputs; a teacher takes one '
                                   'observation.')
    input_shape = tf.TensorShape(inputs[0].shape[1:])
    if not input_shape.is_compatible_with(student_observation_spec.shape):
      raise errors.PolicyLoadError(f'teacher {source!r} takes observations of shape {tuple(input_shape)} '
                                   f'({inputs[0]!r}) but the student observes {student_observation_spec!r}: '
                                   'distil only between matching observation specs.')
  # The model takes the student's observations, cast to its input dtype when it declares one.
  input_dtype = inputs[0].dtype if inputs else student_observation_spec.dtype
  model.trainable = False
  try:
    outputs = model(tf.cast(_probe_batch(student_observation_spec), input_dtype), training=False)
  except (ValueError, TypeError, tf.errors.OpError) as error:
    raise errors.PolicyLoadError(f'teacher {source!r} cannot take observations of the student\'s spec '
                                 f'{student_observation_spec!r}: {str(error).splitlines()[0]}') from error
  logits, value = _keras_logits_and_value(outputs, source)
  if logits.shape.rank != 2 or logits.shape[-1] != num_actions:
    raise errors.PolicyLoadError(f'teacher {source!r} outputs logits of shape {tuple(logits.shape[1:])} (a '
                                 f'batch of 1) but the student acts over {num_actions} actions '
                                 f'({student_action_spec!r}): distil only between matching action spaces.')
  if value is not None and tuple(value.shape) not in ((1,), (1, 1)):
    raise errors.PolicyLoadError(f'teacher {source!r} outputs a value of shape {tuple(value.shape)}; it must '
                                 'be [B] or [B, 1].')
  return KerasTeacher(model, student_observation_spec, student_action_spec, num_actions,
                      has_value=value is not None, name=name, source=source)


def load_teacher(path_or_model: Union[str, os.PathLike, tf.keras.Model, Teacher], student_observation_spec,
                 student_action_spec, name: Optional[str] = None,
                 value_head: Optional[str] = None) -> Teacher:
  """Loads a teacher and checks it against the student's specs (see the module docstring).

  Call eagerly, once, outside `tf.function` and strategy scopes.

  Args:
    path_or_model: A PolicySaver export directory; a Keras model file (`.keras`, `.h5`) or Keras SavedModel
      directory; a `tf.keras.Model` (set to `trainable = False`); or a `Teacher` (only checked).
      A Keras model takes the student's observations cast to its input dtype, and is checked by its input
      shape and the width of its logits.
    student_observation_spec: The student's observation spec (`TensorSpec` or `ArraySpec`, or a nest).
    student_action_spec: The student's action spec, a scalar integer bounded spec.
    name: The teacher's name. Default: the directory's or file's base name, or the model's name.
    value_head: Which of a policy's `info['values']` heads is its value. Default None: 'extrinsic' when
      present, else its only head; no value when the policy has no critic.

  Returns:
    A `Teacher`.

  Raises:
    PolicyLoadError: If the source does not exist or holds no policy (`teacher_kind`), or its observation or
      action spec does not match the student's (a one-line message naming both specs and the path).
    ConfigError: If `value_head` names no head of the teacher.
  """
  student_observation_spec = tensor_spec.from_spec(student_observation_spec)
  student_action_spec = tensor_spec.from_spec(student_action_spec)
  if isinstance(path_or_model, Teacher):
    _check_observation_specs(path_or_model.observation_spec, student_observation_spec, path_or_model.source)
    _check_action_specs(path_or_model.action_spec, student_action_spec, path_or_model.source)
    return path_or_model
  if isinstance(path_or_model, tf.keras.Model):
    model = path_or_model
    return _load_keras(model, student_observation_spec, student_action_spec, name=name or model.name,
                       source=f'Keras model {model.name!r}')
  if not isinstance(path_or_model, (str, os.PathLike)):
    raise TypeError(f'load_teacher takes a path, a tf.keras.Model or a Teacher, got {path_or_model!r}.')
  path = os.fspath(path_or_model)
  default_name = os.path.basename(path.rstrip('/')) or 'teacher'
  name = name or os.path.splitext(default_name)[0]
  if teacher_kind(path) == 'policy':
    return _load_saved_policy(path, student_observation_spec, student_action_spec, name, value_head)
  model = tf.keras.models.load_model(path, compile=False)
  return _load_keras(model, student_observation_spec, student_action_spec, name=name, source=path)


# What a teacher path may hold, for the messages that refuse one.
EXPECTED_TEACHER = ('a PolicySaver export (a directory with saved_model.pb and '
                    f'{policy_saver.POLICY_SPECS_PBTXT}, e.g. the policy/ of a train_main run) or a Keras '
                    'model (a .keras or .h5 file, or a Keras SavedModel directory)')


def teacher_kind(path: str) -> str:
  """What the teacher at `path` is, from its files alone (nothing is loaded): 'policy' for a PolicySaver
  export, 'keras' for a Keras model file or SavedModel directory.

  Raises:
    PolicyLoadError: `path` does not exist or holds neither (one line naming the path and what is
      expected), e.g. a run directory instead of its policy/, or an export whose saved_model.pb is missing.
  """
  if not tf.io.gfile.exists(path):
    raise errors.PolicyLoadError(f'teacher {path!r} does not exist; pass {EXPECTED_TEACHER}.')
  if tf.io.gfile.isdir(path):
    has_saved_model = tf.io.gfile.exists(os.path.join(path, 'saved_model.pb'))
    if tf.io.gfile.exists(os.path.join(path, policy_saver.POLICY_SPECS_PBTXT)):
      if not has_saved_model:
        raise errors.PolicyLoadError(f'teacher {path!r} holds no policy: it has '
                                     f'{policy_saver.POLICY_SPECS_PBTXT} but no saved_model.pb (an export '
                                     'cut short?); pass the policy/ directory of a finished train_main '
                                     'run.')
      return 'policy'
    if has_saved_model and tf.io.gfile.exists(os.path.join(path, 'keras_metadata.pb')):
      return 'keras'
  elif path.endswith(('.keras', '.h5')):
    return 'keras'
  raise errors.PolicyLoadError(f'teacher {path!r} holds no policy; pass {EXPECTED_TEACHER}.')


# ------------------------------------------------------------------------------------------------------------
# Per-task routing.
# ------------------------------------------------------------------------------------------------------------


def _scatter_rows(values, rows, batch_size, batch_axis: int):
  """Places `values` (batch `N` on `batch_axis`) at `rows` of a zero tensor with batch `batch_size`."""
  if batch_axis == 1:
    values = _swap_leading_axes(values)
  shape = tf.concat([[batch_size], tf.shape(values)[1:]], axis=0)
  scattered = tf.scatter_nd(rows[:, None], values, shape)
  return _swap_leading_axes(scattered) if batch_axis == 1 else scattered


def _swap_leading_axes(x):
  return tf.transpose(x, [1, 0] + list(range(2, x.shape.rank)))


def _row_mask(in_task, x):
  """`in_task` [B] reshaped to broadcast against a state tensor `x` [B, ...]."""
  return tf.reshape(in_task, tf.concat([[-1], tf.ones([x.shape.rank - 1], tf.int32)], axis=0))


def evaluate_on_task(teacher: Teacher, task: Optional[int], observation, task_ids=None, step_type=None,
                     policy_state=None, gather_rows: bool = True) -> TeacherOutput:
  """Runs `teacher` on the rows of task `task` and places its outputs back among all `B` rows.

  The routing of multi-task kickstarting: a task's teacher teaches on its own task's observations only.

  Args:
    teacher: A `Teacher`.
    task: The task id whose rows the teacher sees; None for every row.
    observation: `[B, *obs_shape]` or time-major `[T, B, *obs_shape]`.
    task_ids: int `[B]`, the task of each batch column (one environment plays one task); needed unless
      `task` is None.
    step_type: `[B]` or `[T, B]` step types, or None (see `Teacher.logits_and_value`).
    policy_state: The teacher's state for all `B` rows, or None for its initial state.
    gather_rows: True (default): gather the task's rows and run the teacher on those only (dynamic row
      counts; the cheaper choice on CPU/GPU). False: run the teacher on every row and mask, which keeps
      shapes static for XLA/TPU.

  Returns:
    `TeacherOutput(logits, value, mask, state)`: logits `[B, A]` / `[T, B, A]` (zeros outside the task),
    value `[B]` / `[T, B]` (zeros outside the task) or None, float32 mask `[B]` / `[T, B]` (1 on the
    task's rows), and the next state for all `B` rows (rows outside the task keep `policy_state`).
  """
  outer_rank = teacher.outer_rank(observation)
  batch_axis = outer_rank - 1
  leaf = tf.nest.flatten(observation)[0]
  outer_shape = tf.shape(leaf)[:outer_rank]
  batch_size = outer_shape[-1]
  if policy_state is None:
    policy_state = teacher.get_initial_state(batch_size)
  if task is None:
    logits, value, state = teacher.logits_and_value(observation, step_type, policy_state)
    return TeacherOutput(logits, value, tf.ones(outer_shape, tf.float32), state)

  if task_ids is None:
    raise ValueError(f'Teacher {teacher.name!r} teaches task {task!r} only: pass task_ids [B], the task of '
                     f'each batch column.')
  task_ids = tf.convert_to_tensor(task_ids)
  if not task_ids.dtype.is_integer or task_ids.shape.rank not in (None, 1):
    raise ValueError(f'task_ids must be an integer vector [B] (one task per batch column), got shape '
                     f'{task_ids.shape} and dtype {task_ids.dtype.name}.')
  in_task = tf.equal(task_ids, tf.cast(task, task_ids.dtype))
  mask = tf.cast(in_task, tf.float32)
  if outer_rank == 2:
    mask = tf.broadcast_to(mask[None], outer_shape)
  mask.set_shape(leaf.shape[:outer_rank])

  if gather_rows:
    rows = tf.cast(tf.reshape(tf.where(in_task), [-1]), tf.int32)

    def gather(x, axis=batch_axis):
      return tf.gather(x, rows, axis=axis)

    logits, value, state_rows = teacher.logits_and_value(
        tf.nest.map_structure(gather, observation), None if step_type is None else gather(step_type),
        tf.nest.map_structure(lambda s: gather(s, axis=0), policy_state))
    logits = _scatter_rows(logits, rows, batch_size, batch_axis)
    value = None if value is None else _scatter_rows(value, rows, batch_size, batch_axis)
    state = tf.nest.map_structure(lambda full, part: tf.tensor_scatter_nd_update(full, rows[:, None], part),
                                  policy_state, state_rows)
  else:
    logits, value, state = teacher.logits_and_value(observation, step_type, policy_state)
    keep = tf.cast(mask, tf.bool)
    logits = tf.where(keep[..., None], logits, tf.zeros_like(logits))
    value = None if value is None else tf.where(keep, value, tf.zeros_like(value))
    state = tf.nest.map_structure(lambda new, old: tf.where(_row_mask(in_task, new), new, old), state,
                                  policy_state)
  logits.set_shape(leaf.shape[:outer_rank].concatenate([teacher.num_actions]))
  if value is not None:
    value.set_shape(leaf.shape[:outer_rank])
  return TeacherOutput(logits, value, mask, state)


def _teacher_task_pairs(teachers_per_task) -> List[Tuple[Optional[int], Teacher]]:
  """`[(task, teacher), ...]` from a mapping task -> teacher(s) or a sequence indexed by task id."""
  if isinstance(teachers_per_task, Mapping):
    items = list(teachers_per_task.items())
  elif isinstance(teachers_per_task, Sequence):
    items = list(enumerate(teachers_per_task))
  else:
    raise TypeError(f'teachers_per_task must map task ids to teachers or list them by task id, got '
                    f'{teachers_per_task!r}.')
  pairs = []
  for task, teachers in items:
    if task is not None and (isinstance(task, bool) or not isinstance(task, (int, np.integer))):
      raise TypeError(f'Task ids must be ints (or None for every task), got {task!r}.')
    teachers = [] if teachers is None else [teachers] if isinstance(teachers, Teacher) else list(teachers)
    for teacher in teachers:
      if not isinstance(teacher, Teacher):
        raise TypeError(f'teachers_per_task[{task!r}] holds {teacher!r}, not a Teacher (use load_teacher).')
      pairs.append((None if task is None else int(task), teacher))
  return pairs


def route_by_task(task_ids, teachers_per_task, observation, step_type=None, policy_states=None,
                  gather_rows: bool = True) -> List[TeacherOutput]:
  """Each task's observations go to that task's own teacher(s) (Kickstarting, multi-teacher set-up).

  Args:
    task_ids: int `[B]`, the task of each batch column (rows of different tasks may interleave).
    teachers_per_task: A mapping task id -> a `Teacher` or a list of them (key None: teachers of every
      row), or a sequence whose entry i holds task i's teacher(s) (None or [] for a task without one).
    observation: `[B, *obs_shape]` or time-major `[T, B, *obs_shape]`.
    step_type: `[B]` or `[T, B]` step types, or None.
    policy_states: One state per teacher in the output order (for all `B` rows each), or None for the
      initial states.
    gather_rows: See `evaluate_on_task`.

  Returns:
    One `TeacherOutput` per teacher, in the order of `teachers_per_task` (tasks in mapping/sequence order,
    then each task's teachers in order): logits zero and mask 0 outside the teacher's task.
  """
  pairs = _teacher_task_pairs(teachers_per_task)
  if policy_states is None:
    policy_states = [None] * len(pairs)
  if len(policy_states) != len(pairs):
    raise ValueError(f'route_by_task got {len(policy_states)} policy states for {len(pairs)} teachers.')
  return [evaluate_on_task(teacher, task, observation, task_ids=task_ids, step_type=step_type,
                           policy_state=state, gather_rows=gather_rows)
          for (task, teacher), state in zip(pairs, policy_states)]


@gin.configurable
class TeacherSet(tf.Module):
  """The K teachers of a kickstarted student, each with the task it teaches (gin-configurable).

  gin, e.g. two experts of a two-task student:

    TeacherSet.paths = ['/runs/seek/policy', '/runs/avoid/policy']
    TeacherSet.names = ['seek', 'avoid']
    TeacherSet.tasks = [0, 1]

  and the learner builds `TeacherSet(observation_spec, action_spec)` and a `schedules.TeacherWeights`
  over `teacher_set.names`.
  """

  def __init__(self, student_observation_spec, student_action_spec, paths: Sequence[Any] = (),
               names: Optional[Sequence[str]] = None, tasks: Optional[Sequence[Optional[int]]] = None,
               value_head: Optional[str] = None, gather_rows: bool = True, peers: int = 0,
               student_network=None, name: str = 'TeacherSet'):
    """Loads every teacher (eagerly, once) and checks it against the student's specs.

    Args:
      student_observation_spec: The student's observation spec.
      student_action_spec: The student's discrete action spec.
      paths: The teachers: PolicySaver directories, Keras model files, Keras models or `Teacher`s.
        Default () (no teacher, no kickstarting).
      names: One unique name per teacher (the keys of their λ_k). Default None: 'teacher_0', 'teacher_1', ...
      tasks: The task id each teacher teaches, one per teacher, None for every task. Default None: every
        teacher teaches every row.
      value_head: Passed to `load_teacher` for each teacher. Default None.
      gather_rows: See `evaluate_on_task`; False for XLA/TPU. Default True.
      peers: Codistillation: this many `PeerTeacher`s named 'peer_0', 'peer_1', ... after the teachers of
        `paths`, each a copy of `student_network` that teaches every task once a population member loads
        a peer's weights into it (`binaries/pbt_main.py`, `pbt.codistillation`). Their λ are the weights
        of those names. Default 0.
      student_network: The student's network (TF-Agents `Network`), copied for the peer teachers; the
        learners pass it. Needed when `peers` > 0.
      name: Module name.

    Raises:
      ValueError: If `names` or `tasks` do not give one entry per teacher, names repeat, or a teacher does
        not match the student (see `load_teacher`).
    """
    super().__init__(name=name)
    paths = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if names is None:
      names = [f'teacher_{k}' for k in range(len(paths))]
    names = [names] if isinstance(names, str) else list(names)
    if len(names) != len(paths) or len(set(names)) != len(names):
      raise errors.ConfigError(f'TeacherSet.names must give one unique name per teacher ({len(paths)} '
                               f'paths), got {names!r}.')
    tasks = [None] * len(paths) if tasks is None else list(tasks)
    if len(tasks) != len(paths):
      raise errors.ConfigError(f'TeacherSet.tasks must give one task id (or None) per teacher ({len(paths)} '
                               f'paths), got {tasks!r}.')
    for task in tasks:
      if task is not None and (isinstance(task, bool) or not isinstance(task, (int, np.integer))):
        raise errors.ConfigError(f'TeacherSet.tasks holds {task!r}; task ids are ints (None: every task).')
    if isinstance(peers, bool) or not isinstance(peers, (int, np.integer)) or peers < 0:
      raise errors.ConfigError(f'TeacherSet.peers={peers!r} must be a count >= 0 of peer teachers '
                               '(codistillation).')
    if peers and student_network is None:
      raise errors.ConfigError('TeacherSet.peers > 0 needs the student\'s network to copy: build the '
                               'TeacherSet through a learner\'s Kickstarter (PPOLearner.kickstarter_fn = '
                               '@Kickstarter).')
    peer_names = [f'{PEER_PREFIX}{k}' for k in range(peers)]
    clashes = sorted(set(peer_names) & set(names))
    if clashes:
      raise errors.ConfigError(f'TeacherSet.names {clashes} are the peer teachers\' names; rename those '
                               'teachers.')
    self._teachers = [load_teacher(path, student_observation_spec, student_action_spec, name=teacher_name,
                                   value_head=value_head) for path, teacher_name in zip(paths, names)]
    self._teachers += [PeerTeacher(student_network.copy(name=f'{peer_name}_network'), peer_name)
                       for peer_name in peer_names]
    self._names = tuple(names) + tuple(peer_names)
    self._tasks = tuple(None if task is None else int(task) for task in tasks) + (None,) * peers
    self._gather_rows = gather_rows

  def __len__(self) -> int:
    return len(self._teachers)

  @property
  def teachers(self) -> List[Teacher]:
    """The K teachers, in order."""
    return list(self._teachers)

  @property
  def names(self) -> Tuple[str, ...]:
    """The K names, in order (the keys of `schedules.TeacherWeights`)."""
    return self._names

  @property
  def peer_teachers(self) -> List['PeerTeacher']:
    """The codistillation teachers (`peers`), in order."""
    return [teacher for teacher in self._teachers if isinstance(teacher, PeerTeacher)]

  @property
  def tasks(self) -> Tuple[Optional[int], ...]:
    """The task each teacher teaches (None: every task)."""
    return self._tasks

  def get_initial_state(self, batch_size) -> tuple:
    """One initial policy state per teacher (`()` for feed-forward ones)."""
    return tuple(teacher.get_initial_state(batch_size) for teacher in self._teachers)

  def outputs(self, observation, task_ids=None, step_type=None, policy_states=None) -> List[TeacherOutput]:
    """Every teacher's `TeacherOutput` on the rows of its task (see `evaluate_on_task`).

    Args:
      observation: `[B, *obs_shape]` or time-major `[T, B, *obs_shape]`.
      task_ids: int `[B]`, the task of each batch column; needed when a teacher has a task.
      step_type: `[B]` or `[T, B]`, or None.
      policy_states: `get_initial_state`'s structure (one state per teacher), or None.

    Returns:
      K `TeacherOutput`s, in the order of `names`.
    """
    if policy_states is None:
      policy_states = [None] * len(self._teachers)
    outputs = []
    for teacher, task, state in zip(self._teachers, self._tasks, policy_states):
      output = evaluate_on_task(teacher, task, observation, task_ids=task_ids, step_type=step_type,
                                policy_state=state, gather_rows=self._gather_rows)
      if isinstance(teacher, PeerTeacher):
        output = output._replace(mask=output.mask * tf.cast(teacher.active, output.mask.dtype))
      outputs.append(output)
    return outputs

  def logits(self, observation, task_ids=None, step_type=None) -> List[tf.Tensor]:
    """The K teachers' logits `[B, A]` (or `[T, B, A]`), from their initial states; see `outputs`."""
    return [output.logits for output in self.outputs(observation, task_ids=task_ids, step_type=step_type)]
