"""Tests for envs.deep_sea: stepped side by side with a scalar reference of bsuite 0.3.6's DeepSea rules."""

import warnings

import gin
import gymnasium
import numpy as np
import pytest
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from tf_agents.trajectories import time_step as ts

from protege.envs import deep_sea
from protege.envs import suite

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)


class _BsuiteDeepSea:
  """One bsuite 0.3.6 `DeepSea` (bsuite/environments/deep_sea.py), in bsuite's own notation.

  `_reset`, `_step` and `_get_observation` are bsuite's, line for line, without dm_env: `_step` returns
  `(reward, observation, terminated)`. `rng` plays bsuite's `self._rng` (it needs `randn()` and `rand()`).
  """

  def __init__(self, size, deterministic, unscaled_move_cost, action_mapping, rng):
    self._size = size
    self._deterministic = deterministic
    self._unscaled_move_cost = unscaled_move_cost
    self._action_mapping = action_mapping
    self._rng = rng
    self._column = 0
    self._row = 0
    self._bad_episode = False
    self._reset()

  def _get_observation(self):
    obs = np.zeros(shape=(self._size, self._size), dtype=np.float32)
    if self._row >= self._size:  # End of episode null observation
      return obs
    obs[self._row, self._column] = 1.
    return obs

  def _reset(self):
    self._row = 0
    self._column = 0
    self._bad_episode = False
    return self._get_observation()

  def _step(self, action):
    reward = 0.
    action_right = action == self._action_mapping[self._row, self._column]

    # Reward calculation
    if self._column == self._size - 1 and action_right:
      reward += 1.
    if not self._deterministic:  # Noisy rewards on the 'end' of chain.
      if self._row == self._size - 1 and self._column in [0, self._size - 1]:
        reward += self._rng.randn()

    # Transition dynamics
    if action_right:
      if self._rng.rand() > 1 / self._size or self._deterministic:
        self._column = np.clip(self._column + 1, 0, self._size - 1)
      reward -= self._unscaled_move_cost / self._size
    else:
      if self._row == self._column:  # You were on the right path and went wrong
        self._bad_episode = True
      self._column = np.clip(self._column - 1, 0, self._size - 1)
    self._row += 1

    return reward, self._get_observation(), self._row == self._size


class _Draws:
  """bsuite's `_rng` for one environment and one step: hands out given `randn()` and `rand()` values.

  NaN until set: the deterministic version calls `rand()` but ignores it (`rand() > 1/N or deterministic`),
  while a NaN reaching a stochastic reward would fail the comparison.
  """

  def __init__(self):
    self.normal = np.nan
    self.uniform = np.nan

  def randn(self):
    return self.normal

  def rand(self):
    return self.uniform


class _NextStepReference:
  """`num_envs` scalar `_BsuiteDeepSea`s with gymnasium's NEXT_STEP autoreset, one Python step at a time."""

  def __init__(self, num_envs, size, deterministic, unscaled_move_cost, action_mapping):
    self.draws = [_Draws() for _ in range(num_envs)]
    self.envs = [_BsuiteDeepSea(size, deterministic, unscaled_move_cost, action_mapping, draws)
                 for draws in self.draws]
    self.needs_reset = [False] * num_envs

  def reset(self):
    self.needs_reset = [False] * len(self.envs)
    return np.stack([env._reset() for env in self.envs])

  def right_actions(self):
    """The action that moves each environment right (any action for one awaiting its reset)."""
    return np.array([env._action_mapping[min(env._row, env._size - 1), env._column] for env in self.envs])

  def step(self, actions, normal=None, uniform=None):
    observations, rewards, terminations = [], [], []
    for i, (env, action) in enumerate(zip(self.envs, actions)):
      if normal is not None:
        self.draws[i].normal, self.draws[i].uniform = normal[i], uniform[i]
      if self.needs_reset[i]:
        observation, reward, terminated = env._reset(), 0.0, False
      else:
        reward, observation, terminated = env._step(int(action))
      self.needs_reset[i] = terminated
      observations.append(observation)
      rewards.append(reward)
      terminations.append(terminated)
    bad_episodes = np.array([env._bad_episode for env in self.envs])
    return np.stack(observations), np.array(rewards), np.array(terminations), bad_episodes


def _bsuite_mapping(size, mapping_seed):
  """bsuite's `self._mapping_rng.binomial(1, 0.5, [size, size])` with `RandomState(mapping_seed)`."""
  return np.random.RandomState(mapping_seed).binomial(1, 0.5, [size, size])


