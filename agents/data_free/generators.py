"""Generators: noise `[B, latent_dim]` to observations `[B, *obs_shape]` inside a box.

`output_bounds` finds the box a generator fills (from the observation spec, or given); `Generator` is the
base class the distiller re-initialises from its `config`; `ImageGenerator` (DAFL's DCGAN generator) and
`VectorGenerator` are the gin configurables.
"""

from typing import Any, Dict, Optional, Sequence, Tuple

import gin
import numpy as np
import tensorflow as tf

from protege.runtime import errors


# A bound at or beyond this magnitude in an observation spec means "unbounded" (gymnasium writes ±inf
# as ±3.4e38 for float32 boxes, e.g. CartPole's velocities).
UNBOUNDED = 1e6


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

  With `one_cell_channels` (images `[B, H, W, C]` only), each of those channels holds exactly one cell at
  `high` and the rest at `low`: the forward pass is the one-hot of the argmax over the H × W cells, the gradient
  the softmax's over them (straight-through again), for channels that hold one object of the game (MinAtar
  Breakout's paddle, ball and trail).
  """

  def __init__(self, low, high, binarize: bool = False, one_cell_channels: Sequence[int] = (),
               name='box_output'):
    super().__init__(name=name)
    self._low = tf.constant(low)
    self._scale = tf.constant((high - low) / 2.0)
    self._binarize = binarize
    self._one_cell = None
    if one_cell_channels:
      mask = np.zeros([np.shape(low)[-1]], bool)
      mask[list(one_cell_channels)] = True
      self._one_cell = tf.constant(mask)

  def call(self, h):
    unit = (tf.tanh(h) + 1.0) / 2.0
    if self._binarize:
      unit = unit + tf.stop_gradient(tf.round(unit) - unit)
    if self._one_cell is not None:
      unit = tf.where(self._one_cell, _one_cell_per_channel(h), unit)
    return self._low + 2.0 * self._scale * unit


def _one_cell_per_channel(h):
  """`[B, H, W, C]` logits to one-hot cells per channel: forward the argmax's one-hot over H × W, gradient the
  softmax's."""
  shape = tf.shape(h)
  per_channel = tf.reshape(tf.transpose(h, [0, 3, 1, 2]), [shape[0], shape[3], shape[1] * shape[2]])
  soft = tf.nn.softmax(per_channel, axis=-1)
  hard = tf.one_hot(tf.argmax(per_channel, axis=-1), shape[1] * shape[2], dtype=soft.dtype)
  cells = soft + tf.stop_gradient(hard - soft)
  return tf.transpose(tf.reshape(cells, [shape[0], shape[3], shape[1], shape[2]]), [0, 2, 3, 1])


