"""The job: teacher in, student out. `distill_data_free` loads a teacher (a Keras classifier or a policy
export), trains a student with `DataFreeDistiller` (checkpointed, resumable), writes the student, the
exemplars and summary.json, and optionally evaluates student and teacher in the environment."""

import dataclasses
import datetime
import json
import os
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec

from protege.agents.data_free import adapters
from protege.agents.data_free import distiller as distiller_lib
from protege.agents.data_free import frame_networks
from protege.agents.data_free import play
from protege.agents.distillation import teacher_loading
from protege.agents.distillation import teachers
from protege.networks import actor_critic
from protege.runtime import config as run_config
from protege.runtime import errors
from protege.runtime import interrupts
from protege.runtime import run_directory


@gin.configurable
def keras_student(observation_spec, action_spec, model_fn: Callable[..., tf.keras.Model] = gin.REQUIRED):
  """A Keras student: `model_fn(input_shape=obs_shape, num_classes=A)` (gin: `keras_student.model_fn =
  @lenet5_half`).

  Args:
    observation_spec: the spec of one observation (the model's input shape).
    action_spec: the discrete action (class) spec: A = maximum − minimum + 1 outputs.
    model_fn: builds the Keras model from `input_shape` and `num_classes`; required (gin.REQUIRED).
  """
  num_actions = int(action_spec.maximum) - int(action_spec.minimum) + 1
  return model_fn(input_shape=tuple(observation_spec.shape), num_classes=num_actions)


def _progress_logger(total: int, first_step: int, history_path: str):
  """Prints a progress line (with speed and ETA) and appends the metrics to `history_path` (JSON lines)."""
  start = time.time()

  def log(step: int, metrics: Dict[str, float]):
    rate = (step - first_step) / max(time.time() - start, 1e-9)
    eta = datetime.timedelta(seconds=int((total - step) / rate)) if rate > 0 else '?'
    print(f'[{100.0 * step / total:5.1f}%] step {step:,}/{total:,} | '
          f'student loss {metrics["student/loss"]:.4f} | '
          f'agreement {metrics["student/agreement_generated"]:.3f} | '
          f'one-hot {metrics["generator/one_hot"]:.3f} | '
          f'class entropy {metrics["generator/class_entropy"]:.3f} | adversarial '
          f'{metrics["generator/adversarial"]:.3f} | {rate:.1f} steps/s | ETA {eta}', flush=True)
    with open(history_path, 'a') as f:
      f.write(json.dumps(dict(step=step, **metrics)) + '\n')
  return log


def _read_history(history_path: str, up_to_step: Optional[int] = None) -> List[Dict[str, float]]:
  """The JSON lines of `history_path` (none if absent), those after `up_to_step` dropped."""
  if not os.path.exists(history_path):
    return []
  with open(history_path) as f:
    entries = [json.loads(line) for line in f if line.strip()]
  return [e for e in entries if up_to_step is None or e['step'] <= up_to_step]