def _actions_towards_right(right_actions, probability_right, rng):
  """Takes each environment's right action with `probability_right`, its left action otherwise."""
  return np.where(rng.random(right_actions.shape) < probability_right, right_actions, 1 - right_actions)


def _assert_same_step(vector_result, reference_result):
  observation, reward, terminated, truncated, info = vector_result
  expected_observation, expected_reward, expected_terminated, expected_bad_episode = reference_result
  np.testing.assert_array_equal(observation, expected_observation)
  assert observation.dtype == np.float32
  np.testing.assert_array_equal(reward, expected_reward)
  np.testing.assert_array_equal(terminated, expected_terminated)
  np.testing.assert_array_equal(truncated, np.zeros_like(expected_terminated))
  np.testing.assert_array_equal(info['bad_episode'], expected_bad_episode)


@pytest.mark.parametrize('size', [2, 3, 7])
@pytest.mark.parametrize('probability_right', [0.5, 0.9])
@pytest.mark.parametrize('randomize_actions', [True, False])
def test_deterministic_matches_bsuite_reference(size, probability_right, randomize_actions):
  num_envs, seed, cost = 16, 5, 0.01
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')  # randomize_actions=False warns (bsuite's debug mode); tested below.
    env = deep_sea.DeepSeaVectorEnv(num_envs, size=size, randomize_actions=randomize_actions)
  mapping = _bsuite_mapping(size, seed) if randomize_actions else np.ones([size, size])
  reference = _NextStepReference(num_envs, size, True, cost, mapping)
  observation, info = env.reset(seed=seed)
  np.testing.assert_array_equal(env.action_mapping, mapping)
  np.testing.assert_array_equal(observation, reference.reset())
  assert not info['bad_episode'].any()
  rng = np.random.default_rng(size)
  rewarded = 0
  for _ in range(4 * (size + 1) + 2):  # Several episodes and their NEXT_STEP reset steps.
    actions = _actions_towards_right(reference.right_actions(), probability_right, rng)
    expected = reference.step(actions)
    _assert_same_step(env.step(actions), expected)
    rewarded += int((expected[1] > 0.5).sum())
  if probability_right == 0.9:
    assert rewarded > 0  # The treasure was reached, so the +1 was compared too.


@pytest.mark.parametrize('size', [2, 4])
def test_stochastic_matches_bsuite_reference_given_the_same_draws(size):
  num_envs, seed, cost = 32, 9, 0.05
  env = deep_sea.DeepSeaVectorEnv(num_envs, size=size, deterministic=False, unscaled_move_cost=cost)
  reference = _NextStepReference(num_envs, size, False, cost, _bsuite_mapping(size, seed))
  np.testing.assert_array_equal(env.reset(seed=seed)[0], reference.reset())
  # The env's documented draws: per step, standard normals then uniforms, from np_random seeded by reset.
  generator, _ = seeding.np_random(seed)
  rng = np.random.default_rng(0)
  failed_right_moves = noisy_rewards = 0
  for _ in range(6 * (size + 1)):
    right_actions = reference.right_actions()
    actions = _actions_towards_right(right_actions, 0.8, rng)
    stepping = ~np.array(reference.needs_reset)
    in_end_state = np.array([e._row == size - 1 and e._column in (0, size - 1) for e in reference.envs])
    normal = generator.standard_normal(num_envs)
    uniform = generator.random(num_envs)
    _assert_same_step(env.step(actions), reference.step(actions, normal, uniform))
    noisy_rewards += int((stepping & in_end_state).sum())
    failed_right_moves += int((stepping & (actions == right_actions) & (uniform <= 1 / size)).sum())
  assert failed_right_moves > 0 and noisy_rewards > 0  # Both stochastic rules were exercised.


