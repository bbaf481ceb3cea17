"""Data-free policy distillation: the Generative Adversarial Simulator (Raiman 2020, arXiv 2011.11472).

A teacher (a classifier, or a policy: a one-step classifier of observations into actions) is distilled
into a student with no simulator and no recorded data (PAPERS.md §4). A generator G maps noise z to
observations x = G(z); the teacher labels them and the student learns the teacher's action distribution
on them. Each training step does, on one batch of B generated observations (plus, once there is one,
a batch from the pool of past exemplars for the student):

  generator:  minimise  w_oh·L_oh + w_ie·L_ie + w_a·L_a + w_adv·L_adv       (gradients through T and S)
  student:    minimise  mean_i H×(T(x_i)‖S(x_i))                              (x_i fixed)

The generator's terms, as pure functions below:

* `one_hot_loss` L_oh = mean_i H×(onehot(argmax T(x_i))‖T(x_i)): the teacher must be confident on the
  generated inputs (DAFL, Chen et al. 2019, arXiv 1904.01186, eq. 3);
* `information_entropy_loss` L_ie = Σ_a p̄_a log p̄_a = −H(p̄), p̄ = mean_i softmax(T(x_i)): the batch must
  cover every class equally (DAFL eq. 6). DAFL's code takes log10; here it is in nats, so DAFL's weight
  5 on its log10 entropy is 5 / ln 10 ≈ 2.17 here;
* `activation_loss` L_a = −mean_i mean_j |f_ij| over the teacher's penultimate features f: real inputs
  excite the teacher's features strongly (DAFL eq. 4, with the mean over features of DAFL's code);
* `adversarial_loss` L_adv = −mean_i KL(T(x_i)‖S(x_i)): the generator seeks inputs where student and
  teacher disagree (the Generative Adversarial Simulator's adversarial term, in the form of ZSKT, Micaelli
  & Storkey 2019, and DFAD, Fang et al. 2019, which maximise the teacher-student divergence).

Generators collapse to one prototype per class. The Generative Adversarial Simulator's second remedy is
re-initialisation: every `reinit_interval` steps the generator's weights (and its optimiser state) are
reset, so the next generator finds other exemplars; before each reset, `pool_samples_per_generator` of
the old generator's samples go into an `ExemplarPool`, and every later student batch mixes fresh samples
with pool samples, so the student keeps what earlier generators taught it.

Source note: the paper's body (its weights and schedules) is not in the sources reachable here; every
weight and schedule is a gin parameter of `DataFreeDistiller` and its default is documented there.
Defaults follow DAFL's published MNIST settings where DAFL has one (one-hot 1, information entropy 5 in
log10 units, activation 0.1, Adam for both networks, learning rates 0.2 (generator) and 2e-3 (student)),
and were otherwise chosen and measured on MNIST (BENCHMARKS.md, "Data-free distillation").

Teachers come from `agents.teachers.load_teacher` (a Keras classifier or a PolicySaver export of any kind:
logits, a Categorical distribution, a DQN's Q-values taught as softmax(Q/τ), or, where none of these is
reachable, its actions as an ε-smoothed one-hot; the kind is printed at load time and written in
summary.json as `teacher_kind`). The generator needs gradients THROUGH the teacher, which
`Teacher.logits_and_value` stops, so this module calls the teacher's un-stopped step; the teacher's weights
are still never trained. An action-only teacher has no such gradient: its generator learns from the
adversarial term alone.
A policy export of uint8 frames (Atari) has no input gradient; `frame_teacher` builds its network again
on frames scaled to [0, 1] (the view its torso computes), loads the export's weights and checks that the
two agree, and the student learns in that view and is exported for uint8 frames.

Layouts: batch-major, one observation per row, `[B, *obs_shape]`; logits `[B, A]`.
"""

import datetime
import inspect
import json
import math
import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf
from tf_agents.policies import policy_saver
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from agents import distillation_losses
from agents import teachers
from networks import actor_critic
from runtime import config as run_config
from runtime import errors
from runtime import run_directory

# A bound at or beyond this magnitude in an observation spec means "unbounded" (gymnasium writes ±inf
# as ±3.4e38 for float32 boxes, e.g. CartPole's velocities).
UNBOUNDED = 1e6

# ------------------------------------------------------------------------------------------------------------
# Losses: pure functions, tensors in, scalar tensors out.
# ------------------------------------------------------------------------------------------------------------


def _logits(x, name):
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise TypeError(f'{name} must be a float tensor, got dtype {x.dtype.name}.')
  if x.shape.rank != 2:
    raise ValueError(f'{name} must be logits [B, A], got shape {x.shape}.')
  return x


def _same_shape(x, x_name, reference, reference_name):
  if not x.shape.is_compatible_with(reference.shape):
    raise ValueError(f'{x_name} has shape {x.shape} but {reference_name} has shape {reference.shape}; they '
                     'must match.')


def one_hot_loss(teacher_logits) -> tf.Tensor:
  """DAFL's one-hot loss: the mean cross-entropy of the teacher against its own argmax (DAFL eq. 3).

  L_oh = (1/B) Σ_i H×(onehot(argmax_a t_ia)‖softmax(t_i)) = (1/B) Σ_i (logsumexp_a t_ia − max_a t_ia).
  Low when the teacher is confident on the generated inputs.

  Args:
    teacher_logits: float `[B, A]`, the teacher's logits on generated observations (not stopped: the
      generator's gradient flows through them).

  Returns:
    A float scalar.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  return tf.reduce_mean(tf.reduce_logsumexp(teacher_logits, axis=-1) - tf.reduce_max(teacher_logits, axis=-1))


def information_entropy_loss(teacher_logits) -> tf.Tensor:
  """DAFL's information-entropy loss: minus the entropy of the batch-mean prediction (DAFL eq. 6).

  L_ie = Σ_a p̄_a log p̄_a = −H(p̄),  p̄ = (1/B) Σ_i softmax(t_i),  in nats. Minimal (−log A) when the batch
  covers the A classes equally. (DAFL's code uses log10: its weight β equals β / ln 10 here.)

  Args:
    teacher_logits: float `[B, A]`.

  Returns:
    A float scalar in [−log A, 0].
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  mean_probs = tf.reduce_mean(tf.nn.softmax(teacher_logits, axis=-1), axis=0)
  return tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(mean_probs), mean_probs))


def activation_loss(teacher_features) -> tf.Tensor:
  """DAFL's activation loss: minus the mean absolute penultimate feature of the teacher (DAFL eq. 4).

  L_a = −(1/(B·F)) Σ_i Σ_j |f_ij| (DAFL's paper writes the L1 norm per sample, its code the mean over the
  F features, which only rescales the weight; this is the code's).

  Args:
    teacher_features: float `[B, F]` (or `[B, ...]`, flattened), the teacher's features before its last
      layer on generated observations.

  Returns:
    A float scalar ≤ 0.
  """
  teacher_features = tf.convert_to_tensor(teacher_features)
  if not teacher_features.dtype.is_floating or teacher_features.shape.rank is None or \
      teacher_features.shape.rank < 2:
    raise ValueError(f'teacher_features must be float features [B, F], got shape {teacher_features.shape} '
                     f'and dtype {teacher_features.dtype.name}.')
  return -tf.reduce_mean(tf.abs(teacher_features))


def teacher_student_kl(teacher_logits, student_logits) -> tf.Tensor:
  """KL(T‖S) = Σ_a p_T(a) (log p_T(a) − log p_S(a)) per row, `[B]` (0 where they agree, never negative).

  Args:
    teacher_logits: float `[B, A]`.
    student_logits: float `[B, A]`, same shape.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  student_logits = _logits(student_logits, 'student_logits')
  _same_shape(student_logits, 'student_logits', teacher_logits, 'teacher_logits')
  return (distillation_losses.cross_entropy(teacher_logits, student_logits)
          - distillation_losses.cross_entropy(teacher_logits, teacher_logits))


def adversarial_loss(teacher_logits, student_logits) -> tf.Tensor:
  """The generator's adversarial term: L_adv = −(1/B) Σ_i KL(T(x_i)‖S(x_i)).

  Minimising it moves the generator towards inputs where the student disagrees with the teacher (the
  Generative Adversarial Simulator's adversarial loss; ZSKT/DFAD's teacher-student divergence). Gradients
  flow into both logits; the student's update uses `student_loss` instead.

  Returns:
    A float scalar ≤ 0.
  """
  return -tf.reduce_mean(teacher_student_kl(teacher_logits, student_logits))


def student_loss(teacher_logits, student_logits) -> tf.Tensor:
  """The student's distillation loss: (1/B) Σ_i H×(T(x_i)‖S(x_i)), the teacher's logits stopped.

  The cross-entropy of `agents.distillation_losses.cross_entropy` (the teacher_distill loss of Distilling
  Policy Distillation on generated states); it differs from the KL by the teacher's entropy, a constant
  for the student.

  Returns:
    A float scalar.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  student_logits = _logits(student_logits, 'student_logits')
  _same_shape(student_logits, 'student_logits', teacher_logits, 'teacher_logits')
  return tf.reduce_mean(distillation_losses.cross_entropy(tf.stop_gradient(teacher_logits), student_logits))