@gin.configurable(denylist=['root_dir', 'teacher_path', 'stop_request'])
def distill_data_free(root_dir: str, teacher_path: str, student_fn: Callable[..., Any] = gin.REQUIRED,
                      teacher_features_layer: Optional[str] = None,
                      teacher_network_fn: Optional[Callable[..., Any]] = None, observation_low=None,
                      observation_high=None,
                      exemplars_to_save: int = 2048, eval_episodes: int = 0, eval_seed: int = 12345,
                      eval_greedy: bool = True, checkpoint_interval_seconds: float = 600.0,
                      log_every: int = 100, seed: int = 0,
                      stop_request: Optional[Callable[[], bool]] = None) -> Optional[Dict[str, Any]]:
  """Distils `teacher_path` into a new student without data and writes the student into `root_dir`.

  The student's training reads no data set and never builds an environment; with `eval_episodes` > 0 the
  student (and the teacher, for reference) are evaluated afterwards in `make_environment.env_id`.

    root_dir/
      operative_config.gin  the gin parameters used
      checkpoints/          the training state, every `checkpoint_interval_seconds` and at the end: a run
                            started again with the same root_dir resumes where it stopped
      history.jsonl         the metrics every `log_every` steps
      student.keras         a Keras student (classifier teachers), or
      policy/               the student policy, a PolicySaver export as train_main writes (policy teachers)
      exemplars.npz         'observations' [N, ...] (the pool and the last generator's samples),
                            'generation' [N], 'teacher_labels' [N]
      summary.json          training seconds, final metrics, history, evaluation returns

  Args:
    root_dir: Output directory.
    teacher_path: A Keras classifier file (.keras/.h5/SavedModel) or a PolicySaver export directory.
    student_fn: Called as `student_fn(observation_spec, action_spec)`: `@keras_student` or
      `@ActorCriticNetwork` (a policy student, exported like train_main's policies).
    teacher_features_layer: A Keras teacher's layer whose output feeds the activation loss (e.g. 'features'
      for `networks.lenet`). Default None: no activation term.
    teacher_network_fn: For a policy teacher of uint8 frames (Atari) only: builds its network again,
      `teacher_network_fn(observation_spec, action_spec)`, to run it on frames scaled to [0, 1] with
      gradients (`frame_teacher`; gin: `@teacher/ActorCriticNetwork`, configured under `teacher/` as the
      training run was). The generator and the student then work in that [0, 1] view, and the student is
      exported for uint8 frames. Default None.
    observation_low: For a Keras teacher: the lower bound of its inputs, recorded in the observation spec
      (scalar). Default None: unbounded (then the generator must be given its box).
    observation_high: Upper bound, likewise.
    exemplars_to_save: Samples of the last generator written with the pool's. Default 2048.
    eval_episodes: Episodes to evaluate the student (and the teacher) in `make_environment.env_id` after
      training; 0 (default) skips it. Policy teachers only.
    eval_seed: Seed of the evaluation environments. Default 12345 (agents.training.evaluation's).
    eval_greedy: Evaluate with the argmax action (True, default) or sampled actions, both the student and
      the teacher.
    checkpoint_interval_seconds: Seconds of training between checkpoints. Default 600.
    log_every: Steps between progress lines. Default 100.
    seed: `tf.keras.utils.set_random_seed` (Python, NumPy and TF) before the networks are built, and the
      distiller's seed: the same seed trains the same student. Default 0.

    stop_request: Not gin: polled after every step (the binaries pass their
      `runtime.interrupts.StopRequest`, set by SIGINT/SIGTERM). Once it returns True the run saves a
      checkpoint and returns None; the same call again resumes from it. Default None.

  Returns:
    The summary written to summary.json, or None when `stop_request` stopped the run first.
  """
  _check_run_settings(teacher_path, checkpoint_interval_seconds, log_every, eval_episodes, exemplars_to_save)
  is_policy = teacher_loading.teacher_kind(teacher_path) == 'policy'
  run = run_directory.RunDirectory(root_dir, 'distill_data_free')  # one process at a time, writable
  try:
    tf.keras.utils.set_random_seed(seed)
    loaded = _load_teacher(teacher_path, is_policy, teacher_network_fn, teacher_features_layer,
                           observation_low, observation_high)
    student = _build_student(student_fn, loaded.observation_spec, loaded.action_spec)
    distiller = distiller_lib.DataFreeDistiller(loaded.teacher, student, loaded.observation_spec,
                                                loaded.action_spec, teacher_features_fn=loaded.features_fn,
                                                seed=seed)
    run.write_text('operative_config.gin', gin.operative_config_str())
    result, train_seconds, resumed_at_step = _train(distiller, root_dir, log_every, checkpoint_interval_seconds,
                                                    stop_request)
    if result['stopped']:
      print(f'Stopped at step {result["steps"]:,}/{distiller.num_steps:,}. {interrupts.resume_hint(root_dir)}',
            flush=True)
      return None
    summary = _write_exemplars_and_summary(distiller, teacher_path, root_dir, result, train_seconds,
                                           resumed_at_step, exemplars_to_save)
    student = _export_student(student, student_fn, loaded, root_dir, summary)
    if eval_episodes:
      _evaluate(student, distiller, loaded, eval_episodes, eval_seed, eval_greedy, seed, summary, root_dir)
    run.write_text('operative_config.gin', gin.operative_config_str())
    run.write_json('summary.json', summary)
    return summary
  finally:
    run.release()  # also when the run stops with an error


