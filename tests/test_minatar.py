"""Tests for MinAtar in the suite (envs/minatar.py, envs/suite.py): real MinAtar games, fixed seeds."""

import re

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.agents.training import actor as actor_lib
from protege.agents.training import components
from protege.agents.training import evaluation
from protege.binaries import common
from protege.envs import gymnasium_adapter
from protege.envs import minatar
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import torsos

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)
TWO_GAMES = 'MinAtar/Breakout-v0+MinAtar/SpaceInvaders-v0'


def _rollout(env, num_steps, seed=0):
  """Observations, rewards and step types of `num_steps` random-action steps after reset, stacked."""
  rng = np.random.default_rng(seed)
  time_step = env.reset()
  observations, rewards, step_types = [time_step.observation], [time_step.reward], [time_step.step_type]
  for _ in range(num_steps):
    time_step = env.step(rng.integers(0, 6, env.batch_size))
    observations.append(time_step.observation)
    rewards.append(time_step.reward)
    step_types.append(time_step.step_type)
  return np.stack(observations), np.stack(rewards), np.stack(step_types)


def test_minatar_options_defaults_are_minatars_own():
  assert minatar.minatar_options() == dict(sticky_action_prob=0.1, difficulty_ramping=True,
                                           pad_channels_to=None, max_episode_steps=None)


def test_breakout_specs_dtypes_and_options_reach_the_game():
  gin.bind_parameter('minatar_options.sticky_action_prob', 0.25)
  gin.bind_parameter('minatar_options.difficulty_ramping', False)
  env = suite.make_environment('MinAtar/Breakout-v0', num_envs=3, seed=0)
  assert env.env_id == 'MinAtar/Breakout-v0'
  assert env.batch_size == 3
  assert env.frames_per_step == 1
  spec = env.observation_spec()
  assert spec.shape == (10, 10, 4) and spec.dtype == np.float32  # Breakout's 4 channels, float {0, 1}
  assert (spec.minimum, spec.maximum) == (0.0, 1.0)
  assert (env.action_spec().minimum, env.action_spec().maximum) == (0, 5)  # '-v0': all six actions
  np.testing.assert_array_equal(env.task_ids, [0, 0, 0])
  game = env.vector_env.envs[0].unwrapped.game
  assert game.sticky_action_prob == 0.25
  assert env.vector_env.envs[0].spec.kwargs['difficulty_ramping'] is False  # Breakout has no ramp to test
  observations, _, step_types = _rollout(env, 5)
  assert observations.shape == (6, 3, 10, 10, 4) and observations.dtype == np.float32
  assert set(np.unique(observations)) <= {0.0, 1.0}
  assert observations[:, :, :, :, 3].sum() > 0  # the bricks are there
  np.testing.assert_array_equal(step_types[0], [FIRST] * 3)
  env.close()


def test_minimal_action_set_and_channel_counts_per_game():
  gin.bind_parameter('minatar_options.difficulty_ramping', False)
  env = suite.make_environment('MinAtar/SpaceInvaders-v1', num_envs=1)
  assert env.vector_env.envs[0].unwrapped.game.env.ramping is False
  assert env.observation_spec().shape == (10, 10, 6)
  assert env.action_spec().maximum == 3  # Space Invaders' minimal set: no-op, left, right, fire
  env.close()


def test_same_seed_same_episodes_other_seed_others():
  def run(seed):
    env = suite.make_environment('MinAtar/Breakout-v0', num_envs=4, seed=seed)
    try:
      return _rollout(env, 60)
    finally:
      env.close()

  first, again, other = run(3), run(3), run(4)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a, b)
  assert not np.array_equal(first[0], other[0])
  assert (first[2] == LAST).any()  # random play loses balls within 60 steps: resets are covered too


def test_episode_returns_are_game_scores():
  env = suite.make_environment('MinAtar/Breakout-v0', num_envs=4, seed=0)
  _, rewards, step_types = _rollout(env, 300)
  returns, lengths = env.pop_finished_episodes()
  assert returns.size == (step_types == LAST).sum() > 0
  assert returns.sum() <= rewards.sum()  # unfinished episodes are not reported
  assert set(np.unique(rewards)) <= {0.0, 1.0}  # one point per brick
  assert (lengths > 0).all()
  env.close()


