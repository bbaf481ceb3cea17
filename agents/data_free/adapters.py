"""Students and teachers as the data-free distiller reads them: a student's logits (a Keras model or an
`ActorCriticNetwork`), a teacher's logits with gradients with respect to its input, a teacher's logits on
NumPy observations in batches, and the specs of a PolicySaver export."""

import os

import numpy as np
import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.distillation import teachers
from protege.networks import actor_critic


def student_logits(student, observation, training: bool = True) -> tf.Tensor:
  """Logits `[B, A]` of a student: a Keras model returning logits, or an `ActorCriticNetwork`."""
  if isinstance(student, actor_critic.ActorCriticNetwork):
    (logits, _), _ = student(observation, training=training)
    return logits
  outputs = student(observation, training=training)
  if isinstance(outputs, dict):
    return outputs['logits']
  if isinstance(outputs, (list, tuple)):
    return outputs[0]
  return outputs


def differentiable_teacher_logits(teacher: teachers.Teacher, observation) -> tf.Tensor:
  """The teacher's logits `[B, A]` on one batch of observations, with gradients w.r.t. the observations.

  `Teacher.logits_and_value` stops gradients (right for kickstarting, where the teacher is a target); the
  generator must differentiate through the teacher, so this calls its un-stopped step. The teacher's
  weights are untracked and never trained.
  """
  batch_size = tf.shape(observation)[0]
  step_type = tf.fill([batch_size], tf.constant(ts.StepType.MID, tf.int32))
  # pylint: disable=protected-access
  logits, _, _ = teacher._checked_step(observation, step_type, teacher.get_initial_state(batch_size))
  # pylint: enable=protected-access
  return logits


def teacher_logits(teacher: teachers.Teacher, observations: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """The teacher's logits `[N, A]` on NumPy observations `[N, *obs_shape]`, in batches."""
  chunks = [teacher.logits_and_value(tf.convert_to_tensor(observations[i:i + batch_size]))[0].numpy()
            for i in range(0, len(observations), batch_size)]
  return np.concatenate(chunks, axis=0) if chunks else np.zeros([0, teacher.num_actions], np.float32)


def policy_specs(path: str):
  """`(time_step_spec, action_spec)` of a PolicySaver export, read from its policy_specs.pbtxt."""
  specs = policy_saver.specs_from_collect_data_spec(
      tensor_spec.from_pbtxt_file(os.path.join(path, policy_saver.POLICY_SPECS_PBTXT)))
  return tensor_spec.from_spec(specs['time_step_spec']), tensor_spec.from_spec(specs['action_spec'])
