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
