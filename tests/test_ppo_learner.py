"""The PPO learner on in-memory batches, on one device and on two logical CPUs (MirroredStrategy)."""

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.learners import ppo
from protege.networks import actor_critic
from protege.networks import torsos

OBS_SPEC = tensor_spec.TensorSpec([3], tf.float32, 'observation')
ACTION_SPEC = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1, 'action')
T, B = 5, 4


def _network(core=None):
  tf.random.set_seed(7)
  net = actor_critic.ActorCriticNetwork(OBS_SPEC, ACTION_SPEC, torso_fn=lambda: torsos.MLPTorso((16,)),
                                        core=core, core_size=8)
  net.create_variables()
  return net


def _batch(net, seed=0, step_types=None):
  """A time-major [T+1, B] batch in the actor's step layout: action 0 is always rewarded."""
  rng = np.random.default_rng(seed)
  observation = rng.normal(size=(T + 1, B, 3)).astype(np.float32)
  action = rng.integers(0, 2, size=(T + 1, B)).astype(np.int64)
  reward = np.zeros((T + 1, B), np.float32)
  reward[1:] = (action[:-1] == 0).astype(np.float32)  # reward on arrival for the previous action
  if step_types is None:
    step_types = np.full((T + 1, B), ts.StepType.MID, np.int32)
  batch = {
      'observation': observation,
      'step_type': step_types,
      'reward': reward,
      'discount': np.ones((T + 1, B), np.float32),
      'action': action,
      'behaviour_logits': np.zeros((T + 1, B, 2), np.float32),
      'behaviour_values': {'extrinsic': np.zeros((T + 1, B), np.float32)},
      'policy_version': np.zeros((T + 1, B), np.int64),
  }
  if tf.nest.flatten(net.state_spec):
    # A tuple, not a list: tf.data would stack a list of arrays into one tensor.
    batch['core_state'] = tuple(np.zeros([T + 1, B] + s.shape.as_list(), np.float32)
                                for s in tf.nest.flatten(net.state_spec))
  return batch


def _learner(net, batch, strategy=None, **kwargs):
  strategy = strategy or tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync

  def dataset_fn(context):
    # One input pipeline; successive elements go to successive replicas, so replica i gets columns
    # [i*B/r, (i+1)*B/r): together they are the whole batch.
    del context
    columns = B // replicas
    per_replica = [tf.nest.map_structure(lambda x, i=i: x[:, i * columns:(i + 1) * columns], batch)
                   for i in range(replicas)]
    dataset = tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *xs: np.stack(xs), *per_replica))
    return dataset.repeat()

  defaults = dict(num_epochs=1, num_minibatches=1, learning_rate=1e-2, entropy_coef=0.0,
                  normalize_advantages=False, max_grad_norm=None)
  defaults.update(kwargs)
  return ppo.PPOLearner(net, dataset_fn, strategy, total_iterations=10, **defaults)


@pytest.mark.parametrize('core', [None, 'lstm'])
def test_rewarded_action_becomes_more_likely(core):
  net = _network(core)
  batch = _batch(net)
  observation = batch['observation'][0]
  state = net.get_initial_state(B)
  before = net(observation, step_type=tf.fill([B], ts.StepType.FIRST), network_state=state)[0][0]
  learner = _learner(net, batch, num_epochs=4, discount=0.0)  # advantage = immediate reward
  for _ in range(3):
    metrics = learner.run()
  after = net(observation, step_type=tf.fill([B], ts.StepType.FIRST), network_state=state)[0][0]
  p_before = tf.nn.softmax(before)[:, 0].numpy()
  p_after = tf.nn.softmax(after)[:, 0].numpy()
  assert np.all(p_after > p_before + 0.02), (p_before, p_after)
  assert int(learner.train_step.numpy()) == 3
  for name in ('loss', 'policy_loss', 'value_loss_extrinsic', 'entropy', 'clip_fraction', 'approx_kl'):
    assert np.isfinite(metrics[name].numpy()), name


def test_hyperparameter_variables_change_without_retracing():
  net = _network()
  learner = _learner(net, _batch(net))
  learner.run()
  traces = learner._compiled_run.experimental_get_tracing_count()
  learner.entropy_coef.assign(0.5)
  learner.learning_rate.assign(0.0)
  weights = [v.numpy() for v in net.trainable_variables]
  metrics = learner.run()
  assert learner._compiled_run.experimental_get_tracing_count() == traces
  # A zero learning rate read inside the compiled step leaves the weights untouched.
  for before, after in zip(weights, net.trainable_variables):
    np.testing.assert_array_equal(before, after.numpy())
  assert metrics['learning_rate'].numpy() == 0.0


