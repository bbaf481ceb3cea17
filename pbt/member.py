"""A member of the population: one Protégé learner (`agents.training.trainer.Trainer`) as a Ray Tune Trainable.

Ray Tune drives a member through the `Trainable` API; each call maps onto the Trainer:

* `setup(config)` (once per process): parses the gin files inside the worker process, limits its threads,
  builds the Trainer in `<root_dir>/members/member_<index>` (environments, an in-process Reverb server,
  networks, learner; it resumes from that directory's own checkpoints), and assigns the config's
  hyperparameters to the learner's variables.
* `step()`: trains until the member is *ready* (the next multiple of `ready_env_steps` env steps, or the end
  of its budget) and reports `env_steps`, `episode_return_mean` (mean of the recent training episodes),
  `recent_returns` (their raw values, for the scheduler's t-test) and, at the end, the final evaluation.
* `save_checkpoint(dir)` / `load_checkpoint(dir)`: the Trainer's whole `tf.train.Checkpoint` (network,
  optimiser, counters, every hyperparameter variable), written atomically (`write_checkpoint`) and read only
  once verified whole (`read_checkpoint`).
* `reset_config(config)` (with `reuse_actors=True`): an exploit keeps the process and its compiled training
  step; Ray calls `reset_config(new config)` and then `load_checkpoint(donor's checkpoint)`. The restore
  brings the donor's hyperparameter values with its weights, so after every restore the member assigns its
  own config again: **the new config wins**. Hyperparameters are `tf.Variable`s read inside the compiled
  step (docs/pbt.md, "Hyperparameters as variables"), so nothing retraces (`learner.tracing_count()` stays
  the same).

With `TeacherSet.peers` > 0 (codistillation, `pbt.codistillation`), every `step()` also publishes the
member's policy and loads its best peers' into its peer teachers.

A trial's config is `{'member': <settings>, <hyperparameter name>: value, ...}`; the settings (gin files and
bindings, root_dir, index, ready_env_steps, threads) never change, the hyperparameters are what PBT moves
(names in `pbt.scheduler`). Member `index` trains with `train.seed + index`.

A member that crashes is restarted by Ray (`FailureConfig.max_failures`) in a new process: `setup` rebuilds
the Trainer, which resumes from the member directory's own newest checkpoint, and Ray restores the trial's
last checkpoint (`load_checkpoint`); an older checkpoint of this member itself is not restored over a newer
state of its own directory (the first restore after `setup` only).

SIGINT and SIGTERM (a cluster preempting the node, a user's `kill`) make a member started by
`binaries/pbt_main.py` save and end its process within seconds: a step under way stops after its learner
iteration; a member between steps saves at once. The Trainer's checkpoint in the member directory is
written (`member_<i>/checkpoints/`), an event 'stopped' is recorded, and the process exits with 128 + the
signal's number; Ray then restarts the member (as after a crash), which resumes from that checkpoint.

For tests of those paths, the environment variable `PBT_KILL_MEMBER_AT='member_<i>:<env steps>[:<signal>]'`
(comma-separated; `binaries/pbt_main.py` passes it to the members) makes that member's process send itself
the signal (default SIGKILL) once, at the start of its first step at or past those env steps.
"""

import collections
import hashlib
import json
import os
import shutil
import signal
import threading
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import gin
import numpy as np
from ray import tune
import tensorflow as tf

from protege.pbt import codistillation
from protege.pbt import lineage as lineage_lib
from protege.pbt import scheduler as scheduler_lib
from protege.runtime import config as run_config
from protege.runtime import errors
from protege.runtime import interrupts
from protege.runtime import run_directory

# The subdirectory of a Ray checkpoint directory that holds the member's state once it is complete.
CHECKPOINT_SUBDIR = 'member'
MANIFEST = 'manifest.json'
_STATE_PREFIX = 'state'
# Test hook: 'member_<i>:<env steps>[:<signal>]' (comma-separated) signals that member's process once (see the
# module docstring).
KILL_ENV_VAR = 'PBT_KILL_MEMBER_AT'
# Set by `binaries/pbt_main.py` in its members' processes: SIGINT/SIGTERM save the member and end its process
# (see `Member.setup`). Not set where a Member is built in a process of its own owner (a test).
SIGNALS_ENV_VAR = 'PROTEGE_MEMBER_SIGNALS'
# Seconds a member waits for its directory's lock. Ray reuses paused members' processes for whichever member
# resumes next, so member_3 may resume in member_0's old process while its own old process is still closing
# member_3's Trainer on its way to member_0 (seen with truncation selection: a crash on the lock, held by the
# process that was about to let go). Each process closes its old Trainer before building the new one, so the
# wait cannot deadlock; a lock still held after it is a real second holder, refused as before.
HANDOVER_WAIT_SECONDS = 600.0


