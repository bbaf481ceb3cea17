"""The two networks of Random Network Distillation (Burda et al. 2019, arXiv 1810.12894).

A frozen, randomly initialised *target* f and a trained *predictor* f̂ both map one normalised RND
input to `output_size` (512 in the paper) features; the predictor's squared error on f(o) is the
intrinsic reward (`agents.learners.rnd_losses.prediction_error`).

Architectures follow the paper's code (openai/random-network-distillation,
`policies/cnn_policy_param_matched.py`, `define_self_prediction_rew`, with `policy_size='normal'`):

* Image inputs `[H, W, C]` (the paper: the newest 84x84 frame, C = 1):
  target    = conv 32@8x8/4 -> conv 64@4x4/2 -> conv 64@3x3/1 (leaky ReLU, 'VALID') -> flatten
              -> linear `output_size`;
  predictor = the same convolutions (leaky ReLU) -> fc 512 ReLU -> fc 512 ReLU -> linear `output_size`.
  'VALID' padding needs H, W >= 36 (84 gives a final 7x7x64 map).
* Vector inputs `[D]` (no counterpart in the paper, which only has Atari; our choice):
  target    = one leaky-ReLU dense layer per entry of `mlp_hidden_sizes` -> linear `output_size`;
  predictor = the same leaky-ReLU layers -> two ReLU layers of `mlp_hidden_sizes[-1]` units -> linear
              `output_size`. The two extra ReLU layers mirror the conv predictor's two fc512-ReLU
              layers: the predictor is given more capacity than the function it imitates, as in the paper.

Initialisation, as the paper's code: every kernel orthogonal with gain sqrt(2), every bias zero -- the
final linear layers included (`fc1r` and `fc1r_hat3_pred` use `init_scale=np.sqrt(2)`, not the 0.01 of
the policy head). A small-gain target output would shrink every intrinsic reward towards zero; with
gain sqrt(2) the target's features have a standard deviation of order one (about 1.5 on whitened
84x84 frames). Leaky ReLU is `tf.nn.leaky_relu` with its default slope 0.2, the function the paper's
code calls (Keras' `LeakyReLU` layer defaults to 0.3). The fc layers' ReLU is the code's `tf.nn.relu`.

Inputs are float32 and already normalised (running mean/std, clipped to [-5, 5]; see
`agents.learners.normalization.RunningMeanStd`): unlike the torsos, these networks do not scale uint8 frames,
and they reject integer inputs rather than silently feeding raw pixels to the target.
"""

import math
from typing import Sequence

import gin
import tensorflow as tf

from protege.runtime import errors

# The slope of tf.nn.leaky_relu's default, which the paper's code uses.
_LEAKY_RELU_ALPHA = 0.2
# The smallest image side the three 'VALID' convolutions accept: 36 -> 8 -> 3 -> 1.
MIN_IMAGE_SIDE = 36


def _leaky_relu(x):
  return tf.nn.leaky_relu(x, alpha=_LEAKY_RELU_ALPHA)


def _initializer():
  """A new orthogonal initializer with gain sqrt(2) (one per layer, see `networks.torsos`)."""
  return tf.keras.initializers.Orthogonal(gain=math.sqrt(2.0))


def _conv(filters, kernel_size, strides, name):
  return tf.keras.layers.Conv2D(filters, kernel_size, strides=strides, padding='valid',
                                activation=_leaky_relu, kernel_initializer=_initializer(),
                                bias_initializer='zeros', name=name)


def _dense(units, activation, name):
  return tf.keras.layers.Dense(units, activation=activation, kernel_initializer=_initializer(),
                               bias_initializer='zeros', name=name)


def _paper_convs():
  """The three convolutions shared by the conv target and predictor (leaky ReLU, 'VALID')."""
  return [
    _conv(32, 8, 4, name='conv_0'),
    _conv(64, 4, 2, name='conv_1'),
    _conv(64, 3, 1, name='conv_2'),
    tf.keras.layers.Flatten(name='flatten'),
  ]


def _checked_torso(class_name, input_spec, output_size, mlp_hidden_sizes) -> list:
  """The arguments checked (`_check_arguments`), then the layers before the heads: the paper's convolutions
  for an image spec, else leaky-ReLU dense layers of `mlp_hidden_sizes`."""
  _check_arguments(class_name, input_spec, output_size, mlp_hidden_sizes)
  if tf.TensorShape(input_spec.shape).rank == 3:
    return _paper_convs()
  return [_dense(units, _leaky_relu, name=f'hidden_{i}') for i, units in enumerate(mlp_hidden_sizes)]


def _check_arguments(class_name, input_spec, output_size, mlp_hidden_sizes):
  """Raises a one-line ValueError for an input spec or size the networks cannot use."""
  shape = tf.TensorShape(input_spec.shape)
  if shape.rank not in (1, 3):
    raise errors.ConfigError(
      f'{class_name} needs the spec of one RND input without the batch dimension, of rank 3 [H, W, C] '
      f'(conv) or rank 1 [D] (MLP), got shape {input_spec.shape}; flatten other observations to [D].'
    )
  if not shape.is_fully_defined():
    raise errors.ConfigError(f'{class_name} needs a fully known input shape, got {input_spec.shape}.')
  if shape.rank == 3 and min(shape[0], shape[1]) < MIN_IMAGE_SIDE:
    raise errors.ConfigError(
      f'{class_name}: the paper\'s convolutions need images of at least {MIN_IMAGE_SIDE}x{MIN_IMAGE_SIDE}, '
      f'got {shape.as_list()}; resize the frames or pass a flattened [D] input to get the MLP version.'
    )
  if not tf.as_dtype(input_spec.dtype).is_floating:
    raise ValueError(
      f'{class_name} takes normalised float32 inputs, got dtype {input_spec.dtype.name}; normalise the '
      'observation with RunningMeanStd.normalize first.'
    )
  if not isinstance(output_size, int) or output_size <= 0:
    raise errors.ConfigError(f'{class_name}.output_size must be a positive int, got {output_size!r}.')
  if (isinstance(mlp_hidden_sizes, (str, bytes)) or not mlp_hidden_sizes
      or not all(isinstance(units, int) and units > 0 for units in mlp_hidden_sizes)):
    raise errors.ConfigError(
      f'{class_name}.mlp_hidden_sizes must be a non-empty sequence of positive ints, '
      f'got {mlp_hidden_sizes!r}.'
    )


