"""Test-wide set-up: two logical CPU devices, so multi-replica code runs under MirroredStrategy.

This must run before any test creates a tensor: TensorFlow fixes its devices at first use.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

import protege  # noqa: E402,F401  (first: it sets what TensorFlow and TF-Agents need; runtime/tf_stack.py)
import gin  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from protege.replay import optional_reverb  # noqa: E402

NUM_LOGICAL_CPUS = 2

_cpus = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)


# Where dm-reverb is not installed (it has no wheel for Python > 3.11), the tests that need a Reverb server or
# client, marked `reverb` (they import `replay.reverb_replay` inside), are skipped with this reason; the other
# tests of their modules run.
REVERB_MISSING = 'dm-reverb is not installed: this test needs a Reverb server or client'


def pytest_configure(config):
  config.addinivalue_line('markers', 'reverb: needs a Reverb server or client; skipped where dm-reverb is not '
                          'installed')


def pytest_collection_modifyitems(config, items):
  del config
  if optional_reverb.installed():
    return
  for item in items:
    if item.get_closest_marker('reverb') is not None:
      item.add_marker(pytest.mark.skip(reason=REVERB_MISSING))


@pytest.fixture(autouse=True)
def _clear_gin():
  """Gin state must not leak between tests."""
  gin.clear_config()
  yield
  gin.clear_config()


@pytest.fixture(scope='session')
def mirrored_strategy():
  """One MirroredStrategy over the logical CPUs for the whole session.

  Strategies created separately in one process number their collective ops from the same keys, so a
  second strategy's all-reduce can meet a first one's cached collective of another shape and abort
  ("Shape mismatch in the collective instance"); a shared strategy keeps the keys unique.
  """
  devices = [d.name for d in tf.config.list_logical_devices('CPU')]
  assert len(devices) == NUM_LOGICAL_CPUS
  return tf.distribute.MirroredStrategy(devices)
