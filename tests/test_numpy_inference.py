"""The NumPy forward pass of small MLP actor-critics equals TensorFlow's, and the actor uses it."""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

from protege.agents.training import actor as actor_lib
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import numpy_inference
from protege.networks import torsos


def _network(observation_spec, num_actions=3, **kwargs):
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, num_actions - 1)
  network = actor_critic.ActorCriticNetwork(observation_spec, action_spec, **kwargs)
  network.create_variables()
  return network


def _randomise(network, seed):
  rng = np.random.default_rng(seed)
  for variable in network.variables:  # non-zero biases too, so that a dropped bias would show
    variable.assign(rng.normal(0.0, 0.5, variable.shape).astype(np.float32))


@pytest.mark.parametrize('activation', ['tanh', 'relu'])
@pytest.mark.parametrize('separate_value_torso', [False, True])
def test_equals_tensorflow_on_float_observations(activation, separate_value_torso):
  spec = tensor_spec.TensorSpec([2, 3], tf.float32)  # flattened by the torso
  network = _network(spec, value_heads=('extrinsic', 'intrinsic'), separate_value_torso=separate_value_torso,
                     torso_fn=lambda: torsos.MLPTorso((16, 8), activation=activation))
  _randomise(network, 0)
  forward = numpy_inference.numpy_forward(network)
  assert forward is not None
  observation = np.random.default_rng(1).normal(size=[5, 2, 3]).astype(np.float32)
  logits, values = forward(observation)
  (expected_logits, expected_values), _ = network(observation)
  np.testing.assert_allclose(logits, expected_logits.numpy(), rtol=1e-5, atol=1e-5)
  assert sorted(values) == ['extrinsic', 'intrinsic']
  for name in values:
    assert values[name].shape == (5,)
    np.testing.assert_allclose(values[name], expected_values[name].numpy(), rtol=1e-5, atol=1e-5)


def test_uint8_observations_are_scaled_like_the_torso_and_refresh_reads_new_weights():
  network = _network(tensor_spec.TensorSpec([6], tf.uint8), torso_fn=lambda: torsos.MLPTorso((8,)))
  forward = numpy_inference.numpy_forward(network)
  observation = np.random.default_rng(2).integers(0, 256, [4, 6]).astype(np.uint8)
  _randomise(network, 3)
  stale, _ = forward(observation)
  forward.refresh()
  fresh, _ = forward(observation)
  (expected, _), _ = network(observation)
  np.testing.assert_allclose(fresh, expected.numpy(), rtol=1e-5, atol=1e-5)
  assert not np.allclose(stale, expected.numpy(), atol=1e-3)


@pytest.mark.parametrize('kwargs', [
    {'torso_fn': torsos.NatureCNNTorso},                                       # convolutions
    {'torso_fn': lambda: torsos.MLPTorso((8,)), 'core': 'lstm', 'core_size': 4},  # a recurrent core
    {'torso_fn': lambda: torsos.MLPTorso((8,), activation='gelu')},            # an activation it lacks
])
def test_unsupported_networks_get_none(kwargs):
  shape = [84, 84, 4] if kwargs['torso_fn'] is torsos.NatureCNNTorso else [4]
  network = _network(tensor_spec.TensorSpec(shape, tf.uint8 if len(shape) == 3 else tf.float32), **kwargs)
  assert numpy_inference.numpy_forward(network) is None


@pytest.mark.parametrize('enabled', [True, False])
def test_the_actor_acts_with_numpy_only_when_enabled_and_records_the_networks_logits(enabled):
  env = suite.make_environment('CartPole-v1', 3, seed=1)
  network = _network(tensor_spec.from_spec(env.observation_spec()), num_actions=2,
                     torso_fn=lambda: torsos.MLPTorso((8,)))
  _randomise(network, 4)
  recorded = []

  class Recorder:
    def append(self, step):
      recorded.append(step)
      return False

  actor = actor_lib.Actor(env, network, Recorder(), seed=0, numpy_inference_for_mlps=enabled)
  assert actor.uses_numpy_inference == enabled
  for seed in (5, 6):  # new weights between runs: the NumPy copy must see them
    recorded.clear()
    actor.run(5)
    assert len(recorded) == 5
    for step in recorded:
      (logits, values), _ = network(step['observation'])
      np.testing.assert_allclose(step['behaviour_logits'], logits.numpy(), rtol=1e-5, atol=1e-5)
      np.testing.assert_allclose(step['behaviour_values']['extrinsic'], values['extrinsic'].numpy(),
                                 rtol=1e-5, atol=1e-5)
      assert step['behaviour_logits'].dtype == np.float32
    _randomise(network, seed)
