"""Loading a teacher: `load_teacher` takes a policy export or a Keras model and checks it against the student.

Kickstarting needs of a teacher only its action distribution on the student's observations, so a teacher's
architecture is free: `load_teacher` takes

* a policy exported by TF-Agents' `PolicySaver` (a directory holding `policy_specs.pbtxt`), such as the
  ones `train_main` writes with `agents.training.policy_export.export_policy`, or a DQN agent's `agent.policy` /
  `agent.collect_policy`. The value is `info['values'][head]` (or `info['value']`) when the policy has a
  critic. Recurrent policies keep their own state (`get_initial_state(batch_size)`), separate from the
  student's;
* a Keras model mapping observations `[B, *obs_shape]` to logits `[B, A]`, or to `(logits, value)`, or
  to a dict `{'logits': ..., 'value': ...}` (a Q-network: `{'q_values': ..., 'value': ...}`); or the
  path of a saved Keras model (`.keras`, `.h5`, or a Keras SavedModel directory).

Every teacher gives the losses logits; what they are made of is the teacher's `kind`, printed in one line
when it is loaded (`Teacher.kind`, `Teacher.kind_description`): for a Keras model its logits, or its
Q-values taught as softmax(Q/τ); for a policy export, as `saved_policy_teachers` chooses it.

A teacher whose observation spec (shape and dtype) or action spec (dtype and set of discrete actions)
does not match the student's is rejected at load time with a one-line error naming both specs.
`teacher_kind` tells a policy export from a Keras model by its files alone, before anything is loaded.
"""

import os
from typing import Mapping, Optional, Union

import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec

from protege.agents.distillation import saved_policy_teachers
from protege.agents.distillation import teachers
from protege.runtime import errors


class KerasTeacher(teachers.Teacher):
  """A Keras model as a feed-forward teacher (see `load_teacher` for the outputs it may have)."""

  def __init__(self, model, observation_spec, action_spec, num_actions: int, has_value: bool, name: str,
               source: str, kind: str = teachers.KIND_LOGITS, q_temperature: Optional[float] = None):
    """Wraps an already checked Keras model; use `load_teacher`. `kind` is `KIND_Q_VALUES` for a model
    returning `{'q_values': ...}`."""
    super().__init__(observation_spec, action_spec, num_actions=num_actions, has_value=has_value, name=name,
                     source=source, kind=kind, q_temperature=q_temperature)
    self._model = teachers.Untracked(model)
    inputs = getattr(model, 'inputs', None)
    self._input_dtype = inputs[0].dtype if inputs else None

  @property
  def model(self) -> tf.keras.Model:
    """The Keras model that computes the teacher's outputs."""
    return self._model.value

  @property
  def weights(self) -> list:
    return list(self.model.weights)

  def _step(self, observation, step_type, policy_state):
    del step_type, policy_state  # Feed-forward.
    if self._input_dtype is not None:
      observation = tf.cast(observation, self._input_dtype)
    outputs, value, _ = _keras_outputs(self.model(observation, training=False), self._source)
    return outputs, value, ()


def _keras_outputs(outputs, source):
  """Splits a Keras teacher's outputs into `(logits or Q-values, value or None, kind)`; raises on other
  structures. Q-values are marked by their key: a dict `{'q_values': [B, A]}`."""
  if isinstance(outputs, Mapping):
    keys = [key for key in ('logits', 'q_values') if key in outputs]
    if len(keys) != 1:
      raise errors.PolicyLoadError(f"Keras teacher {source!r} returns a dict with keys {sorted(outputs)}; "
                                   "return {'logits': [B, A], 'value': [B]} or, for a Q-network, "
                                   "{'q_values': [B, A]}.")
    kind = teachers.KIND_Q_VALUES if keys[0] == 'q_values' else teachers.KIND_LOGITS
    return outputs[keys[0]], outputs.get('value'), kind
  if isinstance(outputs, (list, tuple)):
    if len(outputs) == 1:
      return outputs[0], None, teachers.KIND_LOGITS
    if len(outputs) == 2 and all(tf.is_tensor(o) for o in outputs):
      return outputs[0], outputs[1], teachers.KIND_LOGITS
    raise errors.PolicyLoadError(f'Keras teacher {source!r} returns {len(outputs)} outputs; return logits '
                                 '[B, A] or a pair (logits [B, A], value [B]).')
  return outputs, None, teachers.KIND_LOGITS


