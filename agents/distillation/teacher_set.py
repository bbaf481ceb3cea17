"""The teachers a kickstarted learner holds (`TeacherSet`), each routed to the rows of its task.

Multi-task kickstarting routes observations: each task's expert teaches on its own task's rows only
(Kickstarting, section 3). `evaluate_on_task` and `route_by_task` gather the rows of a teacher's task,
run the teacher on those rows only, and scatter its logits back into a `[B, A]` (or `[T, B, A]`) tensor
with a mask that is 1 on the task's rows, so a loss Σ_k λ_k · mask_k · H×(π_Tk‖π_S) counts each teacher
on its own task. `TeacherSet` is the gin-configurable list of K teachers a learner holds.

Codistillation (online distillation, Anil et al. 2018) makes population peers teachers: `TeacherSet.peers`
adds `PeerTeacher`s, copies of the student's own network whose weights a population member loads from its
best peers as they train (`pbt.codistillation`). A peer teacher teaches nothing until its first weights
arrive: its mask is 0 while `active` is.

A recurrent teacher's state follows each environment across batches: the actors record it
(`TeacherSet.recorded_state_specs`), and the learner unrolls each teacher from the state recorded at the
batch's first step.
"""

import collections
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf

from protege.agents.distillation import teacher_loading
from protege.agents.distillation import teachers as teachers_lib
from protege.runtime import errors

# What a teacher gives for the rows of one batch (see `evaluate_on_task`):
#   logits: float32 [B, A] or [T, B, A], gradients stopped (zeros on rows outside the teacher's task);
#   value:  float32 [B] or [T, B] (gradients stopped), or None when the teacher has no critic;
#   mask:   float32 [B] or [T, B], 1 on the rows the teacher teaches, 0 elsewhere;
#   state:  the teacher's next policy state, batch [B] (`()` for a feed-forward teacher).
TeacherOutput = collections.namedtuple('TeacherOutput', ['logits', 'value', 'mask', 'state'])

# The names of `TeacherSet.peers`' teachers: 'peer_0', 'peer_1', ...
PEER_PREFIX = 'peer_'


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


def evaluate_on_task(teacher: teachers_lib.Teacher, task: Optional[int], observation, task_ids=None,
                     step_type=None, policy_state=None, gather_rows: bool = True) -> TeacherOutput:
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


def _teacher_task_pairs(teachers_per_task) -> List[Tuple[Optional[int], teachers_lib.Teacher]]:
  """`[(task, teacher), ...]` from a mapping task -> teacher(s) or a sequence indexed by task id."""
  if isinstance(teachers_per_task, Mapping):
    items = list(teachers_per_task.items())
  elif isinstance(teachers_per_task, Sequence):
    items = list(enumerate(teachers_per_task))
  else:
    raise TypeError(f'teachers_per_task must map task ids to teachers or list them by task id, got '
                    f'{teachers_per_task!r}.')
  pairs = []
  for task, task_teachers in items:
    if task is not None and (isinstance(task, bool) or not isinstance(task, (int, np.integer))):
      raise TypeError(f'Task ids must be ints (or None for every task), got {task!r}.')
    if task_teachers is None:
      task_teachers = []
    elif isinstance(task_teachers, teachers_lib.Teacher):
      task_teachers = [task_teachers]
    for teacher in task_teachers:
      if not isinstance(teacher, teachers_lib.Teacher):
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
      kept = [k for k, path in enumerate(paths) if teacher_loading.is_recurrent_source(path)]
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
    self._teachers = [teacher_loading.load_teacher(path, student_observation_spec, student_action_spec,
                                                   name=teacher_name, value_head=value_head)
                      for path, teacher_name in zip(paths, names)]
    self._teachers += [teachers_lib.PeerTeacher(student_network.copy(name=f'{peer_name}_network'), peer_name)
                       for peer_name in peer_names]
    self._names = tuple(names) + tuple(peer_names)
    self._tasks = tuple(None if task is None else int(task) for task in tasks) + (None,) * peers
    self._gather_rows = gather_rows

  def __len__(self) -> int:
    return len(self._teachers)

  @property
  def teachers(self) -> List[teachers_lib.Teacher]:
    """The K teachers, in order."""
    return list(self._teachers)

  @property
  def names(self) -> Tuple[str, ...]:
    """The K names, in order (the keys of `schedules.TeacherWeights`)."""
    return self._names

  @property
  def peer_teachers(self) -> List[teachers_lib.PeerTeacher]:
    """The codistillation teachers (`peers`), in order."""
    return [teacher for teacher in self._teachers if isinstance(teacher, teachers_lib.PeerTeacher)]

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
            if teacher.is_recurrent and not isinstance(teacher, teachers_lib.PeerTeacher)}

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
      if isinstance(teacher, teachers_lib.PeerTeacher):
        output = output._replace(mask=output.mask * tf.cast(teacher.active, output.mask.dtype))
      outputs.append(output)
    return outputs

  def logits(self, observation, task_ids=None, step_type=None) -> List[tf.Tensor]:
    """The K teachers' logits `[B, A]` (or `[T, B, A]`), from their initial states; see `outputs`."""
    return [output.logits for output in self.outputs(observation, task_ids=task_ids, step_type=step_type)]