def _check_run_settings(teacher_path: str, checkpoint_interval_seconds: float, log_every: int,
                        eval_episodes: int, exemplars_to_save: int) -> None:
  """Every setting, and what the teacher path holds, before any work: raises ConfigError (PolicyLoadError
  for a missing teacher)."""
  distiller_lib.check_distiller_settings(**distiller_lib.bound_distiller_settings())
  teachers.check_target_settings(**teachers.teacher_targets())
  run_config.check_number('distill_data_free.checkpoint_interval_seconds', checkpoint_interval_seconds, 0,
                          meaning='seconds of training between checkpoints')
  for name, value in (('log_every', log_every), ('eval_episodes', eval_episodes),
                      ('exemplars_to_save', exemplars_to_save)):
    run_config.check_number(f'distill_data_free.{name}', value, 0, inclusive=True, integer=True)
  if not tf.io.gfile.exists(teacher_path):
    raise errors.PolicyLoadError(f'teacher {teacher_path!r} does not exist; pass a Keras classifier file or '
                                 'a policy/ directory exported by train_main.')


@dataclasses.dataclass
class _LoadedTeacher:
  """The teacher `distill_data_free` learns from, and the specs the generator and the student work in."""
  teacher: Any  # what DataFreeDistiller loads: a policy export's path, a Keras model, or a rebuilt network
  observation_spec: Any
  action_spec: Any
  is_policy: bool
  time_step_spec: Any = None  # policy teachers: the export's
  frame_spec: Any = None  # policy teachers of uint8 frames: the export's observation spec; None otherwise
  played_teacher: Optional[teachers.Teacher] = None  # the teacher evaluated in the game; None: the distiller's
  features_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = None  # the activation loss's features


def _load_teacher(teacher_path: str, is_policy: bool, teacher_network_fn, teacher_features_layer,
                  observation_low, observation_high) -> _LoadedTeacher:
  """The teacher at `teacher_path` (`distill_data_free`'s arguments), refused with a ConfigError where a
  setting does not fit its kind."""
  loaded = _policy_teacher(teacher_path, teacher_network_fn) if is_policy else None
  if (loaded is None or loaded.frame_spec is None) and teacher_network_fn is not None:
    raise errors.ConfigError('distill_data_free.teacher_network_fn is for policy teachers of uint8 frames; '
                             f'teacher {teacher_path!r} is not one: set it to None.')
  if is_policy:
    if teacher_features_layer is not None:
      raise errors.ConfigError(f'teacher {teacher_path!r} is a policy export: its features are not '
                               'reachable; set distill_data_free.teacher_features_layer = None and the '
                               'activation weight to 0.')
    return loaded
  return _keras_teacher(teacher_path, teacher_features_layer, observation_low, observation_high)


def _policy_teacher(teacher_path: str, teacher_network_fn) -> _LoadedTeacher:
  """A PolicySaver export; one of uint8 frames is rebuilt on their `[0, 1]` view (`frame_teacher`)."""
  time_step_spec, action_spec = adapters.policy_specs(teacher_path)
  loaded = _LoadedTeacher(teacher_path, time_step_spec.observation, action_spec, is_policy=True,
                          time_step_spec=time_step_spec)
  if tf.as_dtype(loaded.observation_spec.dtype) == tf.uint8:
    loaded.frame_spec = loaded.observation_spec
    loaded.observation_spec = frame_networks.frame_view_spec(loaded.frame_spec)
    loaded.teacher, loaded.played_teacher = frame_networks.frame_teacher(teacher_path, teacher_network_fn,
                                                                         action_spec)
  return loaded


