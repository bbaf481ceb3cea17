"""RND's target and predictor networks: architecture, initialisation, a frozen target, clear errors."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from protege.agents.learners import rnd_losses
from protege.networks import rnd

IMAGE_SPEC = tf.TensorSpec([84, 84, 1], tf.float32)
VECTOR_SPEC = tf.TensorSpec([7], tf.float32)

# Hand-counted parameters of the paper's conv networks on one 84x84 frame (final map 7x7x64 = 3136).
CONVS = (8 * 8 * 1 * 32 + 32) + (4 * 4 * 32 * 64 + 64) + (3 * 3 * 64 * 64 + 64)
TARGET_PARAMS = CONVS + 3136 * 512 + 512
PREDICTOR_PARAMS = CONVS + (3136 * 512 + 512) + (512 * 512 + 512) + (512 * 512 + 512)


def _leaky_relu(x):
  return np.where(x > 0, x, 0.2 * x)


def _weights(network):
  return {v.name.split('/', 1)[1]: v.numpy().astype(np.float64) for v in network.variables}


def test_conv_networks_match_the_paper():
  target = rnd.RNDTargetNetwork(IMAGE_SPEC)
  predictor = rnd.RNDPredictorNetwork(IMAGE_SPEC)
  assert len(target.variables) == 8  # 3 convs + 1 linear, kernel and bias each
  assert len(predictor.variables) == 12  # 3 convs + 2 fc512 + 1 linear
  assert target.count_params() == TARGET_PARAMS
  assert predictor.count_params() == PREDICTOR_PARAMS
  shapes = {name: tuple(v.shape) for name, v in _weights(predictor).items()}
  assert shapes['conv_0/kernel:0'] == (8, 8, 1, 32)
  assert shapes['conv_1/kernel:0'] == (4, 4, 32, 64)
  assert shapes['conv_2/kernel:0'] == (3, 3, 64, 64)
  assert shapes['extra_0/kernel:0'] == (3136, 512)
  assert shapes['extra_1/kernel:0'] == (512, 512)
  assert shapes['output/kernel:0'] == (512, 512)
  inputs = tf.random.normal([3, 84, 84, 1], seed=0)
  for network in (target, predictor):
    outputs = network(inputs)
    assert outputs.shape == (3, 512) and outputs.dtype == tf.float32


def test_output_size_and_channels():
  target = rnd.RNDTargetNetwork(tf.TensorSpec([36, 40, 2], tf.float32), output_size=16)
  assert target(tf.zeros([2, 36, 40, 2])).shape == (2, 16)  # 36 is the smallest side 'VALID' allows


def test_mlp_networks_compute_the_documented_functions():
  target = rnd.RNDTargetNetwork(VECTOR_SPEC, output_size=5, mlp_hidden_sizes=(16, 8))
  predictor = rnd.RNDPredictorNetwork(VECTOR_SPEC, output_size=5, mlp_hidden_sizes=(16, 8))
  assert len(target.variables) == 6 and len(predictor.variables) == 10
  x = np.random.default_rng(0).normal(size=(4, 7))
  w = _weights(target)
  hidden = _leaky_relu(_leaky_relu(x @ w['hidden_0/kernel:0'] + w['hidden_0/bias:0']) @ w['hidden_1/kernel:0']
                       + w['hidden_1/bias:0'])
  np.testing.assert_allclose(target(x.astype(np.float32)), hidden @ w['output/kernel:0'] + w['output/bias:0'],
                             rtol=1e-5, atol=1e-5)
  w = _weights(predictor)
  assert w['extra_0/kernel:0'].shape == (8, 8) and w['extra_1/kernel:0'].shape == (8, 8)
  h = _leaky_relu(_leaky_relu(x @ w['hidden_0/kernel:0'] + w['hidden_0/bias:0']) @ w['hidden_1/kernel:0']
                  + w['hidden_1/bias:0'])
  h = np.maximum(h @ w['extra_0/kernel:0'] + w['extra_0/bias:0'], 0.0)
  h = np.maximum(h @ w['extra_1/kernel:0'] + w['extra_1/bias:0'], 0.0)
  np.testing.assert_allclose(predictor(x.astype(np.float32)), h @ w['output/kernel:0'] + w['output/bias:0'],
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('spec', [IMAGE_SPEC, VECTOR_SPEC], ids=['conv', 'mlp'])
def test_orthogonal_gain_sqrt2_and_zero_biases(spec):
  for network in (rnd.RNDTargetNetwork(spec), rnd.RNDPredictorNetwork(spec)):
    for name, value in _weights(network).items():
      if name.endswith('bias:0'):
        np.testing.assert_array_equal(value, 0.0)
        continue
      matrix = value.reshape(-1, value.shape[-1])  # baselines' ortho_init flattens conv kernels this way
      gram = matrix.T @ matrix if matrix.shape[0] >= matrix.shape[1] else matrix @ matrix.T
      np.testing.assert_allclose(gram, 2.0 * np.eye(gram.shape[0]), atol=1e-4, err_msg=name)


@pytest.mark.parametrize('spec', [IMAGE_SPEC, VECTOR_SPEC], ids=['conv', 'mlp'])
def test_target_is_frozen_and_predictor_trainable(spec):
  target, predictor = rnd.RNDTargetNetwork(spec), rnd.RNDPredictorNetwork(spec)
  assert not target.trainable and target.trainable_variables == []
  assert len(target.non_trainable_variables) == len(target.variables) > 0
  assert not any(v.trainable for v in target.variables)
  assert predictor.trainable and len(predictor.trainable_variables) == len(predictor.variables)
  # A tape does not even watch the target's weights.
  with tf.GradientTape() as tape:
    outputs = target(tf.zeros([1] + spec.shape.as_list()))
  assert tape.watched_variables() == ()
  assert outputs.shape == (1, 512)


def test_adam_on_the_predictor_loss_leaves_the_target_bit_identical():
  spec = tf.TensorSpec([12], tf.float32)
  target = rnd.RNDTargetNetwork(spec, output_size=8, mlp_hidden_sizes=(32,))
  predictor = rnd.RNDPredictorNetwork(spec, output_size=8, mlp_hidden_sizes=(32,))
  target_before = [v.numpy().copy() for v in target.variables]
  predictor_before = [v.numpy().copy() for v in predictor.variables]
  optimizer = tf.keras.optimizers.Adam(1e-3)
  inputs = tf.random.normal([64, 12], seed=1)
  mask = tf.ones([64])

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = rnd_losses.predictor_loss(predictor(inputs), target(inputs), mask)
    variables = predictor.trainable_variables
    optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
    return loss

  losses = [float(step()) for _ in range(20)]
  assert losses[-1] < losses[0]
  for before, after in zip(target_before, target.variables):
    np.testing.assert_array_equal(after.numpy(), before)
  changed = [not np.array_equal(after.numpy(), before) for before, after in zip(predictor_before,
                                                                                  predictor.variables)]
  assert all(changed)


def test_conv_target_stays_frozen_under_adam():
  target, predictor = rnd.RNDTargetNetwork(IMAGE_SPEC), rnd.RNDPredictorNetwork(IMAGE_SPEC)
  target_before = [v.numpy().copy() for v in target.variables]
  optimizer = tf.keras.optimizers.Adam(1e-4)
  inputs = tf.random.normal([4, 84, 84, 1], seed=2)
  for _ in range(2):
    with tf.GradientTape() as tape:
      loss = rnd_losses.predictor_loss(predictor(inputs), target(inputs), tf.ones([4]))
    optimizer.apply_gradients(zip(tape.gradient(loss, predictor.trainable_variables),
                                  predictor.trainable_variables))
  for before, after in zip(target_before, target.variables):
    np.testing.assert_array_equal(after.numpy(), before)


def test_variables_are_mirrored_under_a_strategy(mirrored_strategy):
  strategy = mirrored_strategy
  with strategy.scope():
    target = rnd.RNDTargetNetwork(VECTOR_SPEC, output_size=4, mlp_hidden_sizes=(8,))
    predictor = rnd.RNDPredictorNetwork(VECTOR_SPEC, output_size=4, mlp_hidden_sizes=(8,))
  assert all(isinstance(v, tf.distribute.DistributedValues) for v in target.variables + predictor.variables)
  assert target.trainable_variables == [] and len(predictor.trainable_variables) == 8


def test_gin_configures_the_hidden_sizes():
  gin.parse_config(['RNDTargetNetwork.mlp_hidden_sizes = (3,)',
                    'RNDPredictorNetwork.mlp_hidden_sizes = (5,)'])
  target, predictor = rnd.RNDTargetNetwork(VECTOR_SPEC, output_size=2), rnd.RNDPredictorNetwork(VECTOR_SPEC)
  assert _weights(target)['hidden_0/kernel:0'].shape == (7, 3)
  assert _weights(predictor)['extra_1/kernel:0'].shape == (5, 5)


@pytest.mark.parametrize('shape, dtype, message', [
    ([], tf.float32, 'rank'),
    ([4, 3], tf.float32, 'rank'),
    ([2, 84, 84, 1], tf.float32, 'rank'),
    ([None], tf.float32, 'fully known'),
    ([35, 84, 1], tf.float32, 'at least 36x36'),
    ([84, 84, 1], tf.uint8, 'float32'),
])
def test_bad_input_spec_raises(shape, dtype, message):
  for network_class in (rnd.RNDTargetNetwork, rnd.RNDPredictorNetwork):
    with pytest.raises(ValueError, match=message):
      network_class(tf.TensorSpec(shape, dtype))


@pytest.mark.parametrize('kwargs', [dict(output_size=0), dict(mlp_hidden_sizes=()),
                                    dict(mlp_hidden_sizes=(4, 0))])
def test_bad_sizes_raise(kwargs):
  with pytest.raises(ValueError, match='positive int'):
    rnd.RNDPredictorNetwork(VECTOR_SPEC, **kwargs)


def test_bad_inputs_to_call_raise():
  target = rnd.RNDTargetNetwork(VECTOR_SPEC, output_size=4, mlp_hidden_sizes=(8,))
  with pytest.raises(TypeError, match='normalise'):
    target(tf.zeros([2, 7], tf.uint8))
  with pytest.raises(ValueError, match=r'\[B, 7\]'):
    target(tf.zeros([2, 6]))
