"""Teachers for kickstarting: frozen policies whose logits (and values) enter the distillation losses.

Kickstarting (Schmitt et al. 2018, arXiv 1803.03835; PAPERS.md §2) needs of a teacher only its action
distribution on the student's observations, so a teacher's architecture is free: `load_teacher` takes

* a policy exported by TF-Agents' `PolicySaver` (a directory holding `policy_specs.pbtxt`), such as the
  ones `train_main` writes with `agents.training.policy_export.export_policy`, or a DQN agent's `agent.policy` /
  `agent.collect_policy`. The value is `info['values'][head]` (or `info['value']`) when the policy has a
  critic. Recurrent policies keep their own state (`get_initial_state(batch_size)`), separate from the
  student's;
* a Keras model mapping observations `[B, *obs_shape]` to logits `[B, A]`, or to `(logits, value)`, or
  to a dict `{'logits': ..., 'value': ...}` (a Q-network: `{'q_values': ..., 'value': ...}`); or the
  path of a saved Keras model (`.keras`, `.h5`, or a Keras SavedModel directory).

Every teacher gives the losses logits; what they are made of is the teacher's `kind`, printed in one line
when it is loaded (`Teacher.kind`, `Teacher.kind_description`), tried in this order:

* 'logits': `PolicyStep.info['logits']` (Protégé's policies emit them, also when exported greedy: the info
  carries the network's logits, the greedy action's point mass would carry none), or a Keras model's logits;
* 'Q-values softmax(Q/τ)': a Q-network's values Q taught as softmax(Q/τ) (Policy Distillation, Rusu et al.
  2016, arXiv 1511.06295), τ = `teacher_targets.q_temperature`. A Q-value export is told by its structure,
  not by its outputs: TF-Agents' `QPolicy` holds a `_q_network`, which the SavedModel keeps (as the
  variables' owner) also below a `GreedyPolicy` (`_wrapped_policy`) or `EpsilonGreedyPolicy`
  (`_greedy_policy`). An exported `QPolicy`'s Categorical distribution has Q as its logits; a greedy or
  ε-greedy export's saved functions return only actions (its saved `distribution` is Deterministic, or
  absent), so the Q-values are read inside the saved function's own graph: the input of the argmax its
  Categorical's `mode()` takes, pruned into a function of the same inputs (`_pruned_q_values`). Q-values
  are never read as logits;
* 'Categorical distribution': the saved `distribution`'s logits when it is Categorical and not a raw
  `QPolicy`'s (e.g. an `ActorPolicy`, or a Boltzmann policy over Q-values, whose distribution is the
  policy itself);
* 'action-only (ε-smoothed one-hot)': where neither logits nor Q-values can be reached (e.g. a greedy
  `ActorPolicy` export), or when `teacher_targets.action_only` asks for it (Rusu et al.'s NLL target, the
  teacher's choice without its preferences): the action of the saved `action` function as the
  distribution (1 − ε)·onehot(a) + ε/A, ε = `teacher_targets.action_smoothing`. It carries less than a
  distribution: an ε-greedy export acts randomly a share of the time, and its random actions are taught too.

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
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import gin
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import nest_utils
# A restored function's graph pruned to an inner tensor (what TF's own SavedModel v1 loader uses).
from tensorflow.python.eager import wrap_function  # pylint: disable=g-direct-tensorflow-import

from runtime import config as run_config
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

# What a teacher's logits are made of (`Teacher.kind`; the module docstring says when each is taken).
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

  @property
  def name(self) -> str:
    """The teacher's name as given (the `tf.Module` scope uses a cleaned copy)."""
    return self._teacher_name

  @property
  def source(self) -> str:
    """The path (or a description) the teacher was loaded from."""
    return self._source

  @property
  def kind(self) -> str:
    """What the teacher's logits are made of: one of `KINDS` (see the module docstring)."""
    return self._kind

  @property
  def kind_description(self) -> str:
    """The kind with its parameter, for the line printed at load time, e.g. 'Q-values softmax(Q/τ), τ = 0.01'."""
    if self._kind == KIND_Q_VALUES:
      return f'{self._kind}, τ = {self._q_temperature:g}'
    if self._kind == KIND_ACTION_ONLY:
      return f'{self._kind}, ε = {self._action_smoothing:g}'
    return self._kind

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
    """One batch-major step: `(outputs, [B] value or None, next_state)`, the outputs as `kind` says (logits
    or Q-values `[B, A]`, or actions `[B]`). Subclasses implement it."""
    raise NotImplementedError

  def __repr__(self):
    return (f'{type(self).__name__}(name={self._teacher_name!r}, source={self._source!r}, '
            f'kind={self.kind_description!r}, num_actions={self._num_actions}, recurrent={self.is_recurrent}, '
            f'has_value={self._has_value})')


