"""Test-wide set-up: two logical CPU devices, so multi-replica code runs under MirroredStrategy.

This must run before any test creates a tensor: TensorFlow fixes its devices at first use.
"""

import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

import gin  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

NUM_LOGICAL_CPUS = 2

_cpus = tf.config.list_physical_devices('CPU')
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * NUM_LOGICAL_CPUS)


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
