"""SIGINT and SIGTERM as a request to save and stop, with a deadline.

A job installs `StopRequest` in its main thread and polls `requested` between units of work (a learner
iteration, an actor's item); when it is set, the job saves and exits with `exit_code` (128 + the signal's
number, the shell's convention for a process ended by a signal; the run is not finished, and running the
same command resumes it).

The request is noticed at once even while the main thread waits inside native code (a TensorFlow op, a
Reverb call), where a Python signal handler would wait with it: the C-level handler writes the signal's
number to a pipe (`signal.set_wakeup_fd`) that a daemon thread reads. That thread also enforces the
deadline: a job that has not exited `grace_seconds` after the request (stuck in a call that cannot be
interrupted) exits without its final save, as a kill would; its last periodic checkpoint is what the next
run resumes from. A second signal exits at once.
"""

import os
import signal
import sys
import threading
from typing import Callable, Optional

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
  """Turns SIGINT/SIGTERM into a flag (see the module docstring). Create it in the main thread.

  Args:
    program: the job's name, used in the lines it prints.
    grace_seconds: how long the job may take to save and exit after the first signal.
    on_deadline: returns the line printed when the deadline passes (e.g. naming the last checkpoint).
  """

  def __init__(self, program: str, grace_seconds: float = 30.0,
               on_deadline: Optional[Callable[[], str]] = None):
    self.program = program
    self.signal_number: Optional[int] = None
    self._event = threading.Event()
    self._grace_seconds = grace_seconds
    self._on_deadline = on_deadline
    self._listeners = []
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    for number in _SIGNALS:
      signal.signal(number, lambda *_: None)  # installs the C handler; the thread below does the work
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    threading.Thread(target=self._watch, args=(read_fd,), name='stop_request', daemon=True).start()

  @property
  def requested(self) -> bool:
    return self._event.is_set()

  @property
  def exit_code(self) -> int:
    return 128 + (self.signal_number or signal.SIGINT)

  def __call__(self) -> bool:
    """`requested`, as a callable for loops that take a stop condition."""
    return self._event.is_set()

  def add_listener(self, callback: Callable[[], None]) -> None:
    """Calls `callback()` (from the watching thread) when the request arrives, e.g. to unblock a queue."""
    self._listeners.append(callback)

  def wait(self, seconds: float) -> bool:
    """Sleeps up to `seconds`, returning early (True) when a stop is requested."""
    return self._event.wait(seconds)

  def _say(self, text: str) -> None:
    os.write(2, (f'\n{self.program}: {text}\n').encode())

  def _watch(self, read_fd: int) -> None:
    while True:
      received = [number for number in os.read(read_fd, 64) if number in _SIGNALS]
      if not received:
        continue
      if self._event.is_set():
        self._say(f'{signal.Signals(received[0]).name} again: exiting now, without a final save.')
        os._exit(128 + received[0])  # pylint: disable=protected-access
      self.signal_number = received[0]
      self._event.set()
      self._say(f'{signal.Signals(self.signal_number).name} received: saving and exiting (within '
                f'{self._grace_seconds:.0f}s; send it again to exit at once).')
      for callback in self._listeners:
        try:
          callback()
        except Exception as error:  # pylint: disable=broad-except
          self._say(f'while stopping: {type(error).__name__}: {error}')
      threading.Thread(target=self._deadline, name='stop_deadline', daemon=True).start()

  def _deadline(self) -> None:
    threading.Event().wait(self._grace_seconds)
    try:
      text = self._on_deadline() if self._on_deadline else ''
    except Exception as error:  # pylint: disable=broad-except
      text = f'({error})'
    self._say(f'did not stop within {self._grace_seconds:.0f}s; exiting without a final save. {text}'.strip())
    sys.stderr.flush()
    os._exit(self.exit_code)  # pylint: disable=protected-access


def resume_hint(root_dir: str) -> str:
  """One line saying what the next run of `root_dir` resumes from (its newest checkpoint)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top  (only when it is needed)
  latest = tf.train.latest_checkpoint(os.path.join(root_dir, 'checkpoints'))
  where = f'its last checkpoint ({latest})' if latest else 'the start (no checkpoint was written yet)'
  return f'Run the same command to resume from {where}.'
