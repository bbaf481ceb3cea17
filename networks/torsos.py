"""Torsos: the feature extractors that sit below the policy and value heads.

A torso maps one batch of observations `[B, *observation_shape]` to features `[B, F]`. Time is
not a torso's concern: `networks.actor_critic.ActorCriticNetwork` folds a `[B, T]` sequence into
`[B*T]` before calling its torso and unfolds the features afterwards.

Conventions shared by every torso:

* Observations: uint8 observations (Atari frames) are cast to float32 and multiplied by 1/255
  inside the torso, so actors and replay keep frames as uint8 (4x less memory and bandwidth)
  while the layers see values in [0, 1], as the RND paper's policy does ("4 stacked frames
  scaled by 1/255", Burda et al. 2019). Other integer and bool observations are cast to float32
  without scaling; float observations are used as they are.
* Images are NHWC, `[B, height, width, channels]`, e.g. `[B, 84, 84, 4]` for 4 stacked 84x84
  Atari frames.
* Initialisation: every kernel is orthogonal with gain sqrt(2) and every bias is zero, the
  choice of the PPO and RND baselines (OpenAI `baselines`, `random-network-distillation`).
  The gain sqrt(2) compensates for ReLU zeroing half of its inputs (He et al. 2015); the
  baselines use it for their tanh MLP too, and so does `MLPTorso`.
"""

import math

import gin
import tensorflow as tf

from protege.runtime import errors


def _hidden_initializer():
  """A new orthogonal initializer with gain sqrt(2).

  One instance per layer: an unseeded Keras initializer returns the same values every time
  the same instance is called, which would give equal-shaped layers identical weights.
  """
  return tf.keras.initializers.Orthogonal(gain=math.sqrt(2.0))


def _to_float(observation):
  """Casts an observation batch to float32; uint8 is also scaled by 1/255 into [0, 1]."""
  observation = tf.convert_to_tensor(observation)
  if observation.dtype == tf.uint8:
    return tf.cast(observation, tf.float32) * (1.0 / 255.0)
  if not observation.dtype.is_floating:
    return tf.cast(observation, tf.float32)
  return observation


def _check_images(observation, torso_name):
  """Raises unless `observation` is a rank-4 NHWC image batch."""
  if observation.shape.rank != 4:
    raise errors.ConfigError(
      f'{torso_name} expects NHWC images [batch, height, width, channels], got shape '
      f'{observation.shape}; use MLPTorso for vector observations, and transpose '
      'channels-first frames to channels-last.'
    )


def _check_positive_ints(values, argument):
  """Raises unless `values` is a sequence of positive ints."""
  if isinstance(values, (str, bytes)) or not all(isinstance(v, int) and v > 0 for v in values):
    raise errors.ConfigError(f'{argument} must be a sequence of positive ints, got {values!r}.')


def _conv(filters, kernel_size, strides=1, padding='same', activation=None, name=None):
  """A Conv2D with the module's initialisation (orthogonal gain sqrt(2), zero bias)."""
  return tf.keras.layers.Conv2D(
    filters,
    kernel_size,
    strides=strides,
    padding=padding,
    activation=activation,
    kernel_initializer=_hidden_initializer(),
    bias_initializer='zeros',
    name=name,
  )


def _dense(units, activation, name):
  """A Dense layer with the module's initialisation (orthogonal gain sqrt(2), zero bias)."""
  return tf.keras.layers.Dense(
    units,
    activation=activation,
    kernel_initializer=_hidden_initializer(),
    bias_initializer='zeros',
    name=name,
  )


@gin.configurable
class MLPTorso(tf.keras.layers.Layer):
  """Fully connected torso for vector observations (e.g. CartPole's 4 floats).

  Flattens every non-batch dimension, then applies one dense layer per entry of
  `layer_sizes`. Orthogonal (gain sqrt(2)) kernels and zero biases, as in the PPO baselines'
  MLP policy; uint8 inputs are scaled by 1/255 (see the module docstring).
  """

  def __init__(self, layer_sizes=(64, 64), activation='tanh', name='MLPTorso'):
    """Creates the layers; their variables are built on the first call.

    Args:
        layer_sizes: Units of each dense layer, input to output; the feature size is
            `layer_sizes[-1]`. The default (64, 64) with tanh is the PPO baselines' MLP
            policy. An empty tuple makes the torso return the flattened observation.
        activation: Keras activation (name or callable) applied after every dense layer.
        name: Keras layer name.

    Raises:
        ValueError: If `layer_sizes` holds anything but positive ints.
    """
    super().__init__(name=name)
    _check_positive_ints(layer_sizes, 'MLPTorso.layer_sizes')
    self._flatten = tf.keras.layers.Flatten()
    self._layers = [_dense(units, activation, name=f'dense_{i}') for i, units in enumerate(layer_sizes)]

  def call(self, observation, training=False):
    """Maps observations `[B, ...]` to features `[B, layer_sizes[-1]]`."""
    x = self._flatten(_to_float(observation))
    for layer in self._layers:
      x = layer(x, training=training)
    return x