def _keras_teacher(teacher_path: str, teacher_features_layer, observation_low, observation_high
                   ) -> _LoadedTeacher:
  """A Keras classifier: observations of its input shape (bounded by `observation_low`/`observation_high`
  where given), one action per class, and its `teacher_features_layer`'s output as features."""
  model = tf.keras.models.load_model(teacher_path, compile=False)
  input_shape = tuple(model.inputs[0].shape[1:])
  num_classes = int(model.outputs[0].shape[-1])
  if observation_low is not None or observation_high is not None:
    observation_spec = tensor_spec.BoundedTensorSpec(
        input_shape, tf.float32, -np.inf if observation_low is None else observation_low,
        np.inf if observation_high is None else observation_high)
  else:
    observation_spec = tf.TensorSpec(input_shape, tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec((), tf.int64, 0, num_classes - 1)
  loaded = _LoadedTeacher(model, observation_spec, action_spec, is_policy=False)
  if teacher_features_layer is not None:
    from protege.networks import lenet  # pylint: disable=g-import-not-at-top
    features_model = lenet.feature_model(model, teacher_features_layer)
    loaded.features_fn = lambda x: features_model(x, training=False)
  return loaded


def _build_student(student_fn: Callable[..., Any], observation_spec, action_spec):
  """`student_fn(observation_spec, action_spec)` with its variables created."""
  student = student_fn(observation_spec, action_spec)
  if isinstance(student, actor_critic.ActorCriticNetwork):
    student.create_variables()
  else:
    student(tf.zeros((1,) + tuple(observation_spec.shape), observation_spec.dtype))
  return student


def _train(distiller: distiller_lib.DataFreeDistiller, root_dir: str, log_every: int,
           checkpoint_interval_seconds: float, stop_request: Optional[Callable[[], bool]] = None
           ) -> Tuple[Dict[str, Any], float, Optional[int]]:
  """Trains `distiller` to its `num_steps` (or until `stop_request()`), resuming from root_dir's latest usable
  checkpoint, checkpointing every `checkpoint_interval_seconds` and at the end.

  Returns:
    `(result, train_seconds, resumed_at_step)`: `DataFreeDistiller.train`'s result, the seconds of training
    over every run of root_dir, and the step resumed from (None for a fresh start).
  """
  train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name='train_seconds')
  checkpoint = tf.train.Checkpoint(train_seconds=train_seconds, **distiller.checkpoint_items())
  checkpoint_dir = os.path.join(root_dir, 'checkpoints')
  guard = run_directory.NonFiniteGuard(distiller.checkpoint_items().values())
  manager = run_directory.open_checkpoints(checkpoint, checkpoint_dir, max_to_keep=2)
  restored = run_directory.restore_latest_usable(checkpoint, manager, checkpoint_dir, guard)
  first_step = int(distiller.step.numpy())
  history_path = os.path.join(root_dir, 'history.jsonl')
  history = _read_history(history_path, up_to_step=first_step) if restored else []
  # What was logged after the restored checkpoint is done again.
  run_directory.write_text(history_path, ''.join(json.dumps(entry) + '\n' for entry in history))
  if restored:
    print(f'Resumed from {restored} at step {first_step:,}/{distiller.num_steps:,}.', flush=True)
  start = time.time()
  prior_seconds = float(train_seconds.numpy())

  def save():
    train_seconds.assign(prior_seconds + time.time() - start)
    run_directory.save_checkpoint(manager, int(distiller.step.numpy()), guard)  # refuses NaN/inf state

  result = distiller.train(num_steps=max(0, distiller.num_steps - first_step), log_every=log_every,
                           log_fn=_progress_logger(distiller.num_steps, first_step, history_path),
                           save_fn=save, save_interval_seconds=checkpoint_interval_seconds,
                           stop_fn=stop_request)
  save()
  return result, float(train_seconds.numpy()), first_step if restored else None