class SavedPolicyTeacher(Teacher):
  """A policy exported by TF-Agents' `PolicySaver`, called through its saved functions (`load_teacher`)."""

  def __init__(self, saved_policy, policy_specs, reader: str, kind: str, value_head: Optional[str], name: str,
               source: str, pruned_function=None, q_temperature: Optional[float] = None,
               action_smoothing: Optional[float] = None):
    """Wraps an already loaded policy; use `load_teacher`.

    Args:
      saved_policy: What `tf.saved_model.load` returned for the export.
      policy_specs: `{'time_step_spec', 'action_spec', 'policy_state_spec', 'info_spec'}` (TensorSpecs).
      reader: Where `_step` reads its outputs: one of `_READERS` (`'<function>.<what>'` of a saved
        function, or 'pruned' for `pruned_function`).
      kind: One of `KINDS` (what the outputs are).
      value_head: The key of the value in `info['values']`, '' for `info['value']`, None for no value.
      name: The teacher's name.
      source: The export's path.
      pruned_function: For reader 'pruned': `_pruned_q_values`' function.
      q_temperature: τ, for `KIND_Q_VALUES`.
      action_smoothing: ε, for `KIND_ACTION_ONLY`.
    """
    action_spec = policy_specs['action_spec']
    super().__init__(policy_specs['time_step_spec'].observation, action_spec,
                     num_actions=int(action_spec.maximum) - int(action_spec.minimum) + 1,
                     state_spec=policy_specs['policy_state_spec'], has_value=value_head is not None,
                     name=name, source=source, kind=kind, q_temperature=q_temperature,
                     action_smoothing=action_smoothing)
    if reader not in _READERS:
      raise ValueError(f'reader {reader!r} is none of {_READERS}.')
    self._policy = _Untracked(saved_policy)
    self._pruned = _Untracked(pruned_function)
    self._time_step_spec = policy_specs['time_step_spec']
    self._reader = reader
    self._value_head = value_head

  @property
  def saved_policy(self):
    """What `tf.saved_model.load` returned for the export (its `model_variables` hold the weights)."""
    return self._policy.value

  def _initial_state(self, batch_size):
    return self._policy.value.get_initial_state(batch_size)

  def _step(self, observation, step_type, policy_state):
    time_step = _time_step(observation, step_type, self._time_step_spec)
    if self._reader == 'pruned':
      outputs = self._pruned.value(*tf.nest.flatten((time_step, policy_state), expand_composites=True))
      return outputs[0], None, tf.nest.pack_sequence_as(self._state_spec, list(outputs[1:]))
    function_name, what = self._reader.split('.')
    policy_step = getattr(self._policy.value, function_name)(time_step, policy_state)
    outputs = {'info_logits': lambda: policy_step.info['logits'],
               'logits': lambda: policy_step.action.logits_parameter(),
               'action': lambda: policy_step.action}[what]()
    value = None
    if self._value_head == '':
      value = policy_step.info['value']
    elif self._value_head is not None:
      value = policy_step.info['values'][self._value_head]
    return outputs, value, policy_step.state


class KerasTeacher(Teacher):
  """A Keras model as a feed-forward teacher (see `load_teacher` for the outputs it may have)."""

  def __init__(self, model, observation_spec, action_spec, num_actions: int, has_value: bool, name: str,
               source: str, kind: str = KIND_LOGITS, q_temperature: Optional[float] = None):
    """Wraps an already checked Keras model; use `load_teacher`. `kind` is `KIND_Q_VALUES` for a model
    returning `{'q_values': ...}`."""
    super().__init__(observation_spec, action_spec, num_actions=num_actions, has_value=has_value, name=name,
                     source=source, kind=kind, q_temperature=q_temperature)
    self._model = _Untracked(model)
    inputs = getattr(model, 'inputs', None)
    self._input_dtype = inputs[0].dtype if inputs else None

  def _step(self, observation, step_type, policy_state):
    del step_type, policy_state  # Feed-forward.
    if self._input_dtype is not None:
      observation = tf.cast(observation, self._input_dtype)
    outputs, value, _ = _keras_outputs(self._model.value(observation, training=False), self._source)
    return outputs, value, ()


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


