"""Teachers read from policies exported by TF-Agents' `PolicySaver`, and what each export teaches through.

`load_saved_policy` loads an export (called by `teacher_loading.load_teacher`), probes its saved functions
once and chooses the teacher's kind (`teachers.KINDS`), tried in this order:

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

The teacher's value is `info['values'][head]` (or `info['value']`) when the policy has a critic
(`_select_value_head`). A `SavedPolicyTeacher` calls the export's saved functions (or the pruned Q-value
function) on each step, with its own policy state when the policy is recurrent.
"""

import os
import re
from typing import Mapping, Optional

import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
# A restored function's graph pruned to an inner tensor (what TF's own SavedModel v1 loader uses).
from tensorflow.python.eager import wrap_function  # pylint: disable=g-direct-tensorflow-import

from protege.agents.distillation import teachers
from protege.runtime import errors

_EXTRINSIC = 'extrinsic'


class SavedPolicyTeacher(teachers.Teacher):
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
    self._policy = teachers.Untracked(saved_policy)
    self._pruned = teachers.Untracked(pruned_function)
    self._time_step_spec = policy_specs['time_step_spec']
    self._reader = reader
    self._value_head = value_head

  @property
  def saved_policy(self):
    """What `tf.saved_model.load` returned for the export (its `model_variables` hold the weights)."""
    return self._policy.value

  @property
  def weights(self) -> list:
    return list(getattr(self.saved_policy, 'model_variables', []))

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


def exported_specs(path: str):
  """The specs a PolicySaver export at `path` declares (nothing is loaded): `{'time_step_spec',
  'action_spec', 'policy_state_spec', 'info_spec'}` (TensorSpecs)."""
  return policy_saver.specs_from_collect_data_spec(
      tensor_spec.from_pbtxt_file(os.path.join(path, policy_saver.POLICY_SPECS_PBTXT)))


def _select_value_head(info, value_head: Optional[str], source: str) -> Optional[str]:
  """The key of the teacher's value: a head of `info['values']`, '' for `info['value']`, or None."""
  heads = None
  if isinstance(info, Mapping) and isinstance(info.get('values'), Mapping):
    heads = sorted(info['values'])  # the export's dict order differs between TensorFlow versions
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


def load_saved_policy(path: str, student_observation_spec, student_action_spec, name: str,
                      value_head: Optional[str], q_temperature: float, action_smoothing: float,
                      action_only: bool) -> SavedPolicyTeacher:
  """Loads a PolicySaver export and chooses what it teaches through (its kind; the module docstring)."""
  specs = {key: tensor_spec.from_spec(value) for key, value in exported_specs(path).items()}
  teachers.check_observation_specs(specs['time_step_spec'].observation, student_observation_spec, path)
  teachers.check_action_specs(specs['action_spec'], student_action_spec, path)
  saved_policy = tf.saved_model.load(path)
  num_actions = teachers.discrete_action_count(specs['action_spec'], 'teacher', path)

  # Probe the saved functions once on a zero observation: `distribution` is absent or raises when the
  # policy's distribution could not be serialised (an ε-greedy policy's).
  probe = _time_step(teachers.probe_batch(specs['time_step_spec'].observation),
                     tf.constant([ts.StepType.FIRST]), specs['time_step_spec'])
  state = saved_policy.get_initial_state(1)
  distribution_step = _call_saved_distribution(saved_policy, probe, state)
  action_step = saved_policy.action(probe, state)
  is_categorical = distribution_step is not None and isinstance(distribution_step.action,
                                                                tfp.distributions.Categorical)
  q_depth = _q_network_depth(saved_policy)
  pruned = None
  if action_only:
    reader, kind, step = 'action.action', teachers.KIND_ACTION_ONLY, action_step
  elif _has_info_logits(distribution_step):
    reader, kind, step = 'distribution.info_logits', teachers.KIND_LOGITS, distribution_step
  elif q_depth == 0 and is_categorical:  # an exported QPolicy: its Categorical's logits are Q
    reader, kind, step = 'distribution.logits', teachers.KIND_Q_VALUES, distribution_step
  elif q_depth is not None and (pruned := _pruned_q_values(saved_policy, num_actions)) is not None:
    reader, kind, step = 'pruned', teachers.KIND_Q_VALUES, None
  elif is_categorical:
    reader, kind, step = 'distribution.logits', teachers.KIND_DISTRIBUTION, distribution_step
  elif _has_info_logits(action_step):
    reader, kind, step = 'action.info_logits', teachers.KIND_LOGITS, action_step
  else:
    reader, kind, step = 'action.action', teachers.KIND_ACTION_ONLY, action_step
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
