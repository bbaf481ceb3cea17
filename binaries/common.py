"""What every binary shares: strict gin parsing and one-line errors for bad input."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from typing import Callable, Iterator, Sequence

from absl import app
from absl import flags
import gin

# The repository's gin/ folder, so `include 'ppo_atari.gin'` works from anywhere.
GIN_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'gin')


# Bindings that turn an RND configuration (e.g. gin/rnd_montezuma.gin) into the same PPO without RND: the
# baseline of the RND study and of the RND benchmarks.
PPO_WITHOUT_RND_BINDINGS = ('train.learner_fn = @PPOLearner', "ActorCriticNetwork.value_heads = ('extrinsic',)")


class ConfigError(ValueError):
  """A gin file or binding is wrong."""


def register_configurables() -> None:
  """Imports every module that defines gin configurables, so strict parsing knows all names."""
  # pylint: disable=g-import-not-at-top,unused-import
  from agents import training  # noqa: F401  (imports actor, learner, networks, envs, replay)


def parse_gin(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> None:
  """Parses gin strictly: an unknown configurable or parameter is an error, never silently skipped."""
  register_configurables()
  for path in gin_files:
    if not os.path.exists(path) and not os.path.exists(os.path.join(GIN_DIR, path)):
      raise ConfigError(f"gin file '{path}' does not exist; the shipped configurations are in {GIN_DIR}.")
  gin.add_config_file_search_path(GIN_DIR)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), list(gin_bindings), skip_unknown=False,
                                        finalize_config=True)
  except (ValueError, KeyError, ImportError, SyntaxError) as error:
    message = ' '.join(str(error).split())
    raise ConfigError(f'invalid gin configuration: {message} — check the spelling of the configurable '
                      f'and parameter names (they are documented in the docstrings of the functions '
                      f'and classes they configure).') from None


@contextlib.contextmanager
def one_line_errors(program: str, show_traceback: bool = False) -> Iterator[None]:
  """Turns the errors a user can cause into one line on stderr and exit code 2.

  Bad values (ValueError), unwritable paths (PermissionError/OSError), unreachable servers
  (ConnectionError) and unusable checkpoints (RuntimeError) are reported as their message, which names
  the bad value and the fix. `show_traceback` (the --traceback flag) re-raises them whole.
  """
  try:
    yield
  except (ValueError, PermissionError, ConnectionError, RuntimeError, FileNotFoundError) as error:
    if show_traceback:
      raise
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    print(f'{program}: error: {first_line}  (--traceback shows details)', file=sys.stderr, flush=True)
    sys.exit(2)


def define_gin_flags() -> None:
  """Defines the flags every job of a run shares: --gin_file, --gin_bindings and --traceback.

  Called by a binary at import, before `app.run`; the module itself defines no flags.
  """
  flags.DEFINE_multi_string('gin_file', [], 'Gin file(s) of the run (the same for all its jobs).')
  flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, e.g. "train.seed = 3".')
  flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')


@gin.configurable
def tensorflow_threads(intra_op: int = 0, inter_op: int = 0) -> None:
  """Sizes TensorFlow's thread pools for the process (run mechanics; applied once gin is parsed).

  Small networks gain from `intra_op = 1, inter_op = 1`: every op then runs on one thread, and no step
  waits for another thread to wake up. On the 2-core machine of BENCHMARKS.md a woken thread answers
  only after ~60 µs, so each call of a compiled function costs ~0.5 ms of hand-overs; single-threaded
  TensorFlow made the quickstart's CartPole training ~15% faster. Large convolutional networks want
  every core (the defaults).

  Args:
    intra_op: threads one op (a matmul, a convolution) may use; 0 (default): TensorFlow's choice, one per
      core.
    inter_op: threads running independent ops at once; 0 (default): TensorFlow's choice.

  Raises:
    ValueError: a negative count.
  """
  for name, value in (('intra_op', intra_op), ('inter_op', inter_op)):
    if not isinstance(value, int) or value < 0:
      raise ValueError(f'tensorflow_threads.{name} must be an int >= 0 (0: TensorFlow\'s choice), got '
                       f'{value!r}.')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  if tf.config.threading.get_intra_op_parallelism_threads() == intra_op and \
      tf.config.threading.get_inter_op_parallelism_threads() == inter_op:
    return
  try:
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)
  except RuntimeError as error:
    raise RuntimeError('tensorflow_threads must be applied before TensorFlow runs its first op; bind it in '
                       f'the gin file of a binary, not after the run started ({error}).') from None


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
  stopped. The run's console output goes to `<run_dir>/log.txt`.
  """
  summary_path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(summary_path):
    os.makedirs(run_dir, exist_ok=True)
    command = [sys.executable, TRAIN_MAIN, f'--root_dir={run_dir}']
    command += [f'--gin_file={path}' for path in gin_files]
    command += [f'--gin_bindings={binding}' for binding in gin_bindings]
    with open(os.path.join(run_dir, 'log.txt'), 'w') as log:
      result = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
    if result.returncode != 0:
      raise RuntimeError(f'{description} failed (exit {result.returncode}); see '
                         f'{os.path.join(run_dir, "log.txt")}.')
  with open(summary_path) as f:
    return json.load(f)