def _keras_outputs(outputs, source):
  """Splits a Keras teacher's outputs into `(logits or Q-values, value or None, kind)`; raises on other
  structures. Q-values are marked by their key: a dict `{'q_values': [B, A]}`."""
  if isinstance(outputs, Mapping):
    keys = [key for key in ('logits', 'q_values') if key in outputs]
    if len(keys) != 1:
      raise errors.PolicyLoadError(f"Keras teacher {source!r} returns a dict with keys {sorted(outputs)}; "
                                   "return {'logits': [B, A], 'value': [B]} or, for a Q-network, "
                                   "{'q_values': [B, A]}.")
    return outputs[keys[0]], outputs.get('value'), KIND_Q_VALUES if keys[0] == 'q_values' else KIND_LOGITS
  if isinstance(outputs, (list, tuple)):
    if len(outputs) == 1:
      return outputs[0], None, KIND_LOGITS
    if len(outputs) == 2 and all(tf.is_tensor(o) for o in outputs):
      return outputs[0], outputs[1], KIND_LOGITS
    raise errors.PolicyLoadError(f'Keras teacher {source!r} returns {len(outputs)} outputs; return logits '
                                 '[B, A] or a pair (logits [B, A], value [B]).')
  return outputs, None, KIND_LOGITS


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


# Where `SavedPolicyTeacher._step` reads: '<saved function>.<output>', or 'pruned' (`_pruned_q_values`).
_READERS = ('distribution.info_logits', 'action.info_logits', 'distribution.logits', 'action.action', 'pruned')

# The attributes through which TF-Agents' policy wrappers hold the policy they wrap (GreedyPolicy and
# other PolicyWrappers: `_wrapped_policy`; EpsilonGreedyPolicy: `_greedy_policy`), and QPolicy's network.
_WRAPPED_POLICY_ATTRIBUTES = ('_wrapped_policy', '_greedy_policy')
_Q_NETWORK_ATTRIBUTE = '_q_network'
# The argmax of a tfp Categorical's `mode()`: its input is the Categorical's logits (a QPolicy's: Q).
_CATEGORICAL_MODE = re.compile(r'(^|/)Categorical(_\d+)?/mode/ArgMax$')


def _q_network_depth(saved_policy) -> Optional[int]:
  """How many policy wrappers lie above a QPolicy's Q-network in an export: 0 for an exported `QPolicy`,
  1 for a `GreedyPolicy` over one, 2 for an `EpsilonGreedyPolicy`; None when the export holds no Q-network.

  `PolicySaver` keeps the policy's checkpoint dependencies (`_all_assets`), so the restored object tree
  has the classes' attributes though none of their Python methods."""
  children = dict(getattr(saved_policy, '_all_assets', None) or {})
  for depth in range(len(_WRAPPED_POLICY_ATTRIBUTES) + 2):
    if _Q_NETWORK_ATTRIBUTE in children:
      return depth
    wrapped = next((children[key] for key in _WRAPPED_POLICY_ATTRIBUTES if key in children), None)
    if wrapped is None:
      return None
    children = {reference.name: reference.ref for reference in wrapped._checkpoint_dependencies}  # pylint: disable=protected-access
  return None


def _pruned_q_values(saved_policy, num_actions: int):
  """A function of a saved function's inputs returning `[Q [B, A], *next state]`, or None.

  A greedy Q-policy's saved functions return its argmax action only; their graphs still compute the
  Q-values, as the input of the one argmax a Categorical's `mode()` takes. The graph (its variables
  captured from the loaded SavedModel) is pruned to that tensor and the policy state's outputs, as TF's
  SavedModel v1 loader prunes signatures. Tried in `distribution`, then `action` (an ε-greedy export has no
  distribution). The result is differentiable with respect to the observation, and callable in a
  `tf.function`.
  """
  for function_name in ('distribution', 'action'):
    for concrete in getattr(getattr(saved_policy, function_name, None), 'concrete_functions', ()):
      graph = concrete.graph
      modes = [op for op in graph.get_operations() if op.type == 'ArgMax' and _CATEGORICAL_MODE.search(op.name)]
      if len(modes) != 1:
        continue
      q_values = modes[0].inputs[0]
      if not q_values.dtype.is_floating or q_values.shape.rank != 2 or q_values.shape[-1] != num_actions:
        continue
      structure = graph.structured_outputs
      if not hasattr(structure, 'state'):
        continue
      first_state = len(tf.nest.flatten(structure.action, expand_composites=True))
      state_outputs = graph.outputs[first_state:first_state + len(tf.nest.flatten(structure.state))]
      captured = {id(internal) for _, internal in graph.captures}
      feeds = [tensor for tensor in graph.inputs if id(tensor) not in captured]
      return wrap_function.WrappedFunction(graph, variable_holder=None).prune(feeds, [q_values] + state_outputs)
  return None


