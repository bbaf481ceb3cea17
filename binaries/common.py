"""What every binary shares: strict gin parsing and one-line errors for bad input."""

import contextlib
import gc
import errno
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Callable, Iterator, Optional, Sequence

from absl import app
from absl import flags

from protege.runtime import config
from protege.runtime import errors
# Re-exported: binaries and tests name them through this module.
from protege.runtime.config import GIN_DIR  # noqa: F401  pylint: disable=unused-import
from protege.runtime.config import tensorflow_threads
from protege.runtime.errors import ConfigError  # noqa: F401  pylint: disable=unused-import


# Bindings that turn an RND configuration (e.g. gin/rnd_montezuma.gin) into the same PPO without RND: the
# baseline of the RND study and of the RND benchmarks.
PPO_WITHOUT_RND_BINDINGS = ('train.learner_fn = @PPOLearner', "ActorCriticNetwork.value_heads = ('extrinsic',)")


def register_configurables() -> None:
  """Imports every module that defines gin configurables, so strict parsing knows all names."""
  # pylint: disable=g-import-not-at-top,unused-import
  from protege.agents.training import trainer  # noqa: F401  (imports the actor, learners, networks, envs, replay)
  from protege.agents.training import deployment  # noqa: F401  (launch: the resources of protege-launch's jobs)
  # replay/reverb_replay.py, the Reverb transport, registers none: parsing needs no dm-reverb.


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Registers the agents' configurables, then parses gin strictly and checks every file and value
  (`runtime.config.parse_gin`): an unknown name or a value of the wrong type is a ConfigError."""
  register_configurables()
  config.parse_gin(gin_files, gin_bindings)


def user_error_line(error: BaseException) -> Optional[str]:
  """The one line that reports `error` if a user caused it and can fix it, else None (a bug: traceback).

  A user's errors are the kinds of `runtime.errors` (`UserError`), OSErrors whose number means the user's
  disk or permissions (`USER_OS_ERRNOS`: a full disk, a read-only file system, a path without permission),
  and TensorFlow errors that say the disk is full.
  """
  if isinstance(error, errors.UserError):
    return _first_line(error)
  tf = sys.modules.get('tensorflow')  # only if TensorFlow is loaded: then its errors can be raised
  tensorflow_error = tf is not None and isinstance(error, tf.errors.OpError)
  if (isinstance(error, OSError) or tensorflow_error) and errors.is_disk_full(error):
    return (f'the disk is full ({_first_line(error)}); free space on it (or write elsewhere) and run the '
            'same command again.')
  if isinstance(error, OSError) and error.errno in errors.USER_OS_ERRNOS:
    fix = {errno.EROFS: 'the file system is read-only; write elsewhere.'}.get(
        error.errno, 'give yourself access to it, or use a path you can write to.')
    return f'{_first_line(error)}: {fix}'
  return None


def _first_line(error: BaseException) -> str:
  text = str(error).strip()
  return text.splitlines()[0] if text else type(error).__name__


TRACEBACK_HINT = '(--traceback shows details)'   # ends every one-line error (`one_line_errors`)


@contextlib.contextmanager
def one_line_errors(program: str, show_traceback: bool = False) -> Iterator[None]:
  """Turns the errors a user can cause into one line on stderr and exit code 2.

  What a user caused is decided by kind (`user_error_line`): the kinds of `runtime/errors.py` (a bad value
  or file, an unusable run directory or checkpoint, an unreachable server, a policy path that holds none,
  a diverged run), whose messages name the bad value and the fix, and a full disk or a path without
  permission. Anything else, a plain ValueError or KeyError included, is a bug and keeps its traceback.
  `show_traceback` (the --traceback flag) re-raises the user's errors whole as well.
  """
  line = None
  try:
    yield
  except Exception as error:  # pylint: disable=broad-except  (sorted by kind below; the rest re-raised)
    line = None if show_traceback else user_error_line(error)
    if line is None:
      raise
    print(f'{program}: error: {line}  {TRACEBACK_HINT}', file=sys.stderr, flush=True)
  if line is not None:
    # Exits outside the handler: the error's traceback, which can hold a learner's input iterator, is freed
    # and collected while the interpreter is whole. Left to the interpreter's exit, that iterator's reader
    # thread (waiting to enter Python) kept the process from ending.
    gc.collect()
    sys.exit(2)


def secure_local_ray() -> None:
  """Settings of the local Ray cluster a binary starts (`pbt_main`, `launch_main`), unless the user chose
  otherwise in the environment. Call it before Ray is imported: Ray reads them then.

  * `RAY_AUTH_MODE=token`: Ray's servers listen on every interface (Ray has no bind address); with token
    authentication nothing without the token (which Ray generates into ~/.ray/auth_token) reaches them.
  * `RAY_worker_niceness=0`: Ray's raylet starts its workers 15 nice levels below itself, so on a machine
    with other work they crawled (3-6% of a core each beside other jobs, BENCHMARKS). They are the run's
    workload: they run at the binary's own priority (the setting is an increment, so `nice <binary>` still
    lowers them).

  A cluster given by `--ray_address` keeps its own settings.
  """
  if 'ray' in sys.modules:
    return  # too late to matter (a test that already started Ray)
  os.environ.setdefault('RAY_AUTH_MODE', 'token')
  os.environ.setdefault('RAY_worker_niceness', '0')


def define_gin_flags() -> None:
  """Defines the flags every job of a run shares: --gin_file, --gin_bindings and --traceback.

  Called by a binary at import, before `app.run`; the module itself defines no flags.
  """
  flags.DEFINE_multi_string('gin_file', [], 'Gin file(s) of the run (the same for all its jobs).')
  flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, e.g. "train.seed = 3".')
  flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')


def exit_on_interrupt(message: Callable[[], str], status: int = 130) -> None:
  """Makes Ctrl-C (SIGINT) end the process at once: `message()` on stderr, then exit with `status`.

  At once means even while the main thread waits inside native code (a Reverb writer waiting for room in
  its queue, a TensorFlow op), where a Python `KeyboardInterrupt` would wait with it, possibly forever:
  the C-level signal handler writes the signal's number to a pipe (`signal.set_wakeup_fd`) that a daemon
  thread reads. Nothing is flushed or closed on the way out, which is safe for a run whose checkpoints are
  written atomically (the same exit as kill -9; a run resumes from its last complete checkpoint). Call it
  from the main thread.
  """
  read_fd, write_fd = os.pipe()
  os.set_blocking(write_fd, False)
  signal.signal(signal.SIGINT, lambda *_: None)  # installs the C handler; the thread below does the work
  signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

  def watch():
    while True:
      received = os.read(read_fd, 64)
      if signal.SIGINT in received:
        try:
          text = message()
        except Exception as error:  # pylint: disable=broad-except
          text = f'interrupted ({error})'
        os.write(2, ('\n' + text + '\n').encode())
        os._exit(status)  # pylint: disable=protected-access

  threading.Thread(target=watch, name='exit_on_interrupt', daemon=True).start()


@contextlib.contextmanager
def job(program: str, argv: Sequence[str]) -> Iterator[None]:
  """The body of a binary defined with `define_gin_flags`: rejects stray arguments, parses gin strictly,
  and reports the errors a user can cause as one line (see `one_line_errors`)."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with one_line_errors(program, show_traceback=flags.FLAGS.traceback):
    parse_gin(flags.FLAGS.gin_file, flags.FLAGS.gin_bindings)
    tensorflow_threads()
    yield


