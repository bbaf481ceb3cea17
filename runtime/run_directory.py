"""The run directory's one owner: its lock, its atomic writes, its checkpoints.

Every job that writes a run directory (`train_main`, `learner_main`, a PBT population's root, the data-free
distiller) opens it through `RunDirectory`, which keeps these promises:

* **One process at a time.** `RunDirectory` takes an exclusive `flock` on `<root_dir>/.run.lock` and writes
  its PID, program and start time into it. A second process is refused with one line naming the first
  one's PID. The kernel drops the lock when its process dies, however it dies, so a lock left by a killed
  run never blocks the next one (the file stays; its content is only informative).
* **Files are replaced, never half-written.** `write_text`/`write_json` write a temporary sibling, fsync
  it and rename it over the old file (one atomic step on a local file system). `replace_directory` swaps a
  fully written staging directory with the old one in one `renameat2(RENAME_EXCHANGE)` call on Linux, so
  `policy/` is at every moment either the old or the new export; where the exchange is unavailable the old
  directory is moved aside first and `recover_directory` puts it back if a kill falls between the two
  renames.
* **Checkpoints resume from the newest one that restores.** `open_checkpoints` rebuilds a damaged, empty or
  stale `checkpoint` index from the `ckpt-*` files on disk (the damaged index is kept beside it) and says
  so; `restore_latest_usable` skips checkpoints that do not read back or hold a non-finite value.
  `save_checkpoint` refuses to write non-finite state and turns a full disk into one line, the previous
  checkpoint intact.
* **Divergence stops the run.** `NonFiniteGuard` checks a training iteration's metrics (loss terms,
  gradient norm) and the trainable state, and raises `DivergenceError` naming the iteration and the
  quantity, before anything of that iteration is saved.

Written by hand: TensorFlow's `CheckpointManager` ignores an index it cannot parse (training silently
restarts from step 0) and saves whatever values it is given; neither TF-Agents nor Reverb locks a run
directory.
"""

import contextlib
import ctypes
import datetime
import errno
import fcntl
import glob
import json
import os
import re
import shutil
import socket
import sys
import tempfile
import time
from typing import Any, Callable, Iterable, List, Mapping, Optional

import numpy as np
import tensorflow as tf

from protege.runtime import errors

LOCK_FILE = '.run.lock'
CHECKPOINT_INDEX = 'checkpoint'
_CHECKPOINT_NAME = re.compile(r'^ckpt-(\d+)\.index$')


def _is_local(path: str) -> bool:
  """Whether `path` is on a local file system (not gs://, s3://, ... through tf.io.gfile)."""
  return '://' not in path


def _reason(error: BaseException) -> str:
  text = getattr(error, 'strerror', None) or getattr(error, 'message', None) or str(error)
  text = ' '.join(str(text).split())
  return text or type(error).__name__


def _fsync_path(path: str) -> None:
  descriptor = os.open(path, os.O_RDONLY)
  try:
    os.fsync(descriptor)
  except OSError:
    pass  # some file systems cannot fsync a directory; the rename is still atomic
  finally:
    os.close(descriptor)


def disk_full_error(path: str, what: str, error: BaseException, kept: str) -> errors.RunDirectoryError:
  """The one-line error of a write to `path` that found the disk full; `kept` says what is intact."""
  return errors.RunDirectoryError(
      f"the disk holding '{path}' is full ({_reason(error)}) while writing {what}; {kept}. Free space and run "
      'the same command again to resume.')


# --- atomic files and directories ------------------------------------------------------------------------


def _file_mode(path: str) -> int:
  """The mode of `path` if it exists, else that of a new file under the process's umask."""
  if os.path.exists(path):
    return os.stat(path).st_mode & 0o777
  umask = os.umask(0)
  os.umask(umask)
  return 0o666 & ~umask


@contextlib.contextmanager
def atomic_file(path: str, mode: str = 'w'):
  """Yields a file object whose content replaces `path` in one atomic step when the block ends without an
  error (a reader sees the old or the new file, never a part); on an error `path` is left as it was."""
  if not _is_local(path):
    with tf.io.gfile.GFile(path + '.tmp', mode) as f:
      yield f
    tf.io.gfile.rename(path + '.tmp', path, overwrite=True)
    return
  directory = os.path.dirname(os.path.abspath(path))
  descriptor, tmp = tempfile.mkstemp(prefix=f'.{os.path.basename(path)}.', suffix='.tmp', dir=directory)
  try:
    os.chmod(tmp, _file_mode(path))  # mkstemp makes it private; the file keeps the mode a new file gets
    with os.fdopen(descriptor, mode) as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException as error:
    with contextlib.suppress(OSError):
      os.remove(tmp)
    if errors.is_disk_full(error):
      raise disk_full_error(path, os.path.basename(path), error, 'the previous file is intact') from None
    raise
  _fsync_path(directory)