def test_max_episode_steps_truncates_with_discount_one():
  gin.bind_parameter('minatar_options.max_episode_steps', 3)
  env = suite.make_environment('MinAtar/Freeway-v0', num_envs=2, seed=0)  # Freeway cannot lose early
  env.reset()
  for _ in range(2):
    assert (env.step(np.zeros(2, np.int64)).step_type == MID).all()
  time_step = env.step(np.zeros(2, np.int64))
  np.testing.assert_array_equal(time_step.step_type, [LAST, LAST])
  np.testing.assert_array_equal(time_step.discount, [1.0, 1.0])
  env.close()


def test_padded_channels_are_zero_and_the_game_channels_unchanged():
  plain = suite.make_environment('MinAtar/Breakout-v0', num_envs=2, seed=5)
  gin.bind_parameter('minatar_options.pad_channels_to', 10)
  padded = suite.make_environment('MinAtar/Breakout-v0', num_envs=2, seed=5)
  assert padded.observation_spec().shape == (10, 10, 10)
  plain_observations, _, _ = _rollout(plain, 20)
  padded_observations, _, _ = _rollout(padded, 20)
  np.testing.assert_array_equal(padded_observations[..., :4], plain_observations)
  assert not padded_observations[..., 4:].any()
  plain.close()
  padded.close()


def test_padding_below_the_game_channels_is_a_clear_error():
  gin.bind_parameter('minatar_options.pad_channels_to', 5)
  with pytest.raises(ValueError, match=r'pad_channels_to=5 is below the 6 channels'):
    suite.make_environment('MinAtar/SpaceInvaders-v0', num_envs=1)


def test_two_games_split_the_envs_and_report_task_ids():
  gin.bind_parameter('minatar_options.pad_channels_to', 10)
  env = suite.make_environment(TWO_GAMES, num_envs=6, seed=0)
  assert env.env_id == TWO_GAMES
  assert env.observation_spec().shape == (10, 10, 10)
  np.testing.assert_array_equal(env.task_ids, [0, 0, 0, 1, 1, 1])
  assert env.task_ids.dtype == np.int32
  games = [e.unwrapped.game.game_name() for e in env.vector_env.envs]
  assert games == ['breakout'] * 3 + ['space_invaders'] * 3
  observations, _, _ = _rollout(env, 10)
  # Breakout uses channels 0-3 only, Space Invaders 0-5.
  assert not observations[:, :3, ..., 4:].any()
  assert observations[:, 3:, ..., 4:6].any()
  env.close()


def test_task_layout_blocks():
  np.testing.assert_array_equal(minatar.task_layout(8, 2), [0, 0, 0, 0, 1, 1, 1, 1])
  np.testing.assert_array_equal(minatar.task_layout(5, 2), [0, 0, 0, 1, 1])
  np.testing.assert_array_equal(minatar.task_layout(3, 3), [0, 1, 2])
  with pytest.raises(ValueError, match='2 games need at least 2 environments'):
    minatar.task_layout(1, 2)


def test_adapter_rejects_task_ids_of_the_wrong_length():
  vector_env, _ = minatar.make_vector_env('MinAtar/Breakout-v0', 3)
  with pytest.raises(ValueError, match=r'task_ids \[0, 1\] .* one int per environment \(3\)'):
    gymnasium_adapter.VectorGymnasiumEnvironment(vector_env, task_ids=[0, 1])
  vector_env.close()


def test_other_environments_report_task_zero():
  env = suite.make_environment('CartPole-v1', num_envs=3)
  np.testing.assert_array_equal(env.task_ids, [0, 0, 0])
  env.close()


@pytest.mark.parametrize('env_id, bindings, message', [
    ('MinAtar/Pong-v0', {}, r"Unknown environment id 'MinAtar/Pong-v0'; did you mean"),
    ('MinAtar/Breakout-v0+CartPole-v1', {}, r"joins \['CartPole-v1'\], which are not MinAtar ids"),
    (TWO_GAMES, {}, r'different channel counts .* set minatar_options.pad_channels_to = 6'),
    ('MinAtar/Breakout-v1+MinAtar/SpaceInvaders-v1', {'minatar_options.pad_channels_to': 10},
     r"different numbers of actions .* use the '-v0' ids"),
])
def test_bad_ids_and_options_are_one_line_errors(env_id, bindings, message):
  for name, value in bindings.items():
    gin.bind_parameter(name, value)
  with pytest.raises(ValueError) as error:
    suite.make_environment(env_id, num_envs=2)
  assert re.search(message, str(error.value).splitlines()[0])  # the first line says it all