def _check_one_cell_channels(owner: str, channels: Sequence[int], depth: int) -> None:
  """Raises a ConfigError naming `owner` unless `channels` are distinct channel indices in [0, depth)."""
  if (len(set(channels)) != len(channels)
      or any(not isinstance(c, int) or not 0 <= c < depth for c in channels)):
    raise errors.ConfigError(f'{owner}.one_cell_channels must be distinct channel indices in [0, {depth}), '
                             f'got {channels!r}.')


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

  @property
  def needs_teacher(self) -> bool:
    """True while the config asks for something read from the teacher's weights that is not filled in yet
    (`DataFreeDistiller` fills it in and builds the generator again); such a generator refuses to sample."""
    return False

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
               one_cell_channels: Sequence[int] = (), name: str = 'ImageGenerator'):
    """Builds the layers (variables on the first call or `build_variables`).

    Args:
      observation_spec: The `TensorSpec`/`BoundedTensorSpec` of one image `[H, W, C]`.
      latent_dim: Size of z. Default 100 (DAFL).
      channels: Filters of the upsampling blocks, one block (×2) each. Default (128, 64), DAFL's.
      low: Lower bound of the pixels (scalar or `[H, W, C]`). Default None: the spec's minimum.
      high: Upper bound of the pixels. Default None: the spec's maximum.
      batch_norm_epsilon: The BatchNorm epsilon. Default 0.8 (DAFL's, from the DCGAN code).
      binarize: Round every pixel to low or high (straight-through gradients). Default False.
      one_cell_channels: Channels that hold exactly one cell at `high` in every frame, the others at `low`
        (straight-through one-hot over the H × W cells): what the spec of a game says of a channel that
        shows one object, e.g. (0, 1, 2) for MinAtar Breakout's paddle, ball and trail. Default (): none.
      name: Model name.
    """
    super().__init__(observation_spec, latent_dim,
                     dict(latent_dim=latent_dim, channels=tuple(channels), low=low, high=high,
                          batch_norm_epsilon=batch_norm_epsilon, binarize=binarize,
                          one_cell_channels=tuple(one_cell_channels), name=name), name=name)
    if len(self.observation_shape) != 3:
      raise errors.ConfigError(f'ImageGenerator makes images [H, W, C], but the observation shape is '
                               f'{self.observation_shape}; use VectorGenerator.')
    if not channels or any(not isinstance(c, int) or c <= 0 for c in channels):
      raise errors.ConfigError(f'ImageGenerator.channels must be positive ints, one per upsampling, got '
                               f'{channels!r}.')
    height, width, depth = self.observation_shape
    _check_one_cell_channels('ImageGenerator', one_cell_channels, depth)
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
    self._box = _BoxOutput(box_low[None], box_high[None], binarize=binarize, one_cell_channels=one_cell_channels)
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


