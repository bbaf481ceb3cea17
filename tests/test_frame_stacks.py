"""Frame stacks stored one frame per step: the rebuilt stacks are the environment's, bit for bit, and the
learners train on them exactly as on whole stacks."""

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.learners import ppo
from protege.agents.learners import rnd
from protege.agents.training import trainer as trainer_lib
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import torsos
from protege.replay import frame_stacks
from protege.replay import signatures

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)
ACTION_SPEC = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1, 'action')


def _reference_stacks(frames, frames_before, step_type, padding):
  """NumPy: the stacks `[T + 1, B, H, W, S]` an environment builds (see `replay.frame_stacks`)."""
  num_before = frames_before.shape[-1]
  stacks = np.zeros(frames.shape + (num_before + 1,), frames.dtype)
  for b in range(frames.shape[1]):
    history = [frames_before[b, ..., k] for k in range(num_before)]  # oldest first
    for t in range(frames.shape[0]):
      if step_type[t, b] == FIRST:
        pad = frames[t, b] if padding == 'reset' else np.zeros_like(frames[t, b])
        history = [pad] * num_before
      history = (history + [frames[t, b]])[-(num_before + 1):]
      stacks[t, b] = np.stack(history, axis=-1)
  return stacks


def _write_environment_items(env, sequence_length, num_items):
  """Steps `env` with random actions through a `SequenceWriter` into a table with the run's storage;
  returns the server, the address and the environment's own observations and step types."""
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  observation_spec = tensor_spec.from_spec(env.observation_spec())
  step_spec = {'observation': tf.TensorSpec(observation_spec.shape, observation_spec.dtype, 'observation'),
               'step_type': tf.TensorSpec([], tf.int32, 'step_type')}
  signature = signatures.sequence_signature(step_spec, sequence_length, env.batch_size,
                                            stored_frames=signatures.frame_storage(env))
  server = reverb_replay.start_server([reverb_replay.queue_table(
      signatures.on_policy_table(signature, max_size=num_items))])
  address = f'localhost:{server.port}'
  writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), 'trajectories', sequence_length)
  rng = np.random.default_rng(0)
  time_step = env.reset()
  observations, step_types = [], []
  for _ in range(num_items * sequence_length + 1):
    observations.append(time_step.observation.copy())
    step_types.append(time_step.step_type.copy())
    writer.append({'observation': time_step.observation, 'step_type': time_step.step_type})
    time_step = env.step(rng.integers(0, env.action_spec().maximum + 1, size=env.batch_size))
  writer.flush()
  writer.close()
  return server, address, np.stack(observations), np.stack(step_types)


@pytest.mark.parametrize('backend, padding', [('ale_vector', 'zeros'), ('gymnasium', 'reset')])
@pytest.mark.reverb
def test_rebuilt_stacks_are_the_environments_across_episode_and_sequence_boundaries(backend, padding):
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  # Episodes of 11 agent steps (44 frames) and items of 6 steps: resets fall inside items and on their
  # first rows; items overlap by one step.
  gin.parse_config([f"make_environment.atari_backend = '{backend}'",
                    'atari_options.max_num_frames_per_episode = 44'])
  env = suite.make_environment('ALE/Breakout-v5', num_envs=2, seed=3)
  T, items = 6, 5
  try:
    assert env.frame_stack_padding == padding
    server, address, observations, step_types = _write_environment_items(env, T, items)
  finally:
    env.close()
  try:
    dataset = iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch=1))
    inside = 0
    for k in range(items):
      batch = next(dataset)
      assert batch['observation'].shape == (T + 1, 2, 84, 84)  # one frame per step is stored
      assert batch[frame_stacks.frames_before_key(padding)].shape == (2, 84, 84, 3)
      expected = observations[k * T:(k + 1) * T + 1]
      np.testing.assert_array_equal(batch['step_type'].numpy(), step_types[k * T:(k + 1) * T + 1])
      inside += int(np.sum(batch['step_type'].numpy()[1:] == FIRST))
      rebuilt = frame_stacks.full_observations(batch).numpy()
      np.testing.assert_array_equal(rebuilt, expected)
      np.testing.assert_array_equal(
          _reference_stacks(batch['observation'].numpy(), batch[frame_stacks.frames_before_key(padding)].numpy(),
                            batch['step_type'].numpy(), padding), expected)
      # The other padding rule is wrong exactly where an episode restarts inside the item.
      other = 'reset' if padding == 'zeros' else 'zeros'
      swapped = dict(batch)
      swapped[frame_stacks.frames_before_key(other)] = swapped.pop(frame_stacks.frames_before_key(padding))
      if np.any(batch['step_type'].numpy() == FIRST):
        assert not np.array_equal(frame_stacks.full_observations(swapped).numpy(), expected)
      # Any subset of steps rebuilds to the same stacks (what a minibatch gathers).
      pieces = frame_stacks.prepare(batch)
      time = np.array([T, 0, 3, 1, 5], np.int32)
      column = np.array([1, 0, 1, 1, 0], np.int32)
      np.testing.assert_array_equal(frame_stacks.gather_stacks(pieces, time, column).numpy(),
                                    expected[time, column])
    assert inside >= 2  # episodes did restart inside items
  finally:
    server.stop()


