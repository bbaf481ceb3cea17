"""Teachers and students of uint8 frames (Atari): the float `[0, 1]` view their torsos compute.

A policy export of uint8 frames has no input gradient; `frame_teacher` builds its network again on frames
scaled to `[0, 1]`, loads the export's weights and checks that the two agree. The student learns in that
view, and `frame_student_for_export` rebuilds it for uint8 frames to be exported and played.
"""

from typing import Any, Callable, Optional, Tuple

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec

from protege.agents.data_free import adapters
from protege.agents.distillation import teacher_loading
from protege.agents.distillation import teachers
from protege.runtime import errors


def frame_view_spec(frame_spec) -> tensor_spec.BoundedTensorSpec:
  """The float32 `[0, 1]` view of a uint8 frame spec: what `networks.torsos` compute from uint8 frames
  (x / 255), and what a float input in `[0, 1]` passes through unchanged."""
  return tensor_spec.BoundedTensorSpec(frame_spec.shape, tf.float32, 0.0, 1.0, name=frame_spec.name)


def _probe_frames(frame_spec, count: int = 8, seed: int = 0) -> np.ndarray:
  """Random uint8 frames `[count, *shape]` to compare two networks on."""
  return np.random.default_rng(seed).integers(0, 256, size=(count,) + tuple(frame_spec.shape), dtype=np.uint8)


def _max_logit_gap(reference_logits, logits) -> float:
  return float(np.max(np.abs(np.asarray(reference_logits) - np.asarray(logits))))


def _weight_key(variable) -> str:
  """A variable's name without the network's own name and the ':0' suffix ('NatureCNNTorso/conv_0/kernel')."""
  name = variable.name.split(':')[0]
  return name.split('/', 1)[1] if '/' in name else name


def copy_network_weights(source_variables, target, what: str) -> None:
  """Assigns `source_variables` to `target.variables`, matched by name below the network's name.

  Matched by name, not position: an exported policy's `model_variables` list the same variables in
  another order than a freshly built network.

  Raises:
    ValueError: naming `what` when the names or shapes of the two sets differ.
  """
  target.create_variables()
  source = {_weight_key(v): v for v in source_variables}
  variables = {_weight_key(v): v for v in target.variables}
  shapes = {key: tuple(v.shape) for key, v in source.items()}
  expected = {key: tuple(v.shape) for key, v in variables.items()}
  if shapes != expected:
    def listed(keys, table):
      keys = sorted(keys)
      return ', '.join(f'{k} {table[k]}' for k in keys[:3]) + (f' and {len(keys) - 3} more' if len(keys) > 3 else '')
    missing = [k for k in expected if shapes.get(k) != expected[k]]
    extra = [k for k in shapes if expected.get(k) != shapes[k]]
    raise errors.ConfigError(f'{what}: its weights differ from the network built for them ({len(shapes)} '
                             f'against {len(expected)} variables); the weights have '
                             f'{listed(extra, shapes) or "nothing else"}, the network has '
                             f'{listed(missing, expected) or "nothing else"}.')
  for key, variable in variables.items():
    variable.assign(source[key])


def frame_teacher(path: str, network_fn: Optional[Callable[..., Any]], action_spec,
                  tolerance: float = 1e-3) -> Tuple[teachers.NetworkTeacher, teachers.Teacher]:
  """A policy export of uint8 frames as a teacher whose input is differentiable, and the export itself.

  The export's saved functions take uint8 frames, which have no gradient, so the teacher's network is
  built again on the `[0, 1]` float view (`frame_view_spec`) by `network_fn(observation_spec,
  action_spec)` and given the export's weights (its `model_variables`, matched by name). The rebuilt network
  must reproduce the export: its logits on random frames / 255 must match the export's on the frames
  within `tolerance`, otherwise `network_fn` describes another network and this raises.

  Args:
    path: A PolicySaver export (e.g. train_main's `policy/`) of uint8 observations.
    network_fn: Builds the teacher's network; gin: `distill_data_free.teacher_network_fn =
      @teacher/ActorCriticNetwork` with the training run's network under the `teacher/` scope.
    action_spec: The export's action spec.
    tolerance: Largest absolute logit difference allowed. Default 1e-3.

  Returns:
    `(teacher, exported)`: the rebuilt network on frames / 255, and the export loaded as a teacher of
    uint8 frames (to play the game with; the SavedModel is loaded once for both).

  Raises:
    ValueError: On a missing `network_fn`, or a network that does not reproduce the export.
  """
  time_step_spec, _ = adapters.policy_specs(path)
  frame_spec = time_step_spec.observation
  if network_fn is None:
    raise errors.ConfigError(f'teacher {path!r} reads {tf.as_dtype(frame_spec.dtype).name} frames '
                             f'{frame_spec!r}, which have no gradient for the generator; set '
                             'distill_data_free.teacher_network_fn = @teacher/ActorCriticNetwork and bind '
                             'teacher/ActorCriticNetwork to the training run\'s network (its '
                             'operative_config.gin) so the teacher can run on frames scaled to [0, 1].')
  exported = teacher_loading.load_teacher(path, frame_spec, action_spec)
  network = network_fn(frame_view_spec(frame_spec), action_spec)
  what = f'teacher {path!r} rebuilt by distill_data_free.teacher_network_fn'
  copy_network_weights(exported.saved_policy.model_variables, network, what)
  teacher = teachers.NetworkTeacher(network, name=exported.name, source=f'{path} (on frames / 255)')
  probe = _probe_frames(frame_spec)
  gap = _max_logit_gap(exported.logits_and_value(tf.constant(probe))[0],
                       teacher.logits_and_value(tf.constant(probe, tf.float32) / 255.0)[0])
  if not gap <= tolerance:
    raise errors.ConfigError(f'{what} does not reproduce the export: its logits differ by up to {gap:.3g} '
                             f'(tolerance {tolerance}); bind teacher/ActorCriticNetwork to the training '
                             'run\'s network.')
  return teacher, exported


def frame_student_for_export(student, student_fn: Callable[..., Any], frame_spec, action_spec,
                             tolerance: float = 1e-4):
  """The student trained on the `[0, 1]` view, as a network of uint8 frames (for export and play).

  Builds `student_fn(frame_spec, action_spec)` (its torso scales uint8 by 1/255), copies the trained
  weights and checks that both give the same logits on random frames.
  """
  network = student_fn(frame_spec, action_spec)
  copy_network_weights(student.variables, network, 'the student rebuilt for uint8 frames')
  probe = _probe_frames(frame_spec, seed=1)
  gap = _max_logit_gap(adapters.student_logits(student, tf.constant(probe, tf.float32) / 255.0, training=False),
                       adapters.student_logits(network, tf.constant(probe), training=False))
  if not gap <= tolerance:
    raise errors.ConfigError('the student rebuilt for uint8 frames differs from the trained one by up to '
                             f'{gap:.3g} in its logits; its torso must scale uint8 frames by 1/255 '
                             '(networks.torsos do).')
  return network
