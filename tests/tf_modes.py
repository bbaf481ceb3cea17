"""Runs a function eagerly, as a `tf.function` and under XLA: the three modes the loss tests cover.

Imported by the loss tests as `tf_modes` (pytest puts `tests/` on the import path of its test modules).
"""

import numpy as np
import pytest
import tensorflow as tf

MODES = ('eager', 'function', 'xla')


@pytest.fixture(params=MODES)
def mode(request):
  return request.param


def run(mode, fn, *tensors):
  """Calls `fn(*tensors)` in `mode` and returns its outputs as NumPy values.

  Python hyperparameters are closed over by `fn`; only tensors are passed, so the compiled
  modes trace once per test.
  """
  tensors = [tf.convert_to_tensor(t) if isinstance(t, np.ndarray) else t for t in tensors]
  if mode == 'eager':
    outputs = fn(*tensors)
  else:
    outputs = tf.function(fn, jit_compile=(mode == 'xla'))(*tensors)
  return tf.nest.map_structure(lambda t: t.numpy(), outputs)


def f32(x):
  return np.asarray(x, dtype=np.float32)