def test_stochastic_statistics_follow_bsuite():
  """Always "right": the move succeeds w.p. 1 - 1/N, the corner noise is N(0, 1), the mean return is
  bsuite's optimal return `(1 - 1/N)^(N - 1) - cost` (checked at > 4 standard errors)."""
  size, num_envs, cost = 5, 4000, 0.01
  env = deep_sea.DeepSeaVectorEnv(num_envs, size=size, deterministic=False, unscaled_move_cost=cost)
  observation, _ = env.reset(seed=1)
  mapping = env.action_mapping
  returns = np.zeros(num_envs)
  moves = successes = 0
  for step in range(size):
    flat = np.argmax(observation.reshape(num_envs, -1), axis=1)
    rows, columns = flat // size, flat % size
    observation, reward, terminated, _, _ = env.step(mapping[rows, columns])
    returns += reward
    if step < size - 1:
      new_columns = np.argmax(observation.reshape(num_envs, -1), axis=1) % size
      moves += num_envs
      successes += int((new_columns == columns + 1).sum())
    else:
      assert terminated.all()
      deterministic_part = np.where(columns == size - 1, 1.0, 0.0) - cost / size
      noise = (reward - deterministic_part)[(columns == 0) | (columns == size - 1)]
      np.testing.assert_array_equal(reward[(columns > 0) & (columns < size - 1)], -cost / size)
  success_rate = successes / moves
  assert abs(success_rate - (1 - 1 / size)) < 4 * np.sqrt(0.16 / moves)
  assert len(noise) > 1000
  assert abs(noise.mean()) < 4 / np.sqrt(len(noise))
  assert abs(noise.std() - 1.0) < 0.1
  assert env.optimal_return == pytest.approx((1 - 1 / size)**(size - 1) - cost)
  # Var(return) <= Var(Bernoulli) + Var(noise) <= 0.25 + 1.
  assert abs(returns.mean() - env.optimal_return) < 4 * np.sqrt(1.25 / num_envs)


def test_stochastic_is_reproducible_from_the_reset_seed():

  def rewards(seed):
    env = deep_sea.DeepSeaVectorEnv(64, size=3, deterministic=False, mapping_seed=0)
    env.reset(seed=seed)
    actions = np.ones(64, np.int64)  # Moves right in about half of the cells of each row.
    return np.stack([env.step(actions)[1] for _ in range(12)])

  np.testing.assert_array_equal(rewards(3), rewards(3))
  assert not np.array_equal(rewards(3), rewards(4))