TRAIN_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_main.py')


def run_train_main(run_dir: str, gin_files: Sequence[str], gin_bindings: Sequence[str],
                   description: str) -> dict:
  """Runs `train_main.py` in its own process (its own gin state) and returns its summary.json.

  A run whose summary.json exists is read back, not rerun, so an interrupted study resumes where it
  stopped; an interrupted run resumes from its latest checkpoint. The run's console output is appended to
  `<run_dir>/log.txt`, so a run that spans several sessions keeps the log of each.
  """
  summary_path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(summary_path):
    os.makedirs(run_dir, exist_ok=True)
    command = [sys.executable, TRAIN_MAIN, f'--root_dir={run_dir}']
    command += [f'--gin_file={path}' for path in gin_files]
    command += [f'--gin_bindings={binding}' for binding in gin_bindings]
    log_path = os.path.join(run_dir, 'log.txt')
    with open(log_path, 'a') as log:
      result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode == 2:  # train_main's exit for a user's error: its one line says what to fix
      with open(log_path) as log:
        lines = [line.strip() for line in log if line.startswith('train_main: error:')]
      # Its hint names train_main's --traceback, which the calling binary does not forward.
      reason = lines[-1].replace(TRACEBACK_HINT, '').strip() if lines else f'exit 2, see {log_path}'
      raise errors.UserError(f'{description} failed: {reason} (log: {log_path})')
    if result.returncode != 0:
      raise RuntimeError(f'{description} failed (exit {result.returncode}); see {log_path}.')
  with open(summary_path) as f:
    return json.load(f)