def _write_exemplars_and_summary(distiller: distiller_lib.DataFreeDistiller, teacher_path: str,
                                 root_dir: str, result: Dict[str, Any], train_seconds: float,
                                 resumed_at_step: Optional[int], exemplars_to_save: int) -> Dict[str, Any]:
  """Writes root_dir/exemplars.npz (the pool's and `exemplars_to_save` of the last generator's, with the
  teacher's labels) and returns the summary of the training."""
  history = _read_history(os.path.join(root_dir, 'history.jsonl'))
  observations, generations = distiller.exemplars(exemplars_to_save)
  teacher_labels = np.argmax(adapters.teacher_logits(distiller.teacher, observations), axis=-1)
  with run_directory.atomic_file(os.path.join(root_dir, 'exemplars.npz'), 'wb') as f:
    np.savez_compressed(f, observations=observations, generation=generations, teacher_labels=teacher_labels)
  final = result['final'] or {k: v for k, v in (history[-1] if history else {}).items() if k != 'step'}
  return {'teacher': teacher_path, 'teacher_kind': distiller.teacher.kind_description,
          'steps': result['steps'], 'generations': result['generations'],
          'pool_size': result['pool_size'], 'train_seconds': train_seconds,
          'resumed_at_step': resumed_at_step,
          'final': final,
          'history': history,
          'exemplars': int(len(observations)),
          'student_parameters': int(sum(np.prod(v.shape) for v in distiller._student_variables())),  # pylint: disable=protected-access
          'teacher_labels_histogram': np.bincount(teacher_labels,
                                                  minlength=distiller.teacher.num_actions).tolist()}


def _export_student(student, student_fn: Callable[..., Any], loaded: _LoadedTeacher, root_dir: str,
                    summary: Dict[str, Any]):
  """Writes the student into root_dir (policy/ for policy teachers, as train_main exports policies, else
  student.keras), records its path in `summary` and returns it (rebuilt for uint8 frames where the
  teacher reads them)."""
  from protege.agents.training import policy_export  # pylint: disable=g-import-not-at-top
  if loaded.frame_spec is not None:
    student = frame_networks.frame_student_for_export(student, student_fn, loaded.frame_spec,
                                                      loaded.action_spec)
  if loaded.is_policy:
    summary['policy'] = policy_export.export_policy(student, loaded.time_step_spec, loaded.action_spec,
                                               os.path.join(root_dir, 'policy'))
  else:
    summary['student'] = os.path.join(root_dir, 'student.keras')
    partial = os.path.join(root_dir, '.student.partial.keras')  # Keras names the format by the extension
    student.save(partial)
    os.replace(partial, summary['student'])  # one atomic step: the old student or the new one
  return student


def _evaluate(student, distiller: distiller_lib.DataFreeDistiller, loaded: _LoadedTeacher, eval_episodes: int,
              eval_seed: int, eval_greedy: bool, seed: int, summary: Dict[str, Any], root_dir: str) -> None:
  """Plays the student and the teacher in `make_environment.env_id` and records their returns, and the
  student's agreement with the teacher on the teacher's own states, in `summary`; keeps those states in
  root_dir/teacher_states.npz."""
  from protege.agents.training import evaluation  # pylint: disable=g-import-not-at-top
  if not loaded.is_policy:
    raise errors.ConfigError('distill_data_free.eval_episodes > 0 evaluates policies in an environment; a '
                             'classifier teacher has none: set it to 0.')
  try:
    env_id = gin.query_parameter('make_environment.env_id')
  except ValueError:
    raise errors.ConfigError('distill_data_free.eval_episodes > 0 needs the environment: bind '
                             "make_environment.env_id (e.g. 'CartPole-v1').") from None
  summary['env_id'] = env_id
  summary['student_eval'] = evaluation.evaluate(student, env_id, num_episodes=eval_episodes, seed=eval_seed,
                                                greedy=eval_greedy)
  played_teacher = loaded.played_teacher if loaded.played_teacher is not None else distiller.teacher
  teacher_states = play.StateSample(seed=seed)
  summary['teacher_eval'] = evaluation.evaluate(play.teacher_as_network(played_teacher), env_id,
                                                num_episodes=eval_episodes, seed=eval_seed,
                                                greedy=eval_greedy, observation_fn=teacher_states)
  # After training, for the report only: does the student act as the teacher on the teacher's own states?
  summary['agreement_on_teacher_states'] = play.agreement_on_states(played_teacher, student,
                                                                    teacher_states.array())
  # Kept beside exemplars.npz for the diagnosis (binaries/data_free_diagnosis_main.py); never trained on.
  summary['teacher_states'] = play.save_states(teacher_states.array(), os.path.join(root_dir, 'teacher_states.npz'))
