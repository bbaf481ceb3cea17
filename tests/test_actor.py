"""The actor on a real CartPole vector env writing to a real Reverb server; its weight pulls and its action
sampling, which write nothing, with an in-process queue's writer."""

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.training import actor as actor_lib
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import torsos
from protege.replay import local_queue
from protege.replay import signatures

T, N = 8, 3


def _env_and_network(core=None):
  """CartPole on `N` envs, a network for it, and the signature of the items an actor of both writes."""
  env = suite.make_environment('CartPole-v1', N, seed=1)
  observation_spec = tensor_spec.from_spec(env.observation_spec())
  action_spec = tensor_spec.from_spec(env.action_spec())
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec,
                                        torso_fn=lambda: torsos.MLPTorso((8,)), core=core, core_size=4)
  net.create_variables()
  spec = actor_lib.step_spec(observation_spec, action_spec, net)
  return env, net, signatures.sequence_signature(spec, T, N)


def _setup(core=None):
  """`_env_and_network`, a Reverb server with their trajectory table, its address and a writer to it."""
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  env, net, signature = _env_and_network(core)
  server = reverb_replay.start_server([reverb_replay.queue_table(signatures.on_policy_table(signature, max_size=10))])
  address = f'localhost:{server.port}'
  writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), 'trajectories', T)
  return env, net, server, address, writer


def _queue_writer(signature):
  """A writer to an in-process queue, for the tests whose actor writes nothing (an actor only holds its
  writer until it runs)."""
  return local_queue.SequenceWriter(local_queue.TrajectoryQueue(signature, 10), T)


@pytest.mark.parametrize('core', [None, 'gru'])
@pytest.mark.reverb
def test_actor_writes_consistent_sequences(core):
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  env, net, server, address, writer = _setup(core)
  try:
    actor = actor_lib.Actor(env, net, writer, seed=3)
    actor.pull_weights(net.variables, version=7)
    # 3 items: T + 1 steps for the first, T for each further one. CartPole episodes end within ~60
    # random steps, so episode boundaries appear in the data.
    items = actor.run(T + 1) + actor.run(2 * T)
    writer.flush()
    assert items == 3
    assert actor.env_steps == (3 * T + 1) * N
    batch = next(iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch=3)))
    step_type = batch['step_type'].numpy()
    assert step_type.shape == (T + 1, 3 * N)
    assert np.all(step_type[0, :N] == ts.StepType.FIRST)  # the first step after reset
    # After a LAST step always comes a FIRST step with reward 0 and discount 1.
    after_last = np.roll(step_type == ts.StepType.LAST, 1, axis=0)[1:]
    assert np.all(step_type[1:][after_last] == ts.StepType.FIRST)
    assert np.all(batch['reward'].numpy()[1:][after_last] == 0)
    # Behaviour logits are the network's on the stored observations.
    if core is None:
      (logits, values), _ = net(batch['observation'][0])
      np.testing.assert_allclose(batch['behaviour_logits'][0].numpy(), logits.numpy(), rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(batch['behaviour_values']['extrinsic'][0].numpy(),
                                 values['extrinsic'].numpy(), rtol=1e-5, atol=1e-6)
    else:
      assert 'core_state' in batch
    assert np.all(batch['policy_version'].numpy() == 7)
    assert set(np.unique(batch['action'].numpy())) <= {0, 1}
  finally:
    server.stop()


def test_pull_weights_copies_and_rejects_other_architectures():
  env, net, signature = _env_and_network()
  writer = _queue_writer(signature)
  actor = actor_lib.Actor(env, net, writer)
  other = actor_critic.ActorCriticNetwork(net.input_tensor_spec, tensor_spec.BoundedTensorSpec(
      [], tf.int64, 0, 1), torso_fn=lambda: torsos.MLPTorso((8,)))
  other.create_variables()
  actor.pull_weights(other.variables, version=1)
  for a, b in zip(net.variables, other.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())
  bigger = actor_critic.ActorCriticNetwork(net.input_tensor_spec, tensor_spec.BoundedTensorSpec(
      [], tf.int64, 0, 1), torso_fn=lambda: torsos.MLPTorso((8, 8)))
  bigger.create_variables()
  with pytest.raises(ValueError, match='not the same architecture'):
    actor_lib.Actor(env, net, writer).pull_weights(bigger.variables, version=2)


def test_sampling_follows_the_policy_and_greedy_takes_the_argmax():
  env, net, signature = _env_and_network()
  writer = _queue_writer(signature)
  logits = np.log(np.array([[0.7, 0.3], [0.1, 0.9]], np.float32))
  logits = np.tile(logits, (5000, 1))  # rows alternate between the two distributions
  sampled = actor_lib.Actor(env, net, writer, seed=0)._sample(logits)
  # 5,000 draws per row: the standard error of a frequency is <= 0.0071, so 0.03 is > 4 sigma.
  np.testing.assert_allclose([np.mean(sampled[0::2] == 0), np.mean(sampled[1::2] == 1)],
                             [0.7, 0.9], atol=0.03)
  again = actor_lib.Actor(env, net, writer, seed=0)._sample(logits)
  np.testing.assert_array_equal(sampled, again)  # The seed fixes the draws.
  greedy = actor_lib.Actor(env, net, writer, greedy=True)._sample(logits)
  np.testing.assert_array_equal(greedy, np.tile([0, 1], 5000))


@pytest.mark.reverb
def test_a_two_game_actor_records_each_columns_task():
  """Multi-task environments (two MinAtar games): every step carries its environment's task id."""
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  gin.bind_parameter('minatar_options.pad_channels_to', 10)
  env = suite.make_environment('MinAtar/Breakout-v0+MinAtar/SpaceInvaders-v0', 4, seed=0)
  assert actor_lib.is_multi_task(env)
  observation_spec = tensor_spec.from_spec(env.observation_spec())
  action_spec = tensor_spec.from_spec(env.action_spec())
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((8,)))
  net.create_variables()
  spec = actor_lib.step_spec(observation_spec, action_spec, net, multi_task=True)
  server = reverb_replay.start_server([reverb_replay.queue_table(signatures.on_policy_table(
      signatures.sequence_signature(spec, T, 4), max_size=10))])
  address = f'localhost:{server.port}'
  writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), 'trajectories', T)
  try:
    actor_lib.Actor(env, net, writer).run(T + 1)
    writer.flush()
    batch = next(iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch=1)))
    np.testing.assert_array_equal(batch['task_id'].numpy(), np.tile([0, 0, 1, 1], (T + 1, 1)))
  finally:
    server.stop()
  assert not actor_lib.is_multi_task(suite.make_environment('CartPole-v1', 2, seed=0))
