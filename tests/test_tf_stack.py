"""runtime/tf_stack.py: Keras 2 selected for TF-Agents, and TF-Agents' uint8 sampling fixed for NumPy 2.

On the Python 3.13 stack (NumPy 2) the unpatched sampler fails on every uint8 spec; on the 3.11 stack
(NumPy 1) it works, so there these tests check that the replacement samples what the original did.
"""

import importlib.util
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.networks import network
from tf_agents.specs import tensor_spec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str, env: dict = None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-c', code], cwd=REPO, capture_output=True, text=True, timeout=300,
                        env=env)


def test_uint8_specs_sample_their_whole_range():
  spec = tensor_spec.BoundedTensorSpec((4, 4, 3), tf.uint8, 0, 255)
  sample = tensor_spec.sample_spec_nest(spec, seed=0, outer_dims=(64,))
  assert sample.dtype == tf.uint8
  assert sample.shape == (64, 4, 4, 3)
  values = sample.numpy()
  # 3,072 uniform draws over 0..255: both ends and the middle are hit (each value ~12 times).
  assert values.min() == 0 and values.max() == 255
  assert 100 < values.mean() < 155


def test_uint8_specs_keep_narrower_bounds_and_other_dtypes_are_untouched():
  narrow = tensor_spec.BoundedTensorSpec((1000,), tf.uint8, np.uint8(3), np.uint8(5))
  assert set(tensor_spec.sample_bounded_spec(narrow, seed=1).numpy().tolist()) == {3, 4, 5}
  ints = tensor_spec.BoundedTensorSpec((1000,), tf.int32, 0, 2)
  sample = tensor_spec.sample_bounded_spec(ints, seed=2)
  assert sample.dtype == tf.int32 and set(sample.numpy().tolist()) == {0, 1, 2}


def test_a_network_on_frames_creates_its_variables():
  # What Network.create_variables() does for every frame observation (Atari, MinAtar, RND from pixels).

  class Frames(network.Network):

    def __init__(self):
      super().__init__(tensor_spec.BoundedTensorSpec((8, 8, 2), tf.uint8, 0, 255), state_spec=(), name='Frames')
      self._dense = tf.keras.layers.Dense(3)

    def call(self, observation, step_type=None, network_state=(), training=False):
      del step_type, training
      return self._dense(tf.reshape(tf.cast(observation, tf.float32), (-1, 128))), network_state

  net = Frames()
  net.create_variables()
  assert [v.shape.as_list() for v in net.variables] == [[128, 3], [3]]


def test_the_fix_is_installed_whether_tf_agents_is_imported_before_or_after_protege():
  check = ("from tf_agents.specs import tensor_spec; "
           "print('PATCHED', getattr(tensor_spec.sample_bounded_spec, '_protege_uint8_sampling', False))")
  after = _python('import protege; ' + check)
  before = _python('import tf_agents.specs.tensor_spec; import protege; ' + check)
  for result in (after, before):
    assert result.returncode == 0, result.stderr[-2000:]
    assert 'PATCHED True' in result.stdout


def test_keras_2_is_selected_only_where_tf_keras_is_installed_and_the_user_did_not_choose():
  env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
  code = "import os, protege; print('LEGACY', os.environ.get('TF_USE_LEGACY_KERAS'))"
  result = _python(code, env=env)
  assert result.returncode == 0, result.stderr[-2000:]
  expected = '1' if importlib.util.find_spec('tf_keras') is not None else None
  assert f'LEGACY {expected}' in result.stdout
  chosen = _python(code, env={**env, 'TF_USE_LEGACY_KERAS': '0'})
  assert 'LEGACY 0' in chosen.stdout


def test_tf_keras_is_keras_2():
  # TF-Agents' networks are Keras 2 models; on TensorFlow 2.16+ that needs tf-keras and TF_USE_LEGACY_KERAS.
  package = sys.modules[tf.keras.Model.__module__.split('.')[0]]
  assert package.__version__.startswith('2.'), (package.__name__, package.__version__)


def _pins(*names: str) -> dict:
  pins = {}
  for name in names:
    with open(os.path.join(REPO, name)) as f:
      for line in f:
        line = line.split('#', 1)[0].strip()
        if line:
          package, version = line.split('==')
          pins[package.split('[')[0].lower().replace('_', '-')] = version
  return pins


# The pins the Python 3.13 stack changes, each for a reason given in requirements-py313.txt.
_SECOND_STACK_CHANGES = {'tensorflow-cpu', 'tensorflow-probability', 'numpy', 'typing-extensions', 'dm-reverb'}
_SECOND_STACK_ADDS = {'tensorboard', 'tf-keras', 'gym', 'cloudpickle', 'pillow', 'pygame'}


def test_the_two_stacks_pin_the_same_versions_but_where_the_second_says_why():
  first = _pins('requirements.txt', 'requirements-nodeps.txt')
  second = _pins('requirements-py313.txt', 'requirements-py313-nodeps.txt')
  assert set(first) - set(second) == {'dm-reverb'}  # nothing else is missing on Python 3.13
  assert set(second) - set(first) == _SECOND_STACK_ADDS
  differ = {name for name in set(first) & set(second) if first[name] != second[name]}
  assert differ == _SECOND_STACK_CHANGES - {'dm-reverb'}, {name: (first[name], second[name]) for name in differ}


@pytest.mark.skipif(importlib.util.find_spec('tf_keras') is None,
                    reason='tf.keras is always Keras 2 without tf-keras (TensorFlow 2.15, the Python 3.11 stack)')
def test_tf_keras_used_as_keras_3_before_protege_is_refused_in_one_line():
  env = {k: v for k, v in os.environ.items() if k != 'TF_USE_LEGACY_KERAS'}
  result = _python('import tensorflow as tf; tf.keras.layers.Dense(1); import protege', env=env)
  assert result.returncode == 1
  assert 'ImportError: tf.keras is Keras 3.' in result.stderr, result.stderr[-2000:]
  assert 'Import protege before using tf.keras, or set TF_USE_LEGACY_KERAS=1' in result.stderr
  fine = _python('import tensorflow as tf; import protege; print(tf.keras.Model.__module__)', env=env)
  assert fine.returncode == 0 and fine.stdout.startswith('tf_keras.'), fine.stderr[-2000:]
