"""Reverb for the paths that use a Reverb server or client, and one clear error where it is not installed.

dm-reverb 0.14, the newest, has wheels only for Python <= 3.11 and fixes TensorFlow at 2.15. Protégé's
single-process runs (train_main without --reverb_address, PBT, the studies) keep their trajectories in the
process (`replay.local_queue`) and never import it, so they also run on a newer Python and TensorFlow.
The paths that do need it (`train_main --reverb_address`, the jobs of a distributed run, the scaling
benchmark) import `replay.reverb_replay` through `load`: without dm-reverb, they stop with one line naming
what was asked and how to install it, instead of a ModuleNotFoundError.
"""

import importlib.util
import platform

import gin

from protege.runtime import errors

# requirements.txt's pin; its wheels need Python <= 3.11 (and TensorFlow 2.15).
REVERB_REQUIREMENT = 'dm-reverb==0.14.0'


def installed() -> bool:
  """Whether dm-reverb can be imported here (without importing it)."""
  try:
    return importlib.util.find_spec('reverb') is not None
  except ImportError:  # an import hook that refuses it (tests/test_without_reverb.py's)
    return False


def load(needed_by: str):
  """`replay.reverb_replay`, imported now.

  Args:
    needed_by: what the user asked for that needs Reverb, as they asked for it (e.g.
      `--reverb_address=host:port`, `reverb_server_main`), for the error message.

  Raises:
    ConfigError: dm-reverb is not installed; one line naming `needed_by` and the fix.
  """
  try:
    # It registers no gin configurable, but what it imports first (replay.signatures) may, and that can come
    # after the run's config is parsed and locked (a Reverb path reached from library code, not a binary).
    with gin.unlock_config():
      from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  except ModuleNotFoundError as error:
    if (error.name or '').split('.')[0] != 'reverb':
      raise
    raise errors.ConfigError(
        f"{needed_by} needs Reverb, but dm-reverb is not installed in this Python "
        f"({platform.python_version()}): install it with 'pip install {REVERB_REQUIREMENT}' (wheels for "
        'Python <= 3.11 only), or run in one process, without a Reverb server (train_main without '
        '--reverb_address).') from None
  return reverb_replay