def _call_saved_distribution(saved_policy, probe, state):
  """The saved `distribution`'s PolicyStep on `probe`, or None when the export could not serialise it."""
  if not hasattr(saved_policy, 'distribution'):
    return None
  try:
    return saved_policy.distribution(probe, state)
  except (tf.errors.OpError, TypeError, ValueError):
    return None


def _has_info_logits(step) -> bool:
  return step is not None and isinstance(step.info, Mapping) and 'logits' in step.info


def _load_saved_policy(path: str, student_observation_spec, student_action_spec, name: str,
                       value_head: Optional[str], q_temperature: float, action_smoothing: float,
                       action_only: bool) -> SavedPolicyTeacher:
  """Loads a PolicySaver export and chooses what it teaches through (its kind; the module docstring)."""
  specs = policy_saver.specs_from_collect_data_spec(
      tensor_spec.from_pbtxt_file(os.path.join(path, policy_saver.POLICY_SPECS_PBTXT)))
  specs = {key: tensor_spec.from_spec(value) for key, value in specs.items()}
  _check_observation_specs(specs['time_step_spec'].observation, student_observation_spec, path)
  _check_action_specs(specs['action_spec'], student_action_spec, path)
  saved_policy = tf.saved_model.load(path)
  num_actions = _discrete_action_count(specs['action_spec'], 'teacher', path)

  # Probe the saved functions once on a zero observation: `distribution` is absent or raises when the
  # policy's distribution could not be serialised (an ε-greedy policy's).
  probe = _time_step(_probe_batch(specs['time_step_spec'].observation), tf.constant([ts.StepType.FIRST]),
                     specs['time_step_spec'])
  state = saved_policy.get_initial_state(1)
  distribution_step = _call_saved_distribution(saved_policy, probe, state)
  action_step = saved_policy.action(probe, state)
  is_categorical = distribution_step is not None and isinstance(distribution_step.action,
                                                                tfp.distributions.Categorical)
  q_depth = _q_network_depth(saved_policy)
  pruned = None
  if action_only:
    reader, kind, step = 'action.action', KIND_ACTION_ONLY, action_step
  elif _has_info_logits(distribution_step):
    reader, kind, step = 'distribution.info_logits', KIND_LOGITS, distribution_step
  elif q_depth == 0 and is_categorical:  # an exported QPolicy: its Categorical's logits are Q
    reader, kind, step = 'distribution.logits', KIND_Q_VALUES, distribution_step
  elif q_depth is not None and (pruned := _pruned_q_values(saved_policy, num_actions)) is not None:
    reader, kind, step = 'pruned', KIND_Q_VALUES, None
  elif is_categorical:
    reader, kind, step = 'distribution.logits', KIND_DISTRIBUTION, distribution_step
  elif _has_info_logits(action_step):
    reader, kind, step = 'action.info_logits', KIND_LOGITS, action_step
  else:
    reader, kind, step = 'action.action', KIND_ACTION_ONLY, action_step
    print(f"Teacher {path!r} gives no logits and no Categorical distribution"
          f"{', and its Q-values are not reachable in its saved graph' if q_depth is not None else ''}: it "
          'teaches through its actions only.', flush=True)
  if reader == 'action.action':
    if action_step.action.shape.rank != 1:
      raise errors.PolicyLoadError(f'teacher {path!r} acts with shape {tuple(action_step.action.shape)} on a '
                                   'batch of 1; a discrete teacher acts with one action per row.')
  elif reader == 'pruned':
    outputs = pruned(*tf.nest.flatten((probe, state), expand_composites=True))
    if tuple(outputs[0].shape) != (1, num_actions):
      raise errors.PolicyLoadError(f'teacher {path!r} computes Q-values of shape {tuple(outputs[0].shape)} '
                                   f'for its {num_actions} actions ({specs["action_spec"]!r}) on a batch of 1; '
                                   'its export is inconsistent.')
  else:
    width = (step.info['logits'] if reader.endswith('info_logits') else step.action.logits_parameter()).shape[-1]
    if width != num_actions:
      raise errors.PolicyLoadError(f'teacher {path!r} emits logits of width {width} for its {num_actions} '
                                   f'actions ({specs["action_spec"]!r}); its export is inconsistent.')
  head = _select_value_head(() if step is None else step.info, value_head, path)
  return SavedPolicyTeacher(saved_policy, specs, reader, kind, head, name=name, source=path,
                            pruned_function=pruned, q_temperature=q_temperature,
                            action_smoothing=action_smoothing)