def _frozen_variables(next_creator, **kwargs):
  """A variable creator that makes every variable non-trainable (GradientTape will not watch it)."""
  kwargs['trainable'] = False
  return next_creator(**kwargs)


class _RNDNetwork(tf.keras.Model):
  """Shared plumbing: input checks, layer stacking, building the variables in the constructor."""

  def __init__(self, input_spec, output_size, layers, frozen, name):
    super().__init__(name=name, trainable=not frozen)
    # Not `_input_spec`: Keras keeps its own InputSpec under that name.
    self._rnd_input_spec = tf.TensorSpec(input_spec.shape, tf.float32, getattr(input_spec, 'name', None))
    self._output_size = output_size
    self._layers = layers
    dummy = tf.zeros([1] + self._rnd_input_spec.shape.as_list(), tf.float32)
    if frozen:
      with tf.variable_creator_scope(_frozen_variables):
        self(dummy)
    else:
      self(dummy)

  @property
  def rnd_input_spec(self) -> tf.TensorSpec:
    """The spec of one RND input without the batch dimension (float32)."""
    return self._rnd_input_spec

  @property
  def output_size(self) -> int:
    return self._output_size

  def call(self, inputs, training=False):
    """Maps normalised inputs `[B, *input_spec.shape]` (float) to features `[B, output_size]` float32."""
    inputs = tf.convert_to_tensor(inputs)
    if not inputs.dtype.is_floating:
      raise TypeError(
        f'{self.name} takes normalised float inputs, got dtype {inputs.dtype.name}; normalise the '
        'observation with RunningMeanStd.normalize first.'
      )
    expected = self._rnd_input_spec.shape
    if inputs.shape.rank is not None and not inputs.shape[1:].is_compatible_with(expected):
      raise ValueError(f'{self.name} expects inputs [B, {", ".join(map(str, expected.as_list()))}], '
                       f'got shape {inputs.shape}.')
    x = tf.cast(inputs, tf.float32)
    for layer in self._layers:
      x = layer(x, training=training)
    return x


@gin.configurable
class RNDTargetNetwork(_RNDNetwork):
  """The frozen random target f of RND (see the module docstring for the architecture and init).

  Every variable is created non-trainable and the model itself has `trainable=False`, so
  `trainable_variables` is empty: an optimiser given it can never move the target, and a
  `GradientTape` does not watch the target's weights.
  """

  def __init__(self, input_spec: tf.TensorSpec, output_size: int = 512,
               mlp_hidden_sizes: Sequence[int] = (256, 256), name: str = 'RNDTargetNetwork'):
    """Creates the layers and their variables.

    Args:
        input_spec: Shape (and float dtype) of one normalised RND input without the batch dimension:
            `[H, W, C]` selects the paper's conv network, `[D]` the MLP network.
        output_size: Features per input (512 in the paper). Default 512.
        mlp_hidden_sizes: Units of the leaky-ReLU hidden layers of the MLP version (ignored for
            images). Default (256, 256).
        name: Keras model name.

    Raises:
        ValueError: If the spec is not rank 1 or 3, not fully defined, not float, an image is
            smaller than 36x36, or a size is not a positive int.
    """
    layers = _checked_torso('RNDTargetNetwork', input_spec, output_size, mlp_hidden_sizes)
    layers.append(_dense(output_size, None, name='output'))
    super().__init__(input_spec, output_size, layers, frozen=True, name=name)


@gin.configurable
class RNDPredictorNetwork(_RNDNetwork):
  """The trained predictor f̂ of RND (see the module docstring for the architecture and init)."""

  def __init__(self, input_spec: tf.TensorSpec, output_size: int = 512,
               mlp_hidden_sizes: Sequence[int] = (256, 256), name: str = 'RNDPredictorNetwork'):
    """Creates the layers and their (trainable) variables.

    Args:
        input_spec: Shape (and float dtype) of one normalised RND input without the batch dimension:
            `[H, W, C]` selects the paper's conv network, `[D]` the MLP network.
        output_size: Features per input; must equal the target's (512 in the paper). Default 512.
        mlp_hidden_sizes: Units of the leaky-ReLU hidden layers of the MLP version, followed by two
            ReLU layers of `mlp_hidden_sizes[-1]` units (ignored for images). Default (256, 256).
        name: Keras model name.

    Raises:
        ValueError: If the spec is not rank 1 or 3, not fully defined, not float, an image is
            smaller than 36x36, or a size is not a positive int.
    """
    layers = _checked_torso('RNDPredictorNetwork', input_spec, output_size, mlp_hidden_sizes)
    # Images: the paper's fc1r_hat1_pred / fc1r_hat2_pred, 256 * enlargement 2.
    extra_units = 512 if tf.TensorShape(input_spec.shape).rank == 3 else mlp_hidden_sizes[-1]
    layers.append(_dense(extra_units, 'relu', name='extra_0'))
    layers.append(_dense(extra_units, 'relu', name='extra_1'))
    layers.append(_dense(output_size, None, name='output'))
    super().__init__(input_spec, output_size, layers, frozen=False, name=name)
