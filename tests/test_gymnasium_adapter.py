"""Tests for envs.gymnasium_adapter on real gymnasium environments with fixed seeds."""

import gymnasium
import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from tf_agents.environments import utils as env_utils
from tf_agents.trajectories import time_step as ts

from protege.envs import gymnasium_adapter
from protege.envs.gymnasium_adapter import GymnasiumEnvironment, VectorGymnasiumEnvironment

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)


def _cartpole_vector(num_envs, **kwargs):
  return gymnasium.make_vec('CartPole-v1', num_envs, vectorization_mode='vector_entry_point',
                            **kwargs)


class _BadRewardEnv(gymnasium.Env):
  """Returns `bad_reward` on its third step, reward 1 otherwise."""

  observation_space = gymnasium.spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)
  action_space = gymnasium.spaces.Discrete(2)

  def __init__(self, bad_reward=float('nan')):
    self._bad_reward = bad_reward
    self._t = 0

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self._t = 0
    return np.zeros(2, np.float32), {}

  def step(self, action):
    self._t += 1
    reward = self._bad_reward if self._t == 3 else 1.0
    return np.zeros(2, np.float32), reward, False, False, {}


# --- Spec conversion -----------------------------------------------------------------------------


def test_discrete_space_becomes_scalar_int64_spec():
  spec = gymnasium_adapter.space_to_spec(gymnasium.spaces.Discrete(3), 'action')
  assert spec.shape == ()
  assert spec.dtype == np.int64
  assert (spec.minimum, spec.maximum, spec.name) == (0, 2, 'action')

  shifted = gymnasium_adapter.space_to_spec(gymnasium.spaces.Discrete(3, start=-1), 'action')
  assert (shifted.minimum, shifted.maximum) == (-1, 1)


def test_box_space_keeps_shape_dtype_and_bounds():
  box = gymnasium.spaces.Box(low=np.array([-1.0, 0.0], np.float32),
                             high=np.array([1.0, 2.0], np.float32),
                             dtype=np.float32)
  spec = gymnasium_adapter.space_to_spec(box, 'observation')
  assert spec.shape == (2,)
  assert spec.dtype == np.float32
  assert spec.name == 'observation'
  np.testing.assert_array_equal(spec.minimum, [-1.0, 0.0])
  np.testing.assert_array_equal(spec.maximum, [1.0, 2.0])

  image = gymnasium.spaces.Box(0, 255, shape=(84, 84, 4), dtype=np.uint8)
  image_spec = gymnasium_adapter.space_to_spec(image, 'observation')
  assert image_spec.dtype == np.uint8
  # Uniform bounds collapse to scalars.
  assert image_spec.minimum.shape == () and image_spec.maximum.shape == ()
  assert (int(image_spec.minimum), int(image_spec.maximum)) == (0, 255)


def test_unsupported_space_error_names_the_space():
  space = gymnasium.spaces.Dict({'a': gymnasium.spaces.Discrete(2)})
  with pytest.raises(TypeError, match=r"Unsupported gymnasium observation space Dict\("):
    gymnasium_adapter.space_to_spec(space, 'observation')


# --- Single environment --------------------------------------------------------------------------


@pytest.mark.parametrize('env_id', ['CartPole-v1', 'Pendulum-v1'])
def test_single_env_passes_validate_py_environment(env_id):
  # Pendulum has a Box action and only ends by truncation, so cap it to keep the test short.
  env = GymnasiumEnvironment(gymnasium.make(env_id, max_episode_steps=30), seed=0)
  env_utils.validate_py_environment(env, episodes=3)
  env.close()


def test_single_env_termination_then_reset():
  env = GymnasiumEnvironment(gymnasium.make('CartPole-v1'), seed=0)
  time_step = env.reset()
  assert time_step.step_type == FIRST
  steps = 0
  while not time_step.is_last():
    time_step = env.step(np.int64(1))  # Always push right: the pole falls within ~10 steps.
    steps += 1
  assert steps < 50
  assert time_step.discount == 0.0
  assert time_step.reward == 1.0
  assert env.step(np.int64(1)).step_type == FIRST


def test_single_env_truncation_keeps_discount_one():
  env = GymnasiumEnvironment(gymnasium.make('CartPole-v1', max_episode_steps=3), seed=0)
  env.reset()
  step_types = [int(env.step(np.int64(t % 2)).step_type) for t in range(3)]
  assert step_types == [MID, MID, LAST]
  assert env.current_time_step().discount == 1.0