class CheckpointError(errors.CheckpointError):  # a RuntimeError too
  """A member checkpoint is missing, incomplete or damaged."""


# --- checkpoints written atomically ------------------------------------------------------------------


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _fsync(path: str) -> None:
  descriptor = os.open(path, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  finally:
    os.close(descriptor)


def write_checkpoint(checkpoint, directory: str, metadata: Optional[Mapping[str, Any]] = None,
                     guard: Optional[run_directory.NonFiniteGuard] = None) -> str:
  """Writes `checkpoint` (a `tf.train.Checkpoint`) into `directory/member/`, atomically; returns that path.

  With `guard` (the Trainer's, over the learner's state), refuses a state holding a NaN or infinity
  (`DivergenceError`): a diverged member is never a donor.
  Everything is written into a hidden staging directory next to it: the TensorFlow files, then a manifest
  with each file's size and SHA-256 and `metadata`, all fsynced; the staging directory then replaces
  `member/` in one atomic step (`runtime.run_directory.replace_directory`). A reader therefore finds
  either the old `member/` or the new one, whole, and `read_checkpoint` verifies it against the manifest
  before restoring anything (a copy cut short elsewhere is caught too).
  """
  bad = guard.first_non_finite_variable() if guard is not None else None
  if bad is not None:
    raise errors.DivergenceError(f"refusing to write a member checkpoint to '{directory}': the weight {bad!r} "
                                 'holds a NaN or infinity (the member diverged).')
  os.makedirs(directory, exist_ok=True)
  final = os.path.join(directory, CHECKPOINT_SUBDIR)
  staging = run_directory.staging_directory(final)
  try:
    # `save_counter` exists only once `checkpoint.save()` ran (the Trainer's periodic checkpoints); write it
    # always, so a member that has saved can restore a donor that has not (read_checkpoint asserts that
    # every object of the reader is in the file).
    _ = checkpoint.save_counter
    checkpoint.write(os.path.join(staging, _STATE_PREFIX))
    files = {}
    for name in sorted(os.listdir(staging)):
      path = os.path.join(staging, name)
      _fsync(path)
      files[name] = {'bytes': os.path.getsize(path), 'sha256': _sha256(path)}
    metadata = lineage_lib._plain(dict(metadata or {}))  # pylint: disable=protected-access
    run_directory.write_json(os.path.join(staging, MANIFEST), {'files': files, 'metadata': metadata})
    _fsync(staging)
    run_directory.replace_directory(staging, final)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  return final


def verify_checkpoint(directory: str) -> Dict[str, Any]:
  """Checks `directory/member/` against its manifest; returns the manifest. Raises `CheckpointError`."""
  final = os.path.join(directory, CHECKPOINT_SUBDIR)
  manifest_path = os.path.join(final, MANIFEST)
  if not os.path.isfile(manifest_path):
    raise CheckpointError(f"'{directory}' holds no complete member checkpoint (no {CHECKPOINT_SUBDIR}/"
                          f'{MANIFEST}); it was not written by Member.save_checkpoint or its copy is '
                          'incomplete.')
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
    files = manifest['files']
  except (ValueError, KeyError, TypeError) as error:
    raise CheckpointError(f"member checkpoint '{final}' has an unreadable manifest ({error}); it is damaged: "
                          'restore an older checkpoint.') from None
  for name, expected in files.items():
    path = os.path.join(final, name)
    if not os.path.isfile(path):
      raise CheckpointError(f"member checkpoint '{final}' lacks {name}; it is incomplete: restore an older "
                            'checkpoint.')
    size = os.path.getsize(path)
    if size != expected['bytes'] or _sha256(path) != expected['sha256']:
      raise CheckpointError(f"member checkpoint '{final}': {name} has {size} bytes or content other than the "
                            f"{expected['bytes']} written; it is damaged: restore an older checkpoint.")
  return manifest


def read_checkpoint(checkpoint, directory: str, attempts: int = 3) -> Dict[str, Any]:
  """Verifies, then restores `checkpoint` from `directory/member/`; returns the metadata written with it.

  Nothing is assigned unless every file matches the manifest and no value is NaN (`CheckpointError`
  otherwise; `write_checkpoint` also refuses infinities in the learner's state, but the run's counters
  may hold -inf, the best return before the first episode). The files are verified again after the
  restore: a checkpoint replaced while it was being read (its files then belong to two versions) is read
  again, up to `attempts` times.
  """
  prefix = os.path.join(directory, CHECKPOINT_SUBDIR, _STATE_PREFIX)
  for _ in range(attempts):
    manifest = verify_checkpoint(directory)
    try:
      reader = tf.train.load_checkpoint(prefix)
      for name, dtype in reader.get_variable_to_dtype_map().items():
        if dtype.is_floating and np.isnan(reader.get_tensor(name)).any():
          raise CheckpointError(f"member checkpoint '{directory}' holds a NaN in {name}; a diverged member "
                                'is never copied.')
      checkpoint.read(prefix).assert_existing_objects_matched()
    except tf.errors.OpError:
      continue  # files of two versions (a replacement under way); read again
    try:
      if verify_checkpoint(directory) == manifest:
        return manifest.get('metadata', {})
    except CheckpointError:
      pass  # replaced again meanwhile
  raise CheckpointError(f"member checkpoint '{directory}' was replaced while it was read, {attempts} times; "
                        'read it when its member is not writing it.')


# --- hyperparameters as learner variables -----------------------------------------------------------


def hyperparameter_setters(learner, names: Sequence[str]) -> Dict[str, Tuple[Any, Callable[[float], None]]]:
  """For each hyperparameter name, the learner variable it sets and a function assigning it.

  'lambda_<k>' is teacher k's λ_k (λ̂_k when factorised), 'lambda_scale' the global λ, through
  `TeacherWeights.assign` (mode 'pbt' required); any other name is one of the learner's
  `hyperparameters()` (`agents.learners.base.Learner`), e.g. 'learning_rate', 'entropy_coef',
  'intrinsic_advantage_coef' (RND's).

  Raises:
    ValueError: naming a hyperparameter the learner does not have, or λ's not in mode 'pbt'.
  """
  setters = collections.OrderedDict()
  for name in names:
    if name.startswith(scheduler_lib.LAMBDA_PREFIX):
      kickstarter = learner.kickstarter
      if kickstarter is None:
        raise errors.ConfigError(f'The search space moves {name!r}, but the learner does not kickstart: set '
                                 'PPOLearner.kickstarter_fn = @Kickstarter (or IMPALALearner.kickstarter_fn), or '
                                 'search_space.teacher_weight = None.')
      weights = kickstarter.weights
      if weights.mode != 'pbt':
        raise errors.ConfigError(f'The search space moves {name!r}, but TeacherWeights.mode is '
                                 f'{weights.mode!r}, whose schedule would overwrite it: set '
                                 "TeacherWeights.mode = 'pbt'.")
      key = name[len(scheduler_lib.LAMBDA_PREFIX):]
      by_name = weights.variables_by_name()
      if key not in by_name:
        raise errors.ConfigError(f'The search space moves {name!r}, but the teacher weights are '
                                 f'{[scheduler_lib.LAMBDA_PREFIX + k for k in by_name]}: check '
                                 'TeacherSet.names and TeacherWeights.scale_schedule.')
      setters[name] = (by_name[key],
                       lambda value, key=key, weights=weights: weights.assign(key, float(value)))
    else:
      variable = learner.hyperparameters().get(name)
      if variable is None:
        raise errors.ConfigError(f'The search space moves {name!r}, but the learner {type(learner).__name__} '
                                 f'has no hyperparameter of that name (it has '
                                 f'{sorted(learner.hyperparameters())}): remove it from search_space.others.')
      setters[name] = (variable, lambda value, variable=variable: variable.assign(float(value)))
  return setters


def kickstart_layout() -> Tuple[Tuple[str, ...], bool]:
  """The kickstarting teachers' names and whether λ is factorised, as the parsed gin configures them.

  Read from the learner's `kickstarter_fn` (`kickstarting.kickstarter_configured`),
  `TeacherSet.paths`/`.names`/`.peers` and `TeacherWeights.scale_schedule` (the same defaults as
  `TeacherSet`: 'teacher_0', 'teacher_1', ..., then the peer teachers 'peer_0', ...); ((), False) without
  kickstarting.
  """
  from protege.agents.distillation import kickstarting  # pylint: disable=g-import-not-at-top
  from protege.agents.distillation import teacher_set as teacher_set_lib  # pylint: disable=g-import-not-at-top
  if not kickstarting.kickstarter_configured():
    return (), False
  paths = run_config.bound('TeacherSet.paths', ())
  paths = [paths] if isinstance(paths, str) else list(paths)
  names = run_config.bound('TeacherSet.names', None)
  if names is None:
    names = [f'teacher_{k}' for k in range(len(paths))]
  names = [names] if isinstance(names, str) else list(names)
  names += [f'{teacher_set_lib.PEER_PREFIX}{k}' for k in range(int(run_config.bound('TeacherSet.peers', 0) or 0))]
  return tuple(names), run_config.bound('TeacherWeights.scale_schedule', None) is not None


# --- the Trainable --------------------------------------------------------------------------------------


def member_settings(index: int, root_dir: str, gin_files: Sequence[str], gin_bindings: Sequence[str],
                    ready_env_steps: int, threads: int = 1) -> Dict[str, Any]:
  """The fixed part of member `index`'s config (`config['member']`).

  `working_dir` is the launching process's working directory: members run in it, so relative paths in the
  gin files (e.g. `TeacherSet.paths = ['runs/minatar_breakout/policy']`) mean what they mean to the user.
  """
  return {'index': int(index), 'root_dir': os.path.abspath(root_dir), 'gin_files': list(gin_files),
          'gin_bindings': list(gin_bindings), 'ready_env_steps': int(ready_env_steps),
          'threads': int(threads), 'working_dir': os.getcwd()}


def _limit_threads(threads: int) -> None:
  """One member per `threads` cores: TensorFlow's op pools sized before its runtime starts."""
  if not threads:
    return
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
  except RuntimeError:
    pass  # the runtime already started in this process (e.g. a test building a member in-process)


class Member(tune.Trainable):
  """A Protégé learner as a Ray Tune class Trainable (see the module docstring)."""

  def setup(self, config: Dict[str, Any]):
    self._trainer = None
    self._busy = threading.Lock()  # held by a step; a stop between steps saves at once
    self._stop = None
    self._first_restore = True  # Ray's restore after a restart (see load_checkpoint)
    if os.environ.get(SIGNALS_ENV_VAR) and threading.current_thread() is threading.main_thread():
      index = config[scheduler_lib.MEMBER_KEY]['index']
      self._stop = interrupts.StopRequest(f'pbt_main member {index}')
      self._stop.add_listener(self._stop_if_idle)
    self._build(config[scheduler_lib.MEMBER_KEY])
    self._apply(config)

  def _build(self, settings: Mapping[str, Any]) -> None:
    # agents.training.trainer first: it registers the configurables the gin files name.
    from protege.agents.training import settings as settings_lib  # pylint: disable=g-import-not-at-top
    from protege.agents.training import trainer  # pylint: disable=g-import-not-at-top
    from protege.runtime import config as run_config  # pylint: disable=g-import-not-at-top

    _limit_threads(settings.get('threads', 1))
    # Ray starts a member in its own session directory; relative paths in gin are the user's, relative to
    # where pbt_main ran. On a cluster node without that directory they stay relative to Ray's (and a
    # missing teacher's error names the path).
    working_dir = settings.get('working_dir')
    if working_dir and os.path.isdir(working_dir):
      os.chdir(working_dir)
    self._settings = dict(settings)
    self._first_restore = True
    self.name = f'member_{settings["index"]}'
    self.member_dir = os.path.join(settings['root_dir'], 'members', self.name)
    os.makedirs(self.member_dir, exist_ok=True)
    self._events = lineage_lib.LineageLog(os.path.join(self.member_dir, 'events.jsonl'))
    gin.clear_config()
    run_config.parse_gin(settings['gin_files'], settings['gin_bindings'])
    run_settings = settings_lib.RunSettings()
    self._trainer = trainer.Trainer(self.member_dir, program=f'pbt_main member {settings["index"]}',
                                    settings=run_settings, seed=run_settings.seed + int(settings['index']),
                                    stop_request=self._stop, hyperparameters_from_gin=False,
                                    lock_wait_seconds=HANDOVER_WAIT_SECONDS)
    self._ready = int(settings['ready_env_steps'])
    names = [k for k in self.config if k != scheduler_lib.MEMBER_KEY]
    self._setters = hyperparameter_setters(self._trainer.learner, names)
    self._summary = None
    self._events.record('setup', pid=os.getpid(), trial_id=self.trial_id, env_steps=self._trainer.env_steps,
                        tracing_count=self.tracing_count, ray_auth_mode=os.environ.get('RAY_AUTH_MODE'),
                        niceness=os.nice(0))

  # --- state --------------------------------------------------------------------------------------

  @property
  def trainer(self):
    return self._trainer

  @property
  def tracing_count(self) -> int:
    """How often the learner's compiled step has been traced (0 before the first run)."""
    return self._trainer.learner.tracing_count()

  def hyperparameters(self) -> Dict[str, float]:
    """The current values of the learner's PBT-moved variables."""
    return {name: float(variable.numpy()) for name, (variable, _) in self._setters.items()}

  def _apply(self, config: Mapping[str, Any]) -> None:
    for name, (_, assign) in self._setters.items():
      assign(config[name])

  # --- Trainable --------------------------------------------------------------------------------------

  def _maybe_kill_for_test(self) -> None:
    for entry in filter(None, os.environ.get(KILL_ENV_VAR, '').split(',')):
      name, steps, signal_name = (entry.split(':') + ['SIGKILL'])[:3]
      marker = os.path.join(self.member_dir, f'.{signal_name.lower()}_for_test')
      if name == self.name and self._trainer.env_steps >= int(steps) and not os.path.exists(marker):
        with open(marker, 'w') as f:
          f.write(str(os.getpid()))
        self._events.record('kill', pid=os.getpid(), env_steps=self._trainer.env_steps, signal=signal_name)
        os.kill(os.getpid(), getattr(signal, signal_name))

  # --- stopped by a signal -------------------------------------------------------------------------------

  def _stop_requested(self) -> bool:
    return self._stop is not None and self._stop.requested

  def _stop_now(self) -> None:
    """Saves the member's state into its own directory and ends the process (a stop was requested)."""
    trainer, path, problem = self._trainer, None, None
    try:
      if trainer is not None and not trainer.finished:
        trainer.close()
        path = trainer.save_if_consistent()
    except errors.UserError as error:  # e.g. a diverged state, never saved; the last good one stays
      problem = str(error)
    finally:
      try:
        if trainer is not None:
          trainer.release()
        env_steps = trainer.env_steps if trainer is not None else None
        self._events.record('stopped', pid=os.getpid(), signal=self._stop.signal_number, env_steps=env_steps,
                            checkpoint=path, error=problem)
        print(f'{self.name}: stopped at {env_steps:,} env steps; saved {path}.' if path else
              f'{self.name}: stopped ({problem or "nothing to save"}).', flush=True)
      finally:
        os._exit(self._stop.exit_code)  # pylint: disable=protected-access

  def _stop_if_idle(self) -> None:
    """Called from the signal's watching thread: between steps the member saves and exits at once."""
    if self._busy.acquire(blocking=False):
      self._stop_now()  # does not return; a step never starts meanwhile

  def step(self) -> Dict[str, Any]:
    with self._busy:
      if self._stop_requested():
        self._stop_now()
      result = self._step()
      if self._stop_requested():
        self._stop_now()
      self._first_restore = False
      return result

  def _step(self) -> Dict[str, Any]:
    self._maybe_kill_for_test()
    trainer = self._trainer
    target = (trainer.env_steps // self._ready + 1) * self._ready
    while not trainer.finished and trainer.env_steps < target:
      trainer.run_iteration()
      if self._stop_requested():
        self._stop_now()
    returns = [float(r) for r in trainer.recent_returns]
    self._codistill(returns)
    result = {
        'env_steps': trainer.env_steps,
        'episode_return_mean': float(np.mean(returns)) if returns else float('nan'),
        'recent_returns': returns,
        'member': self.name,
        'pid': os.getpid(),
        'tracing_count': self.tracing_count,
        'hyperparameters': self.hyperparameters(),
    }
    if trainer.finished:
      if self._summary is None:
        self._summary = trainer.finish()
        self._events.record('finish', env_steps=trainer.env_steps,
                            eval_return_mean=self._summary['eval_return_mean'])
      result.update(eval_return_mean=self._summary['eval_return_mean'],
                    eval_return_std=self._summary['eval_return_std'], done=True)
    return result

  def _codistill(self, returns) -> None:
    """Codistillation (`TeacherSet.peers`): publishes this member's policy, loads its best peers'."""
    kickstarter = self._trainer.learner.kickstarter
    peer_teachers = kickstarter.peer_teachers if kickstarter is not None else []
    if not peer_teachers:
      return
    loaded = codistillation.exchange(self._settings['root_dir'], self.name, self._trainer.network, peer_teachers,
                                     returns, self._trainer.env_steps)
    if loaded:
      self._events.record('codistill', env_steps=self._trainer.env_steps, teachers=loaded)

  def save_checkpoint(self, checkpoint_dir: str) -> str:
    write_checkpoint(self._trainer.checkpoint, checkpoint_dir,
                     metadata={'member': self.name, 'env_steps': self._trainer.env_steps,
                               'hyperparameters': self.hyperparameters(),
                               'recent_returns': [float(r) for r in self._trainer.recent_returns]},
                     guard=self._trainer.guard)
    return checkpoint_dir

  def load_checkpoint(self, checkpoint_dir: str) -> None:
    with self._busy:
      self._load_checkpoint(checkpoint_dir)

  def _load_checkpoint(self, checkpoint_dir: str) -> None:
    first_restore, self._first_restore = self._first_restore, False
    written = verify_checkpoint(checkpoint_dir).get('metadata', {})
    if (first_restore and written.get('member') == self.name
        and int(written.get('env_steps', 0)) < self._trainer.env_steps):
      # Ray restores the trial's last checkpoint into a restarted process; the member's own directory,
      # which the Trainer resumed from in setup, holds a newer state (saved when a signal stopped it, or
      # periodically): that one is kept.
      self._events.record('restore_skipped', checkpoint=checkpoint_dir, checkpoint_env_steps=written['env_steps'],
                          env_steps=self._trainer.env_steps)
      return
    metadata = read_checkpoint(self._trainer.checkpoint, checkpoint_dir)
    # The checkpoint brought its writer's hyperparameter values: this member's config wins (after an
    # exploit Ray has already called reset_config with the explored values).
    self._apply(self.config)
    # The recent returns go with the weights that earned them (the donor's, after an exploit).
    self._trainer.recent_returns.clear()
    self._trainer.recent_returns.extend(metadata.get('recent_returns') or [])
    self._events.record('restore', source=metadata.get('member'), env_steps=self._trainer.env_steps,
                        checkpoint=checkpoint_dir, hyperparameters=self.hyperparameters(),
                        tracing_count=self.tracing_count)

  def reset_config(self, new_config: Dict[str, Any]) -> bool:
    with self._busy:
      settings = new_config[scheduler_lib.MEMBER_KEY]
      if settings != self._settings:
        # Ray gave this process to another member (more members than slots): that member's own Trainer.
        self._close_trainer()
        self._build(settings)
      self._apply(new_config)
      self._events.record('reset', trial_id=self.trial_id, hyperparameters=self.hyperparameters(),
                          tracing_count=self.tracing_count)
      return True

  def _close_trainer(self) -> None:
    """Closes the Trainer, saving its state into the member directory unless it finished (then saved)."""
    trainer = self._trainer
    try:
      trainer.close()
      if not trainer.finished:
        trainer.save_if_consistent()
    except errors.DivergenceError:
      pass  # a diverged state is never saved; the member's last good checkpoint stays
    finally:
      trainer.release()

  def cleanup(self) -> None:
    with self._busy:
      if self._trainer is not None:
        self._close_trainer()