def _load_keras(model, student_observation_spec, student_action_spec, name: str, source: str,
                q_temperature: float) -> KerasTeacher:
  num_actions = teachers.discrete_action_count(student_action_spec, 'student', source)
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
    outputs = model(tf.cast(teachers.probe_batch(student_observation_spec), input_dtype), training=False)
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


def load_teacher(path_or_model: Union[str, os.PathLike, tf.keras.Model, teachers.Teacher],
                 student_observation_spec, student_action_spec, name: Optional[str] = None,
                 value_head: Optional[str] = None,
                 q_temperature: Optional[float] = None, action_smoothing: Optional[float] = None,
                 action_only: Optional[bool] = None) -> teachers.Teacher:
  """Loads a teacher, checks it against the student's specs and prints the kind it took.

  Call eagerly, once, outside `tf.function` and strategy scopes. The docstring of `saved_policy_teachers`
  lists the kinds (`Teacher.kind`) and when each is taken; one line, 'Teacher <name> (<source>): <kind>',
  says which.

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
  targets = teachers.teacher_targets()
  q_temperature = targets['q_temperature'] if q_temperature is None else q_temperature
  action_smoothing = targets['action_smoothing'] if action_smoothing is None else action_smoothing
  action_only = targets['action_only'] if action_only is None else action_only
  teachers.check_target_settings(q_temperature, action_smoothing, action_only)
  student_observation_spec = tensor_spec.from_spec(student_observation_spec)
  student_action_spec = tensor_spec.from_spec(student_action_spec)
  if isinstance(path_or_model, teachers.Teacher):
    teachers.check_observation_specs(path_or_model.observation_spec, student_observation_spec,
                                     path_or_model.source)
    teachers.check_action_specs(path_or_model.action_spec, student_action_spec, path_or_model.source)
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
      teacher = saved_policy_teachers.load_saved_policy(path, student_observation_spec, student_action_spec, name,
                                                        value_head, q_temperature, action_smoothing, action_only)
    else:
      model = tf.keras.models.load_model(path, compile=False)
      teacher = _load_keras(model, student_observation_spec, student_action_spec, name=name, source=path,
                            q_temperature=q_temperature)
  if action_only and teacher.kind != teachers.KIND_ACTION_ONLY:
    raise errors.ConfigError(f'teacher_targets.action_only = True, but teacher {teacher.source!r} is a Keras '
                             'model, which has no action of its own to teach; set it to False.')
  print(f'Teacher {teacher.name!r} ({teacher.source}): {teacher.kind_description}.', flush=True)
  return teacher


# What a teacher path may hold, for the messages that refuse one.
EXPECTED_TEACHER = ('a PolicySaver export (a directory with saved_model.pb and '
                    f'{policy_saver.POLICY_SPECS_PBTXT}, e.g. the policy/ of a train_main run) or a Keras '
                    'model (a .keras or .h5 file, or a Keras SavedModel directory)')


def is_recurrent_source(path_or_model) -> bool:
  """Whether a `load_teacher` source keeps a policy state, from its exported specs (nothing is loaded)."""
  if isinstance(path_or_model, teachers.Teacher):
    return path_or_model.is_recurrent
  if isinstance(path_or_model, (str, os.PathLike)) and teacher_kind(os.fspath(path_or_model)) == 'policy':
    specs = saved_policy_teachers.exported_specs(os.fspath(path_or_model))
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