@pytest.mark.parametrize('size', [2, 10, 20])
def test_optimal_policy_returns_0_99_and_left_returns_0(size):
  num_envs = 3
  env = deep_sea.DeepSeaVectorEnv(num_envs, size=size)
  observation, _ = env.reset(seed=size)
  mapping = env.action_mapping
  assert env.optimal_return == pytest.approx(0.99)
  for policy in ('right', 'left'):
    returns = np.zeros(num_envs)
    for step in range(size):
      flat = np.argmax(observation.reshape(num_envs, -1), axis=1)
      right = mapping[flat // size, flat % size]
      observation, reward, terminated, truncated, info = env.step(right if policy == 'right' else 1 - right)
      returns += reward
      assert not truncated.any()
      # The episode lasts exactly `size` steps.
      np.testing.assert_array_equal(terminated, np.full(num_envs, step == size - 1))
    np.testing.assert_array_equal(observation, 0.0)  # bsuite's null observation after the last step.
    if policy == 'right':
      np.testing.assert_allclose(returns, 0.99, rtol=0, atol=1e-12)
      assert not info['bad_episode'].any()
    else:
      np.testing.assert_array_equal(returns, 0.0)
      assert info['bad_episode'].all()
    observation = env.step(np.zeros(num_envs, np.int64))[0]  # NEXT_STEP reset step.


def test_mapping_comes_from_the_first_reset_seed_or_mapping_seed():
  size = 12

  def mapping(seed, **kwargs):
    env = deep_sea.DeepSeaVectorEnv(2, size=size, **kwargs)
    env.reset(seed=seed)
    return env.action_mapping

  np.testing.assert_array_equal(mapping(7), mapping(7))
  np.testing.assert_array_equal(mapping(7), _bsuite_mapping(size, 7))
  assert not np.array_equal(mapping(7), mapping(8))
  # mapping_seed overrides the reset seed, and is drawn at construction.
  np.testing.assert_array_equal(mapping(7, mapping_seed=3), _bsuite_mapping(size, 3))
  np.testing.assert_array_equal(mapping(8, mapping_seed=3), mapping(7, mapping_seed=3))
  np.testing.assert_array_equal(deep_sea.DeepSeaVectorEnv(2, size=size, mapping_seed=3).action_mapping,
                                _bsuite_mapping(size, 3))

  # One MDP instance: later resets, seeded or not, keep the mapping.
  env = deep_sea.DeepSeaVectorEnv(2, size=size)
  with pytest.raises(RuntimeError, match='drawn at the first reset'):
    env.action_mapping  # pylint: disable=pointless-statement
  env.reset(seed=7)
  env.reset(seed=8)
  env.reset()
  np.testing.assert_array_equal(env.action_mapping, _bsuite_mapping(size, 7))

  # An unseeded first reset draws an unseeded mapping of 0/1.
  env = deep_sea.DeepSeaVectorEnv(2, size=size)
  env.reset()
  unseeded = env.action_mapping
  assert unseeded.shape == (size, size) and set(np.unique(unseeded)) <= {0, 1}
  assert 0 < unseeded.mean() < 1

  with pytest.warns(UserWarning, match='debug mode'):
    debug = deep_sea.DeepSeaVectorEnv(2, size=size, randomize_actions=False, mapping_seed=3)
  np.testing.assert_array_equal(debug.action_mapping, np.ones([size, size]))

  with pytest.raises(ValueError, match='mapping_seed must be in .* got -1'):
    deep_sea.DeepSeaVectorEnv(2, size=size, mapping_seed=-1)
  with pytest.raises(ValueError, match=f'reset seed must be in .* got {2**32}'):
    deep_sea.DeepSeaVectorEnv(2, size=size).reset(seed=2**32)


def test_next_step_autoreset():
  num_envs, size = 4, 3
  env = deep_sea.DeepSeaVectorEnv(num_envs, size=size, mapping_seed=0)
  start, _ = env.reset(seed=0)
  expected_start = np.zeros((num_envs, size, size), np.float32)
  expected_start[:, 0, 0] = 1.0
  np.testing.assert_array_equal(start, expected_start)
  for _ in range(2):  # Two episodes: the reset step must also restart the episode.
    for step in range(size):
      _, _, terminated, _, info = env.step(np.zeros(num_envs, np.int64))
      np.testing.assert_array_equal(terminated, np.full(num_envs, step == size - 1))
    assert info['bad_episode'].all()  # Action 0 everywhere went left on the diagonal for this mapping.
    # The step after the terminal one ignores its action and starts a new episode.
    observation, reward, terminated, truncated, info = env.step(np.array([0, 1, 0, 1]))
    np.testing.assert_array_equal(observation, expected_start)
    np.testing.assert_array_equal(reward, np.zeros(num_envs))
    assert not terminated.any() and not truncated.any() and not info['bad_episode'].any()


def test_spaces_and_metadata_follow_gymnasium_vector_conventions():
  env = deep_sea.DeepSeaVectorEnv(5, size=6)
  assert env.num_envs == 5 and env.size == 6 and env.deterministic
  assert env.metadata['autoreset_mode'] is AutoresetMode.NEXT_STEP
  assert env.single_observation_space == gymnasium.spaces.Box(0.0, 1.0, (6, 6), np.float32)
  assert env.observation_space == gymnasium.spaces.Box(0.0, 1.0, (5, 6, 6), np.float32)
  assert env.single_action_space == gymnasium.spaces.Discrete(2)
  assert env.action_space == gymnasium.spaces.MultiDiscrete([2] * 5)
  observation, _ = env.reset(seed=0)
  assert env.observation_space.contains(observation)
  observation, reward, terminated, truncated, _ = env.step(env.action_space.sample())
  assert env.observation_space.contains(observation)
  assert reward.shape == terminated.shape == truncated.shape == (5,)
  assert terminated.dtype == truncated.dtype == bool


def test_invalid_arguments_are_reported():
  for size in (1, 0):
    with pytest.raises(ValueError, match=f'DeepSea size must be at least 2, got {size};'):
      deep_sea.DeepSeaVectorEnv(2, size=size)
  with pytest.raises(ValueError, match='got 1;'):
    gymnasium.make_vec(deep_sea.ENV_ID, 2, vectorization_mode='vector_entry_point', size=1)
  for mode in (AutoresetMode.SAME_STEP, AutoresetMode.DISABLED, 'bogus'):
    with pytest.raises(ValueError, match='only autoreset_mode=AutoresetMode.NEXT_STEP'):
      deep_sea.DeepSeaVectorEnv(2, autoreset_mode=mode)
  env = deep_sea.DeepSeaVectorEnv(2, size=3)
  with pytest.raises(RuntimeError, match='before reset'):
    env.step(np.zeros(2, np.int64))
  env.reset(seed=0)
  with pytest.raises(ValueError, match=r'shape \[2\], got shape \(3,\)'):
    env.step(np.zeros(3, np.int64))
  with pytest.raises(ValueError, match='must be 0 or 1'):
    env.step(np.array([0, 2]))


def test_registered_for_make_vec():
  env = gymnasium.make_vec(deep_sea.ENV_ID, 3, vectorization_mode='vector_entry_point', size=10)
  assert isinstance(env, deep_sea.DeepSeaVectorEnv)
  assert env.num_envs == 3 and env.size == 10
  assert env.reset(seed=0)[0].shape == (3, 10, 10)
  default = gymnasium.make_vec(deep_sea.ENV_ID, 2)
  assert isinstance(default, deep_sea.DeepSeaVectorEnv) and default.size == 20


def _check_suite_environment(env, size, num_envs):
  assert isinstance(env.vector_env, deep_sea.DeepSeaVectorEnv)
  assert env.batch_size == num_envs and env.frames_per_step == 1
  assert env.observation_spec().shape == (size, size)
  assert env.observation_spec().dtype == np.float32
  assert env.action_spec().minimum == 0 and env.action_spec().maximum == 1
  time_step = env.reset()
  np.testing.assert_array_equal(time_step.step_type, [FIRST] * num_envs)
  # make_environment's seed is the reset seed, so it picks the instance.
  np.testing.assert_array_equal(env.vector_env.action_mapping, _bsuite_mapping(size, 0))
  mapping = env.vector_env.action_mapping
  for step in range(size + 1):
    flat = np.argmax(time_step.observation.reshape(num_envs, -1), axis=1)
    time_step = env.step(mapping[flat // size, flat % size])
    if step < size - 1:
      np.testing.assert_array_equal(time_step.step_type, [MID] * num_envs)
      np.testing.assert_array_equal(time_step.discount, np.ones(num_envs))
    elif step == size - 1:
      np.testing.assert_array_equal(time_step.step_type, [LAST] * num_envs)
      np.testing.assert_array_equal(time_step.discount, np.zeros(num_envs))
      np.testing.assert_allclose(time_step.reward, 1 - 0.01 / size, rtol=1e-6)
    else:
      np.testing.assert_array_equal(time_step.step_type, [FIRST] * num_envs)
  returns, lengths = env.pop_finished_episodes()
  np.testing.assert_allclose(returns, np.full(num_envs, 0.99), rtol=1e-6)
  np.testing.assert_array_equal(lengths, np.full(num_envs, size))
  env.close()


def test_make_environment_with_env_kwargs_argument():
  env = suite.make_environment('protege/DeepSea-v0', num_envs=4, seed=0, env_kwargs={'size': 8})
  _check_suite_environment(env, size=8, num_envs=4)


def test_make_environment_with_env_kwargs_from_gin():
  gin.parse_config("make_environment.env_id = 'protege/DeepSea-v0'\n"
                   "make_environment.num_envs = 4\n"
                   "make_environment.env_kwargs = {'size': 8}")
  _check_suite_environment(suite.make_environment(seed=0), size=8, num_envs=4)
  gin.clear_config()
  default = suite.make_environment('protege/DeepSea-v0', num_envs=2, seed=0)
  assert default.observation_spec().shape == (20, 20)  # The registered size.


def test_env_kwargs_reach_other_environments():
  # Vector entry point (CartPoleVectorEnv): a 5-step cap truncates, LAST with discount 1.
  env = suite.make_environment('CartPole-v1', num_envs=2, seed=0, env_kwargs={'max_episode_steps': 5})
  env.reset()
  time_steps = [env.step(np.array([0, 1])) for _ in range(5)]
  assert [int(t.step_type[0]) for t in time_steps] == [MID] * 4 + [LAST]
  # SyncVectorEnv: the kwargs reach each single environment.
  env = suite.make_environment('MountainCar-v0', num_envs=2, seed=0, env_kwargs={'goal_velocity': 0.25})
  assert isinstance(env.vector_env, SyncVectorEnv)
  assert [e.unwrapped.goal_velocity for e in env.vector_env.envs] == [0.25, 0.25]


def test_env_kwargs_for_atari_points_to_atari_options():
  with pytest.raises(ValueError) as error:
    suite.make_environment('ALE/Breakout-v5', num_envs=1, env_kwargs={'frameskip': 2})
  message = str(error.value).splitlines()[0]
  assert "env_kwargs {'frameskip': 2} is not used for Atari id 'ALE/Breakout-v5'" in message
  assert 'atari_options' in message

