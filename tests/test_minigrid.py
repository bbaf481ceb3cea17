"""Tests for MiniGrid in the suite (envs/minigrid.py, envs/suite.py): real MiniGrid tasks, fixed seeds."""

import gin
import numpy as np
import pytest
from tf_agents.trajectories import time_step as ts

from protege.envs import minigrid
from protege.envs import suite
from protege.runtime import errors

pytest.importorskip('minigrid', reason="Farama's minigrid package is not installed: make setup (pip install --no-deps minigrid==3.2.0)")

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)
LEFT, RIGHT, FORWARD = 0, 1, 2


def test_options_default_to_pixels_of_the_packages_tile_size():
  assert minigrid.minigrid_options() == dict(observation='rgb', tile_size=8)


def test_multiroom_n7_s4_is_rides_task_seen_as_pixels():
  env = suite.make_environment(minigrid.MULTIROOM_N7_S4, num_envs=2, seed=0)
  assert env.env_id == minigrid.MULTIROOM_N7_S4 and env.batch_size == 2 and env.frames_per_step == 1
  spec = env.observation_spec()
  assert spec.shape == (56, 56, 3) and spec.dtype == np.uint8 and (spec.minimum, spec.maximum) == (0, 255)
  assert (env.action_spec().minimum, env.action_spec().maximum) == (0, 6)
  task = env.vector_env.envs[0].unwrapped
  assert (task.minNumRooms, task.maxNumRooms, task.maxRoomSize, task.max_steps) == (7, 7, 4, 140)
  time_step = env.reset()
  assert len(task.rooms) == 7
  assert time_step.observation.shape == (2, 56, 56, 3) and time_step.observation.dtype == np.uint8
  # The two environments start in different layouts (seeds 0 and 1), drawn as colourful pixels.
  assert not np.array_equal(time_step.observation[0], time_step.observation[1])
  assert len(np.unique(time_step.observation[0].reshape(-1, 3), axis=0)) > 3


def test_an_episode_that_runs_out_of_time_is_truncated_and_returns_zero():
  env = suite.make_environment(minigrid.MULTIROOM_N7_S4, num_envs=1, seed=0)
  env.reset()
  step_types, discounts = [], []
  for _ in range(141):
    time_step = env.step(np.array([LEFT]))  # turning on the spot never reaches the goal
    step_types.append(int(time_step.step_type[0]))
    discounts.append(float(time_step.discount[0]))
  assert step_types[:139] == [MID] * 139 and step_types[139:] == [LAST, FIRST]
  assert discounts[139] == 1.0  # the time limit cuts the episode: bootstrapping goes on
  returns, lengths = env.pop_finished_episodes()
  np.testing.assert_array_equal(returns, [0.0])
  np.testing.assert_array_equal(lengths, [140])


def test_reaching_the_goal_terminates_with_the_step_discounted_reward():
  # Empty-5x5: the agent starts at (1, 1) facing right, the goal is at (3, 3).
  env = suite.make_environment('MiniGrid-Empty-5x5-v0', num_envs=1, seed=0)
  env.reset()
  for action in (FORWARD, FORWARD, RIGHT, FORWARD):
    assert int(env.step(np.array([action])).step_type[0]) == MID
  time_step = env.step(np.array([FORWARD]))
  assert int(time_step.step_type[0]) == LAST and float(time_step.discount[0]) == 0.0
  np.testing.assert_allclose(time_step.reward, [1 - 0.9 * 5 / 100])  # max_steps = 4 * 5**2
  returns, _ = env.pop_finished_episodes()
  np.testing.assert_allclose(returns, [1 - 0.9 * 5 / 100])


def test_same_seed_same_pixels_other_seed_other_layout():
  first = [suite.make_environment(minigrid.MULTIROOM_N7_S4, num_envs=1, seed=seed).reset().observation
           for seed in (3, 3, 4)]
  np.testing.assert_array_equal(first[0], first[1])
  assert not np.array_equal(first[0], first[2])


def test_options_choose_the_tile_size_and_the_symbolic_grid():
  gin.bind_parameter('minigrid_options.tile_size', 6)
  spec = suite.make_environment('MiniGrid-KeyCorridorS3R3-v0', num_envs=1).observation_spec()
  assert spec.shape == (42, 42, 3) and spec.dtype == np.uint8
  gin.bind_parameter('minigrid_options.observation', 'symbolic')
  env = suite.make_environment('MiniGrid-KeyCorridorS3R3-v0', num_envs=1)
  assert env.observation_spec().shape == (7, 7, 3) and env.observation_spec().dtype == np.float32
  observation = env.reset().observation
  # (object, colour, state) indices, not pixels: the torsos must not scale them by 1/255.
  assert observation.dtype == np.float32 and observation.max() <= 10 and observation.max() >= 2


@pytest.mark.parametrize('binding, message', [
    ("minigrid_options.observation = 'grey'", r"observation must be one of \('rgb', 'symbolic'\)"),
    ('minigrid_options.tile_size = 0', r'tile_size must be an int >= 1'),
])
def test_bad_options_name_the_setting(binding, message):
  gin.parse_config(binding)
  with pytest.raises(errors.ConfigError, match=message):
    suite.make_environment('MiniGrid-Empty-5x5-v0', num_envs=1)


def test_env_kwargs_and_unknown_ids_are_config_errors():
  with pytest.raises(errors.ConfigError, match='minigrid_options'):
    suite.make_environment('MiniGrid-Empty-5x5-v0', num_envs=1, env_kwargs={'size': 6})
  with pytest.raises(errors.ConfigError, match="did you mean 'MiniGrid-MultiRoom-N7-S4-v0'"):
    suite.make_environment('MiniGrid-MultiRoom-N7-S5-v0', num_envs=1)