def test_single_env_non_finite_reward_raises():
  env = GymnasiumEnvironment(_BadRewardEnv(float('inf')))
  env.reset()
  env.step(np.int64(0))
  env.step(np.int64(0))
  with pytest.raises(ValueError, match=r'_BadRewardEnv.*env index 0.*inf'):
    env.step(np.int64(0))


# --- Vector environment --------------------------------------------------------------------------


def _reference_time_steps(terminated, truncated, rewards):
  """Slow per-env reference of TF-Agents' step types, discounts and rewards.

  Arguments are the raw vector env's per-step outputs, `[T, N]`, starting after a reset.
  """
  num_steps, num_envs = terminated.shape
  step_types = np.zeros((num_steps, num_envs), np.int32)
  discounts = np.ones((num_steps, num_envs), np.float32)
  out_rewards = np.zeros((num_steps, num_envs), np.float32)
  for i in range(num_envs):
    previous_last = False
    for t in range(num_steps):
      if previous_last:
        step_types[t, i], discounts[t, i], out_rewards[t, i] = FIRST, 1.0, 0.0
        previous_last = False
        continue
      out_rewards[t, i] = rewards[t, i]
      if terminated[t, i]:
        step_types[t, i], discounts[t, i] = LAST, 0.0
      elif truncated[t, i]:
        step_types[t, i], discounts[t, i] = LAST, 1.0
      else:
        step_types[t, i], discounts[t, i] = MID, 1.0
      previous_last = step_types[t, i] == LAST
  return step_types, discounts, out_rewards


def _run_raw_and_adapted(make_vector_env, actions, seed):
  """Steps a raw vector env and an adapted twin with the same seed and actions."""
  raw = make_vector_env()
  raw.reset(seed=seed)
  raw_outputs = [raw.step(a)[1:4] for a in actions]
  rewards, terminated, truncated = (np.stack(x) for x in zip(*raw_outputs))

  env = VectorGymnasiumEnvironment(make_vector_env(), seed=seed)
  first = env.reset()
  time_steps = [env.step(a) for a in actions]
  return first, time_steps, (terminated, truncated, rewards), env


def test_vector_step_types_and_discounts_across_episode_ends():
  num_envs, num_steps = 3, 40
  actions = np.ones((num_steps, num_envs), np.int64)  # Push right: every env falls repeatedly.
  first, time_steps, raw, env = _run_raw_and_adapted(
      lambda: _cartpole_vector(num_envs), actions, seed=0)

  assert env.batched and env.batch_size == num_envs
  np.testing.assert_array_equal(first.step_type, [FIRST] * num_envs)
  np.testing.assert_array_equal(first.discount, np.ones(num_envs))
  np.testing.assert_array_equal(first.reward, np.zeros(num_envs))
  for time_step in [first] + time_steps:
    assert time_step.step_type.dtype == np.int32 and time_step.step_type.shape == (num_envs,)
    assert time_step.reward.dtype == np.float32 and time_step.reward.shape == (num_envs,)
    assert time_step.discount.dtype == np.float32 and time_step.discount.shape == (num_envs,)
    assert time_step.observation.shape == (num_envs, 4)
    assert time_step.observation.dtype == np.float32

  step_types = np.stack([t.step_type for t in time_steps])
  discounts = np.stack([t.discount for t in time_steps])
  rewards = np.stack([t.reward for t in time_steps])
  expected_step_types, expected_discounts, expected_rewards = _reference_time_steps(*raw)
  # The scenario must actually contain terminations followed by reset steps.
  assert (expected_step_types == LAST).sum() >= num_envs * 2
  np.testing.assert_array_equal(step_types, expected_step_types)
  np.testing.assert_array_equal(discounts, expected_discounts)
  np.testing.assert_array_equal(rewards, expected_rewards)
  # Every LAST here is a termination (discount 0) and is followed by FIRST (reward 0).
  last_t, last_i = np.nonzero(step_types[:-1] == LAST)
  assert np.all(discounts[last_t, last_i] == 0.0)
  np.testing.assert_array_equal(step_types[last_t + 1, last_i], FIRST)
  np.testing.assert_array_equal(rewards[last_t + 1, last_i], 0.0)
  np.testing.assert_array_equal(discounts[last_t + 1, last_i], 1.0)
  assert env.current_time_step() is time_steps[-1]