@pytest.mark.reverb
def test_items_batched_together_keep_their_own_older_frames():
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  gin.parse_config(['atari_options.max_num_frames_per_episode = 44'])
  env = suite.make_environment('ALE/Breakout-v5', num_envs=2, seed=4)
  T = 5
  try:
    server, address, observations, _ = _write_environment_items(env, T, 4)
  finally:
    env.close()
  try:
    dataset = iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch=2))
    for k in (0, 2):
      batch = next(dataset)
      rebuilt = frame_stacks.full_observations(batch).numpy()
      expected = np.concatenate([observations[i * T:(i + 1) * T + 1] for i in (k, k + 1)], axis=1)
      np.testing.assert_array_equal(rebuilt, expected)
  finally:
    server.stop()


def test_storage_is_a_gin_option_and_only_for_frame_stacks():
  gin.parse_config(['atari_options.max_num_frames_per_episode = 44'])
  env = suite.make_environment('ALE/Breakout-v5', num_envs=1)
  cartpole = suite.make_environment('CartPole-v1', num_envs=1)
  try:
    assert signatures.frame_storage(env) == 'zeros'
    assert signatures.frame_storage(cartpole) is None
    gin.parse_config(['frame_storage.store_frames_once = False'])
    assert signatures.frame_storage(env) is None
  finally:
    env.close()
    cartpole.close()


# --- the learners on compact batches ----------------------------------------------------------------

T, B = 6, 4


def _batches(shape, seed=0):
  """The same synthetic batch with whole stacks and stored frame by frame (resets inside, and at row 0)."""
  rng = np.random.default_rng(seed)
  frames = rng.integers(0, 256, size=(T + 1, B) + shape[:2]).astype(np.uint8)
  before = rng.integers(0, 256, size=(B,) + shape).astype(np.uint8)[..., :-1]
  step_types = np.full((T + 1, B), MID, np.int32)
  step_types[0, 1] = FIRST
  step_types[2, 0], step_types[3, 0] = LAST, FIRST
  step_types[4, 2], step_types[5, 2] = LAST, FIRST
  common = {
      'step_type': step_types,
      'reward': rng.normal(size=(T + 1, B)).astype(np.float32),
      'discount': np.where(step_types == LAST, 0.0, 1.0).astype(np.float32),
      'action': rng.integers(0, 2, size=(T + 1, B)).astype(np.int64),
      'behaviour_logits': rng.normal(size=(T + 1, B, 2)).astype(np.float32),
      'behaviour_values': {'extrinsic': rng.normal(size=(T + 1, B)).astype(np.float32),
                           'intrinsic': rng.normal(size=(T + 1, B)).astype(np.float32)},
      'policy_version': np.zeros((T + 1, B), np.int64),
  }
  full = dict(common, observation=_reference_stacks(frames, before, step_types, 'zeros'))
  compact = dict(common, observation=frames, **{frame_stacks.frames_before_key('zeros'): before})
  return full, compact


def _network(spec, torso, core=None):
  tf.keras.utils.set_random_seed(7)
  net = actor_critic.ActorCriticNetwork(spec, ACTION_SPEC, torso_fn=torso, value_heads=('extrinsic', 'intrinsic'),
                                        core=core, core_size=8)
  net.create_variables()
  return net


def _with_core_state(batch, net):
  if tf.nest.flatten(net.state_spec):
    batch = dict(batch, core_state=tuple(np.zeros([T + 1, B] + s.shape.as_list(), np.float32)
                                         for s in tf.nest.flatten(net.state_spec)))
  return batch