def generator_loss(teacher_logits, student_logits=None, teacher_features=None, one_hot_weight=1.0,
                   information_entropy_weight=5.0 / math.log(10.0), activation_weight=0.1,
                   adversarial_weight=0.0) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
  """The generator's loss w_oh·L_oh + w_ie·L_ie + w_a·L_a + w_adv·L_adv and its terms.

  Args:
    teacher_logits: float `[B, A]` on the generated observations.
    student_logits: float `[B, A]` on the same observations; needed when `adversarial_weight` is not the
      Python number 0.
    teacher_features: float `[B, F]`, the teacher's penultimate features; None drops the activation term
      (its weight must then be the Python number 0).
    one_hot_weight: w_oh ≥ 0 (a number, or a scalar tensor/variable read when the step runs). Default 1,
      DAFL's.
    information_entropy_weight: w_ie ≥ 0. Default 5 / ln 10 ≈ 2.17: DAFL's β = 5 on its log10 entropy.
    activation_weight: w_a ≥ 0. Default 0.1, DAFL's α for MNIST.
    adversarial_weight: w_adv ≥ 0. Default 0 (DAFL has none).

  Returns:
    `(loss, metrics)`: a float scalar and a dict of the unweighted terms ('one_hot', 'information_entropy',
    'activation', 'adversarial'; a term not computed is 0).

  Raises:
    ValueError: If a term with a non-zero Python weight lacks its input.
  """
  teacher_logits = _logits(teacher_logits, 'teacher_logits')
  dtype = teacher_logits.dtype
  zero = tf.zeros([], dtype)
  if teacher_features is None and not _is_zero(activation_weight):
    raise ValueError(f'activation_weight={activation_weight!r} needs teacher_features; pass them or set the '
                     'activation weight to 0.')
  if student_logits is None and not _is_zero(adversarial_weight):
    raise ValueError(f'adversarial_weight={adversarial_weight!r} needs student_logits; pass them or set the '
                     'adversarial weight to 0.')
  terms = {
      'one_hot': one_hot_loss(teacher_logits),
      'information_entropy': information_entropy_loss(teacher_logits),
      'activation': zero if teacher_features is None else tf.cast(activation_loss(teacher_features), dtype),
      'adversarial': zero if student_logits is None else adversarial_loss(teacher_logits, student_logits),
  }
  weights = {'one_hot': one_hot_weight, 'information_entropy': information_entropy_weight,
             'activation': activation_weight, 'adversarial': adversarial_weight}
  loss = tf.add_n([tf.cast(weights[key], dtype) * terms[key] for key in terms])
  return loss, terms


def _is_zero(value) -> bool:
  return isinstance(value, (int, float)) and value == 0


# ------------------------------------------------------------------------------------------------------------
# Generators.
# ------------------------------------------------------------------------------------------------------------


def output_bounds(observation_spec, low=None, high=None,
                  unbounded_range: Optional[float] = None) -> Tuple[np.ndarray, np.ndarray]:
  """The box `[low, high]` (float32 arrays of the observation's shape) a generator's outputs fill.

  `low`/`high` given (scalars or arrays broadcastable to the shape): used as they are; low == high fixes a
  coordinate (e.g. the all-zero padding channels of MinAtar frames, known from the game's definition).
  Otherwise the spec's bounds where they are finite (|bound| < 1e6); coordinates the spec leaves unbounded
  (CartPole's velocities) get [−unbounded_range, unbounded_range], which the user must choose: a generator
  that never sees the environment has nothing else to go by. No statistic of real observations is used.

  Raises:
    ValueError: If bounds are missing for some coordinate, low > high somewhere, or low == high everywhere.
  """
  shape = tuple(observation_spec.shape)
  if (low is None) != (high is None):
    raise errors.ConfigError(f'give both low and high for the generator\'s output box, got low={low!r}, '
                             f'high={high!r}.')
  if low is not None:
    low = np.broadcast_to(np.asarray(low, np.float64), shape).copy()
    high = np.broadcast_to(np.asarray(high, np.float64), shape).copy()
  else:
    if not hasattr(observation_spec, 'minimum'):
      raise errors.ConfigError(f'the observation spec {observation_spec!r} has no bounds; give the '
                               'generator\'s low and high (e.g. 0.0 and 1.0 for images in [0, 1]).')
    low = np.broadcast_to(np.asarray(observation_spec.minimum, np.float64), shape).copy()
    high = np.broadcast_to(np.asarray(observation_spec.maximum, np.float64), shape).copy()
    unbounded = (np.abs(low) >= UNBOUNDED) | (np.abs(high) >= UNBOUNDED)
    if unbounded.any():
      if unbounded_range is None or not unbounded_range > 0:
        raise errors.ConfigError(f'observation coordinates {np.argwhere(unbounded).tolist()} are unbounded '
                                 f'in the spec {observation_spec!r}; set the generator\'s unbounded_range (a '
                                 'box half-width you choose) or its low and high.')
      low[unbounded & (np.abs(low) >= UNBOUNDED)] = -unbounded_range
      high[unbounded & (np.abs(high) >= UNBOUNDED)] = unbounded_range
  if not np.all(low <= high) or not np.any(low < high):
    raise errors.ConfigError(f'the generator\'s output box needs low <= high everywhere (low == high fixes a '
                             f'coordinate) and low < high somewhere, got low={low.tolist()} and '
                             f'high={high.tolist()}.')
  return low.astype(np.float32), high.astype(np.float32)


class _BoxOutput(tf.keras.layers.Layer):
  """tanh, then mapped affinely onto the box: low + (high − low)·(tanh(h) + 1)/2.

  With `binarize`, each coordinate is rounded to low or high in the forward pass while the gradient is
  the unrounded one's (the straight-through estimator, Bengio et al. 2013, arXiv 1308.3432): for teachers
  that only ever saw two values per coordinate (MinAtar's {0, 1} frames).
  """

  def __init__(self, low, high, binarize: bool = False, name='box_output'):
    super().__init__(name=name)
    self._low = tf.constant(low)
    self._scale = tf.constant((high - low) / 2.0)
    self._binarize = binarize

  def call(self, h):
    unit = (tf.tanh(h) + 1.0) / 2.0
    if self._binarize:
      unit = unit + tf.stop_gradient(tf.round(unit) - unit)
    return self._low + 2.0 * self._scale * unit


class Generator(tf.keras.Model):
  """A generator: noise `[B, latent_dim]` to observations `[B, *obs_shape]` inside a box.

  Subclasses build their layers in `__init__` and set `latent_dim`; `sample_latent` draws z ~ N(0, I).
  `config` holds the constructor's arguments, so `type(g)(**g.config)` builds a freshly initialised twin
  (what `DataFreeDistiller.reinitialize_generator` copies from).
  """

  def __init__(self, observation_spec, latent_dim: int, config: Dict[str, Any], name: str):
    super().__init__(name=name)
    if not isinstance(latent_dim, int) or latent_dim <= 0:
      raise errors.ConfigError(f'{type(self).__name__}.latent_dim must be a positive int, got '
                               f'{latent_dim!r}.')
    self.latent_dim = latent_dim
    self.observation_shape = tuple(observation_spec.shape)
    self.config = dict(config, observation_spec=observation_spec)

  def sample_latent(self, batch_size, rng: tf.random.Generator) -> tf.Tensor:
    """z ~ N(0, I), `[batch_size, latent_dim]`, from the generator `rng`."""
    return rng.normal([batch_size, self.latent_dim])

  def build_variables(self):
    """Creates the variables with one call on a batch of two zeros (BatchNorm needs more than one row)."""
    self(tf.zeros([2, self.latent_dim]), training=False)