def write_text(path: str, text: str) -> None:
  """Replaces the file `path` with `text` in one atomic step (see `atomic_file`)."""
  with atomic_file(path) as f:
    f.write(text)


def write_json(path: str, value: Any) -> None:
  """Replaces the file `path` with `value` as indented JSON, atomically (see `write_text`)."""
  write_text(path, json.dumps(value, indent=2) + '\n')


def _exchange(a: str, b: str) -> bool:
  """Swaps the paths `a` and `b` in one step (Linux `renameat2(RENAME_EXCHANGE)`); False if unsupported."""
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = libc.renameat2
  except (OSError, AttributeError):
    return False  # glibc < 2.28
  renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
  at_fdcwd, rename_exchange = -100, 2
  if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
    return True
  code = ctypes.get_errno()
  if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
    return False  # a file system without the exchange
  raise OSError(code, os.strerror(code), b)


def _retired_name(final: str) -> str:
  return os.path.join(os.path.dirname(final), f'.{os.path.basename(final)}.retired')


def recover_directory(final: str) -> None:
  """Puts back a directory that a kill left moved aside by `replace_directory`'s fallback path."""
  retired = _retired_name(final)
  if _is_local(final) and not os.path.exists(final) and os.path.isdir(retired):
    os.rename(retired, final)


def replace_directory(staging: str, final: str) -> None:
  """Makes the complete directory `staging` the new `final`, replacing the old one in one atomic step.

  With the exchange (Linux), `final` is at every instant either the old or the new directory; the old one
  is then deleted. Without it, the old directory is renamed to a hidden sibling first; a kill between the
  two renames is undone by `recover_directory` when the directory is next opened.
  """
  if not _is_local(final):
    if tf.io.gfile.exists(final):
      tf.io.gfile.rmtree(final)
    tf.io.gfile.rename(staging, final)
    return
  parent = os.path.dirname(os.path.abspath(final))
  recover_directory(final)
  if not os.path.exists(final):
    os.rename(staging, final)
  elif _exchange(staging, final):
    shutil.rmtree(staging, ignore_errors=True)  # now holds the old directory
  else:
    retired = _retired_name(final)
    shutil.rmtree(retired, ignore_errors=True)
    os.rename(final, retired)
    os.rename(staging, final)
    shutil.rmtree(retired, ignore_errors=True)
  _fsync_path(parent)


def staging_directory(final: str) -> str:
  """A new empty hidden sibling of `final` to write a directory into before `replace_directory`."""
  parent = os.path.dirname(os.path.abspath(final))
  if not _is_local(final):
    path = final.rstrip('/') + '.tmp'
    if tf.io.gfile.exists(path):
      tf.io.gfile.rmtree(path)
    return path
  os.makedirs(parent, exist_ok=True)
  for stale in glob.glob(os.path.join(parent, f'.{os.path.basename(final)}.partial-*')):
    shutil.rmtree(stale, ignore_errors=True)  # left by a kill mid-write; never the live directory
  staging = tempfile.mkdtemp(prefix=f'.{os.path.basename(final)}.partial-', dir=parent)
  os.chmod(staging, _file_mode(staging + '.absent') | 0o111)  # mkdtemp makes it private (0700)
  return staging


# --- the lock ------------------------------------------------------------------------------------------