def test_env_kwargs_are_rejected_for_minatar():
  with pytest.raises(ValueError, match='configure the games with minatar_options'):
    suite.make_environment('MinAtar/Breakout-v0', num_envs=1, env_kwargs={'sticky_action_prob': 0.0})


def test_shipped_gin_files_build_their_environment():
  for path in ('ppo_minatar_breakout.gin', 'ppo_minatar_space_invaders.gin'):
    gin.clear_config()
    common.parse_gin([path], [])
    env = suite.make_environment(num_envs=2)
    assert env.env_id.startswith('MinAtar/')
    assert env.observation_spec().shape == (10, 10, 10)
    env.close()


def test_actor_critic_network_acts_on_minatar_observations():
  """The gin files' conv torso takes the float observations; the actor collects a batch with it."""
  gin.bind_parameter('minatar_options.pad_channels_to', 10)
  env = suite.make_environment(TWO_GAMES, num_envs=4, seed=0)

  def torso():
    return torsos.ImpalaResNetTorso(channels=(16,), num_blocks=0, output_size=128)

  network = components.make_network(
      lambda observation_spec, action_spec: actor_critic.ActorCriticNetwork(
          observation_spec, action_spec, torso_fn=torso), env)

  class Writer:
    def __init__(self):
      self.steps = []

    def append(self, step):
      self.steps.append(step)
      return False

  writer = Writer()
  actor = actor_lib.Actor(env, network, writer, seed=0)
  actor.run(8)
  observations = np.stack([step['observation'] for step in writer.steps])
  assert observations.shape == (8, 4, 10, 10, 10) and observations.dtype == np.float32
  logits = np.stack([step['behaviour_logits'] for step in writer.steps])
  assert logits.shape == (8, 4, 6) and np.isfinite(logits).all()
  # The network sees the observations as they are (float32 in {0, 1}, no 1/255 scaling).
  (logits, _), _ = network(tf.constant(observations[0]), step_type=tf.zeros([4], tf.int32), network_state=())
  assert logits.shape == (4, 6)
  env.close()


def test_evaluation_of_two_games_reports_each_games_own_episodes():
  """`evaluate` on two games gives each game's figures under its id, and they are the episodes the same
  network plays in that game alone (the same seeds: env i of the joined env is seeded `seed + i`)."""
  gin.bind_parameter('minatar_options.pad_channels_to', 10)
  env = suite.make_environment(TWO_GAMES, num_envs=2, seed=0)
  network = components.make_network(
      lambda observation_spec, action_spec: actor_critic.ActorCriticNetwork(
          observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((16,))), env)
  env.close()
  for k, variable in enumerate(network.variables):  # weights far from the initialiser's: varied play
    variable.assign(tf.random.stateless_normal(variable.shape, seed=[5, k]) * 0.5)
  result = evaluation.evaluate(network, TWO_GAMES, num_episodes=6, seed=11, greedy=True)
  assert sorted(result['tasks']) == ['MinAtar/Breakout-v0', 'MinAtar/SpaceInvaders-v0']
  assert [task['episodes'] for task in result['tasks'].values()] == [3, 3]
  alone = {'MinAtar/Breakout-v0': evaluation.evaluate(network, 'MinAtar/Breakout-v0', 3, seed=11, greedy=True),
           'MinAtar/SpaceInvaders-v0': evaluation.evaluate(network, 'MinAtar/SpaceInvaders-v0', 3, seed=14,
                                                           greedy=True)}
  for game, task in result['tasks'].items():
    assert 'tasks' not in alone[game]
    assert task['return_mean'] == pytest.approx(alone[game]['return_mean'])
    assert task['return_std'] == pytest.approx(alone[game]['return_std'])
  assert result['return_mean'] == pytest.approx(np.mean([task['return_mean'] for task in result['tasks'].values()]))
  assert result['tasks']['MinAtar/Breakout-v0']['return_std'] > 0  # varied episodes, not a comparison of zeros


def test_evaluation_task_names_fall_back_to_indices():
  assert evaluation.task_names('MinAtar/Breakout-v0+MinAtar/Asterix-v0', 2) == ['MinAtar/Breakout-v0',
                                                                              'MinAtar/Asterix-v0']
  assert evaluation.task_names('SomeMultiTask-v0', 3) == ['task_0', 'task_1', 'task_2']