@gin.configurable
class ImageGenerator(Generator):
  """DAFL's image generator (a DCGAN generator): dense, then (upsample ×2, 3x3 conv, BN, LeakyReLU)
  per entry of `channels`, then a 3x3 conv to the image's channels and tanh into `[low, high]`.

    z [B, latent_dim] -> dense -> [B, h0, w0, channels[0]] -> BN
      -> per c in channels: upsample 2x -> conv 3x3 c -> BN -> LeakyReLU(0.2)
      -> conv 3x3 C -> tanh -> box [low, high] -> centre crop -> [B, H, W, C]

  h0 = ceil(H / 2^len(channels)) (w0 likewise); the output is centre-cropped to H x W (10x10 MinAtar
  frames come from 12x12). DAFL's MNIST generator is channels (128, 64), latent 100, BN epsilon 0.8 (the
  epsilon of the DCGAN code it starts from). DAFL ends with a BatchNorm without affine parameters instead
  of a box: here the box keeps the images in the teacher's input range.
  """

  def __init__(self, observation_spec, latent_dim: int = 100, channels: Sequence[int] = (128, 64),
               low=None, high=None, batch_norm_epsilon: float = 0.8, binarize: bool = False,
               name: str = 'ImageGenerator'):
    """Builds the layers (variables on the first call or `build_variables`).

    Args:
      observation_spec: The `TensorSpec`/`BoundedTensorSpec` of one image `[H, W, C]`.
      latent_dim: Size of z. Default 100 (DAFL).
      channels: Filters of the upsampling blocks, one block (×2) each. Default (128, 64), DAFL's.
      low: Lower bound of the pixels (scalar or `[H, W, C]`). Default None: the spec's minimum.
      high: Upper bound of the pixels. Default None: the spec's maximum.
      batch_norm_epsilon: The BatchNorm epsilon. Default 0.8 (DAFL's, from the DCGAN code).
      binarize: Round every pixel to low or high (straight-through gradients). Default False.
      name: Model name.
    """
    super().__init__(observation_spec, latent_dim,
                     dict(latent_dim=latent_dim, channels=tuple(channels), low=low, high=high,
                          batch_norm_epsilon=batch_norm_epsilon, binarize=binarize, name=name), name=name)
    if len(self.observation_shape) != 3:
      raise errors.ConfigError(f'ImageGenerator makes images [H, W, C], but the observation shape is '
                               f'{self.observation_shape}; use VectorGenerator.')
    if not channels or any(not isinstance(c, int) or c <= 0 for c in channels):
      raise errors.ConfigError(f'ImageGenerator.channels must be positive ints, one per upsampling, got '
                               f'{channels!r}.')
    height, width, depth = self.observation_shape
    factor = 2 ** len(channels)
    self._initial_shape = (-(-height // factor), -(-width // factor), channels[0])
    self._dense = tf.keras.layers.Dense(int(np.prod(self._initial_shape)), name='dense')
    self._initial_norm = tf.keras.layers.BatchNormalization(epsilon=batch_norm_epsilon, name='bn_0')
    self._blocks = []
    for i, filters in enumerate(channels):
      self._blocks.append([tf.keras.layers.UpSampling2D(2, name=f'upsample_{i + 1}'),
                           tf.keras.layers.Conv2D(filters, 3, padding='same', name=f'conv_{i + 1}'),
                           tf.keras.layers.BatchNormalization(epsilon=batch_norm_epsilon, name=f'bn_{i + 1}'),
                           tf.keras.layers.LeakyReLU(0.2, name=f'leaky_relu_{i + 1}')])
    self._to_image = tf.keras.layers.Conv2D(depth, 3, padding='same', name='to_image')
    box_low, box_high = output_bounds(observation_spec, low, high)
    self._box = _BoxOutput(box_low[None], box_high[None], binarize=binarize)
    self._crop = ((self._initial_shape[0] * factor - height) // 2,
                  (self._initial_shape[1] * factor - width) // 2)

  def call(self, z, training=False):
    """Maps z `[B, latent_dim]` to images `[B, H, W, C]` in `[low, high]`."""
    x = self._dense(z)
    x = tf.reshape(x, (-1,) + self._initial_shape)
    x = self._initial_norm(x, training=training)
    for upsample, conv, norm, activation in self._blocks:
      x = activation(norm(conv(upsample(x)), training=training))
    x = self._to_image(x)
    height, width, _ = self.observation_shape
    x = x[:, self._crop[0]:self._crop[0] + height, self._crop[1]:self._crop[1] + width, :]
    return self._box(x)


@gin.configurable
class VectorGenerator(Generator):
  """A generator of vector observations: (dense, BN, LeakyReLU(0.2)) per hidden layer, then a dense layer
  and tanh into the box `[low, high]`, reshaped to the observation's shape.

  The box matters when the spec leaves coordinates unbounded (CartPole's velocities): see `output_bounds`.
  """

  def __init__(self, observation_spec, latent_dim: int = 16, hidden_sizes: Sequence[int] = (64, 64),
               low=None, high=None, unbounded_range: Optional[float] = None, batch_norm_epsilon: float = 1e-3,
               name: str = 'VectorGenerator'):
    """Builds the layers (variables on the first call or `build_variables`).

    Args:
      observation_spec: The spec of one observation (any shape; flattened inside).
      latent_dim: Size of z. Default 16.
      hidden_sizes: Units of the hidden layers. Default (64, 64).
      low: Lower bounds (scalar or the observation's shape). Default None: the spec's.
      high: Upper bounds. Default None: the spec's.
      unbounded_range: Half-width of the box on coordinates the spec leaves unbounded, used when low/high
        are None. Default None (an error if the spec has such coordinates: choose it).
      batch_norm_epsilon: The BatchNorm epsilon. Default 1e-3 (Keras').
      name: Model name.
    """
    super().__init__(observation_spec, latent_dim,
                     dict(latent_dim=latent_dim, hidden_sizes=tuple(hidden_sizes), low=low, high=high,
                          unbounded_range=unbounded_range, batch_norm_epsilon=batch_norm_epsilon, name=name),
                     name=name)
    if any(not isinstance(units, int) or units <= 0 for units in hidden_sizes):
      raise errors.ConfigError(f'VectorGenerator.hidden_sizes must be positive ints, got {hidden_sizes!r}.')
    self._hidden = [(tf.keras.layers.Dense(units, name=f'dense_{i}'),
                     tf.keras.layers.BatchNormalization(epsilon=batch_norm_epsilon, name=f'bn_{i}'),
                     tf.keras.layers.LeakyReLU(0.2, name=f'leaky_relu_{i}'))
                    for i, units in enumerate(hidden_sizes)]
    self._output = tf.keras.layers.Dense(int(np.prod(self.observation_shape)), name='output')
    box_low, box_high = output_bounds(observation_spec, low, high, unbounded_range)
    self._box = _BoxOutput(box_low.reshape(1, -1), box_high.reshape(1, -1))

  def call(self, z, training=False):
    """Maps z `[B, latent_dim]` to observations `[B, *obs_shape]` in `[low, high]`."""
    x = z
    for dense, norm, activation in self._hidden:
      x = activation(norm(dense(x), training=training))
    x = self._box(self._output(x))
    return tf.reshape(x, (-1,) + self.observation_shape)


# ------------------------------------------------------------------------------------------------------------
# The pool of past exemplars.
# ------------------------------------------------------------------------------------------------------------


class ExemplarPool(tf.Module):
  """A first-in-first-out store of generated observations `[capacity, *obs_shape]` in a `tf.Variable`.

  Filled with the samples of each generator before it is re-initialised; sampled uniformly for the
  student's batches. When full, the oldest exemplars are overwritten.
  """

  def __init__(self, observation_shape: Sequence[int], capacity: int, seed: int = 0, dtype=tf.float32,
               name: str = 'ExemplarPool'):
    super().__init__(name=name)
    if not isinstance(capacity, int) or capacity <= 0:
      raise errors.ConfigError(f'ExemplarPool.capacity must be a positive int, got {capacity!r}.')
    self.capacity = capacity
    self.observations = tf.Variable(tf.zeros((capacity,) + tuple(observation_shape), dtype), trainable=False,
                                    name='observations')
    self.generation = tf.Variable(tf.fill([capacity], tf.constant(-1, tf.int64)), trainable=False,
                                  name='generation')
    self.size = tf.Variable(0, dtype=tf.int64, trainable=False, name='size')
    self.next_index = tf.Variable(0, dtype=tf.int64, trainable=False, name='next_index')
    self._rng = tf.random.Generator.from_seed(seed)

  def add(self, observations, generation=0) -> None:
    """Appends `observations` `[N, *obs_shape]` (the last `capacity` of them if N > capacity)."""
    observations = tf.convert_to_tensor(observations, self.observations.dtype)
    observations = observations[-self.capacity:]
    count = tf.shape(observations, out_type=tf.int64)[0]
    indices = (self.next_index + tf.range(count, dtype=tf.int64)) % self.capacity
    self.observations.scatter_nd_update(indices[:, None], observations)
    self.generation.scatter_nd_update(indices[:, None], tf.fill([count], tf.cast(generation, tf.int64)))
    self.next_index.assign((self.next_index + count) % self.capacity)
    self.size.assign(tf.minimum(self.size + count, self.capacity))

  def sample(self, batch_size) -> tf.Tensor:
    """`batch_size` exemplars drawn uniformly with replacement; the pool must not be empty."""
    tf.debugging.assert_positive(self.size, message='ExemplarPool.sample: the pool is empty.')
    indices = self._rng.uniform([batch_size], minval=0, maxval=self.size, dtype=tf.int64)
    return tf.gather(self.observations, indices)

  def sample_if_not_empty(self, batch_size) -> tf.Tensor:
    """`batch_size` exemplars as `sample`, or none (`[0, *obs_shape]`) while the pool is empty: one traced
    step serves before and after the first archive (the batch dimension is dynamic)."""
    count = tf.where(self.size > 0, tf.cast(batch_size, tf.int64), tf.constant(0, tf.int64))
    indices = self._rng.uniform([count], minval=0, maxval=tf.maximum(self.size, 1), dtype=tf.int64)
    return tf.gather(self.observations, indices)

  def contents(self) -> Tuple[np.ndarray, np.ndarray]:
    """The stored exemplars and the generation each came from, as NumPy arrays `[size, ...]`, `[size]`."""
    size = int(self.size.numpy())
    return self.observations.numpy()[:size], self.generation.numpy()[:size]


# ------------------------------------------------------------------------------------------------------------
# Students and teachers.
# ------------------------------------------------------------------------------------------------------------


def student_logits(student, observation, training: bool = True) -> tf.Tensor:
  """Logits `[B, A]` of a student: a Keras model returning logits, or an `ActorCriticNetwork`."""
  if isinstance(student, actor_critic.ActorCriticNetwork):
    (logits, _), _ = student(observation, training=training)
    return logits
  outputs = student(observation, training=training)
  if isinstance(outputs, dict):
    return outputs['logits']
  if isinstance(outputs, (list, tuple)):
    return outputs[0]
  return outputs


def differentiable_teacher_logits(teacher: teachers.Teacher, observation) -> tf.Tensor:
  """The teacher's logits `[B, A]` on one batch of observations, with gradients w.r.t. the observations.

  `Teacher.logits_and_value` stops gradients (right for kickstarting, where the teacher is a target); the
  generator must differentiate through the teacher, so this calls its un-stopped step. The teacher's
  weights are untracked and never trained.
  """
  batch_size = tf.shape(observation)[0]
  step_type = tf.fill([batch_size], tf.constant(ts.StepType.MID, tf.int32))
  # pylint: disable=protected-access
  logits, _, _ = teacher._checked_step(observation, step_type, teacher.get_initial_state(batch_size))
  # pylint: enable=protected-access
  return logits


def teacher_logits(teacher: teachers.Teacher, observations: np.ndarray, batch_size: int = 1024) -> np.ndarray:
  """The teacher's logits `[N, A]` on NumPy observations `[N, *obs_shape]`, in batches."""
  chunks = [teacher.logits_and_value(tf.convert_to_tensor(observations[i:i + batch_size]))[0].numpy()
            for i in range(0, len(observations), batch_size)]
  return np.concatenate(chunks, axis=0) if chunks else np.zeros([0, teacher.num_actions], np.float32)


class StateSample:
  """A uniform sample (reservoir sampling) of at most `capacity` observation rows from a stream of batches:
  the `observation_fn` of `agents.training.evaluation.evaluate`, to keep states a policy visits."""

  def __init__(self, capacity: int = 4096, seed: int = 0):
    self.capacity = capacity
    self.seen = 0
    self._rows = []
    self._rng = np.random.default_rng(seed)

  def __call__(self, observations) -> None:
    for row in np.asarray(observations):
      self.seen += 1
      if len(self._rows) < self.capacity:
        self._rows.append(row.copy())
      else:
        index = self._rng.integers(self.seen)
        if index < self.capacity:
          self._rows[index] = row.copy()

  def array(self) -> np.ndarray:
    """The sampled rows `[n, ...]` (n = min(capacity, seen))."""
    return np.stack(self._rows) if self._rows else np.zeros([0])


def agreement_on_states(teacher: teachers.Teacher, student, observations: np.ndarray,
                        batch_size: int = 512) -> Dict[str, float]:
  """How closely `student` (an `ActorCriticNetwork`) follows `teacher` on `observations` (e.g. states the teacher
  visits in play): the share of equal argmax actions and the mean KL(teacher‖student)."""
  teacher_out = teacher_logits(teacher, observations, batch_size)
  student_out = teacher_logits(teachers.NetworkTeacher(student, name='student'), observations, batch_size)
  return {'states': int(len(observations)),
          'argmax_agreement': float(np.mean(np.argmax(teacher_out, -1) == np.argmax(student_out, -1))),
          'kl_teacher_student': float(np.mean(teacher_student_kl(teacher_out, student_out).numpy()))}


class _TeacherPolicyNetwork:
  """A feed-forward `Teacher` behind the network interface `agents.training.evaluation.evaluate` calls."""

  def __init__(self, teacher: teachers.Teacher):
    self._teacher = teacher

  def __call__(self, observation, step_type=None, network_state=()):
    logits, _, _ = self._teacher.logits_and_value(observation)
    return (logits, {}), network_state

  def get_initial_state(self, batch_size):
    del batch_size
    return ()


def teacher_as_network(teacher: teachers.Teacher):
  """Wraps a feed-forward teacher so `agents.training.evaluation.evaluate(network, env_id)` can play it."""
  if teacher.is_recurrent:
    raise errors.PolicyLoadError(f'teacher {teacher.source!r} is recurrent; only feed-forward teachers can '
                                 'be played here.')
  return _TeacherPolicyNetwork(teacher)


# ------------------------------------------------------------------------------------------------------------
# Teachers of uint8 frames (Atari): the float view their torsos compute.
# ------------------------------------------------------------------------------------------------------------

def frame_view_spec(frame_spec) -> tensor_spec.BoundedTensorSpec:
  """The float32 `[0, 1]` view of a uint8 frame spec: what `networks.torsos` compute from uint8 frames
  (x / 255), and what a float input in `[0, 1]` passes through unchanged."""
  return tensor_spec.BoundedTensorSpec(frame_spec.shape, tf.float32, 0.0, 1.0, name=frame_spec.name)


def _probe_frames(frame_spec, count: int = 8, seed: int = 0) -> np.ndarray:
  """Random uint8 frames `[count, *shape]` to compare two networks on."""
  return np.random.default_rng(seed).integers(0, 256, size=(count,) + tuple(frame_spec.shape), dtype=np.uint8)


def _max_logit_gap(reference_logits, logits) -> float:
  return float(np.max(np.abs(np.asarray(reference_logits) - np.asarray(logits))))


def _weight_key(variable) -> str:
  """A variable's name without the network's own name and the ':0' suffix ('NatureCNNTorso/conv_0/kernel')."""
  name = variable.name.split(':')[0]
  return name.split('/', 1)[1] if '/' in name else name


def copy_network_weights(source_variables, target, what: str) -> None:
  """Assigns `source_variables` to `target.variables`, matched by name below the network's name.

  Matched by name, not position: an exported policy's `model_variables` list the same variables in
  another order than a freshly built network.

  Raises:
    ValueError: naming `what` when the names or shapes of the two sets differ.
  """
  target.create_variables()
  source = {_weight_key(v): v for v in source_variables}
  variables = {_weight_key(v): v for v in target.variables}
  shapes = {key: tuple(v.shape) for key, v in source.items()}
  expected = {key: tuple(v.shape) for key, v in variables.items()}
  if shapes != expected:
    def listed(keys, table):
      keys = sorted(keys)
      return ', '.join(f'{k} {table[k]}' for k in keys[:3]) + (f' and {len(keys) - 3} more' if len(keys) > 3 else '')
    missing = [k for k in expected if shapes.get(k) != expected[k]]
    extra = [k for k in shapes if expected.get(k) != shapes[k]]
    raise errors.ConfigError(f'{what}: its weights differ from the network built for them ({len(shapes)} '
                             f'against {len(expected)} variables); the weights have '
                             f'{listed(extra, shapes) or "nothing else"}, the network has '
                             f'{listed(missing, expected) or "nothing else"}.')
  for key, variable in variables.items():
    variable.assign(source[key])


def frame_teacher(path: str, network_fn: Optional[Callable[..., Any]], action_spec,
                  tolerance: float = 1e-3) -> Tuple[teachers.NetworkTeacher, teachers.Teacher]:
  """A policy export of uint8 frames as a teacher whose input is differentiable, and the export itself.

  The export's saved functions take uint8 frames, which have no gradient, so the teacher's network is
  built again on the `[0, 1]` float view (`frame_view_spec`) by `network_fn(observation_spec,
  action_spec)` and given the export's weights (its `model_variables`, matched by name). The rebuilt network
  must reproduce the export: its logits on random frames / 255 must match the export's on the frames
  within `tolerance`, otherwise `network_fn` describes another network and this raises.

  Args:
    path: A PolicySaver export (e.g. train_main's `policy/`) of uint8 observations.
    network_fn: Builds the teacher's network; gin: `distill_data_free.teacher_network_fn =
      @teacher/ActorCriticNetwork` with the training run's network under the `teacher/` scope.
    action_spec: The export's action spec.
    tolerance: Largest absolute logit difference allowed. Default 1e-3.

  Returns:
    `(teacher, exported)`: the rebuilt network on frames / 255, and the export loaded as a teacher of
    uint8 frames (to play the game with; the SavedModel is loaded once for both).

  Raises:
    ValueError: On a missing `network_fn`, or a network that does not reproduce the export.
  """
  time_step_spec, _ = policy_specs(path)
  frame_spec = time_step_spec.observation
  if network_fn is None:
    raise errors.ConfigError(f'teacher {path!r} reads {tf.as_dtype(frame_spec.dtype).name} frames '
                             f'{frame_spec!r}, which have no gradient for the generator; set '
                             'distill_data_free.teacher_network_fn = @teacher/ActorCriticNetwork and bind '
                             'teacher/ActorCriticNetwork to the training run\'s network (its '
                             'operative_config.gin) so the teacher can run on frames scaled to [0, 1].')
  exported = teachers.load_teacher(path, frame_spec, action_spec)
  network = network_fn(frame_view_spec(frame_spec), action_spec)
  what = f'teacher {path!r} rebuilt by distill_data_free.teacher_network_fn'
  copy_network_weights(exported.saved_policy.model_variables, network, what)
  teacher = teachers.NetworkTeacher(network, name=exported.name, source=f'{path} (on frames / 255)')
  probe = _probe_frames(frame_spec)
  gap = _max_logit_gap(exported.logits_and_value(tf.constant(probe))[0],
                       teacher.logits_and_value(tf.constant(probe, tf.float32) / 255.0)[0])
  if not gap <= tolerance:
    raise errors.ConfigError(f'{what} does not reproduce the export: its logits differ by up to {gap:.3g} '
                             f'(tolerance {tolerance}); bind teacher/ActorCriticNetwork to the training '
                             'run\'s network.')
  return teacher, exported


def frame_student_for_export(student, student_fn: Callable[..., Any], frame_spec, action_spec,
                             tolerance: float = 1e-4):
  """The student trained on the `[0, 1]` view, as a network of uint8 frames (for export and play).

  Builds `student_fn(frame_spec, action_spec)` (its torso scales uint8 by 1/255), copies the trained
  weights and checks that both give the same logits on random frames.
  """
  network = student_fn(frame_spec, action_spec)
  copy_network_weights(student.variables, network, 'the student rebuilt for uint8 frames')
  probe = _probe_frames(frame_spec, seed=1)
  gap = _max_logit_gap(student_logits(student, tf.constant(probe, tf.float32) / 255.0, training=False),
                       student_logits(network, tf.constant(probe), training=False))
  if not gap <= tolerance:
    raise errors.ConfigError('the student rebuilt for uint8 frames differs from the trained one by up to '
                             f'{gap:.3g} in its logits; its torso must scale uint8 frames by 1/255 '
                             '(networks.torsos do).')
  return network


# ------------------------------------------------------------------------------------------------------------
# The training loop.
# ------------------------------------------------------------------------------------------------------------

_LR_SCHEDULES = ('constant', 'cosine')


def check_distiller_settings(num_steps, batch_size, generator_learning_rate, student_learning_rate,
                             student_learning_rate_schedule, student_updates_per_step, reinit_interval,
                             pool_capacity, pool_samples_per_generator, pool_batch_fraction) -> None:
  """Raises ConfigError, one line naming the setting and the fix, on a `DataFreeDistiller` setting that
  cannot work: a non-positive learning rate, budget or size, a negative interval, an unknown schedule.

  Checked when the distiller is built and, by `distill_data_free`, before anything else (the teacher is
  not loaded for a configuration that would be refused).
  """
  run_config.check_number('DataFreeDistiller.generator_learning_rate', generator_learning_rate, 0,
                          meaning="the generator's Adam step size")
  run_config.check_number('DataFreeDistiller.student_learning_rate', student_learning_rate, 0,
                          meaning="the student's Adam step size")
  if student_learning_rate_schedule not in _LR_SCHEDULES:
    raise errors.ConfigError('DataFreeDistiller.student_learning_rate_schedule='
                             f'{student_learning_rate_schedule!r} is unknown; use one of {_LR_SCHEDULES}.')
  for argument, value, meaning in (('num_steps', num_steps, 'the training budget in steps'),
                                   ('batch_size', batch_size, 'generated observations per step'),
                                   ('student_updates_per_step', student_updates_per_step, ''),
                                   ('pool_capacity', pool_capacity, 'exemplars the pool holds'),
                                   ('pool_samples_per_generator', pool_samples_per_generator, '')):
    run_config.check_number(f'DataFreeDistiller.{argument}', value, 0, integer=True, meaning=meaning)
  run_config.check_number('DataFreeDistiller.reinit_interval', reinit_interval, 0, inclusive=True,
                          integer=True, meaning='steps between generator re-initialisations, 0: never')
  if not 0.0 <= pool_batch_fraction <= 4.0:
    raise errors.ConfigError(f'DataFreeDistiller.pool_batch_fraction must be in [0, 4], got '
                             f'{pool_batch_fraction!r}.')


def _bound_distiller_settings() -> Dict[str, Any]:
  """The arguments of `check_distiller_settings` as gin will pass them to `DataFreeDistiller`: its
  defaults, then the bindings."""
  names = inspect.signature(check_distiller_settings).parameters
  defaults = inspect.signature(DataFreeDistiller.__init__).parameters
  settings = {name: defaults[name].default for name in names}
  settings.update({k: v for k, v in gin.get_bindings(DataFreeDistiller).items() if k in names})
  return settings


@gin.configurable
class DataFreeDistiller(tf.Module):
  """Trains a generator and a student against a frozen teacher, without data (see the module docstring).

  One `train_step` = one generator update and `student_updates_per_step` student updates; the first
  student update shares the generator's batch (as DAFL's loop), the others draw fresh samples. Every
  `reinit_interval` steps `train` archives the generator's samples into the pool and re-initialises it.
  The loss weights are non-trainable `tf.Variable`s (`weights`), read when the compiled step runs, so a
  controller may change them between steps.
  """

  def __init__(self, teacher, student, observation_spec, action_spec,
               generator_fn: Callable[..., Generator] = ImageGenerator,
               teacher_features_fn: Optional[Callable[[tf.Tensor], tf.Tensor]] = None,
               num_steps: int = 2000,
               batch_size: int = 256,
               generator_learning_rate: float = 0.2,
               student_learning_rate: float = 2e-3,
               student_learning_rate_schedule: str = 'constant',
               student_updates_per_step: int = 1,
               one_hot_weight: float = 1.0,
               information_entropy_weight: float = 5.0 / math.log(10.0),
               activation_weight: float = 0.1,
               adversarial_weight: float = 0.0,
               reinit_interval: int = 0,
               pool_capacity: int = 20000,
               pool_samples_per_generator: int = 2048,
               pool_batch_fraction: float = 0.5,
               seed: int = 0,
               name: str = 'DataFreeDistiller'):
    """Loads the teacher, builds the generator, the pool and both optimisers.

    Args:
      teacher: Anything `agents.teachers.load_teacher` takes: a Keras classifier (or its file), a
        PolicySaver export directory, or a `Teacher`. It must be feed-forward.
      student: A Keras model mapping `[B, *obs_shape]` to logits `[B, A]`, or an `ActorCriticNetwork`
        (only its policy is trained; its value heads get no gradient).
      observation_spec: The spec of one observation (what the generator makes).
      action_spec: The discrete action (class) spec, a scalar integer `BoundedTensorSpec`.
      generator_fn: Called as `generator_fn(observation_spec)`; returns a `Generator`. Default
        `ImageGenerator` (gin: `@ImageGenerator` or `@VectorGenerator`, configured on their own).
      teacher_features_fn: Maps observations `[B, *obs_shape]` to the teacher's penultimate features
        `[B, F]` (differentiably), for the activation loss. Default None: no activation term (then
        `activation_weight` must be 0).
      num_steps: Training steps `train` runs. Default 2000.
      batch_size: B, generated observations per step. Default 256 (DAFL uses 512 on a GPU).
      generator_learning_rate: Adam's learning rate for the generator. Default 0.2, DAFL's: on MNIST, 1e-3
        let the generator settle on a few prototypes and the student stall near 85% (BENCHMARKS.md).
      student_learning_rate: Adam's learning rate for the student. Default 2e-3, DAFL's.
      student_learning_rate_schedule: 'constant' (default, DAFL's for MNIST) or 'cosine': decayed to 0
        over `num_steps · student_updates_per_step` updates (for short budgets).
      student_updates_per_step: Student updates per generator update. Default 1 (DAFL's; DFAD uses 5).
      one_hot_weight: w_oh. Default 1.0 (DAFL).
      information_entropy_weight: w_ie, in nats. Default 5 / ln 10 ≈ 2.17 (DAFL's 5 in log10 units).
      activation_weight: w_a. Default 0.1 (DAFL's MNIST value); must be 0 without `teacher_features_fn`.
      adversarial_weight: w_adv, the weight of −KL(T‖S) in the generator's loss. Default 0.0 (off: the
        DAFL baseline); the Generative Adversarial Simulator sets it > 0 (its value is not public; the
        shipped configurations use the values measured in BENCHMARKS.md).
      reinit_interval: Steps between generator re-initialisations; 0 (default) never re-initialises.
      pool_capacity: Exemplars the pool holds (first in, first out). Default 20,000.
      pool_samples_per_generator: Samples of each generator archived before it is re-initialised. Default
        2048.
      pool_batch_fraction: Pool exemplars added to each student batch, as a fraction of B, once the pool is
        non-empty. Default 0.5.
      seed: Seed of the latent noise, the pool's sampling and the re-initialised generators' weights (the
        first networks' weights: set `tf.keras.utils.set_random_seed`). Default 0.
      name: Module name.

    Raises:
      ConfigError: On a bad setting (`check_distiller_settings`) or an activation weight without features.
      PolicyLoadError: On a recurrent teacher or one of integer inputs.
    """
    super().__init__(name=name)
    check_distiller_settings(num_steps, batch_size, generator_learning_rate, student_learning_rate,
                             student_learning_rate_schedule, student_updates_per_step, reinit_interval,
                             pool_capacity, pool_samples_per_generator, pool_batch_fraction)
    self.observation_spec = tensor_spec.from_spec(observation_spec)
    self.action_spec = tensor_spec.from_spec(action_spec)
    if not tf.as_dtype(self.observation_spec.dtype).is_floating:
      raise errors.PolicyLoadError(f'the observations are {tf.as_dtype(self.observation_spec.dtype).name} '
                                   f'({self.observation_spec!r}); the generator learns through gradients of '
                                   'the teacher with respect to its input, which integer inputs (e.g. uint8 '
                                   'Atari frames) do not have. Distil a teacher whose inputs are float (for '
                                   'frames: scaled to [0, 1]; for a policy export of uint8 frames, '
                                   'distill_data_free rebuilds one with teacher_network_fn).')
    self.teacher = teachers.load_teacher(teacher, self.observation_spec, self.action_spec)
    if self.teacher.is_recurrent:
      raise errors.PolicyLoadError(f'teacher {self.teacher.source!r} is recurrent; data-free distillation '
                                   'generates single observations and needs a feed-forward teacher.')
    if teacher_features_fn is None and activation_weight != 0:
      raise errors.ConfigError(f'DataFreeDistiller.activation_weight={activation_weight!r} needs the '
                               'teacher\'s features; give teacher_features_fn or set the activation weight '
                               'to 0.')

    self.student = student
    self._student_policy_variables = self._policy_variables()
    self._teacher_features_fn = teacher_features_fn
    self._generator_fn = generator_fn
    self.generator = generator_fn(self.observation_spec)
    if not isinstance(self.generator, Generator):
      raise errors.ConfigError('generator_fn must build a data_free.Generator, got '
                               f'{type(self.generator).__name__}.')
    self.generator.build_variables()
    self.num_steps = num_steps
    self.batch_size = batch_size
    self.student_updates_per_step = student_updates_per_step
    self.reinit_interval = reinit_interval
    self.pool_samples_per_generator = pool_samples_per_generator
    self.pool_batch_size = int(round(pool_batch_fraction * batch_size))
    self.weights = {
        'one_hot': tf.Variable(float(one_hot_weight), trainable=False, name='one_hot_weight'),
        'information_entropy': tf.Variable(float(information_entropy_weight), trainable=False,
                                           name='information_entropy_weight'),
        'activation': tf.Variable(float(activation_weight), trainable=False, name='activation_weight'),
        'adversarial': tf.Variable(float(adversarial_weight), trainable=False, name='adversarial_weight'),
    }
    self._use_features = teacher_features_fn is not None
    self._use_adversarial = adversarial_weight != 0
    self.generator_optimizer = tf.keras.optimizers.Adam(generator_learning_rate)
    learning_rate = student_learning_rate
    if student_learning_rate_schedule == 'cosine':
      learning_rate = tf.keras.optimizers.schedules.CosineDecay(
          student_learning_rate, decay_steps=num_steps * student_updates_per_step)
    self.student_optimizer = tf.keras.optimizers.Adam(learning_rate)
    self.pool = ExemplarPool(self.generator.observation_shape, pool_capacity, seed=seed + 1,
                             dtype=self.observation_spec.dtype)
    self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name='step')
    self.generation = tf.Variable(0, dtype=tf.int64, trainable=False, name='generation')
    self._seed = seed
    self._rng = tf.random.Generator.from_seed(seed)
    self._step_fn = tf.function(self._train_step, autograph=False)
    self._sample_fn = tf.function(self._sample_batch, autograph=False)

  # -- the compiled step ------------------------------------------------------------------------------

  def _policy_variables(self):
    """The student's variables its logits depend on (an ActorCriticNetwork's value torso and heads are
    left out), found once with a probe batch."""
    probe = tf.zeros((2,) + tuple(self.observation_spec.shape), self.observation_spec.dtype)
    with tf.GradientTape() as tape:
      logits = student_logits(self.student, probe, training=False)
    variables = self.student.trainable_variables
    gradients = tape.gradient(logits, variables)
    policy_variables = [v for v, g in zip(variables, gradients) if g is not None]
    if not policy_variables:
      raise errors.ConfigError(f'the student {getattr(self.student, "name", self.student)!r} has no '
                               'trainable variables its logits depend on.')
    return policy_variables

  def _student_variables(self):
    return self._student_policy_variables

  def _teacher_logits(self, observations):
    return differentiable_teacher_logits(self.teacher, observations)

  def _train_step(self) -> Dict[str, tf.Tensor]:
    z = self.generator.sample_latent(self.batch_size, self._rng)
    student_variables = self._student_variables()
    with tf.GradientTape(persistent=True) as tape:
      generated = self.generator(z, training=True)
      observations = generated
      if self.pool_batch_size:
        observations = tf.concat([generated, self.pool.sample_if_not_empty(self.pool_batch_size)], axis=0)
      teacher_logits = self._teacher_logits(observations)
      logits = student_logits(self.student, observations, training=True)
      generated_teacher_logits = teacher_logits[:self.batch_size]
      features = self._teacher_features_fn(generated) if self._use_features else None
      g_loss, terms = generator_loss(
          generated_teacher_logits, logits[:self.batch_size] if self._use_adversarial else None, features,
          one_hot_weight=self.weights['one_hot'],
          information_entropy_weight=self.weights['information_entropy'],
          activation_weight=self.weights['activation'] if self._use_features else 0.0,
          adversarial_weight=self.weights['adversarial'] if self._use_adversarial else 0.0)
      s_loss = student_loss(teacher_logits, logits)
    # An action-only teacher's targets have no gradient with respect to its input: the generator then
    # moves by its adversarial term only (zeros, not None, keep the optimiser's step well defined).
    generator_gradients = tape.gradient(g_loss, self.generator.trainable_variables,
                                        unconnected_gradients=tf.UnconnectedGradients.ZERO)
    student_gradients = tape.gradient(s_loss, student_variables)
    del tape
    self.generator_optimizer.apply_gradients(zip(generator_gradients, self.generator.trainable_variables))
    self.student_optimizer.apply_gradients(zip(student_gradients, student_variables))
    for _ in range(self.student_updates_per_step - 1):
      self._student_update()
    self.step.assign_add(1)
    agreement = tf.reduce_mean(tf.cast(tf.equal(tf.argmax(generated_teacher_logits, -1),
                                                tf.argmax(logits[:self.batch_size], -1)), tf.float32))
    class_probs = tf.reduce_mean(tf.nn.softmax(generated_teacher_logits), axis=0)
    metrics = {f'generator/{key}': value for key, value in terms.items()}
    metrics.update({
        'generator/loss': g_loss,
        'student/loss': s_loss,
        'student/kl_generated': tf.reduce_mean(teacher_student_kl(generated_teacher_logits,
                                                                  logits[:self.batch_size])),
        'student/agreement_generated': agreement,
        'generator/class_entropy': -tf.reduce_sum(tf.math.multiply_no_nan(tf.math.log(class_probs),
                                                                          class_probs)),
    })
    return metrics

  def _student_update(self):
    observations = tf.stop_gradient(self.generator(self.generator.sample_latent(self.batch_size, self._rng),
                                                   training=True))
    if self.pool_batch_size:
      observations = tf.concat([observations, self.pool.sample_if_not_empty(self.pool_batch_size)], axis=0)
    teacher_logits = self.teacher.logits_and_value(observations)[0]
    variables = self._student_variables()
    with tf.GradientTape() as tape:
      loss = student_loss(teacher_logits, student_logits(self.student, observations, training=True))
    self.student_optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))

  def _sample_batch(self):
    return self.generator(self.generator.sample_latent(self.batch_size, self._rng), training=True)

  # -- eager control ------------------------------------------------------------------------------------

  def checkpoint_items(self) -> Dict[str, Any]:
    """What a checkpoint must hold to resume training where it stopped: both networks, both optimisers
    (built here, so a restore fills their moments), the pool, the step and generation counters and the
    random generator of the latent noise."""
    self.generator_optimizer.build(self.generator.trainable_variables)
    self.student_optimizer.build(self._student_variables())
    return {'generator': self.generator, 'student': self.student,
            'generator_optimizer': self.generator_optimizer, 'student_optimizer': self.student_optimizer,
            'pool': self.pool, 'step': self.step, 'generation': self.generation, 'rng': self._rng}

  def train_step(self) -> Dict[str, float]:
    """One step (generator and student updates); returns its metrics as floats."""
    metrics = self._step_fn()
    return {key: float(value.numpy()) for key, value in metrics.items()}

  def sample(self, count: int) -> np.ndarray:
    """`count` observations of the current generator, `[count, *obs_shape]` (in batches of B, BN in
    training mode as during training)."""
    batches = [self._sample_fn().numpy() for _ in range(-(-count // self.batch_size))]
    return np.concatenate(batches, axis=0)[:count]

  def archive_generator(self) -> None:
    """Adds `pool_samples_per_generator` of the current generator's samples to the pool."""
    self.pool.add(self.sample(self.pool_samples_per_generator), generation=self.generation)

  def reinitialize_generator(self) -> None:
    """Resets the generator's weights (and BatchNorm statistics) to a fresh initialisation, and its
    optimiser's state (moments and step count), so the next generator starts anew.

    The fresh weights are drawn under the global seeds `seed · 1000 + next generation`
    (`tf.keras.utils.set_random_seed`: Keras draws unseeded initialisers from Python's `random`, TF's
    seed alone does not fix them), so they depend on the generation only: a run resumed from a
    checkpoint re-initialises exactly as an uninterrupted one (the distiller's other randomness is its own
    `tf.random.Generator`, which the checkpoint holds).
    """
    tf.keras.utils.set_random_seed(self._seed * 1000 + int(self.generation.numpy()) + 1)
    fresh = type(self.generator)(**self.generator.config)
    fresh.build_variables()
    for variable, value in zip(self.generator.variables, fresh.variables):
      if variable.shape != value.shape:
        raise RuntimeError(f'generator variable {variable.name} {variable.shape} has no twin in a fresh '
                           f'generator ({value.name} {value.shape}).')
      variable.assign(value)
    for variable in self.generator_optimizer.variables:
      variable.assign(tf.zeros_like(variable))
    self.generation.assign_add(1)

  def train(self, num_steps: Optional[int] = None, log_every: int = 0,
            log_fn: Optional[Callable[[int, Dict[str, float]], None]] = None,
            save_fn: Optional[Callable[[], None]] = None, save_interval_seconds: float = 600.0
            ) -> Dict[str, Any]:
    """Runs `num_steps` steps (default: the configured `num_steps`), re-initialising the generator every
    `reinit_interval` steps after archiving its samples into the pool.

    Args:
      num_steps: Steps to run. Default None: `self.num_steps`.
      log_every: Call `log_fn(step, metrics)` every this many steps (counted from 0, so a resumed run logs
        at the same steps) and at the last step. 0: never.
      log_fn: The logging callback.
      save_fn: Called every `save_interval_seconds` of training (e.g. to write a checkpoint). Default None.
      save_interval_seconds: Seconds between calls of `save_fn`. Default 600.

    Returns:
      `{'steps', 'generations', 'pool_size', 'seconds', 'history': [(step, metrics), ...], 'final': metrics}`.
    """
    num_steps = self.num_steps if num_steps is None else num_steps
    history = []
    metrics = {}
    start = last_save = time.time()
    last = int(self.step.numpy()) + num_steps
    for _ in range(num_steps):
      step = int(self.step.numpy())
      if self.reinit_interval and step > 0 and step % self.reinit_interval == 0:
        self.archive_generator()
        self.reinitialize_generator()
      metrics = self.train_step()
      done = step + 1
      if log_every and (done % log_every == 0 or done == last):
        history.append((done, metrics))
        if log_fn is not None:
          log_fn(done, metrics)
      if save_fn is not None and time.time() - last_save >= save_interval_seconds:
        save_fn()
        last_save = time.time()
    return {'steps': int(self.step.numpy()), 'generations': int(self.generation.numpy()) + 1,
            'pool_size': int(self.pool.size.numpy()), 'seconds': time.time() - start, 'history': history,
            'final': metrics}

  def exemplars(self, count_from_current: int) -> Tuple[np.ndarray, np.ndarray]:
    """The pool's exemplars and `count_from_current` samples of the current generator, with the generation
    each came from: `(observations [N, ...], generation [N])`."""
    pooled, generation = self.pool.contents()
    current = self.sample(count_from_current) if count_from_current else pooled[:0]
    observations = np.concatenate([pooled, current], axis=0)
    generations = np.concatenate([generation, np.full(len(current), int(self.generation.numpy()))])
    return observations, generations


# ------------------------------------------------------------------------------------------------------------
# Diversity of generated observations, measured in the teacher's feature space.
# ------------------------------------------------------------------------------------------------------------


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.sqrt(np.maximum(squared, 0.0))


def clusters_per_class(features: np.ndarray, labels: np.ndarray, num_classes: int, distance_threshold: float,
                       min_cluster_fraction: float = 0.02, max_per_class: int = 2000,
                       seed: int = 0) -> np.ndarray:
  """Distinct clusters of each class's features: agglomerative clustering (average linkage, Euclidean)
  cut at `distance_threshold`, counting clusters that hold at least `min_cluster_fraction` of the class.

  Args:
    features: float `[N, F]` (e.g. the teacher's penultimate features, L2-normalised by the caller).
    labels: int `[N]` (the teacher's argmax for generated inputs).
    num_classes: A.
    distance_threshold: Where the dendrogram is cut.
    min_cluster_fraction: Smaller clusters (stray samples) are not counted. Default 0.02.
    max_per_class: At most this many samples per class are clustered (a random subset). Default 2000.
    seed: Seed of that subset.

  Returns:
    int `[A]`: clusters per class (0 for a class with no sample).
  """
  from sklearn.cluster import AgglomerativeClustering  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  counts = np.zeros(num_classes, np.int64)
  for label in range(num_classes):
    members = features[labels == label]
    if len(members) > max_per_class:
      members = members[rng.choice(len(members), max_per_class, replace=False)]
    if len(members) < 2:
      counts[label] = len(members)
      continue
    assignment = AgglomerativeClustering(n_clusters=None, distance_threshold=distance_threshold,
                                         linkage='average').fit_predict(members)
    sizes = np.bincount(assignment)
    counts[label] = int((sizes >= max(1, min_cluster_fraction * len(members))).sum())
  return counts


def recall_per_class(real_features: np.ndarray, real_labels: np.ndarray, generated_features: np.ndarray,
                     generated_labels: np.ndarray, num_classes: int, k: int = 3,
                     max_per_class: int = 2000, seed: int = 0) -> np.ndarray:
  """Per class, the fraction of real samples inside the generated samples' manifold (the recall of
  Kynkäänniemi et al. 2019, arXiv 1904.06991): real r is covered when ||r − g|| ≤ d_k(g) for some generated
  g of the class, d_k(g) the distance from g to its k-th nearest generated neighbour. A generator that
  found one prototype per class covers little; one that found the class's modes covers much.

  Real samples serve only to measure, never to train.

  Returns:
    float `[A]` in [0, 1] (0 for a class with fewer than k + 1 generated samples).
  """
  rng = np.random.RandomState(seed)
  recall = np.zeros(num_classes)
  for label in range(num_classes):
    generated = generated_features[generated_labels == label]
    real = real_features[real_labels == label]
    if len(generated) > max_per_class:
      generated = generated[rng.choice(len(generated), max_per_class, replace=False)]
    if len(generated) <= k or not len(real):
      continue
    radii = np.sort(_pairwise_distances(generated, generated), axis=1)[:, k]
    covered = (_pairwise_distances(real, generated) <= radii[None, :]).any(axis=1)
    recall[label] = covered.mean()
  return recall


def mean_pairwise_distance_per_class(features: np.ndarray, labels: np.ndarray, num_classes: int,
                                     max_per_class: int = 1000, seed: int = 0) -> np.ndarray:
  """Per class, the mean Euclidean distance between two different samples' features (0 if < 2 samples)."""
  rng = np.random.RandomState(seed)
  spread = np.zeros(num_classes)
  for label in range(num_classes):
    members = features[labels == label]
    if len(members) > max_per_class:
      members = members[rng.choice(len(members), max_per_class, replace=False)]
    if len(members) >= 2:
      distances = _pairwise_distances(members, members)
      spread[label] = distances.sum() / (len(members) * (len(members) - 1))
  return spread


# ------------------------------------------------------------------------------------------------------------
# The job: teacher in, student out.
# ------------------------------------------------------------------------------------------------------------


@gin.configurable
def keras_student(observation_spec, action_spec, model_fn: Callable[..., tf.keras.Model] = gin.REQUIRED):
  """A Keras student: `model_fn(input_shape=obs_shape, num_classes=A)` (gin: `keras_student.model_fn =
  @lenet5_half`)."""
  num_actions = int(action_spec.maximum) - int(action_spec.minimum) + 1
  return model_fn(input_shape=tuple(observation_spec.shape), num_classes=num_actions)


def policy_specs(path: str):
  """`(time_step_spec, action_spec)` of a PolicySaver export, read from its policy_specs.pbtxt."""
  specs = policy_saver.specs_from_collect_data_spec(
      tensor_spec.from_pbtxt_file(os.path.join(path, policy_saver.POLICY_SPECS_PBTXT)))
  return tensor_spec.from_spec(specs['time_step_spec']), tensor_spec.from_spec(specs['action_spec'])


def _progress_logger(total: int, first_step: int, history_path: str):
  """Prints a progress line (with speed and ETA) and appends the metrics to `history_path` (JSON lines)."""
  start = time.time()

  def log(step: int, metrics: Dict[str, float]):
    rate = (step - first_step) / max(time.time() - start, 1e-9)
    eta = datetime.timedelta(seconds=int((total - step) / rate)) if rate > 0 else '?'
    print(f'[{100.0 * step / total:5.1f}%] step {step:,}/{total:,} | '
          f'student loss {metrics["student/loss"]:.4f} | '
          f'agreement {metrics["student/agreement_generated"]:.3f} | '
          f'one-hot {metrics["generator/one_hot"]:.3f} | '
          f'class entropy {metrics["generator/class_entropy"]:.3f} | adversarial '
          f'{metrics["generator/adversarial"]:.3f} | {rate:.1f} steps/s | ETA {eta}', flush=True)
    with open(history_path, 'a') as f:
      f.write(json.dumps(dict(step=step, **metrics)) + '\n')
  return log


def _read_history(history_path: str, up_to_step: Optional[int] = None) -> List[Dict[str, float]]:
  """The JSON lines of `history_path` (none if absent), those after `up_to_step` dropped."""
  if not os.path.exists(history_path):
    return []
  with open(history_path) as f:
    entries = [json.loads(line) for line in f if line.strip()]
  return [e for e in entries if up_to_step is None or e['step'] <= up_to_step]


@gin.configurable(denylist=['root_dir', 'teacher_path'])
def distill_data_free(root_dir: str, teacher_path: str, student_fn: Callable[..., Any] = gin.REQUIRED,
                      teacher_features_layer: Optional[str] = None,
                      teacher_network_fn: Optional[Callable[..., Any]] = None, observation_low=None,
                      observation_high=None,
                      exemplars_to_save: int = 2048, eval_episodes: int = 0, eval_seed: int = 12345,
                      eval_greedy: bool = True, checkpoint_interval_seconds: float = 600.0,
                      log_every: int = 100, seed: int = 0) -> Dict[str, Any]:
  """Distils `teacher_path` into a new student without data and writes the student into `root_dir`.

  The student's training reads no data set and never builds an environment; with `eval_episodes` > 0 the
  student (and the teacher, for reference) are evaluated afterwards in `make_environment.env_id`.

    root_dir/
      operative_config.gin  the gin parameters used
      checkpoints/          the training state, every `checkpoint_interval_seconds` and at the end: a run
                            started again with the same root_dir resumes where it stopped
      history.jsonl         the metrics every `log_every` steps
      student.keras         a Keras student (classifier teachers), or
      policy/               the student policy, a PolicySaver export as train_main writes (policy teachers)
      exemplars.npz         'observations' [N, ...] (the pool and the last generator's samples),
                            'generation' [N], 'teacher_labels' [N]
      summary.json          training seconds, final metrics, history, evaluation returns

  Args:
    root_dir: Output directory.
    teacher_path: A Keras classifier file (.keras/.h5/SavedModel) or a PolicySaver export directory.
    student_fn: Called as `student_fn(observation_spec, action_spec)`: `@keras_student` or
      `@ActorCriticNetwork` (a policy student, exported like train_main's policies).
    teacher_features_layer: A Keras teacher's layer whose output feeds the activation loss (e.g. 'features'
      for `networks.lenet`). Default None: no activation term.
    teacher_network_fn: For a policy teacher of uint8 frames (Atari) only: builds its network again,
      `teacher_network_fn(observation_spec, action_spec)`, to run it on frames scaled to [0, 1] with
      gradients (`frame_teacher`; gin: `@teacher/ActorCriticNetwork`, configured under `teacher/` as the
      training run was). The generator and the student then work in that [0, 1] view, and the student is
      exported for uint8 frames. Default None.
    observation_low: For a Keras teacher: the lower bound of its inputs, recorded in the observation spec
      (scalar). Default None: unbounded (then the generator must be given its box).
    observation_high: Upper bound, likewise.
    exemplars_to_save: Samples of the last generator written with the pool's. Default 2048.
    eval_episodes: Episodes to evaluate the student (and the teacher) in `make_environment.env_id` after
      training; 0 (default) skips it. Policy teachers only.
    eval_seed: Seed of the evaluation environments. Default 12345 (agents.training.evaluation's).
    eval_greedy: Evaluate with the argmax action (True, default) or sampled actions, both the student and
      the teacher.
    checkpoint_interval_seconds: Seconds of training between checkpoints. Default 600.
    log_every: Steps between progress lines. Default 100.
    seed: `tf.keras.utils.set_random_seed` (Python, NumPy and TF) before the networks are built, and the
      distiller's seed: the same seed trains the same student. Default 0.

  Returns:
    The summary written to summary.json.
  """
  from agents.training import evaluation  # pylint: disable=g-import-not-at-top
  from agents.training import policy_export  # pylint: disable=g-import-not-at-top
  # Every setting, and what the teacher path holds, before any work.
  check_distiller_settings(**_bound_distiller_settings())
  teachers.check_target_settings(**teachers.teacher_targets())
  run_config.check_number('distill_data_free.checkpoint_interval_seconds', checkpoint_interval_seconds, 0,
                          meaning='seconds of training between checkpoints')
  for name, value in (('log_every', log_every), ('eval_episodes', eval_episodes),
                      ('exemplars_to_save', exemplars_to_save)):
    run_config.check_number(f'distill_data_free.{name}', value, 0, inclusive=True, integer=True)
  if not tf.io.gfile.exists(teacher_path):
    raise errors.PolicyLoadError(f'teacher {teacher_path!r} does not exist; pass a Keras classifier file or '
                                 'a policy/ directory exported by train_main.')
  is_policy = teachers.teacher_kind(teacher_path) == 'policy'
  run = run_directory.RunDirectory(root_dir, 'distill_data_free')  # one process at a time, writable
  try:
    tf.keras.utils.set_random_seed(seed)
    features_fn = None
    time_step_spec = None
    frame_spec = None
    played_teacher = None  # the teacher evaluated in the game; None: the distiller's
    if is_policy:
      time_step_spec, action_spec = policy_specs(teacher_path)
      observation_spec = time_step_spec.observation
      teacher = teacher_path
      if tf.as_dtype(observation_spec.dtype) == tf.uint8:
        frame_spec = observation_spec
        observation_spec = frame_view_spec(frame_spec)
        teacher, played_teacher = frame_teacher(teacher_path, teacher_network_fn, action_spec)
    if frame_spec is None and teacher_network_fn is not None:
      raise errors.ConfigError('distill_data_free.teacher_network_fn is for policy teachers of uint8 frames; '
                               f'teacher {teacher_path!r} is not one: set it to None.')
    if is_policy:
      if teacher_features_layer is not None:
        raise errors.ConfigError(f'teacher {teacher_path!r} is a policy export: its features are not '
                                 'reachable; set distill_data_free.teacher_features_layer = None and the '
                                 'activation weight to 0.')
    else:
      model = tf.keras.models.load_model(teacher_path, compile=False)
      input_shape = tuple(model.inputs[0].shape[1:])
      num_classes = int(model.outputs[0].shape[-1])
      if observation_low is not None or observation_high is not None:
        observation_spec = tensor_spec.BoundedTensorSpec(
            input_shape, tf.float32, -np.inf if observation_low is None else observation_low,
            np.inf if observation_high is None else observation_high)
      else:
        observation_spec = tf.TensorSpec(input_shape, tf.float32)
      action_spec = tensor_spec.BoundedTensorSpec((), tf.int64, 0, num_classes - 1)
      teacher = model
      if teacher_features_layer is not None:
        from networks import lenet  # pylint: disable=g-import-not-at-top
        features_model = lenet.feature_model(model, teacher_features_layer)
        features_fn = lambda x: features_model(x, training=False)  # noqa: E731
    student = student_fn(observation_spec, action_spec)
    if isinstance(student, actor_critic.ActorCriticNetwork):
      student.create_variables()
    else:
      student(tf.zeros((1,) + tuple(observation_spec.shape), observation_spec.dtype))
    distiller = DataFreeDistiller(teacher, student, observation_spec, action_spec,
                                  teacher_features_fn=features_fn, seed=seed)
    run.write_text('operative_config.gin', gin.operative_config_str())
    train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False, name='train_seconds')
    checkpoint = tf.train.Checkpoint(train_seconds=train_seconds, **distiller.checkpoint_items())
    checkpoint_dir = os.path.join(root_dir, 'checkpoints')
    guard = run_directory.NonFiniteGuard(distiller.checkpoint_items().values())
    manager = run_directory.open_checkpoints(checkpoint, checkpoint_dir, max_to_keep=2)
    restored = run_directory.restore_latest_usable(checkpoint, manager, checkpoint_dir, guard)
    first_step = int(distiller.step.numpy())
    history_path = os.path.join(root_dir, 'history.jsonl')
    history = _read_history(history_path, up_to_step=first_step) if restored else []
    # What was logged after the restored checkpoint is done again.
    run_directory.write_text(history_path, ''.join(json.dumps(entry) + '\n' for entry in history))
    if restored:
      print(f'Resumed from {restored} at step {first_step:,}/{distiller.num_steps:,}.', flush=True)
    start = time.time()
    prior_seconds = float(train_seconds.numpy())

    def save():
      train_seconds.assign(prior_seconds + time.time() - start)
      run_directory.save_checkpoint(manager, int(distiller.step.numpy()), guard)  # refuses NaN/inf state

    result = distiller.train(num_steps=max(0, distiller.num_steps - first_step), log_every=log_every,
                             log_fn=_progress_logger(distiller.num_steps, first_step, history_path),
                             save_fn=save, save_interval_seconds=checkpoint_interval_seconds)
    save()
    history = _read_history(history_path)
    observations, generations = distiller.exemplars(exemplars_to_save)
    teacher_labels = np.argmax(teacher_logits(distiller.teacher, observations), axis=-1)
    with run_directory.atomic_file(os.path.join(root_dir, 'exemplars.npz'), 'wb') as f:
      np.savez_compressed(f, observations=observations, generation=generations, teacher_labels=teacher_labels)
    summary = {'teacher': teacher_path, 'teacher_kind': distiller.teacher.kind_description,
               'steps': result['steps'], 'generations': result['generations'],
               'pool_size': result['pool_size'], 'train_seconds': float(train_seconds.numpy()),
               'resumed_at_step': first_step if restored else None,
               'final': result['final'] or {k: v for k, v in (history[-1] if history else {}).items() if k != 'step'},
               'history': history,
               'exemplars': int(len(observations)),
               'student_parameters': int(sum(np.prod(v.shape) for v in distiller._student_variables())),  # pylint: disable=protected-access
               'teacher_labels_histogram': np.bincount(teacher_labels,
                                                       minlength=distiller.teacher.num_actions).tolist()}
    if frame_spec is not None:
      student = frame_student_for_export(student, student_fn, frame_spec, action_spec)
    if is_policy:
      summary['policy'] = policy_export.export_policy(student, time_step_spec, action_spec,
                                                      os.path.join(root_dir, 'policy'))
    else:
      summary['student'] = os.path.join(root_dir, 'student.keras')
      partial = os.path.join(root_dir, '.student.partial.keras')  # Keras names the format by the extension
      student.save(partial)
      os.replace(partial, summary['student'])  # one atomic step: the old student or the new one
    if eval_episodes:
      if not is_policy:
        raise errors.ConfigError('distill_data_free.eval_episodes > 0 evaluates policies in an environment; a '
                                 'classifier teacher has none: set it to 0.')
      try:
        env_id = gin.query_parameter('make_environment.env_id')
      except ValueError:
        raise errors.ConfigError('distill_data_free.eval_episodes > 0 needs the environment: bind '
                                 "make_environment.env_id (e.g. 'CartPole-v1').") from None
      summary['env_id'] = env_id
      summary['student_eval'] = evaluation.evaluate(student, env_id, num_episodes=eval_episodes, seed=eval_seed,
                                                    greedy=eval_greedy)
      if played_teacher is None:
        played_teacher = distiller.teacher
      teacher_states = StateSample(seed=seed)
      summary['teacher_eval'] = evaluation.evaluate(teacher_as_network(played_teacher), env_id,
                                                    num_episodes=eval_episodes, seed=eval_seed,
                                                    greedy=eval_greedy, observation_fn=teacher_states)
      # After training, for the report only: does the student act as the teacher on the teacher's own states?
      summary['agreement_on_teacher_states'] = agreement_on_states(played_teacher, student, teacher_states.array())
    run.write_text('operative_config.gin', gin.operative_config_str())
    run.write_json('summary.json', summary)
    return summary
  finally:
    run.release()  # also when the run stops with an error