class RunDirectory:
  """A run directory, writable and held by this process alone until `release()` (or process exit).

  Args:
    root_dir: the directory; created if missing.
    program: the job's name, recorded in the lock and named to a second process.
    wait_seconds: how long to wait for another holder to let go before refusing (0: refuse at once).
    flag: the flag that names the directory, for the messages.
  """

  def __init__(self, root_dir: str, program: str, wait_seconds: float = 0.0, flag: str = '--root_dir'):
    if not root_dir:
      raise errors.ConfigError(f'{flag[2:]} is empty; pass the directory with {flag}.')
    self.root_dir = root_dir
    self.program = program
    self._flag = flag
    self._lock_file = None
    check_writable(root_dir)
    if _is_local(root_dir):
      self._lock(wait_seconds)
    recover_directory(self.path('policy'))

  def path(self, *names: str) -> str:
    return os.path.join(self.root_dir, *names)

  def _lock(self, wait_seconds: float) -> None:
    path = self.path(LOCK_FILE)
    handle = open(path, 'a+')  # pylint: disable=consider-using-with  (held until release())
    deadline = time.time() + wait_seconds
    while True:
      try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        break
      except OSError as error:
        if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
          handle.close()
          raise
        if time.time() >= deadline:
          handle.seek(0)
          holder = ' '.join(handle.read().split()) or 'another process'
          handle.close()
          raise errors.RunDirectoryError(
              f"{self._flag[2:]} '{self.root_dir}' is in use by {holder}; wait for it to finish or stop it, or "
              f'pass another {self._flag}.') from None
        time.sleep(0.2)
    handle.seek(0)
    handle.truncate()
    started = datetime.datetime.now().astimezone().isoformat(timespec='seconds')
    handle.write(f'{self.program} (PID {os.getpid()} on {socket.gethostname()}, started {started})\n')
    handle.flush()
    self._lock_file = handle

  def release(self) -> None:
    """Lets another process open the directory (idempotent)."""
    if self._lock_file is not None:
      fcntl.flock(self._lock_file.fileno(), fcntl.LOCK_UN)
      self._lock_file.close()
      self._lock_file = None

  def __enter__(self) -> 'RunDirectory':
    return self

  def __exit__(self, *exc_info) -> None:
    self.release()

  def write_text(self, name: str, text: str) -> str:
    path = self.path(name)
    write_text(path, text)
    return path

  def write_json(self, name: str, value: Any) -> str:
    path = self.path(name)
    write_json(path, value)
    return path