@pytest.mark.parametrize('mode', ['sync', 'vector_entry_point'])
def test_vector_truncation_gives_last_with_discount_one(mode):
  num_envs, limit = 2, 4
  vector_env = gymnasium.make_vec('CartPole-v1', num_envs, vectorization_mode=mode,
                                  max_episode_steps=limit)
  env = VectorGymnasiumEnvironment(vector_env, seed=0)
  env.reset()
  # Alternating pushes keep the pole up far longer than 4 steps, so only the time limit ends it.
  time_steps = [env.step(np.full(num_envs, t % 2, np.int64)) for t in range(limit + 2)]
  step_types = np.stack([t.step_type for t in time_steps])
  np.testing.assert_array_equal(step_types[:, 0], [MID, MID, MID, LAST, FIRST, MID])
  np.testing.assert_array_equal(step_types[:, 1], step_types[:, 0])
  np.testing.assert_array_equal(time_steps[limit - 1].discount, np.ones(num_envs))
  returns, lengths = env.pop_finished_episodes()
  np.testing.assert_array_equal(lengths, [limit, limit])
  np.testing.assert_array_equal(returns, [limit, limit])


def test_pop_finished_episodes_matches_independent_count():
  num_envs, num_steps = 4, 300
  rng = np.random.default_rng(7)
  actions = rng.integers(0, 2, size=(num_steps, num_envs)).astype(np.int64)
  # Rewards of -1 at termination (Sutton & Barto's variant) make returns differ from lengths.
  make = lambda: _cartpole_vector(num_envs, sutton_barto_reward=True, max_episode_steps=40)
  _, _, (terminated, truncated, rewards), env = _run_raw_and_adapted(make, actions, seed=3)

  # Independent count from the raw env's outputs, in order of completion (time, then env index).
  expected_returns, expected_lengths = [], []
  running_return, running_length = np.zeros(num_envs), np.zeros(num_envs, np.int64)
  resetting = np.zeros(num_envs, bool)
  for t in range(num_steps):
    for i in range(num_envs):
      if resetting[i]:
        resetting[i] = False
        continue
      running_return[i] += rewards[t, i]
      running_length[i] += 1
      if terminated[t, i] or truncated[t, i]:
        expected_returns.append(running_return[i])
        expected_lengths.append(running_length[i])
        running_return[i], running_length[i], resetting[i] = 0.0, 0, True

  returns, lengths = env.pop_finished_episodes()
  assert len(expected_returns) > 10
  assert np.any(np.asarray(expected_returns) != np.asarray(expected_lengths))
  np.testing.assert_allclose(returns, expected_returns)
  np.testing.assert_array_equal(lengths, expected_lengths)
  assert returns.dtype == np.float64 and lengths.dtype == np.int64
  # Popping clears them.
  empty_returns, empty_lengths = env.pop_finished_episodes()
  assert empty_returns.size == 0 and empty_lengths.size == 0


def test_non_finite_reward_raises_with_env_id_index_and_value():
  vector_env = SyncVectorEnv([lambda: _BadRewardEnv(1.0), lambda: _BadRewardEnv(float('nan'))],
                             autoreset_mode=AutoresetMode.NEXT_STEP)
  env = VectorGymnasiumEnvironment(vector_env, env_id='BadReward-v0')
  env.reset()
  actions = np.zeros(2, np.int64)
  env.step(actions)
  env.step(actions)
  with pytest.raises(ValueError, match=r"'BadReward-v0' \(env index 1\).*nan"):
    env.step(actions)


def test_rejects_autoreset_modes_other_than_next_step():
  vector_env = SyncVectorEnv([lambda: gymnasium.make('CartPole-v1')],
                             autoreset_mode=AutoresetMode.SAME_STEP)
  with pytest.raises(ValueError, match='SameStep.*NEXT_STEP'):
    VectorGymnasiumEnvironment(vector_env)


def test_rejects_actions_of_the_wrong_batch_size():
  env = VectorGymnasiumEnvironment(_cartpole_vector(3), seed=0)
  env.reset()
  with pytest.raises(ValueError, match=r'shape \[3, \.\.\.\].*\(2,\)'):
    env.step(np.zeros(2, np.int64))


def test_same_seed_same_observations_and_other_seed_differs():
  num_envs, num_steps = 4, 60
  actions = np.random.default_rng(0).integers(0, 2, size=(num_steps, num_envs))

  def observations(seed):
    env = VectorGymnasiumEnvironment(_cartpole_vector(num_envs), seed=seed)
    result = [env.reset().observation]
    result += [env.step(a).observation for a in actions]
    return np.stack(result)

  np.testing.assert_array_equal(observations(5), observations(5))
  assert not np.allclose(observations(5), observations(6))


def test_metadata_of_non_atari_env():
  env = VectorGymnasiumEnvironment(_cartpole_vector(2))
  assert env.env_id == 'CartPole-v1'
  assert env.frames_per_step == 1
  assert env.observation_spec().shape == (4,)  # Per env: no batch dimension.
  assert env.action_spec().maximum == 1
  env.close()
