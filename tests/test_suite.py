"""Tests for envs.suite: real gymnasium and ale-py environments, fixed seeds."""

import gin
import gymnasium
import numpy as np
import pytest
from ale_py.vector_env import AtariVectorEnv
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, SyncVectorEnv
from tf_agents.trajectories import time_step as ts

from protege.envs import suite

FIRST, MID, LAST = int(ts.StepType.FIRST), int(ts.StepType.MID), int(ts.StepType.LAST)


@pytest.fixture(autouse=True)
def clear_gin():
  gin.clear_config()
  # One emulator thread: the test machine's cores are shared.
  gin.bind_parameter('atari_options.num_threads', 1)
  yield
  gin.clear_config()


def test_atari_options_defaults_are_the_rnd_paper_settings():
  gin.clear_config()
  options = suite.atari_options()
  assert options == dict(
      repeat_action_probability=0.25, frameskip=4, maxpool=True, stack_num=4, img_height=84,
      img_width=84, grayscale=True, max_num_frames_per_episode=18000, noop_max=0,
      episodic_life=False, reward_clipping=False, use_fire_reset=False, full_action_space=False,
      num_threads=0)


def test_atari_environment_specs_and_options_reach_ale():
  env = suite.make_environment('ALE/Breakout-v5', num_envs=2, seed=0)
  vector_env = env.vector_env
  assert isinstance(vector_env, AtariVectorEnv)
  assert vector_env.metadata['autoreset_mode'] == AutoresetMode.NEXT_STEP
  # The kwargs AtariVectorEnv was constructed with (make_vec records them in the spec).
  passed = vector_env.spec.kwargs
  for key, value in suite.atari_options().items():
    assert passed[key] == value, key
  assert passed['max_num_frames_per_episode'] == 18000  # Not the registered 108,000.

  assert env.env_id == 'ALE/Breakout-v5'
  assert env.frames_per_step == 4
  assert env.observation_spec().shape == (84, 84, 4)
  assert env.observation_spec().dtype == np.uint8
  assert env.action_spec().maximum == 3  # Breakout's minimal action set has 4 actions.
  time_step = env.reset()
  assert time_step.observation.shape == (2, 84, 84, 4)
  assert time_step.observation.dtype == np.uint8
  time_step = env.step(np.array([1, 0], np.int64))
  np.testing.assert_array_equal(time_step.step_type, [MID, MID])
  # The emulator advanced frameskip frames per agent step.
  np.testing.assert_array_equal(env.get_info()['episode_frame_number'], [4, 4])
  env.close()


def test_atari_option_changes_change_the_emulator():
  gin.bind_parameter('atari_options.frameskip', 2)
  gin.bind_parameter('atari_options.stack_num', 2)
  gin.bind_parameter('atari_options.img_height', 42)
  gin.bind_parameter('atari_options.img_width', 40)
  gin.bind_parameter('atari_options.max_num_frames_per_episode', 20)
  env = suite.make_environment('ALE/Pong-v5', num_envs=2, seed=0)
  assert env.frames_per_step == 2
  assert env.observation_spec().shape == (42, 40, 2)
  assert env.reset().observation.shape == (2, 42, 40, 2)
  # A 20-frame cap at frameskip 2 truncates after 10 agent steps: LAST with discount 1.
  time_steps = [env.step(np.zeros(2, np.int64)) for _ in range(11)]
  step_types = [int(t.step_type[0]) for t in time_steps]
  assert step_types == [MID] * 9 + [LAST, FIRST]
  np.testing.assert_array_equal(time_steps[9].discount, [1.0, 1.0])
  _, lengths = env.pop_finished_episodes()
  np.testing.assert_array_equal(lengths, [10, 10])
  env.close()


def test_atari_observations_are_the_ale_frames_channels_last():
  num_envs, seed = 2, 3
  env = suite.make_environment('ALE/Breakout-v5', num_envs=num_envs, seed=seed)
  raw = gymnasium.make_vec('ALE/Breakout-v5', num_envs, vectorization_mode='vector_entry_point',
                           **suite.atari_options())
  raw_observation, _ = raw.reset(seed=seed)
  np.testing.assert_array_equal(env.reset().observation, raw_observation.transpose(0, 2, 3, 1))
  for action in [1, 2, 3, 2, 2]:
    actions = np.full(num_envs, action, np.int64)
    raw_observation = raw.step(actions)[0]
    observation = env.step(actions).observation
    np.testing.assert_array_equal(observation[..., -1], raw_observation[:, -1])
    np.testing.assert_array_equal(observation, raw_observation.transpose(0, 2, 3, 1))
    assert observation.flags['C_CONTIGUOUS']  # Reaches TensorFlow and Reverb without another copy.
  raw.close()
  env.close()