def check_writable(root_dir: str) -> None:
  """Raises a one-line `RunDirectoryError` if `root_dir` cannot be created or written."""
  if _is_local(root_dir) and os.path.exists(root_dir) and not os.path.isdir(root_dir):
    raise errors.RunDirectoryError(f"root_dir '{root_dir}' is a file, not a directory; pass a directory with "
                                   '--root_dir.')
  probe = os.path.join(root_dir, f'.write_probe.{os.getpid()}')
  try:
    tf.io.gfile.makedirs(root_dir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as error:
    raise errors.RunDirectoryError(f"root_dir '{root_dir}' is not writable ({_reason(error)}); pass a "
                                   'directory you can write to with --root_dir.') from None


# --- non-finite values ---------------------------------------------------------------------------------


def _float_variables(items: Iterable[Any]) -> List[tf.Variable]:
  """The floating-point variables of `items` (variables, Keras models/optimisers, tf.Modules), once each."""
  found, seen = [], set()
  for item in items:
    if isinstance(item, tf.Variable):
      candidates = [item]
    else:
      candidates = list(getattr(item, 'variables', []) or [])
    for variable in candidates:
      if id(variable) in seen or not variable.dtype.is_floating:
        continue
      seen.add(id(variable))
      found.append(variable)
  return found


class NonFiniteGuard:
  """Finds the first non-finite metric or variable of a training state (see the module docstring).

  Args:
    state: what a checkpoint holds (variables, networks, optimisers), e.g. a learner's
      `checkpoint_items().values()`; its floating-point variables are checked.
  """

  def __init__(self, state: Iterable[Any]):
    self._variables = _float_variables(state)
    variables = self._variables

    # One compiled call for all variables: a flag per variable.
    @tf.function(autograph=False)
    def finite_flags():
      if not variables:
        return tf.zeros([0], tf.bool)
      return tf.stack([tf.reduce_all(tf.math.is_finite(v)) for v in variables])

    self._finite_flags = finite_flags

  @property
  def variables(self) -> List[tf.Variable]:
    return list(self._variables)

  def first_non_finite_variable(self) -> Optional[str]:
    """The name of the first variable holding a NaN or ±inf, or None."""
    flags = self._finite_flags().numpy()
    bad = np.flatnonzero(~flags)
    return self._variables[int(bad[0])].name if bad.size else None

  def check(self, metrics: Mapping[str, Any], iteration: int, env_steps: Optional[int] = None,
            last_checkpoint: Optional[str] = None) -> None:
    """Raises `DivergenceError` if a metric (a loss term, the gradient norm) or a variable is non-finite."""
    where = f'learner iteration {iteration}' + (f' ({env_steps:,} env steps)' if env_steps is not None else '')
    kept = (f'the last good checkpoint, {last_checkpoint}, is kept' if last_checkpoint
            else 'no checkpoint was written yet')
    advice = ('lower the learning rate, clip gradients (max_grad_norm) or rewards, or check the environment\'s '
              'observations')
    for name, value in metrics.items():
      array = np.asarray(value)
      if array.dtype.kind in 'fc' and not np.all(np.isfinite(array)):
        kind = 'gradient norm' if 'grad' in name else 'loss term' if 'loss' in name else 'metric'
        raise errors.DivergenceError(
            f'training diverged at {where}: the {kind} {name!r} is {array.ravel()[~np.isfinite(array.ravel())][0]}; '
            f'nothing of this iteration was saved and {kept}; {advice}.')
    name = self.first_non_finite_variable()
    if name is not None:
      raise errors.DivergenceError(
          f'training diverged at {where}: the weight {name!r} holds a NaN or infinity; nothing of this '
          f'iteration was saved and {kept}; {advice}.')


# --- checkpoints ---------------------------------------------------------------------------------------


def checkpoints_on_disk(directory: str) -> List[str]:
  """The `ckpt-N` prefixes in `directory` whose index and data files exist, oldest (smallest N) first."""
  found = []
  for name in tf.io.gfile.listdir(directory) if tf.io.gfile.isdir(directory) else []:
    match = _CHECKPOINT_NAME.match(name.rstrip('/'))
    if not match:
      continue
    prefix = os.path.join(directory, name[:-len('.index')])
    if tf.io.gfile.glob(prefix + '.data-*'):
      found.append((int(match.group(1)), prefix))
  return [prefix for _, prefix in sorted(found)]


def _read_index(directory: str):
  """The parsed `checkpoint` index of `directory`, or the reason it is unusable (a str), or None if absent."""
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  from tensorflow.python.checkpoint.checkpoint_management import CheckpointState  # pylint: disable=g-import-not-at-top
  path = os.path.join(directory, CHECKPOINT_INDEX)
  if not tf.io.gfile.exists(path):
    return None
  try:
    with tf.io.gfile.GFile(path, 'r') as f:
      content = f.read()
  except (OSError, tf.errors.OpError) as error:
    return f'unreadable: {_reason(error)}'
  if not content.strip():
    return 'empty'
  state = CheckpointState()
  try:
    text_format.Merge(content, state)
  except text_format.ParseError as error:
    return f'not a checkpoint index: {_reason(error)}'
  if not state.model_checkpoint_path:
    return 'it names no checkpoint'
  return state


def repair_index(directory: str) -> Optional[str]:
  """Rebuilds `directory/checkpoint` from the `ckpt-*` files if it is damaged, empty, missing or names a
  checkpoint that is not on disk; returns a one-line note of what was done, or None if nothing was needed.

  The damaged index is kept as `checkpoint.damaged-<time>` beside the new one (nothing is deleted).
  """
  on_disk = checkpoints_on_disk(directory)
  state = _read_index(directory)
  if state is None and not on_disk:
    return None
  if not isinstance(state, str) and state is not None:
    newest = os.path.join(directory, os.path.basename(state.model_checkpoint_path))
    if newest in on_disk:
      # Also when newer complete ckpt-* files exist (a kill between TensorFlow's data files and its index):
      # the index's newest is a complete checkpoint, as TensorFlow itself would resume.
      return None
    problem = f'it names {os.path.basename(newest)}, which is not on disk'
  else:
    problem = state or 'missing'
  if not on_disk:
    return None  # an index and no checkpoint: nothing to resume from; the first save rewrites it
  index_path = os.path.join(directory, CHECKPOINT_INDEX)
  note = f"the checkpoint index '{index_path}' is {problem}" if problem in ('empty', 'missing') else \
      f"the checkpoint index '{index_path}' is damaged ({problem})"
  if tf.io.gfile.exists(index_path):
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
    kept = f'{index_path}.damaged-{stamp}'
    tf.io.gfile.rename(index_path, kept, overwrite=True)
    note += f'; kept as {os.path.basename(kept)}'
  from tensorflow.python.checkpoint import checkpoint_management  # pylint: disable=g-import-not-at-top
  # The manager lists only checkpoints younger than `last_preserved_timestamp`: give it their file times.
  times = [tf.io.gfile.stat(prefix + '.index').mtime_nsec / 1e9 for prefix in on_disk]
  checkpoint_management.update_checkpoint_state_internal(
      directory, model_checkpoint_path=on_disk[-1], all_model_checkpoint_paths=on_disk,
      save_relative_paths=True, all_model_checkpoint_timestamps=times,
      last_preserved_timestamp=min(times) - 1.0)
  return f'{note}; rebuilt it from the {len(on_disk)} ckpt-* file(s) on disk.'


def open_checkpoints(checkpoint: tf.train.Checkpoint, directory: str, max_to_keep: int = 3,
                     log: Callable[[str], None] = print) -> tf.train.CheckpointManager:
  """A `CheckpointManager` over `directory`, its index repaired first (see `repair_index`)."""
  if not isinstance(max_to_keep, int) or isinstance(max_to_keep, bool) or max_to_keep < 1:
    raise errors.ConfigError(f'the number of checkpoints to keep must be an int >= 1, got {max_to_keep!r}.')
  tf.io.gfile.makedirs(directory)
  note = repair_index(directory)
  if note:
    log(f'warning: {note}')
  return tf.train.CheckpointManager(checkpoint, directory, max_to_keep=max_to_keep)


def restore_latest_usable(checkpoint, manager, checkpoint_dir: str,
                          guard: Optional[NonFiniteGuard] = None,
                          log: Callable[[str], None] = print) -> Optional[str]:
  """Restores the newest checkpoint that reads back whole and finite (older ones are the fallback).

  A checkpoint damaged on disk (a truncated file, say) or holding a non-finite value is reported and
  skipped, and the one before it is used. If none can be restored, one line names the directory and the
  fix. Returns the restored path, or None if there is no checkpoint.
  """
  candidates = list(reversed(manager.checkpoints))
  for index, path in enumerate(candidates):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
      bad = guard.first_non_finite_variable() if guard is not None else None
      if bad is not None:
        raise errors.DivergenceError(f'its weight {bad!r} holds a NaN or infinity')
    except Exception as error:  # pylint: disable=broad-except  (readers raise IndexError, OpError, ...)
      text = str(error).strip()
      reason = text.splitlines()[0] if isinstance(error, errors.UserError) else \
          f'{type(error).__name__}: {text.splitlines()[0] if text else ""}'
      if index + 1 < len(candidates):
        log(f"warning: checkpoint '{path}' cannot be restored ({reason}); trying the previous one.")
        continue
      raise errors.CheckpointError(
          f"checkpoint '{path}' cannot be restored ({reason}) and no older one can; it is corrupt or from a "
          f'different configuration: use a new --root_dir or move {checkpoint_dir} away.') from None
    # The newer unusable files stay where they are (nothing is deleted); the next saves, numbered by the
    # restored learner step, write over them.
    return path
  return None


def save_checkpoint(manager: tf.train.CheckpointManager, checkpoint_number: Any,
                    guard: Optional[NonFiniteGuard] = None) -> str:
  """Saves through `manager`, after checking that nothing non-finite is saved; returns the path.

  A full disk becomes one line (`RunDirectoryError`); TensorFlow writes the index last, so the previous
  checkpoint stays the latest and intact, and the partial files of this one are removed.
  """
  if guard is not None:
    bad = guard.first_non_finite_variable()
    if bad is not None:
      kept = (f'the last good checkpoint, {manager.latest_checkpoint}, is kept' if manager.latest_checkpoint
              else 'no checkpoint was written before it')
      raise errors.DivergenceError(f'refusing to save a checkpoint: the weight {bad!r} holds a NaN or infinity; '
                                   f'{kept}; lower the learning rate.')
  try:
    return manager.save(checkpoint_number=checkpoint_number)
  except (OSError, tf.errors.OpError) as error:
    if not errors.is_disk_full(error):
      raise
    number = int(np.asarray(checkpoint_number)) if checkpoint_number is not None else None
    if number is not None and _is_local(manager.directory):
      for partial in glob.glob(os.path.join(manager.directory, f'ckpt-{number}*_temp*')):
        shutil.rmtree(partial, ignore_errors=True) if os.path.isdir(partial) else os.remove(partial)
    kept = (f'the previous checkpoint, {manager.latest_checkpoint}, is intact' if manager.latest_checkpoint
            else 'no earlier checkpoint exists')
    raise disk_full_error(manager.directory, 'a checkpoint', error, kept) from None