@gin.configurable
class StructuredGenerator(Generator):
  """Frames made of the parts an observation spec of binary channels names, sampled: each of
  `one_cell_channels` holds one cell at `high` (a categorical over the H × W cells, Gumbel-max), every other
  coordinate with low < high is low or high (a Bernoulli), coordinates with low == high are fixed.

  Written here because no library samples structured frames with gradients; the estimators are the standard
  ones: straight-through Gumbel-softmax for the cells (Jang et al. 2017, arXiv 1611.01144) and
  straight-through Bernoulli (Bengio et al. 2013, arXiv 1308.3432).

    z = [code ~ N(0, I) (latent_dim), u ~ U(0, 1) (H·W·C, the sampling noise), d ~ U(0, 1) (C, densities)]
    logits = MLP(code)  (last layer initialised to zero)
    one-cell channel c:  onehot(argmax_cells(logits_c + Gumbel(u_c)))
    binary channel c:    u_c < sigmoid(logit(d_c) + logits_c)

  At initialisation the logits are 0: every one-cell channel's cell is uniform over the frame, and each
  binary channel's cells are on with a density drawn uniformly from (0, 1) per frame, so every count of
  active cells is equally likely. That is the maximum-entropy frame with the spec's structure; training
  (the adversarial and DAFL terms) moves the logits from there, and a re-initialised generator starts
  there again. On MinAtar Breakout, frames of this generator alone teach a student more than the DCGAN
  generator does (BENCHMARKS.md, "Data-free distillation on game frames").
  """

  def __init__(self, observation_spec, latent_dim: int = 32, hidden_sizes: Sequence[int] = (128,),
               one_cell_channels: Sequence[int] = (), low=None, high=None, support=None,
               support_ratio: float = 1.25, paired_channels: Sequence[Sequence[int]] = (),
               pair_sharpness: float = 20.0, pair_affinity=None, density: str = 'uniform',
               max_cells: Optional[Dict[int, int]] = None, name: str = 'StructuredGenerator'):
    """Builds the layers (variables on the first call or `build_variables`).

    Args:
      observation_spec: The spec of one frame `[H, W, C]`; its box (or `low`/`high`) gives the two values of
        each coordinate.
      latent_dim: Size of the code that drives the logits. Default 32. (`self.latent_dim`, what
        `sample_latent` draws, adds the H·W·C + C sampling noise to it.)
      hidden_sizes: Units of the MLP's hidden layers (LeakyReLU 0.2). Default (128,).
      one_cell_channels: Channels that hold exactly one object (one cell at `high`), e.g. (0, 1, 2) for MinAtar
        Breakout's paddle, ball and trail. Default (): every channel is binary per cell.
      low: Lower bound of the coordinates (scalar or `[H, W, C]`). Default None: the spec's minimum.
      high: Upper bound. Default None: the spec's maximum. low == high fixes a coordinate (MinAtar's padding
        channels: `high = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]`).
      support: Where cells may be on. None (default): everywhere low < high. 'teacher': the coordinates the
        teacher's first-layer weights show it was trained on (`teacher_support.teacher_input_support`, read by
        `DataFreeDistiller` when it builds the generator; for teachers with a dense first layer; a generator
        built without it refuses to sample). Or a bool
        array broadcastable to `[H, W, C]`. Cells outside stay at `low`; a one-cell channel picks its cell
        inside.
      support_ratio: With support='teacher': a coordinate is trained when its first-layer row's norm exceeds
        this × the median norm of the quietest quarter of rows. Default 1.25.
      paired_channels: (source, target) pairs of one-cell channels: the target's cell is drawn given the
        source's, with logits `pair_sharpness` × the cosine similarity of the two cells' first-layer rows in the
        teacher (`teacher_support.cell_affinity`: cells that were on together in training), e.g. ((1, 2),) for
        MinAtar Breakout's ball and trail. Read from the teacher by `DataFreeDistiller`. A channel may not be
        both a source and a target. Default (): cells drawn independently.
      pair_sharpness: β of those logits. Default 20.
      density: How a binary channel's density d (the chance each of its cells is on, before the logits) is
        drawn per frame: 'uniform' (default), d ~ U(0, 1), every count of active cells equally likely;
        'log_uniform', log d ~ U(log(0.5 / N), 0) over the channel's N cells (in the support), every order of
        magnitude of the count equally likely, from 0 or 1 cell to all: for sparse channels (bullets).
      max_cells: {binary channel: k}: the channel's density is drawn up to k / N instead of up to 1, so its
        expected count of active cells is at most k (before the logits), for channels the game fills with at
        most a few objects (Space Invaders' bullets). Default None: up to all N.
      pair_affinity: `[len(paired_channels), H·W, H·W]` cosine similarities; set by `DataFreeDistiller` (leave
        None; with pairs and no affinity the generator refuses to sample).
      name: Model name.
    """
    shape = tuple(observation_spec.shape)
    if len(shape) != 3:
      raise errors.ConfigError(f'StructuredGenerator makes frames [H, W, C], but the observation shape is '
                               f'{shape}; use VectorGenerator.')
    if not isinstance(latent_dim, int) or latent_dim <= 0:
      raise errors.ConfigError(f'StructuredGenerator.latent_dim must be a positive int, got {latent_dim!r}.')
    height, width, depth = shape
    _check_one_cell_channels('StructuredGenerator', one_cell_channels, depth)
    if any(not isinstance(units, int) or units <= 0 for units in hidden_sizes):
      raise errors.ConfigError(f'StructuredGenerator.hidden_sizes must be positive ints, got {hidden_sizes!r}.')
    super().__init__(observation_spec, latent_dim + height * width * depth + depth,
                     dict(latent_dim=latent_dim, hidden_sizes=tuple(hidden_sizes),
                          one_cell_channels=tuple(one_cell_channels), low=low, high=high, support=support,
                          support_ratio=support_ratio, paired_channels=tuple(tuple(p) for p in paired_channels),
                          pair_sharpness=pair_sharpness, pair_affinity=pair_affinity, density=density,
                          max_cells=dict(max_cells) if max_cells else None, name=name),
                     name=name)
    self.code_dim = latent_dim
    box_low, box_high = output_bounds(observation_spec, low, high)
    mask = _support_mask(support, shape)
    if any(not mask[..., c].any() for c in one_cell_channels):
      raise errors.ConfigError(f'StructuredGenerator.support leaves one-cell channel(s) '
                               f'{[c for c in one_cell_channels if not mask[..., c].any()]} no cell to hold '
                               'their object; widen the support or drop them from one_cell_channels.')
    self._low = tf.constant(box_low[None])
    self._range = tf.constant(((box_high - box_low) * mask)[None])
    self._outside = tf.constant(np.where(mask, 0.0, -1e9).astype(np.float32)[None])
    self._log_uniform = density == 'log_uniform'
    self._log_lowest_density, self._highest_density = _density_bounds(density, max_cells, mask, one_cell_channels)
    self._log_highest_density = tf.math.log(self._highest_density)
    one_cell = np.zeros([depth], bool)
    one_cell[list(one_cell_channels)] = True
    self._one_cell = tf.constant(one_cell)
    self._pairs, self._pair_logits = _pair_logits(paired_channels, one_cell_channels, pair_sharpness,
                                                  pair_affinity, height * width)
    self._hidden = [tf.keras.layers.Dense(units, activation=tf.keras.layers.LeakyReLU(0.2), name=f'dense_{i}')
                    for i, units in enumerate(hidden_sizes)]
    self._logits = tf.keras.layers.Dense(height * width * depth, kernel_initializer='zeros', name='logits')

  @property
  def needs_teacher(self) -> bool:
    return (isinstance(self.config['support'], str)
            or bool(self.config['paired_channels']) and self.config['pair_affinity'] is None)

  def sample_latent(self, batch_size, rng: tf.random.Generator) -> tf.Tensor:
    """`[batch_size, latent_dim]`: the code ~ N(0, I), then the sampling noise ~ U(0, 1)."""
    code = rng.normal([batch_size, self.code_dim])
    return tf.concat([code, rng.uniform([batch_size, self.latent_dim - self.code_dim])], axis=1)

  def call(self, z, training=False):
    """Maps z `[B, latent_dim]` (from `sample_latent`) to frames `[B, H, W, C]`, each coordinate low or high."""
    del training
    if self.needs_teacher:
      raise errors.ConfigError("StructuredGenerator with support='teacher' or paired_channels needs the teacher's "
                               'first layer: build it through DataFreeDistiller (generator_fn), which reads it, or '
                               'give support as a bool array and pair_affinity.')
    height, width, depth = self.observation_shape
    cells = height * width * depth
    code = z[:, :self.code_dim]
    noise = tf.clip_by_value(z[:, self.code_dim:self.code_dim + cells], 1e-6, 1.0 - 1e-6)
    density = z[:, self.code_dim + cells:]   # U(0, 1), scaled and clipped below
    x = code
    for layer in self._hidden:
      x = layer(x)
    logits = tf.reshape(self._logits(x), (-1,) + self.observation_shape)
    noise = tf.reshape(noise, (-1,) + self.observation_shape)
    gumbel = -tf.math.log(-tf.math.log(noise))
    scores = logits + gumbel + self._outside
    one_cell = _one_cell_per_channel(scores)
    if self._pairs:   # each target's cell again, given its source's cell
      shape = tf.shape(scores)
      for (source, target), pair_logits in zip(self._pairs, self._pair_logits):
        source_cell = tf.stop_gradient(tf.reshape(one_cell[..., source], [shape[0], height * width]))
        extra = tf.reshape(tf.matmul(source_cell, pair_logits), [shape[0], height, width, 1])
        scores = scores + extra * tf.one_hot(target, depth, dtype=scores.dtype)
      one_cell = _one_cell_per_channel(scores)
    if self._log_uniform:   # log d ~ U(log lowest, log highest)
      density = tf.exp(self._log_lowest_density * (1.0 - density) + self._log_highest_density * density)
    else:                   # d ~ U(0, highest)
      density = self._highest_density * density
    density = tf.clip_by_value(density, 1e-6, 1.0 - 1e-6)
    prior = tf.math.log(density) - tf.math.log1p(-density)   # logit(d), [B, C]
    probability = tf.sigmoid(logits + prior[:, None, None, :])
    binary = probability + tf.stop_gradient(tf.cast(noise < probability, probability.dtype) - probability)
    unit = tf.where(self._one_cell, one_cell, binary)
    return self._low + self._range * unit


