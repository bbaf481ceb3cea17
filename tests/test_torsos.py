"""Tests for networks/torsos.py: shapes, sizes, initialisation and uint8 scaling."""

import gin
import numpy as np
import pytest
import tensorflow as tf

from protege.networks import torsos


@pytest.fixture(autouse=True)
def _seed():
  """Fixed weights per test. (tests/conftest.py clears gin.)"""
  tf.random.set_seed(0)


def _frames(batch, seed=0):
  """Random uint8 Atari-like frames [batch, 84, 84, 4]."""
  return np.random.RandomState(seed).randint(0, 256, size=(batch, 84, 84, 4), dtype=np.uint8)


def _num_parameters(layer):
  return sum(int(np.prod(v.shape)) for v in layer.trainable_variables)


def test_mlp_torso_flattens_and_has_expected_sizes():
  torso = torsos.MLPTorso()
  features = torso(np.random.RandomState(0).randn(3, 4).astype(np.float32))
  assert features.shape == (3, 64)
  assert len(torso.trainable_variables) == 4  # 2 x (kernel, bias)
  assert _num_parameters(torso) == (4 * 64 + 64) + (64 * 64 + 64)

  # Non-batch dimensions are flattened: a (2, 3) observation feeds 6 inputs.
  torso = torsos.MLPTorso(layer_sizes=(8,), activation='relu')
  assert torso(tf.zeros((5, 2, 3))).shape == (5, 8)
  assert torso.trainable_variables[0].shape == (6, 8)


def test_nature_cnn_torso_shapes_and_parameter_count():
  torso = torsos.NatureCNNTorso()
  assert torso(_frames(2)).shape == (2, 512)
  assert len(torso.trainable_variables) == 8  # 3 convs + 1 dense, each kernel + bias
  # 84 -> (84 - 8) / 4 + 1 = 20 -> (20 - 4) / 2 + 1 = 9 -> 9 - 3 + 1 = 7.
  expected = (
    (8 * 8 * 4 * 32 + 32)  # conv 32@8x8/4 on 4 stacked frames
    + (4 * 4 * 32 * 64 + 64)  # conv 64@4x4/2
    + (3 * 3 * 64 * 64 + 64)  # conv 64@3x3/1
    + (7 * 7 * 64 * 512 + 512)
  )  # dense 512 on the flattened 7x7x64 map
  assert expected == 1_684_128
  assert _num_parameters(torso) == expected


def test_impala_resnet_torso_has_15_convs_and_expected_sizes():
  torso = torsos.ImpalaResNetTorso()
  assert torso(_frames(2)).shape == (2, 256)
  conv_kernels = [v for v in torso.trainable_variables if v.shape.rank == 4]
  assert len(conv_kernels) == 15  # 3 sections x (1 + 2 blocks x 2 convs)
  assert len(torso.trainable_variables) == 2 * 15 + 2

  def conv(c_in, c_out):
    return 3 * 3 * c_in * c_out + c_out

  expected = 0
  c_in = 4
  for c in (16, 32, 32):
    expected += conv(c_in, c) + 2 * 2 * conv(c, c)
    c_in = c
  # 'same' max-pools with stride 2: 84 -> 42 -> 21 -> 11.
  expected += 11 * 11 * 32 * 256 + 256
  assert _num_parameters(torso) == expected


def test_impala_resnet_torso_follows_its_arguments():
  torso = torsos.ImpalaResNetTorso(channels=(8, 4), num_blocks=1, output_size=32)
  assert torso(_frames(1)).shape == (1, 32)
  conv_kernels = [v for v in torso.trainable_variables if v.shape.rank == 4]
  assert len(conv_kernels) == 2 * (1 + 2)
  # Two stride-2 pools: 84 -> 42 -> 21, 4 channels at the end.
  assert torso.trainable_variables[-2].shape == (21 * 21 * 4, 32)


@pytest.mark.parametrize(
  'make_torso',
  [
    lambda: torsos.MLPTorso(layer_sizes=(16,)),
    torsos.NatureCNNTorso,
    lambda: torsos.ImpalaResNetTorso(channels=(8, 8), num_blocks=1, output_size=16),
  ],
)
def test_uint8_observations_are_scaled_by_1_over_255(make_torso):
  torso = make_torso()
  frames = _frames(2, seed=1)
  from_uint8 = torso(frames)
  from_float = torso(frames.astype(np.float32) / 255.0)
  # x * (1/255) and x / 255 differ in the last bit; convolutions amplify that slightly.
  np.testing.assert_allclose(from_uint8.numpy(), from_float.numpy(), rtol=1e-5, atol=1e-5)
  # Scaling matters: the unscaled frames give different features.
  assert not np.allclose(from_uint8.numpy(), torso(frames.astype(np.float32)).numpy())


def test_other_integer_observations_are_cast_without_scaling():
  torso = torsos.MLPTorso(layer_sizes=(8,))
  ints = np.array([[0, 1, 2, 3], [4, 5, 6, 7]], dtype=np.int32)
  np.testing.assert_allclose(torso(ints).numpy(), torso(ints.astype(np.float32)).numpy())


@pytest.mark.parametrize('make_torso', [torsos.MLPTorso, torsos.NatureCNNTorso, torsos.ImpalaResNetTorso])
def test_kernels_are_orthogonal_with_gain_sqrt2_and_biases_zero(make_torso):
  torso = make_torso()
  torso(_frames(1) if make_torso is not torsos.MLPTorso else tf.zeros((1, 4)))
  for variable in torso.trainable_variables:
    value = variable.numpy()
    if variable.shape.rank == 1:
      np.testing.assert_array_equal(value, 0.0, err_msg=variable.name)
      continue
    w = value.reshape(-1, value.shape[-1])  # [fan_in, fan_out]
    # Orthogonal columns (or rows, when fan_in < fan_out), each of squared norm 2.
    gram = w.T @ w if w.shape[0] >= w.shape[1] else w @ w.T
    np.testing.assert_allclose(gram, 2.0 * np.eye(len(gram)), atol=1e-4, err_msg=variable.name)


@pytest.mark.parametrize('make_torso', [torsos.NatureCNNTorso, torsos.ImpalaResNetTorso])
def test_image_torsos_reject_vector_observations(make_torso):
  with pytest.raises(ValueError, match=r'NHWC.*\(3, 4\)'):
    make_torso()(tf.zeros((3, 4)))


def test_invalid_arguments_raise_clear_errors():
  with pytest.raises(ValueError, match='MLPTorso.layer_sizes.*-1'):
    torsos.MLPTorso(layer_sizes=(64, -1))
  with pytest.raises(ValueError, match='ImpalaResNetTorso.channels'):
    torsos.ImpalaResNetTorso(channels=())
  with pytest.raises(ValueError, match='ImpalaResNetTorso.num_blocks.*-2'):
    torsos.ImpalaResNetTorso(num_blocks=-2)
  with pytest.raises(ValueError, match='ImpalaResNetTorso.output_size'):
    torsos.ImpalaResNetTorso(output_size=0)


def test_torsos_are_gin_configurable():
  gin.parse_config("""
        MLPTorso.layer_sizes = (32, 16)
        ImpalaResNetTorso.output_size = 64
    """)
  assert torsos.MLPTorso()(tf.zeros((2, 4))).shape == (2, 16)
  assert torsos.ImpalaResNetTorso()(_frames(1)).shape == (1, 64)
