"""The RND learner wrapper on in-memory batches: multi-head GAE, normalisers, predictor, replicas."""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.learners import ppo
from protege.agents.learners import rnd
from protege.agents.learners import rnd_losses
from protege.networks import actor_critic
from protege.networks import torsos

OBS_SPEC = tensor_spec.TensorSpec([3, 2], tf.float32, 'observation')
IMAGE_SPEC = tensor_spec.BoundedTensorSpec([36, 36, 2], tf.uint8, 0, 255, 'observation')
ACTION_SPEC = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1, 'action')
T, B = 6, 4
FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)


def _network(spec=OBS_SPEC, heads=('extrinsic', 'intrinsic'), core=None):
  tf.keras.utils.set_random_seed(3)
  torso = (lambda: torsos.MLPTorso((16,))) if spec.shape.rank < 3 or spec.shape[0] < 36 else (
      lambda: torsos.NatureCNNTorso())
  net = actor_critic.ActorCriticNetwork(spec, ACTION_SPEC, torso_fn=torso, value_heads=heads, core=core,
                                        core_size=8)
  net.create_variables()
  return net


def _batch(spec=OBS_SPEC, seed=0, step_types=None, net=None):
  rng = np.random.default_rng(seed)
  if spec.dtype == tf.uint8:
    observation = rng.integers(0, 256, size=(T + 1, B) + tuple(spec.shape.as_list())).astype(np.uint8)
  else:
    observation = rng.normal(size=(T + 1, B) + tuple(spec.shape.as_list())).astype(np.float32)
  action = rng.integers(0, 2, size=(T + 1, B)).astype(np.int64)
  if step_types is None:
    step_types = np.full((T + 1, B), MID, np.int32)
  batch = {
      'observation': observation,
      'step_type': step_types,
      'reward': rng.normal(size=(T + 1, B)).astype(np.float32),
      'discount': np.where(step_types == LAST, 0.0, 1.0).astype(np.float32),
      'action': action,
      'behaviour_logits': np.zeros((T + 1, B, 2), np.float32),
      'behaviour_values': {'extrinsic': rng.normal(size=(T + 1, B)).astype(np.float32),
                           'intrinsic': rng.normal(size=(T + 1, B)).astype(np.float32)},
      'policy_version': np.zeros((T + 1, B), np.int64),
  }
  if net is not None and tf.nest.flatten(net.state_spec):
    batch['core_state'] = tuple(np.zeros([T + 1, B] + s.shape.as_list(), np.float32)
                                for s in tf.nest.flatten(net.state_spec))
  return batch


def _dataset_fn(batches, replicas):
  def dataset_fn(context):
    del context
    columns = B // replicas
    elements = []
    for batch in batches:
      elements += [tf.nest.map_structure(lambda x, i=i: x[:, i * columns:(i + 1) * columns], batch)
                   for i in range(replicas)]
    return tf.data.Dataset.from_tensor_slices(tf.nest.map_structure(lambda *xs: np.stack(xs), *elements))
  return dataset_fn


def _rnd_learner(net, batches, strategy=None, **kwargs):
  strategy = strategy or tf.distribute.get_strategy()
  inner = lambda **inner_kwargs: ppo.PPOLearner(
      num_epochs=2, num_minibatches=2, learning_rate=1e-2, normalize_advantages=False,
      max_grad_norm=None, **inner_kwargs)
  defaults = dict(output_size=8, observation_normalization_steps=0, inner_learner_fn=inner,
                  target_fn=lambda spec, output_size: rnd.rnd_networks.RNDTargetNetwork(
                      spec, output_size=output_size, mlp_hidden_sizes=(16,)),
                  predictor_fn=lambda spec, output_size: rnd.rnd_networks.RNDPredictorNetwork(
                      spec, output_size=output_size, mlp_hidden_sizes=(16,)))
  defaults.update(kwargs)
  return rnd.RNDLearner(net, _dataset_fn(batches, strategy.num_replicas_in_sync), strategy,
                        total_iterations=10, **defaults)