def _load_keras(model, student_observation_spec, student_action_spec, name: str, source: str,
                q_temperature: float) -> KerasTeacher:
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
  logits, value, kind = _keras_outputs(outputs, source)
  if logits.shape.rank != 2 or logits.shape[-1] != num_actions:
    raise errors.PolicyLoadError(f'teacher {source!r} outputs logits of shape {tuple(logits.shape[1:])} (a '
                                 f'batch of 1) but the student acts over {num_actions} actions '
                                 f'({student_action_spec!r}): distil only between matching action spaces.')
  if value is not None and tuple(value.shape) not in ((1,), (1, 1)):
    raise errors.PolicyLoadError(f'teacher {source!r} outputs a value of shape {tuple(value.shape)}; it must '
                                 'be [B] or [B, 1].')
  return KerasTeacher(model, student_observation_spec, student_action_spec, num_actions,
                      has_value=value is not None, name=name, source=source, kind=kind,
                      q_temperature=q_temperature)


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


def load_teacher(path_or_model: Union[str, os.PathLike, tf.keras.Model, Teacher], student_observation_spec,
                 student_action_spec, name: Optional[str] = None, value_head: Optional[str] = None,
                 q_temperature: Optional[float] = None, action_smoothing: Optional[float] = None,
                 action_only: Optional[bool] = None) -> Teacher:
  """Loads a teacher, checks it against the student's specs and prints the kind it took.

  Call eagerly, once, outside `tf.function` and strategy scopes. The module docstring lists the kinds
  (`Teacher.kind`) and when each is taken; one line, 'Teacher <name> (<source>): <kind>', says which.

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
    q_temperature: τ > 0 of a Q-value teacher's softmax(Q/τ). Default None: `teacher_targets`' (gin; 0.01).
    action_smoothing: ε in [0, 1) of an action-only teacher. Default None: `teacher_targets`' (gin; 0.01).
    action_only: Teach through the export's actions whatever else it gives. Default None:
      `teacher_targets`' (gin; False).

  Returns:
    A `Teacher`.

  Raises:
    PolicyLoadError: If the source does not exist or holds no policy (`teacher_kind`), or its observation or
      action spec does not match the student's (a one-line message naming both specs and the path).
    ConfigError: If `value_head` names no head of the teacher, or τ, ε or `action_only` is out of range
      (checked before anything is loaded).
  """
  targets = teacher_targets()
  q_temperature = targets['q_temperature'] if q_temperature is None else q_temperature
  action_smoothing = targets['action_smoothing'] if action_smoothing is None else action_smoothing
  action_only = targets['action_only'] if action_only is None else action_only
  check_target_settings(q_temperature, action_smoothing, action_only)
  student_observation_spec = tensor_spec.from_spec(student_observation_spec)
  student_action_spec = tensor_spec.from_spec(student_action_spec)
  if isinstance(path_or_model, Teacher):
    _check_observation_specs(path_or_model.observation_spec, student_observation_spec, path_or_model.source)
    _check_action_specs(path_or_model.action_spec, student_action_spec, path_or_model.source)
    return path_or_model
  if isinstance(path_or_model, tf.keras.Model):
    model = path_or_model
    teacher = _load_keras(model, student_observation_spec, student_action_spec, name=name or model.name,
                          source=f'Keras model {model.name!r}', q_temperature=q_temperature)
  elif not isinstance(path_or_model, (str, os.PathLike)):
    raise TypeError(f'load_teacher takes a path, a tf.keras.Model or a Teacher, got {path_or_model!r}.')
  else:
    path = os.fspath(path_or_model)
    default_name = os.path.basename(path.rstrip('/')) or 'teacher'
    name = name or os.path.splitext(default_name)[0]
    if teacher_kind(path) == 'policy':
      teacher = _load_saved_policy(path, student_observation_spec, student_action_spec, name, value_head,
                                   q_temperature, action_smoothing, action_only)
    else:
      model = tf.keras.models.load_model(path, compile=False)
      teacher = _load_keras(model, student_observation_spec, student_action_spec, name=name, source=path,
                            q_temperature=q_temperature)
  if action_only and teacher.kind != KIND_ACTION_ONLY:
    raise errors.ConfigError(f'teacher_targets.action_only = True, but teacher {teacher.source!r} is a Keras '
                             'model, which has no action of its own to teach; set it to False.')
  print(f'Teacher {teacher.name!r} ({teacher.source}): {teacher.kind_description}.', flush=True)
  return teacher