def test_atari_send_receive_is_step_and_misuse_is_reported():
  actions = np.random.default_rng(1).integers(0, 4, size=(20, 2))
  stepped = suite.make_environment('ALE/Breakout-v5', num_envs=2, seed=4)
  split = suite.make_environment('ALE/Breakout-v5', num_envs=2, seed=4)
  np.testing.assert_array_equal(stepped.reset().observation, split.reset().observation)
  for action in actions:
    expected = stepped.step(action)
    split.send(action)
    with pytest.raises(RuntimeError, match='send\\(\\) twice'):
      split.send(action)
    received = split.receive()
    for a, b in zip(expected, received):
      np.testing.assert_array_equal(a, b)
    assert split.current_time_step() is received
  with pytest.raises(RuntimeError, match='receive\\(\\) without send\\(\\)'):
    split.receive()
  # A reset with a step in flight drains it first, then starts new episodes.
  split.send(actions[0])
  assert (split.reset().step_type == 0).all()
  split.step(actions[1])
  stepped.close()
  split.close()


def test_atari_same_seed_same_observations():
  actions = np.random.default_rng(0).integers(0, 4, size=(30, 2))

  def observations():
    env = suite.make_environment('ALE/Breakout-v5', num_envs=2, seed=11)
    result = [env.reset().observation] + [env.step(a).observation for a in actions]
    env.close()
    return np.stack(result)

  first_run = observations()
  assert first_run[-1].std() > 0  # Real frames, not a blank screen.
  np.testing.assert_array_equal(first_run, observations())


def test_cartpole_uses_its_vector_entry_point_and_is_seeded():
  env = suite.make_environment('CartPole-v1', num_envs=3, seed=4)
  assert isinstance(env.vector_env.unwrapped, CartPoleVectorEnv)
  assert env.batch_size == 3 and env.frames_per_step == 1
  twin = suite.make_environment('CartPole-v1', num_envs=3, seed=4)
  other = suite.make_environment('CartPole-v1', num_envs=3, seed=5)
  np.testing.assert_array_equal(env.reset().observation, twin.reset().observation)
  assert not np.allclose(env.current_time_step().observation, other.reset().observation)


def test_ids_without_vector_entry_point_use_sync_vector_env():
  env = suite.make_environment('MountainCar-v0', num_envs=2, seed=0)
  assert isinstance(env.vector_env, SyncVectorEnv)
  assert env.vector_env.metadata['autoreset_mode'] == AutoresetMode.NEXT_STEP
  time_step = env.reset()
  assert time_step.observation.shape == (2, 2)
  np.testing.assert_array_equal(env.step(np.array([0, 2])).step_type, [MID, MID])


def test_make_environment_reads_gin():
  gin.parse_config("make_environment.env_id = 'Acrobot-v1'\nmake_environment.num_envs = 3")
  env = suite.make_environment()
  assert env.env_id == 'Acrobot-v1'
  assert env.batch_size == 3


def test_unknown_id_suggests_the_closest_registered_ids():
  with pytest.raises(ValueError) as error:
    suite.make_environment('CartPol-v1')
  # gin appends the configurable's name on a second line; the message itself is one line.
  message = str(error.value).splitlines()[0]
  assert "Unknown environment id 'CartPol-v1'; did you mean 'CartPole-v1'" in message
  assert 'gymnasium.pprint_registry()' in message

  with pytest.raises(ValueError, match="'ALE/MontezumasRevenge-v5'.*'ALE/MontezumaRevenge-v5'"):
    suite.make_environment('ALE/MontezumasRevenge-v5')


def test_num_envs_below_one_is_rejected():
  with pytest.raises(ValueError, match='num_envs must be at least 1, got 0'):
    suite.make_environment('CartPole-v1', num_envs=0)


def test_gymnasium_atari_backend_reports_montezumas_room_from_ram():
  env = suite.make_environment('ALE/MontezumaRevenge-v5', num_envs=2, seed=0, atari_backend='gymnasium',
                               ram_info={'room': 3})
  fast = suite.make_environment('ALE/MontezumaRevenge-v5', num_envs=2, seed=0)
  assert env.observation_spec() == fast.observation_spec()  # [84, 84, 4] uint8 either way
  assert env.frames_per_step == 4
  time_step = env.reset()
  assert time_step.observation.shape == (2, 84, 84, 4) and time_step.observation.flags['C_CONTIGUOUS']
  for _ in range(20):
    time_step = env.step(np.zeros(2, np.int64))
  rams = [single.unwrapped.ale.getRAM()[3] for single in env.vector_env.envs]
  np.testing.assert_array_equal(env.get_info()['room'], rams)
  assert env.visited_info_values() == {'room': {1}}  # the game starts in room 1
  # The newest frame of the stack is the last channel: stacks shift by one frame per step.
  previous = time_step.observation
  time_step = env.step(np.zeros(2, np.int64))
  np.testing.assert_array_equal(time_step.observation[..., :-1], previous[..., 1:])
  env.close()
  fast.close()


def test_atari_backend_errors_name_the_fix():
  with pytest.raises(ValueError, match="atari_backend='nope' is unknown"):
    suite.make_environment('ALE/Pong-v5', num_envs=1, atari_backend='nope')
  with pytest.raises(ValueError, match="needs atari_backend = 'gymnasium'"):
    suite.make_environment('ALE/Pong-v5', num_envs=1, ram_info={'room': 3})
  gin.bind_parameter('atari_options.use_fire_reset', True)
  with pytest.raises(ValueError, match='use_fire_reset'):
    suite.make_environment('ALE/Breakout-v5', num_envs=1, atari_backend='gymnasium')