def _gae_reference(rewards, discounts, values, bootstrap, lambdas):
  advantages = np.zeros_like(rewards)
  next_advantage = np.zeros_like(bootstrap)
  next_value = bootstrap
  for t in reversed(range(rewards.shape[0])):
    delta = rewards[t] + discounts[t] * next_value - values[t]
    next_advantage = delta + discounts[t] * lambdas[t] * next_advantage
    advantages[t] = next_advantage
    next_value = values[t]
  return advantages, advantages + values


def test_intrinsic_gae_crosses_episode_ends_and_extrinsic_does_not():
  net = _network()
  step_types = np.full((T + 1, B), MID, np.int32)
  step_types[2, :] = LAST   # episodes end at step 2; step 3 is the reset step
  step_types[3, :] = FIRST
  batch = _batch(step_types=step_types)
  batch['intrinsic_reward'] = np.random.default_rng(5).uniform(size=(T + 1, B)).astype(np.float32)
  learner = ppo.PPOLearner(net, None, total_iterations=1, discount=0.9, gae_lambda=0.8)
  learner.add_value_head('extrinsic', 'reward', 0.9, episodic=True, advantage_coef=2.0)
  learner.add_value_head('intrinsic', 'intrinsic_reward', 0.7, episodic=False, advantage_coef=1.0)
  targets = learner.compute_advantages(tf.nest.map_structure(tf.convert_to_tensor, batch))

  not_last = (step_types != LAST).astype(np.float32)
  ext_values, int_values = batch['behaviour_values']['extrinsic'], batch['behaviour_values']['intrinsic']
  ext_adv, ext_ret = _gae_reference(batch['reward'][1:], 0.9 * batch['discount'][1:], ext_values[:-1],
                                    ext_values[-1], 0.8 * not_last[1:])
  int_adv, int_ret = _gae_reference(batch['intrinsic_reward'][1:], np.full((T, B), 0.7, np.float32),
                                    int_values[:-1], int_values[-1], np.full((T, B), 0.8, np.float32))
  np.testing.assert_allclose(targets['returns']['extrinsic'], ext_ret, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(targets['returns']['intrinsic'], int_ret, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(targets['advantages'], 2.0 * ext_adv + int_adv, rtol=1e-5, atol=1e-5)
  # Before the episode end, the extrinsic advantage does not see the later episode; the intrinsic does.
  cut = dict(batch, reward=batch['reward'].copy(), intrinsic_reward=batch['intrinsic_reward'].copy())
  cut['reward'][5:] += 10.0
  cut['intrinsic_reward'][5:] += 10.0
  cut_targets = learner.compute_advantages(tf.nest.map_structure(tf.convert_to_tensor, cut))
  np.testing.assert_allclose(cut_targets['returns']['extrinsic'][:2], targets['returns']['extrinsic'][:2],
                             rtol=1e-6)
  assert np.all(cut_targets['returns']['intrinsic'][:2].numpy() > targets['returns']['intrinsic'][:2] + 0.1)
  # The reset transition trains the intrinsic value only.
  np.testing.assert_array_equal(targets['value_masks']['extrinsic'][2], np.zeros(B))
  np.testing.assert_array_equal(targets['value_masks']['intrinsic'][2], np.ones(B))
  np.testing.assert_array_equal(targets['mask'][2], np.zeros(B))


def test_network_without_an_intrinsic_head_is_rejected():
  with pytest.raises(ValueError, match="value head 'intrinsic'.*value_heads"):
    _rnd_learner(_network(heads=('extrinsic',)), [_batch()])


def test_run_trains_the_predictor_not_the_target_and_moves_the_normalisers():
  net = _network()
  batches = [_batch(seed=0), _batch(seed=1)]
  learner = _rnd_learner(net, batches)
  target_before = [v.numpy() for v in learner.target.variables]
  predictor_before = [v.numpy() for v in learner.predictor.variables]
  network_before = [v.numpy() for v in net.variables]
  # The intrinsic rewards of the first batch, computed here from the networks and the (fresh) statistics.
  next_inputs = batches[0]['observation'][1:].reshape(T, B, -1)
  normalizer = learner.observation_normalizer
  normalized = np.clip((next_inputs - normalizer.mean.numpy()) / np.sqrt(normalizer.var.numpy() + 1e-8),
                       -5, 5).astype(np.float32)
  flat = normalized.reshape(T * B, -1)
  raw = np.mean((learner.predictor(flat).numpy() - learner.target(flat).numpy()) ** 2, axis=-1).reshape(T, B)

  metrics = learner.run()

  for before, after in zip(target_before, learner.target.variables):
    np.testing.assert_array_equal(before, after.numpy())
  assert any(not np.array_equal(b, a.numpy()) for b, a in zip(predictor_before, learner.predictor.variables))
  assert any(not np.array_equal(b, a.numpy()) for b, a in zip(network_before, net.variables))
  # Observation statistics: the batch's new observations (rows 1..T), merged with the initial prior.
  np.testing.assert_allclose(normalizer.mean.numpy(), next_inputs.reshape(T * B, -1).mean(0), atol=1e-3)
  # The return filter ran over time per column, from zero.
  returns = np.zeros((T, B), np.float32)
  running = np.zeros(B, np.float32)
  for t in range(T):
    running = 0.99 * running + raw[t]
    returns[t] = running
  np.testing.assert_allclose(learner.intrinsic_return_filter.numpy(), running, rtol=1e-4)
  np.testing.assert_allclose(learner.intrinsic_return_normalizer.var.numpy(), returns.var(), rtol=1e-2)
  np.testing.assert_allclose(metrics['rnd/intrinsic_reward_raw_mean'], raw.mean(), rtol=1e-4)
  np.testing.assert_allclose(metrics['rnd/intrinsic_reward_mean'],
                             raw.mean() / np.sqrt(learner.intrinsic_return_normalizer.var.numpy() + 1e-8),
                             rtol=1e-4)
  for name in ('rnd/predictor_loss', 'rnd/intrinsic_reward_std', 'rnd/intrinsic_return_std',
               'value_loss_extrinsic', 'value_loss_intrinsic', 'explained_variance_intrinsic'):
    assert np.isfinite(metrics[name]), name
  # The filter carries on from where the first batch left it.
  state_after_first = learner.intrinsic_return_filter.numpy()
  learner.run()
  assert not np.allclose(learner.intrinsic_return_filter.numpy(), state_after_first)


def test_normalisers_and_filter_survive_a_checkpoint(tmp_path):
  net = _network()
  learner = _rnd_learner(net, [_batch(seed=0)])
  learner.run()
  path = tf.train.Checkpoint(**learner.checkpoint_items()).save(str(tmp_path / 'ckpt'))
  fresh = _rnd_learner(_network(), [_batch(seed=0)])
  tf.train.Checkpoint(**fresh.checkpoint_items()).restore(path).assert_existing_objects_matched()
  for name in ('observation_normalizer', 'intrinsic_return_normalizer'):
    for attribute in ('mean', 'var', 'count'):
      np.testing.assert_array_equal(getattr(getattr(fresh, name), attribute).numpy(),
                                    getattr(getattr(learner, name), attribute).numpy())
  np.testing.assert_array_equal(fresh.intrinsic_return_filter.numpy(), learner.intrinsic_return_filter.numpy())
  for a, b in zip(fresh.predictor.variables + fresh.target.variables,
                  learner.predictor.variables + learner.target.variables):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_image_observations_use_the_newest_frame():
  net = _network(IMAGE_SPEC)
  learner = _rnd_learner(net, [_batch(IMAGE_SPEC)])
  assert learner.observation_normalizer.mean.shape == (36, 36, 1)
  learner.update_observation_statistics(_batch(IMAGE_SPEC)['observation'][:, 0])
  frames = _batch(IMAGE_SPEC)['observation'][:, 0, ..., -1:].astype(np.float64)
  np.testing.assert_allclose(learner.observation_normalizer.mean.numpy(), frames.mean(0), rtol=1e-3)
  metrics = learner.run()
  assert np.isfinite(metrics['rnd/predictor_loss'])


def test_rgb_observations_use_the_whole_newest_frame():
  """frame_channels = 3: an RGB image (MiniGrid's pixels) is one frame; all three channels are the input."""
  rgb_spec = tensor_spec.BoundedTensorSpec([36, 36, 3], tf.uint8, 0, 255, 'observation')
  net = _network(rgb_spec)
  learner = _rnd_learner(net, [_batch(rgb_spec)], frame_channels=3)
  assert learner.observation_normalizer.mean.shape == (36, 36, 3)
  observations = _batch(rgb_spec, seed=1)['observation'][:, 0]
  learner.update_observation_statistics(observations)
  np.testing.assert_allclose(learner.observation_normalizer.mean.numpy(),
                             observations.astype(np.float64).mean(0), rtol=1e-3)
  assert np.isfinite(learner.run()['rnd/predictor_loss'])


@pytest.mark.parametrize('frame_channels', [2, 0, True])
def test_frame_channels_must_divide_the_channels(frame_channels):
  rgb_spec = tensor_spec.BoundedTensorSpec([36, 36, 3], tf.uint8, 0, 255, 'observation')
  with pytest.raises(ValueError, match=r'frame_channels must be a positive int dividing .* 3 channels'):
    _rnd_learner(_network(rgb_spec), [_batch(rgb_spec)], frame_channels=frame_channels)


def test_two_replicas_compute_the_normalisers_and_return_filter_of_one_device(mirrored_strategy):
  batches = [_batch(seed=0), _batch(seed=1)]
  one = _rnd_learner(_network(), batches)
  strategy = mirrored_strategy
  with strategy.scope():
    net = _network()
  two = _rnd_learner(net, batches, strategy)
  # Same random minibatch orders and predictor masks are not guaranteed across strategies, so compare
  # the parts that are deterministic: the normalisers and the return filter after the rewrite.
  for learner in (one, two):
    learner.run()
  np.testing.assert_allclose(two.observation_normalizer.mean.numpy(), one.observation_normalizer.mean.numpy(),
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(two.observation_normalizer.var.numpy(), one.observation_normalizer.var.numpy(),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(two.intrinsic_return_filter.numpy(), one.intrinsic_return_filter.numpy(),
                             rtol=1e-4, atol=1e-6)
  np.testing.assert_allclose(two.intrinsic_return_normalizer.var.numpy(),
                             one.intrinsic_return_normalizer.var.numpy(), rtol=1e-4)


def test_recurrent_policy_trains_under_rnd():
  net = _network(core='gru')
  before = [v.numpy() for v in net.variables]
  metrics = _rnd_learner(net, [_batch(net=net)]).run()
  assert np.isfinite(metrics['loss']) and np.isfinite(metrics['rnd/predictor_loss'])
  assert any(not np.array_equal(b, a.numpy()) for b, a in zip(before, net.variables))


def test_prediction_error_is_the_paper_bonus():
  predicted = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
  target = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
  np.testing.assert_allclose(rnd_losses.prediction_error(predicted, target), [2.5, 1.0])


def test_small_grids_go_whole_to_the_mlp_version():
  """MinAtar-sized maps (10x10xC) are too small for the paper's convolutions: every channel, flattened."""
  grid_spec = tf.TensorSpec([10, 10, 3], tf.float32, 'observation')
  net = _network(grid_spec)
  learner = _rnd_learner(net, [_batch(grid_spec)])
  assert learner.observation_normalizer.mean.shape == (300,)
  metrics = learner.run()
  assert np.isfinite(metrics['rnd/predictor_loss'])