# What a teacher path may hold, for the messages that refuse one.
EXPECTED_TEACHER = ('a PolicySaver export (a directory with saved_model.pb and '
                    f'{policy_saver.POLICY_SPECS_PBTXT}, e.g. the policy/ of a train_main run) or a Keras '
                    'model (a .keras or .h5 file, or a Keras SavedModel directory)')


def _is_recurrent_source(path_or_model) -> bool:
  """Whether a `load_teacher` source keeps a policy state, from its exported specs (nothing is loaded)."""
  if isinstance(path_or_model, Teacher):
    return path_or_model.is_recurrent
  if isinstance(path_or_model, (str, os.PathLike)) and teacher_kind(os.fspath(path_or_model)) == 'policy':
    specs = policy_saver.specs_from_collect_data_spec(tensor_spec.from_pbtxt_file(
        os.path.join(os.fspath(path_or_model), policy_saver.POLICY_SPECS_PBTXT)))
    return bool(tf.nest.flatten(specs['policy_state_spec']))
  return False  # a Keras model teaches feed-forward


def teacher_kind(path: str) -> str:
  """What the teacher at `path` is, from its files alone (nothing is loaded): 'policy' for a PolicySaver
  export, 'keras' for a Keras model file or SavedModel directory. What a loaded teacher teaches through
  (logits, a Categorical distribution, Q-values or its actions) is its `Teacher.kind`.

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
               student_network=None, recurrent_only: bool = False, name: str = 'TeacherSet'):
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
      recurrent_only: Load only the recurrent teachers of `paths` (told from their exported specs), no peers:
        the set an actor steps to record their states (`recorded_state_specs`). Set by code, not gin.
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
    if recurrent_only:
      kept = [k for k, path in enumerate(paths) if _is_recurrent_source(path)]
      paths, names, tasks, peers = [paths[k] for k in kept], [names[k] for k in kept], [tasks[k] for k in kept], 0
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

  # A recurrent teacher's memory follows each environment across batches, as the student's does: the actors
  # step the recurrent teachers beside the policy and record each one's state before every step
  # (`recorded_state_specs`, `step_recorded_states`; the batch's 'teacher_state'), and the learner unrolls
  # each teacher from the state recorded at the batch's first step (`Kickstarter.prepare`). Peer teachers
  # are not recorded (their weights live in the learner and change as they train): a recurrent peer starts
  # each batch from its initial state.

  def recorded_state_specs(self) -> Dict[str, Any]:
    """`{name: policy state spec}` of the teachers whose state the actors record: the recurrent ones,
    peers excepted. Empty when every teacher is feed-forward."""
    return {name: teacher.state_spec for name, teacher in zip(self._names, self._teachers)
            if teacher.is_recurrent and not isinstance(teacher, PeerTeacher)}

  def initial_recorded_states(self, batch_size) -> Dict[str, Any]:
    """`recorded_state_specs`' teachers' initial states for `batch_size` environments."""
    return {name: self._teachers[self._names.index(name)].get_initial_state(batch_size)
            for name in self.recorded_state_specs()}

  def step_recorded_states(self, observation, step_type, states: Mapping[str, Any],
                           task_ids=None) -> Dict[str, Any]:
    """The recorded teachers' states after one batch-major step `[B, ...]` of the environments.

    Args:
      observation: `[B, *obs_shape]`, the observations the policy acts on.
      step_type: `[B]`; a teacher resets its state where FIRST, as in training.
      states: `initial_recorded_states`' structure, the states before this step.
      task_ids: int `[B]`, each environment's task; needed when a recorded teacher has a task (a teacher
        keeps its state on the other tasks' rows).
    """
    next_states = {}
    for name, teacher, task in zip(self._names, self._teachers, self._tasks):
      if name in states:
        next_states[name] = evaluate_on_task(teacher, task, observation, task_ids=task_ids, step_type=step_type,
                                             policy_state=states[name], gather_rows=self._gather_rows).state
    return next_states

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