def _dataset_fn(batch):
  return lambda context: tf.data.Dataset.from_tensors(batch).repeat()


# One minibatch: the update does not depend on the random order of its transitions.
_PPO = dict(num_epochs=2, num_minibatches=1, learning_rate=1e-2, max_grad_norm=None)


@pytest.mark.parametrize('core, microbatch_size', [(None, None), (None, 7), ('gru', None)])
def test_ppo_trains_on_stored_frames_exactly_as_on_stacks(core, microbatch_size):
  spec = tensor_spec.BoundedTensorSpec([5, 5, 4], tf.uint8, 0, 255, 'observation')
  full, compact = _batches((5, 5, 4))
  results = []
  for batch in (full, compact):
    net = _network(spec, lambda: torsos.MLPTorso((16,)), core)
    learner = ppo.PPOLearner(net, _dataset_fn(_with_core_state(batch, net)), microbatch_size=microbatch_size,
                                     **_PPO)
    metrics = learner.run()
    results.append(([v.numpy() for v in net.variables], metrics))
  for stacks_weights, frames_weights in zip(results[0][0], results[1][0]):
    np.testing.assert_allclose(frames_weights, stacks_weights, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(results[1][1]['loss'], results[0][1]['loss'], rtol=1e-5)
  assert any(not np.array_equal(w, v.numpy()) for w, v in zip(results[0][0], _network(
      spec, lambda: torsos.MLPTorso((16,)), core).variables))  # training moved the weights


def test_rnd_trains_on_stored_frames_exactly_as_on_stacks():
  spec = tensor_spec.BoundedTensorSpec([36, 36, 4], tf.uint8, 0, 255, 'observation')
  full, compact = _batches((36, 36, 4), seed=1)
  results = []
  for batch in (full, compact):
    net = _network(spec, lambda: torsos.NatureCNNTorso())
    learner = rnd.RNDLearner(
        net, _dataset_fn(batch), total_iterations=10, output_size=8, observation_normalization_steps=0,
        update_proportion=1.0, inner_learner_fn=lambda **kwargs: ppo.PPOLearner(**_PPO, **kwargs))
    metrics = learner.run()
    results.append((learner, [v.numpy() for v in net.variables + learner.predictor.variables], metrics))
  (stacks, stacks_weights, stacks_metrics), (frames, frames_weights, frames_metrics) = results
  for expected, actual in zip(stacks_weights, frames_weights):
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(frames.observation_normalizer.mean.numpy(), stacks.observation_normalizer.mean.numpy())
  for name in ('rnd/predictor_loss', 'rnd/intrinsic_reward_raw_mean', 'loss'):
    np.testing.assert_allclose(frames_metrics[name], stacks_metrics[name], rtol=1e-5)


def test_rnd_run_on_atari_stores_frames_once_and_trains(tmp_path):
  gin.parse_config(["make_environment.env_id = 'ALE/Breakout-v5'", 'make_environment.num_envs = 2',
                    'atari_options.max_num_frames_per_episode = 100',
                    'ActorCriticNetwork.torso_fn = @NatureCNNTorso',
                    "ActorCriticNetwork.value_heads = ('extrinsic', 'intrinsic')",
                    'RNDLearner.observation_normalization_steps = 4', 'PPOLearner.num_minibatches = 2',
                    'PPOLearner.microbatch_size = 5'])
  trainer = trainer_lib.Trainer(str(tmp_path), learner_fn=rnd.RNDLearner, total_env_steps=48, sequence_length=8,
                                eval_episodes=1, progress_interval_seconds=0.001)
  try:
    signature = trainer._collection.queue.signature
    assert signature['observation'].shape == (9, 2, 84, 84)
    assert signature[frame_stacks.frames_before_key('zeros')].shape == (2, 84, 84, 3)
    before = [v.numpy() for v in trainer.network.variables]
    while not trainer.finished:
      metrics = trainer.run_iteration()
  finally:
    trainer.close()
  summary = trainer.finish()
  assert summary['learner_iterations'] == 3
  assert all(np.isfinite(metrics[name]) for name in ('loss', 'rnd/predictor_loss', 'rnd/intrinsic_reward_mean'))
  assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, trainer.network.variables))
