"""The teacher and the student in the environment, after training (for the report only): a feed-forward
teacher as a network `agents.training.evaluation.evaluate` can play, a uniform sample of the states it visits, and
how closely the student follows it on them."""

from typing import Dict

import numpy as np

from protege.agents.data_free import adapters
from protege.agents.data_free import losses
from protege.agents.distillation import teachers
from protege.runtime import errors
from protege.runtime import run_directory


class StateSample:
  """A uniform sample (reservoir sampling) of at most `capacity` observation rows from a stream of batches:
  the `observation_fn` of `agents.training.evaluation.evaluate`, to keep states a policy visits."""

  def __init__(self, capacity: int = 4096, seed: int = 0):
    self.capacity = capacity
    self.seen = 0
    self._rows = []
    self._rng = np.random.default_rng(seed)

  def __call__(self, observations) -> None:
    for row in np.asarray(observations):
      self.seen += 1
      if len(self._rows) < self.capacity:
        self._rows.append(row.copy())
      else:
        index = self._rng.integers(self.seen)
        if index < self.capacity:
          self._rows[index] = row.copy()

  def array(self) -> np.ndarray:
    """The sampled rows `[n, ...]` (n = min(capacity, seen))."""
    return np.stack(self._rows) if self._rows else np.zeros([0])


def save_states(observations: np.ndarray, path: str) -> str:
  """Writes `observations` (a `StateSample`'s rows) to the .npz file `path` in one atomic step; returns it."""
  with run_directory.atomic_file(path, 'wb') as f:
    np.savez_compressed(f, observations=observations)
  return path


def agreement_on_states(teacher: teachers.Teacher, student, observations: np.ndarray,
                        batch_size: int = 512) -> Dict[str, float]:
  """How closely `student` (an `ActorCriticNetwork`) follows `teacher` on `observations` (e.g. states the teacher
  visits in play): the share of equal argmax actions and the mean KL(teacher‖student)."""
  teacher_out = adapters.teacher_logits(teacher, observations, batch_size)
  student_out = adapters.teacher_logits(teachers.NetworkTeacher(student, name='student'), observations, batch_size)
  return {'states': int(len(observations)),
          'argmax_agreement': float(np.mean(np.argmax(teacher_out, -1) == np.argmax(student_out, -1))),
          'kl_teacher_student': float(np.mean(losses.teacher_student_kl(teacher_out, student_out).numpy()))}


class _TeacherPolicyNetwork:
  """A feed-forward `Teacher` behind the network interface `agents.training.evaluation.evaluate` calls."""

  def __init__(self, teacher: teachers.Teacher):
    self._teacher = teacher

  def __call__(self, observation, step_type=None, network_state=()):
    logits, _, _ = self._teacher.logits_and_value(observation)
    return (logits, {}), network_state

  def get_initial_state(self, batch_size):
    del batch_size
    return ()


def teacher_as_network(teacher: teachers.Teacher):
  """Wraps a feed-forward teacher so `agents.training.evaluation.evaluate(network, env_id)` can play it."""
  if teacher.is_recurrent:
    raise errors.PolicyLoadError(f'teacher {teacher.source!r} is recurrent; only feed-forward teachers can '
                                 'be played here.')
  return _TeacherPolicyNetwork(teacher)