def test_linear_schedule_decays_learning_rate():
  net = _network()
  learner = _learner(net, _batch(net), learning_rate=1.0, learning_rate_schedule='linear')
  rates = [float(learner.run()['learning_rate'].numpy()) for _ in range(3)]
  np.testing.assert_allclose(rates, [1.0, 0.9, 0.8], rtol=1e-6)


def test_transitions_from_last_steps_are_masked():
  net = _network()
  step_types = np.full((T + 1, B), ts.StepType.MID, np.int32)
  step_types[2, :] = ts.StepType.LAST
  step_types[3, :] = ts.StepType.FIRST
  learner = _learner(net, _batch(net, step_types=step_types))
  targets = learner.compute_advantages(tf.nest.map_structure(tf.convert_to_tensor,
                                                             _batch(net, step_types=step_types)))
  mask = targets['mask'].numpy()
  np.testing.assert_array_equal(mask[:, 0], [1, 1, 0, 1, 1])
  # No propagation across the reset: A_1 = δ_1 only (values are 0, so δ_1 = r_2).
  rewards = _batch(net, step_types=step_types)['reward']
  np.testing.assert_allclose(targets['advantages'].numpy()[1], rewards[2], rtol=1e-6)


def test_unknown_schedule_is_rejected():
  net = _network()
  with pytest.raises(ValueError, match="'cosine'"):
    _learner(net, _batch(net), learning_rate_schedule='cosine')


def test_two_replicas_match_one_device(mirrored_strategy):
  """MirroredStrategy over 2 logical CPUs gives the same update as one device on the whole batch."""
  batch, initial_weights = None, None
  results = []
  for strategy in (tf.distribute.get_strategy(), mirrored_strategy):
    with strategy.scope():
      net = _network()
    initial_weights = initial_weights or net.get_weights()
    net.set_weights(initial_weights)
    batch = batch or _batch(net)
    learner = _learner(net, batch, strategy=strategy, max_grad_norm=0.5)
    learner.run()
    assert strategy.num_replicas_in_sync in (1, 2)
    results.append([v.numpy() for v in net.trainable_variables])
  for one, two in zip(*results):
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('core,microbatch_size', [(None, 3), (None, 7), ('lstm', 3)])
def test_microbatches_give_the_whole_minibatch_update(core, microbatch_size):
  """Gradient accumulation over microbatches is the same step, with masked (reset) transitions, value
  clipping, advantage normalisation and uneven chunks (T·B = 20 transitions in chunks of 3 or 7; 4
  sequences in chunks of 3)."""
  step_types = np.full((T + 1, B), ts.StepType.MID, np.int32)
  step_types[2, :2] = ts.StepType.LAST
  step_types[3, :2] = ts.StepType.FIRST
  results, all_metrics, initial_weights = [], [], None
  for size in (None, microbatch_size):
    net = _network(core)
    initial_weights = initial_weights or net.get_weights()
    net.set_weights(initial_weights)
    batch = _batch(net, step_types=step_types)
    batch['behaviour_values']['extrinsic'] = np.random.default_rng(1).normal(size=(T + 1, B)).astype(
        np.float32)
    learner = _learner(net, batch, num_epochs=2, entropy_coef=0.01, normalize_advantages=True,
                       value_clip_epsilon=0.2, max_grad_norm=0.5, microbatch_size=size)
    all_metrics.append(learner.run())
    results.append([v.numpy() for v in net.trainable_variables])
  for whole, chunked in zip(*results):
    np.testing.assert_allclose(whole, chunked, rtol=1e-4, atol=1e-6)
  for name in ('loss', 'policy_loss', 'entropy'):
    np.testing.assert_allclose(all_metrics[0][name].numpy(), all_metrics[1][name].numpy(), rtol=1e-4,
                               atol=1e-6, err_msg=name)


def test_microbatch_size_must_be_positive():
  net = _network()
  with pytest.raises(ValueError, match='microbatch_size=0'):
    _learner(net, _batch(net), microbatch_size=0)