@gin.configurable
class NatureCNNTorso(tf.keras.layers.Layer):
  """The convolutional torso of DQN (Mnih et al. 2015, "Human-level control through deep RL").

  conv 32@8x8 stride 4 -> conv 64@4x4 stride 2 -> conv 64@3x3 stride 1 (ReLU, 'valid'
  padding; on 84x84 inputs the last map is 7x7x64) -> flatten -> dense 512 ReLU. It is also
  the policy torso of the RND paper's CNN agent. Orthogonal (gain sqrt(2)) kernels, zero
  biases; uint8 frames are scaled by 1/255 (see the module docstring).
  """

  def __init__(self, name='NatureCNNTorso'):
    """Creates the layers; their variables are built on the first call.

    Args:
        name: Keras layer name.
    """
    super().__init__(name=name)
    self._convs = [
      _conv(32, 8, strides=4, padding='valid', activation='relu', name='conv_0'),
      _conv(64, 4, strides=2, padding='valid', activation='relu', name='conv_1'),
      _conv(64, 3, strides=1, padding='valid', activation='relu', name='conv_2'),
    ]
    self._flatten = tf.keras.layers.Flatten()
    self._dense = _dense(512, 'relu', name='dense')

  def call(self, observation, training=False):
    """Maps images `[B, H, W, C]` to features `[B, 512]`."""
    _check_images(observation, 'NatureCNNTorso')
    x = _to_float(observation)
    for conv in self._convs:
      x = conv(x, training=training)
    return self._dense(self._flatten(x), training=training)


class _ImpalaResidualBlock(tf.keras.layers.Layer):
  """IMPALA's residual block: x + conv3x3(relu(conv3x3(relu(x)))), channels unchanged."""

  def __init__(self, channels, name):
    super().__init__(name=name)
    self._conv_0 = _conv(channels, 3, name='conv_0')
    self._conv_1 = _conv(channels, 3, name='conv_1')

  def call(self, x, training=False):
    y = self._conv_0(tf.nn.relu(x), training=training)
    y = self._conv_1(tf.nn.relu(y), training=training)
    return x + y


@gin.configurable
class ImpalaResNetTorso(tf.keras.layers.Layer):
  """The ResNet torso of the "large" IMPALA agent (Espeholt et al. 2018, Figure 3, right).

  Kickstarting (Schmitt et al. 2018) uses this agent as its large student. One section per
  entry of `channels`: conv 3x3 stride 1 -> max-pool 3x3 stride 2 ('same' padding, so
  84 -> 42 -> 21 -> 11) -> `num_blocks` residual blocks (relu -> conv 3x3 -> relu -> conv 3x3,
  plus the skip connection). With the defaults that is 3 x (1 + 2 x 2) = 15 convolutions.
  Then relu -> flatten -> dense `output_size` ReLU. The paper's LSTM on top is
  `ActorCriticNetwork(core='lstm')`, not part of the torso. Orthogonal (gain sqrt(2)) kernels
  and zero biases (the PPO baselines' choice; the IMPALA paper does not state its
  initialiser); uint8 frames are scaled by 1/255 (see the module docstring).
  """

  def __init__(self, channels=(16, 32, 32), num_blocks=2, output_size=256, name='ImpalaResNetTorso'):
    """Creates the layers; their variables are built on the first call.

    Args:
        channels: Output channels of each section's convolutions, one section per entry;
            (16, 32, 32) is the paper's.
        num_blocks: Residual blocks per section (2 in the paper); 0 leaves conv + pool.
        output_size: Units of the final dense ReLU layer, i.e. the feature size (256 in
            the paper).
        name: Keras layer name.

    Raises:
        ValueError: If `channels` is not a non-empty sequence of positive ints, or
            `num_blocks` is negative, or `output_size` is not positive.
    """
    super().__init__(name=name)
    _check_positive_ints(channels, 'ImpalaResNetTorso.channels')
    if not channels:
      raise errors.ConfigError(f'ImpalaResNetTorso.channels must hold at least one section, got '
                               f'{channels!r}.')
    if not isinstance(num_blocks, int) or num_blocks < 0:
      raise errors.ConfigError(f'ImpalaResNetTorso.num_blocks must be an int >= 0, got {num_blocks!r}.')
    if not isinstance(output_size, int) or output_size <= 0:
      raise errors.ConfigError(f'ImpalaResNetTorso.output_size must be a positive int, got {output_size!r}.')
    self._layers = []
    for s, section_channels in enumerate(channels):
      self._layers.append(_conv(section_channels, 3, name=f'section_{s}_conv'))
      self._layers.append(
        tf.keras.layers.MaxPool2D(pool_size=3, strides=2, padding='same', name=f'section_{s}_pool')
      )
      self._layers.extend(
        _ImpalaResidualBlock(section_channels, name=f'section_{s}_block_{b}') for b in range(num_blocks)
      )
    self._flatten = tf.keras.layers.Flatten()
    self._dense = _dense(output_size, 'relu', name='dense')

  def call(self, observation, training=False):
    """Maps images `[B, H, W, C]` to features `[B, output_size]`."""
    _check_images(observation, 'ImpalaResNetTorso')
    x = _to_float(observation)
    for layer in self._layers:
      x = layer(x, training=training)
    return self._dense(self._flatten(tf.nn.relu(x)), training=training)