_DENSITIES = ('uniform', 'log_uniform')


def _density_bounds(density, max_cells, mask: np.ndarray, one_cell_channels) -> Tuple[tf.Tensor, tf.Tensor]:
  """`StructuredGenerator`'s per-channel density range, checked: the log of the lowest density (0.5 / the
  channel's N cells in the support; used by 'log_uniform') and the highest (min(k, N) / N for a channel of
  `max_cells`, else 1), each `[C]`."""
  if density not in _DENSITIES:
    raise errors.ConfigError(f'StructuredGenerator.density={density!r} is unknown; use one of {_DENSITIES}.')
  depth = mask.shape[-1]
  cells_per_channel = np.maximum(mask.reshape(-1, depth).sum(axis=0), 1)
  highest = np.ones([depth], np.float32)
  for channel, count in dict(max_cells or {}).items():
    if (not _is_int(channel) or not 0 <= channel < depth or channel in one_cell_channels
        or not _is_int(count) or count < 1):
      raise errors.ConfigError(f'StructuredGenerator.max_cells={max_cells!r}: each key must be a binary channel '
                               f'(an index in [0, {depth}) not in one_cell_channels {tuple(one_cell_channels)}) '
                               'and each value a positive int, the most cells it holds.')
    highest[channel] = min(count, cells_per_channel[channel]) / cells_per_channel[channel]
  return (tf.constant(np.log(0.5 / cells_per_channel).astype(np.float32)), tf.constant(highest))


