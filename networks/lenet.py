"""LeNet-5 and LeNet-5-half: the teacher and student classifiers of the data-free distillation benchmarks.

DAFL (Chen et al., "Data-Free Learning of Student Networks", ICCV 2019, arXiv 1904.01186, section 4.1) and
the Generative Adversarial Simulator (Raiman 2020, arXiv 2011.11472; docs/data_free.md) distil a LeNet-5
teacher into a LeNet-5-half student on MNIST: the student has half the filters and units of every layer.

    input [B, 28, 28, 1]
    conv 6@5x5 'same' -> ReLU -> max-pool 2x2          -> [B, 14, 14, 6]
    conv 16@5x5 'valid' -> ReLU -> max-pool 2x2        -> [B, 5, 5, 16]
    conv 120@5x5 'valid' -> ReLU -> flatten            -> [B, 120]
    dense 84 -> ReLU  (the 'features' layer)           -> [B, 84]
    dense num_classes (the 'logits' layer)             -> [B, num_classes]

LeNet-5-half: 3, 8, 60, 42 (width 0.5). The first convolution pads 28x28 digits as LeNet-5's 32x32 input
would be (DAFL resizes MNIST to 32x32 instead; the layers after it are the same). Inputs are float pixels
as the caller scales them (the benchmarks use [0, 1]). Keras' default initialisation (Glorot uniform
kernels, zero biases), as the reference implementations' framework defaults.

The models are functional Keras models, so `feature_model` can expose the 'features' layer: DAFL's
activation loss reads the teacher's penultimate features.
"""

from typing import Sequence

import gin
import tensorflow as tf

from protege.runtime import errors

# LeNet-5's filters and units, input to output: conv1, conv2, conv3, dense.
LENET5_WIDTHS = (6, 16, 120, 84)
FEATURES_LAYER = 'features'
LOGITS_LAYER = 'logits'


def _check_shape(input_shape: Sequence[int]):
  if len(input_shape) != 3 or any(not isinstance(d, int) or d <= 0 for d in input_shape):
    raise errors.ConfigError('LeNet takes images [height, width, channels], got '
                             f'input_shape={input_shape!r}; MNIST is (28, 28, 1).')
  if input_shape[0] < 20 or input_shape[1] < 20:
    raise errors.ConfigError('LeNet needs images of at least 20x20 pixels (two 5x5 valid convolutions after '
                             f'two poolings), got input_shape={input_shape!r}.')


@gin.configurable
def lenet5(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10, width: float = 1.0,
           name: str = 'lenet5') -> tf.keras.Model:
  """A LeNet-5 classifier mapping images `[B, H, W, C]` to logits `[B, num_classes]`.

  Args:
    input_shape: `(height, width, channels)` of one image. Default (28, 28, 1), MNIST.
    num_classes: Width of the logits. Default 10.
    width: Multiplier of every layer's filters and units (rounded, at least 1). Default 1.0, LeNet-5;
      0.5 is LeNet-5-half (3, 8, 60, 42).
    name: Model name.

  Returns:
    A functional `tf.keras.Model` whose penultimate layer is named 'features' and last 'logits'.

  Raises:
    ValueError: If `input_shape` is not an image shape of at least 20x20, or `width`/`num_classes` is not
      positive.
  """
  input_shape = tuple(input_shape)
  _check_shape(input_shape)
  if not width > 0:
    raise errors.ConfigError(f'lenet5.width must be positive (1.0 LeNet-5, 0.5 LeNet-5-half), got {width!r}.')
  if not isinstance(num_classes, int) or num_classes < 2:
    raise errors.ConfigError(f'lenet5.num_classes must be an int >= 2, got {num_classes!r}.')
  conv1, conv2, conv3, dense = (max(1, int(round(units * width))) for units in LENET5_WIDTHS)
  inputs = tf.keras.Input(shape=input_shape, dtype=tf.float32, name='image')
  x = tf.keras.layers.Conv2D(conv1, 5, padding='same', activation='relu', name='conv1')(inputs)
  x = tf.keras.layers.MaxPool2D(2, name='pool1')(x)
  x = tf.keras.layers.Conv2D(conv2, 5, padding='valid', activation='relu', name='conv2')(x)
  x = tf.keras.layers.MaxPool2D(2, name='pool2')(x)
  x = tf.keras.layers.Conv2D(conv3, 5, padding='valid', activation='relu', name='conv3')(x)
  x = tf.keras.layers.Flatten(name='flatten')(x)
  features = tf.keras.layers.Dense(dense, activation='relu', name=FEATURES_LAYER)(x)
  logits = tf.keras.layers.Dense(num_classes, name=LOGITS_LAYER)(features)
  return tf.keras.Model(inputs, logits, name=name)


@gin.configurable
def lenet5_half(input_shape: Sequence[int] = (28, 28, 1), num_classes: int = 10,
                name: str = 'lenet5_half') -> tf.keras.Model:
  """LeNet-5-half (3, 8, 60, 42): `lenet5(width=0.5)`, DAFL's MNIST student.

  Args:
    input_shape: one image, `[H, W, C]` (MNIST's `(28, 28, 1)` by default).
    num_classes: the logits' width.
    name: the Keras model's name.
  """
  return lenet5(input_shape=input_shape, num_classes=num_classes, width=0.5, name=name)


def feature_model(model: tf.keras.Model, layer_name: str = FEATURES_LAYER) -> tf.keras.Model:
  """A model sharing `model`'s weights that maps its input to the output of `layer_name`, `[B, F]`.

  Raises:
    ValueError: If `model` has no layer `layer_name` (it must be a functional or Sequential model).
  """
  try:
    layer = model.get_layer(layer_name)
  except ValueError:
    names = [layer.name for layer in model.layers]
    raise errors.ConfigError(f'model {model.name!r} has no layer {layer_name!r} (its layers: {names}); name '
                             'the penultimate layer or pass its name.') from None
  return tf.keras.Model(model.inputs, layer.output, name=f'{model.name}_{layer_name}')
