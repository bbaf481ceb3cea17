"""The kinds of error a user causes and can fix, which every binary reports as one line.

Binaries (`binaries/common.py`, `one_line_errors`) turn exactly these kinds into one line on stderr and exit
code 2; every other exception is a bug in Protégé or a library and keeps its traceback. Raise the most
specific kind, with a message that names the bad value and the fix.

Each kind also derives from the built-in exception a caller would expect (`ConfigError` is a `ValueError`,
`CheckpointError` a `RuntimeError`, ...), so code and tests that catch the built-in keep working.
"""

import errno


class UserError(Exception):
  """Base of every error a user causes (bad input, a busy or full disk, an unreachable server)."""


class ConfigError(UserError, ValueError):
  """A gin file, gin binding, flag or value is wrong: missing, empty, of the wrong type or out of range."""


class RunDirectoryError(UserError, OSError):
  """The run directory cannot be used: not writable, or locked by another process."""


class CheckpointError(UserError, RuntimeError):
  """A checkpoint is missing, damaged, or from a different configuration."""


class DivergenceError(UserError, FloatingPointError):
  """Training produced a non-finite loss, gradient or weight; nothing of it was saved."""


class PolicyLoadError(UserError, ValueError):
  """A path given as a policy (a teacher, an evaluated policy) holds none, or one of the wrong kind."""


class UnreachableError(UserError, ConnectionError):
  """A server (Reverb) did not answer."""


class JobError(UserError, RuntimeError):
  """A job of a launched run (`protege-launch`) failed with a user's error, or died more often than Ray
  may restart it; the message names the job and where its console lines are."""


# OSError numbers that mean the user's disk or permissions, not a bug: reported as one line.
USER_OS_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM})


def is_disk_full(error: BaseException) -> bool:
  """Whether `error` (an OSError or a TensorFlow OpError) says the disk or quota is full."""
  if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
    return True
  message = str(getattr(error, 'message', '') or error)
  return 'No space left on device' in message or 'Disk quota exceeded' in message
