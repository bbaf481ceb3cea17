"""Environments that misbehave on purpose, for fault tests: gin files import this module
(`import tests.faulty_envs`, with the repository on PYTHONPATH) and name the ids below."""

import gymnasium
import numpy as np


class _NaNObservations(gymnasium.ObservationWrapper):
  """CartPole whose observations are NaN: what a broken sensor or preprocessing would send a network."""

  def __init__(self, **kwargs):
    super().__init__(gymnasium.make('CartPole-v1', **kwargs))
    low = np.full(self.env.observation_space.shape, -np.inf, np.float32)
    self.observation_space = gymnasium.spaces.Box(low, -low, dtype=np.float32)

  def observation(self, observation):
    return np.full_like(observation, np.nan, np.float32)


class _NaNReward(gymnasium.Wrapper):
  """CartPole whose reward is NaN from the `after`-th step on."""

  def __init__(self, after: int = 10, **kwargs):
    super().__init__(gymnasium.make('CartPole-v1', **kwargs))
    self._after, self._steps = after, 0

  def step(self, action):
    observation, reward, terminated, truncated, info = self.env.step(action)
    self._steps += 1
    return observation, (np.nan if self._steps >= self._after else reward), terminated, truncated, info


def _nan_observation_cart_pole(**kwargs):
  return _NaNObservations(**kwargs)


def _nan_reward_cart_pole(**kwargs):
  return _NaNReward(**kwargs)


# Functions, not the wrapper classes: gymnasium reads an entry point's `metadata`, a property on wrappers.
gymnasium.register('Faulty/NaNObservationCartPole-v1', entry_point=_nan_observation_cart_pole)
gymnasium.register('Faulty/NaNRewardCartPole-v1', entry_point=_nan_reward_cart_pole)
