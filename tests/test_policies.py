"""Policy export with TF-Agents' PolicySaver: a SavedModel round trip gives identical outputs."""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.training import policy_export
from protege.networks import actor_critic
from protege.networks import torsos


@pytest.mark.parametrize('core', [None, 'lstm'])
def test_saved_policy_reproduces_network_outputs(core, tmp_path):
  observation_spec = tensor_spec.TensorSpec([5], tf.float32, 'observation')
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 2, 'action')
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec,
                                        torso_fn=lambda: torsos.MLPTorso((8,)), core=core, core_size=4,
                                        value_heads=('extrinsic', 'intrinsic'))
  net.create_variables()
  directory = policy_export.export_policy(net, ts.time_step_spec(observation_spec), action_spec,
                                          str(tmp_path / 'policy'))
  loaded = tf.saved_model.load(directory)
  observation = tf.constant(np.random.default_rng(0).normal(size=(4, 5)).astype(np.float32))
  time_step = ts.restart(observation, batch_size=4)
  state = loaded.get_initial_state(4)
  step = loaded.action(time_step, state)
  (logits, values), _ = net(observation, step_type=time_step.step_type,
                            network_state=net.get_initial_state(4))
  np.testing.assert_allclose(step.info['logits'].numpy(), logits.numpy(), rtol=1e-5, atol=1e-6)
  for head in ('extrinsic', 'intrinsic'):
    np.testing.assert_allclose(step.info['values'][head].numpy(), values[head].numpy(), rtol=1e-5, atol=1e-6)
  assert step.action.shape == (4,)
  assert not tf.io.gfile.exists(directory + '.tmp')


def test_greedy_export_takes_the_argmax(tmp_path):
  observation_spec = tensor_spec.TensorSpec([3], tf.float32, 'observation')
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 3, 'action')
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((8,)))
  net.create_variables()
  directory = policy_export.export_policy(net, ts.time_step_spec(observation_spec), action_spec,
                                          str(tmp_path / 'greedy'), greedy=True)
  loaded = tf.saved_model.load(directory)
  observation = tf.constant(np.random.default_rng(1).normal(size=(6, 3)).astype(np.float32))
  step = loaded.action(ts.restart(observation, batch_size=6))
  (logits, _), _ = net(observation)
  np.testing.assert_array_equal(step.action.numpy(), np.argmax(logits.numpy(), axis=-1))