def _is_int(value) -> bool:
  """An int that is not a bool (Python's True is the int 1, which a user never means as a channel or count)."""
  return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _support_mask(support, shape) -> np.ndarray:
  """`StructuredGenerator.support` as a bool array of `shape`: None is everywhere, and so is 'teacher' for the
  checks made before `DataFreeDistiller` reads the teacher's support (the generator does not sample until then)."""
  if isinstance(support, str) and support != 'teacher':
    raise errors.ConfigError(f"StructuredGenerator.support={support!r} is unknown; use None, 'teacher' or a bool "
                             f'array broadcastable to {shape}.')
  if support is None or isinstance(support, str):
    return np.ones(shape, bool)
  try:
    return np.broadcast_to(np.asarray(support, bool), shape).copy()
  except ValueError:
    raise errors.ConfigError(f'StructuredGenerator.support of shape {np.shape(support)} does not broadcast to '
                             f'the frame shape {shape}.') from None


def _pair_logits(paired_channels, one_cell_channels, sharpness, affinity, cells: int):
  """The checked (source, target) pairs and their `[cells, cells]` logits: `sharpness` × `affinity` (zeros
  while `affinity` is None)."""
  pairs = [tuple(pair) for pair in paired_channels]
  sources, targets = {a for a, _ in pairs}, [b for _, b in pairs]
  if (any(len(pair) != 2 or not set(pair) <= set(one_cell_channels) or pair[0] == pair[1] for pair in pairs)
      or len(set(targets)) != len(targets) or sources & set(targets)):
    raise errors.ConfigError(f'StructuredGenerator.paired_channels={paired_channels!r} must be (source, target) '
                             f'pairs of distinct one-cell channels {tuple(one_cell_channels)}, each target drawn '
                             'once, and no channel both a source and a target.')
  if not sharpness >= 0:
    raise errors.ConfigError(f'StructuredGenerator.pair_sharpness must be >= 0, got {sharpness!r}.')
  if affinity is None:
    return pairs, [tf.zeros([cells, cells]) for _ in pairs]
  affinity = np.asarray(affinity, np.float32)
  if affinity.shape != (len(pairs), cells, cells):
    raise errors.ConfigError(f'StructuredGenerator.pair_affinity has shape {affinity.shape}; expected '
                             f'{(len(pairs), cells, cells)}.')
  return pairs, [tf.constant(sharpness * a) for a in affinity]
