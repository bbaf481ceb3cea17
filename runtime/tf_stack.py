"""What Protégé needs from the Python it runs in, set once when `protege` is imported.

Protégé runs on two stacks (README, "Two stacks"): Python 3.11 with TensorFlow 2.15, NumPy 1 and dm-reverb,
and Python 3.13 with TensorFlow 2.21, NumPy 2 and no Reverb. TF-Agents 0.19 (the last release, December
2023) serves both, and it predates Keras 3 and NumPy 2. Two things make its code run on the second stack:

- Keras 2. TensorFlow 2.16+ makes `tf.keras` Keras 3, which TF-Agents' networks do not run on; the
  `tf-keras` package is Keras 2 for these TensorFlows and `TF_USE_LEGACY_KERAS=1` makes `tf.keras` name it.
  `prepare()` sets the variable wherever `tf_keras` is installed and the user did not set it, before
  TensorFlow reads it (on first use of `tf.keras`), and stops with one line if `tf.keras` was used before and
  is Keras 3 already.
- NumPy 2 (NEP 50). TF-Agents' `tensor_spec.sample_bounded_spec`, which `Network.create_variables()` uses
  to build a random input, adds 1 to a uint8 spec's maximum in the spec's own dtype: NumPy 1 promoted
  `np.uint8(255) + 1` to 256, NumPy 2 wraps it to 0, and every uint8 (frame) observation then fails with
  "Need minval < maxval, got 0 >= 0". `prepare()` replaces that function, when TF-Agents' module is loaded,
  by one that samples a uint8 spec as int32 with the same bounds and casts it, which is what the original
  does with a correct bound; every other spec goes to the original.

Written by hand: no maintained release of TF-Agents carries these fixes, and the patch is applied to
the loaded module, not to a copy of TF-Agents. It is the same on both stacks, so the suite of the first
stack tests it too.
"""

import importlib.abc
import importlib.util
import os
import sys

_TENSOR_SPEC = 'tf_agents.specs.tensor_spec'
_PATCHED = '_protege_uint8_sampling'


def prepare() -> None:
  """Sets Keras 2 for TensorFlow and installs the NumPy 2 fix of TF-Agents (idempotent)."""
  if 'TF_USE_LEGACY_KERAS' not in os.environ and _installed('tf_keras'):
    os.environ['TF_USE_LEGACY_KERAS'] = '1'
    _check_keras_not_yet_3()
  module = sys.modules.get(_TENSOR_SPEC)
  if module is not None:
    _patch_tensor_spec(module)
  elif not any(isinstance(finder, _PatchOnLoad) for finder in sys.meta_path):
    sys.meta_path.insert(0, _PatchOnLoad())


def _check_keras_not_yet_3() -> None:
  """TensorFlow fixes `tf.keras` at its first use: if that came before `import protege`, it may be Keras 3."""
  tf = sys.modules.get('tensorflow')
  if tf is None:
    return
  package = sys.modules.get(tf.keras.Model.__module__.split('.')[0])  # resolves tf.keras if nothing did yet
  version = str(getattr(package, '__version__', ''))
  if version.startswith('3.'):
    raise ImportError(
        f'tf.keras is Keras {version} in this process: it was used before `import protege` could select Keras 2 '
        '(TF_USE_LEGACY_KERAS=1), which TF-Agents networks need. Import protege before using tf.keras, or set '
        'TF_USE_LEGACY_KERAS=1 in the environment.')


def _installed(name: str) -> bool:
  try:
    return importlib.util.find_spec(name) is not None
  except (ImportError, ValueError):
    return False


def _patch_tensor_spec(module) -> None:
  original = module.sample_bounded_spec
  if getattr(original, _PATCHED, False):
    return
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  def sample_bounded_spec(spec, seed=None, outer_dims=None):
    if tf.as_dtype(spec.dtype) != tf.uint8:
      return original(spec, seed=seed, outer_dims=outer_dims)
    wide = module.BoundedTensorSpec(spec.shape, tf.int32, np.asarray(spec.minimum, np.int32),
                                    np.asarray(spec.maximum, np.int32), name=spec.name)
    return tf.cast(original(wide, seed=seed, outer_dims=outer_dims), tf.uint8)

  sample_bounded_spec.__doc__ = original.__doc__
  setattr(sample_bounded_spec, _PATCHED, True)
  module.sample_bounded_spec = sample_bounded_spec


class _PatchOnLoad(importlib.abc.MetaPathFinder):
  """Finds TF-Agents' tensor_spec module with the other finders and patches it once it has run."""

  def find_spec(self, fullname, path, target=None):
    if fullname != _TENSOR_SPEC:
      return None
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, 'find_spec'):
        continue
      spec = finder.find_spec(fullname, path, target)
      if spec is not None:
        if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
          spec.loader = _PatchingLoader(spec.loader)
        return spec
    return None


class _PatchingLoader(importlib.abc.Loader):

  def __init__(self, loader):
    self._loader = loader

  def create_module(self, spec):
    return self._loader.create_module(spec)

  def exec_module(self, module):
    self._loader.exec_module(module)
    _patch_tensor_spec(module)

  def __getattr__(self, name):  # get_source, is_package, ... of the real loader
    return getattr(self._loader, name)
