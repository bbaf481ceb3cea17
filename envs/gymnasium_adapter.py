"""Gymnasium environments behind TF-Agents' `PyEnvironment` interface.

TF-Agents 0.19's `gym_wrapper` predates gymnasium and rejects its spaces, so this module converts
them itself. Two adapters:

* `GymnasiumEnvironment` wraps one `gymnasium.Env` (tests, evaluation, `validate_py_environment`).
* `VectorGymnasiumEnvironment` wraps a `gymnasium.vector.VectorEnv` (the actors' hot path: ale-py's
  `AtariVectorEnv`, gymnasium's `CartPoleVectorEnv`, or a `SyncVectorEnv`).

Both follow TF-Agents' time-step contract: a `FIRST` step carries reward 0 and discount 1, a
terminated episode ends with `LAST` and discount 0, a truncated one (time limit) with `LAST` and
discount 1 so that value bootstrapping continues through the cut.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence, Tuple

import cv2
import gymnasium
import numpy as np
from ale_py.vector_env import AtariVectorEnv
from gymnasium.vector import AutoresetMode
from tf_agents.environments import py_environment
from tf_agents.specs import array_spec
from tf_agents.trajectories import time_step as ts

from protege.runtime import errors
from protege.runtime.properties import read_only

_OPENCV_MAX_CHANNELS = 512  # OpenCV's CV_CN_MAX, the most channels cv2.merge takes

_FIRST = int(ts.StepType.FIRST)
_MID = int(ts.StepType.MID)


def _uniform_or_array(bounds: np.ndarray) -> Any:
  """Returns a scalar when every element of `bounds` is equal, else `bounds` itself.

  Scalar bounds keep specs small and readable (an 84x84x4 image spec would otherwise carry
  two 28,224-element arrays of 0 and 255).
  """
  bounds = np.asarray(bounds)
  if bounds.size and np.all(bounds == bounds.flat[0]):
    return bounds.flat[0]
  return bounds


def space_to_spec(space: gymnasium.Space, name: str) -> array_spec.BoundedArraySpec:
  """Converts a gymnasium space of ONE environment to a TF-Agents `BoundedArraySpec`.

  Args:
    space: a `gymnasium.spaces.Discrete` (becomes a scalar int64 spec over
      `[start, start + n - 1]`) or `gymnasium.spaces.Box` (same shape, dtype and bounds).
    name: the spec's name, e.g. 'observation' or 'action'.

  Returns:
    The equivalent `BoundedArraySpec`.

  Raises:
    TypeError: for any other space (Dict, Tuple, MultiDiscrete, ...), naming it.
  """
  if isinstance(space, gymnasium.spaces.Discrete):
    start = int(space.start)
    return array_spec.BoundedArraySpec(
        shape=(), dtype=np.int64, minimum=start, maximum=start + int(space.n) - 1, name=name)
  if isinstance(space, gymnasium.spaces.Box):
    return array_spec.BoundedArraySpec(
        shape=space.shape,
        dtype=space.dtype,
        minimum=_uniform_or_array(space.low),
        maximum=_uniform_or_array(space.high),
        name=name)
  raise TypeError(
      f'Unsupported gymnasium {name} space {space!r}; only Discrete and Box are supported '
      '(flatten or wrap the environment, e.g. gymnasium.wrappers.FlattenObservation).')


def _raise_non_finite_reward(env_id: str, rewards: np.ndarray) -> None:
  """Raises a one-line `ValueError` naming the first environment with a non-finite reward."""
  bad_index = int(np.flatnonzero(~np.isfinite(rewards))[0])
  raise errors.ConfigError(
      f'Environment {env_id!r} (env index {bad_index}) returned a non-finite reward '
      f'{float(rewards[bad_index])}; fix the environment or a wrapper that computes the reward.')


class _SpecsAndInfo:
  """The specs and `info` accessors both adapters share: the specs are those of ONE environment (no batch
  dimension; named 'observation' and 'action'), `info` that of the latest reset or step (the vector env's
  holds arrays over environments)."""

  def observation_spec(self) -> array_spec.BoundedArraySpec:
    return self._observation_spec

  def action_spec(self) -> array_spec.BoundedArraySpec:
    return self._action_spec

  def get_info(self) -> dict:
    return self._info


class GymnasiumEnvironment(_SpecsAndInfo, py_environment.PyEnvironment):
  """One `gymnasium.Env` as an unbatched TF-Agents `PyEnvironment`.

  `terminated` becomes `ts.termination` (discount 0), `truncated` becomes `ts.truncation`
  (discount 1). The step after a `LAST` one resets the environment and ignores the action, as
  TF-Agents' own wrappers do (the base class's `handle_auto_reset`).
  """

  def __init__(self, env: gymnasium.Env, seed: Optional[int] = None):
    """Wraps `env`.

    Args:
      env: the gymnasium environment; its observation and action spaces must be Discrete or Box.
      seed: passed to `env.reset(seed=...)` on the first reset only, so that a run is
        reproducible from construction; later resets continue the seeded random stream.
        None leaves the environment unseeded.
    """
    super().__init__(handle_auto_reset=True)
    self._env = env
    self._seed = seed
    self._observation_spec = space_to_spec(env.observation_space, 'observation')
    self._action_spec = space_to_spec(env.action_space, 'action')
    self._env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    self._info: dict = {}

  gymnasium_env = read_only('_env', 'The wrapped gymnasium environment.')

  def _observation(self, observation: Any) -> np.ndarray:
    return np.asarray(observation, dtype=self._observation_spec.dtype)

  def _reset(self) -> ts.TimeStep:
    observation, self._info = self._env.reset(seed=self._seed)
    self._seed = None
    return ts.restart(self._observation(observation))

  def _step(self, action: np.ndarray) -> ts.TimeStep:
    if isinstance(self._env.action_space, gymnasium.spaces.Discrete):
      action = int(action)
    else:
      action = np.asarray(action, dtype=self._action_spec.dtype)
    observation, reward, terminated, truncated, self._info = self._env.step(action)
    reward = np.asarray(reward, dtype=np.float32)
    if not np.isfinite(reward):
      _raise_non_finite_reward(self._env_id, reward.reshape(1))
    observation = self._observation(observation)
    if terminated:
      return ts.termination(observation, reward)
    if truncated:
      return ts.truncation(observation, reward)
    return ts.transition(observation, reward)

  def close(self) -> None:
    """Closes the wrapped environment."""
    self._env.close()


def _frames_per_step_from_spec(env: gymnasium.vector.VectorEnv) -> Optional[float]:
  """Reads the emulator frames per agent step from the env spec's `frameskip` kwarg, if any.

  An int frameskip is exact; a `(low, high)` range (old ALE ids sample uniformly from
  `[low, high)`) gives its expected value.
  """
  if env.spec is None or 'frameskip' not in env.spec.kwargs:
    return None
  frameskip = env.spec.kwargs['frameskip']
  if isinstance(frameskip, (int, np.integer)):
    return int(frameskip)
  low, high = frameskip
  return (low + high - 1) / 2


class VectorGymnasiumEnvironment(_SpecsAndInfo, py_environment.PyEnvironment):
  """A gymnasium `VectorEnv` (NEXT_STEP autoreset) as a batched TF-Agents `PyEnvironment`.

  Time steps are batched `[N]` (`N = num_envs`) with TF-Agents' semantics per environment:

  * `reset()`: every environment `FIRST`.
  * `step(actions)`, environment i:
    - previous step was `LAST` -> `FIRST`, reward 0, discount 1, action ignored. This is
      gymnasium's NEXT_STEP reset step, i.e. exactly what TF-Agents' batched environments do
      after an episode ends, so no extra step is spent.
    - terminated -> `LAST`, discount 0.
    - truncated (time limit) -> `LAST`, discount 1.
    - otherwise `MID`, discount 1.

  dtypes: step_type int32, reward float32, discount float32, all of shape `[N]`; observations
  have the per-env `observation_spec()` with a leading `[N]`.

  Atari observations from ale-py come channels-first `[N, stack, H, W]`; they are returned
  channels-last `[N, H, W, stack]` (Keras' convention) as a transposed view, so the copy happens
  once, where the consumer converts to a tensor. RGB stacks `[N, stack, H, W, 3]` become
  `[N, H, W, 3 * stack]`, frame-major (channel `3 * k + c` is colour c of frame k).

  It also keeps the raw (as the environment returns them: unclipped unless the env clips,
  undiscounted) return and length of every environment's current episode; `pop_finished_episodes()` hands
  out those completed since the last call.

  `step()` is the actors' hot path: it uses only whole-batch NumPy operations.
  """

  def __init__(self,
               env: gymnasium.vector.VectorEnv,
               seed: Optional[int] = None,
               env_id: Optional[str] = None,
               frames_per_step: Optional[float] = None,
               channels_first_stack: Optional[bool] = None,
               tracked_info_keys: Tuple[str, ...] = (),
               task_ids: Optional[Sequence[int]] = None,
               frame_stack_padding: Optional[str] = None):
    """Wraps `env`.

    Args:
      env: a gymnasium vector environment whose `metadata['autoreset_mode']` is NEXT_STEP.
      seed: passed to `env.reset(seed=...)` on the first reset only (gymnasium seeds
        environment i with `seed + i`), so a run is reproducible from construction; later resets
        continue the seeded streams. None leaves the environments unseeded.
      env_id: name used in errors and summaries; defaults to `env.spec.id`, else the class name.
      frames_per_step: emulator frames per agent step, for reporting frames/s. Defaults to the
        env spec's `frameskip` kwarg (4 for `ALE/...-v5`) and to 1 when there is none.
      channels_first_stack: the observations are frame stacks `[N, stack, H, W(, 3)]` to deliver as
        `[N, H, W, stack]`; None (default): True exactly for ale-py's `AtariVectorEnv`.
      tracked_info_keys: per-environment `info` entries whose distinct values are collected (e.g. the
        room of Montezuma's Revenge); see `visited_info_values`.
      task_ids: the task (e.g. the game) each environment plays, one int per environment, fixed for the
        environment's life; see `task_ids`. None: every environment plays task 0.
      frame_stack_padding: how the env pads a grey frame stack after a reset: 'zeros' (ale-py's
        `AtariVectorEnv`: zero frames before the reset frame) or 'reset' (gymnasium's
        `FrameStackObservation`: the reset frame repeated); see `frame_stack_padding`. None (default):
        'zeros' for ale-py's vector env, and no frame stack for any other env.

    Raises:
      ValueError: if the autoreset mode is not NEXT_STEP, an ale-py env's frameskip is unknown, or
        `task_ids` does not hold one entry per environment.
      TypeError: if a space is neither Discrete nor Box.
    """
    super().__init__(handle_auto_reset=False)
    mode = env.metadata.get('autoreset_mode')
    try:
      mode = AutoresetMode(mode)
    except ValueError:
      mode = None
    if mode is not AutoresetMode.NEXT_STEP:
      raise ValueError(
          f'Vector environment {env!r} has autoreset_mode {env.metadata.get("autoreset_mode")!r}; '
          'only AutoresetMode.NEXT_STEP is supported (pass autoreset_mode=NEXT_STEP when creating it).')
    self._env = env
    self._seed = seed
    self._num_envs = int(env.num_envs)
    if env_id is None:
      env_id = env.spec.id if env.spec is not None else type(env.unwrapped).__name__
    self._env_id = env_id

    is_ale = isinstance(env.unwrapped, AtariVectorEnv)
    if frames_per_step is None:
      frames_per_step = _frames_per_step_from_spec(env)
      if frames_per_step is None:
        if is_ale:
          raise ValueError(
              f'Cannot tell the frameskip of ale-py vector env {env_id!r} (it has no spec); '
              'pass frames_per_step=<frameskip> to VectorGymnasiumEnvironment.')
        frames_per_step = 1
    self._frames_per_step = frames_per_step

    if channels_first_stack is None:
      channels_first_stack = is_ale
    observation_space = self._set_frame_stacks(env.single_observation_space, channels_first_stack,
                                               frame_stack_padding, is_ale)
    self._observation_spec = space_to_spec(observation_space, 'observation')
    self._action_spec = space_to_spec(env.single_action_space, 'action')
    self._observation_dtype = self._observation_spec.dtype
    self._action_dtype = self._action_spec.dtype

    self._info: dict = {}
    # ale-py's vector env steps on its own threads between its send() and recv().
    self._asynchronous = is_ale and env is env.unwrapped
    self._pending_action: Optional[np.ndarray] = None
    self._tracked_info_keys = tuple(tracked_info_keys)
    self._visited = {key: set() for key in self._tracked_info_keys}
    self._task_ids = np.zeros(self._num_envs, np.int32) if task_ids is None else np.array(task_ids, np.int32)
    if self._task_ids.shape != (self._num_envs,):
      raise ValueError(f'task_ids {task_ids!r} of {env_id!r} must hold one int per environment '
                       f'({self._num_envs}).')
    self._episode_ended = np.zeros(self._num_envs, dtype=bool)
    self._any_episode_ended = False
    self._episode_returns = np.zeros(self._num_envs, dtype=np.float64)
    self._episode_lengths = np.zeros(self._num_envs, dtype=np.int64)
    self._finished_returns: list = []
    self._finished_lengths: list = []

  def _set_frame_stacks(self, observation_space, channels_first_stack: bool, frame_stack_padding: Optional[str],
                        is_ale: bool):
    """Sets how observations are transposed and how frame stacks are padded (see `__init__`); returns the
    per-env observation space delivered. Only ale-py's image stacks are channels-first; other Box
    observations are left as they are."""
    self._channels_last_axes = None
    self._rgb_stack = False
    if channels_first_stack and isinstance(observation_space, gymnasium.spaces.Box):
      if len(observation_space.shape) == 3:  # [stack, H, W] grey.
        self._channels_last_axes = (0, 2, 3, 1)
      elif len(observation_space.shape) == 4:  # [stack, H, W, 3] RGB.
        self._channels_last_axes = (0, 2, 3, 1, 4)
        self._rgb_stack = True
    if self._channels_last_axes is not None:
      observation_space = self._channels_last_space(observation_space)
    grey_stack = self._channels_last_axes is not None and not self._rgb_stack
    if frame_stack_padding is None and grey_stack and is_ale:
      frame_stack_padding = 'zeros'
    if frame_stack_padding is not None and (not grey_stack or frame_stack_padding not in ('zeros', 'reset')):
      raise errors.ConfigError(f'frame_stack_padding={frame_stack_padding!r} of {self._env_id!r} needs grey '
                               "frame stacks and 'zeros' or 'reset'; pass None for other observations.")
    self._frame_stack_padding = frame_stack_padding
    return observation_space

  def _channels_last_space(self, space: gymnasium.spaces.Box) -> gymnasium.spaces.Box:
    """The per-env Box that `_observation` produces from ale-py's channels-first `space`."""
    per_env_axes = tuple(axis - 1 for axis in self._channels_last_axes[1:])
    low = np.transpose(space.low, per_env_axes)
    high = np.transpose(space.high, per_env_axes)
    if self._rgb_stack:
      low = low.reshape(low.shape[:2] + (-1,))
      high = high.reshape(high.shape[:2] + (-1,))
    return gymnasium.spaces.Box(low=low, high=high, dtype=space.dtype)

  def _observation(self, observation: np.ndarray) -> np.ndarray:
    if observation.dtype != self._observation_dtype:
      observation = observation.astype(self._observation_dtype)
    if self._channels_last_axes is None:
      return observation
    if not self._rgb_stack and observation.shape[1] <= _OPENCV_MAX_CHANNELS:
      # Grey stacks [N, stack, H, W] -> contiguous [N, H, W, stack]. OpenCV's channel merge does this
      # ~10x faster than numpy's strided transpose copy (50 us against 500 us for 8 Atari stacks), and a
      # contiguous array reaches TensorFlow and Reverb without a further copy.
      merged = np.empty((observation.shape[0],) + observation.shape[2:] + observation.shape[1:2],
                        observation.dtype)
      for i, stack in enumerate(observation):
        cv2.merge(list(stack), dst=merged[i])
      return merged
    observation = np.transpose(observation, self._channels_last_axes)
    if self._rgb_stack:
      observation = observation.reshape(observation.shape[:3] + (-1,))
    return observation

  @property
  def batched(self) -> bool:
    """Always True: time steps and actions carry a leading `[num_envs]` dimension."""
    return True

  batch_size = read_only('_num_envs', 'The number of environments, N.')
  env_id = read_only("_env_id", "The environment's id, e.g. 'ALE/Breakout-v5'.")
  frames_per_step = read_only('_frames_per_step',
                              'Emulator frames per agent step (the frameskip; 1 for non-Atari environments).')

  @property
  def frame_stack_padding(self) -> Optional[str]:
    """None unless observations are stacks of grey frames `[H, W, S]` (newest last); then how a stack
    is padded after a reset: 'zeros' (zero frames, then the reset frame) or 'reset' (the reset frame
    repeated). Replay uses it to store each frame once and rebuild the stacks exactly."""
    return self._frame_stack_padding

  vector_env = read_only('_env', 'The wrapped gymnasium vector environment.')

  @property
  def task_ids(self) -> np.ndarray:
    """int32 `[N]`: the task environment i plays (e.g. its game in a multi-game MinAtar env); all 0 unless
    the environment was built with several tasks. Fixed, so a batch column's task is its env's."""
    return self._task_ids.copy()

  @property
  def tracked_info_keys(self) -> Tuple[str, ...]:
    return self._tracked_info_keys

  def visited_info_values(self) -> dict:
    """`{key: set of values}` seen so far in the tracked `info` entries (`tracked_info_keys`)."""
    return {key: set(values) for key, values in self._visited.items()}

  def _track(self, info: dict) -> None:
    for key in self._tracked_info_keys:
      if key in info:
        values = np.asarray(info[key])
        mask = info.get('_' + key)
        self._visited[key].update((values[mask] if mask is not None else values).tolist())

  def pop_finished_episodes(self) -> Tuple[np.ndarray, np.ndarray]:
    """Returns and forgets the episodes completed since the previous call.

    Returns:
      `(returns, lengths)`: float64 raw undiscounted returns (the environment's own rewards, so
      true game scores when the env does not clip) and int64 lengths in agent steps, one entry per
      finished episode, in order of completion. Both are empty if none finished.
    """
    if not self._finished_returns:
      return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.int64)
    returns = np.concatenate(self._finished_returns)
    lengths = np.concatenate(self._finished_lengths)
    self._finished_returns, self._finished_lengths = [], []
    return returns, lengths

  def _reset(self) -> ts.TimeStep:
    if self._pending_action is not None:
      if self._asynchronous:
        self._env.recv()  # Drain the step in flight before resetting the emulators.
      self._pending_action = None
    observation, self._info = self._env.reset(seed=self._seed)
    self._track(self._info)
    self._seed = None
    # Episodes cut short by an explicit reset are not reported: they did not finish.
    self._episode_ended[:] = False
    self._any_episode_ended = False
    self._episode_returns[:] = 0.0
    self._episode_lengths[:] = 0
    return ts.TimeStep(
        step_type=np.full(self._num_envs, _FIRST, dtype=np.int32),
        reward=np.zeros(self._num_envs, dtype=np.float32),
        discount=np.ones(self._num_envs, dtype=np.float32),
        observation=self._observation(observation))

  def send(self, action: np.ndarray) -> None:
    """Starts a step of all environments with `action`; `receive()` returns its time step.

    With ale-py's `AtariVectorEnv` the emulators run on their own threads between the two calls, so
    the caller can do other work meanwhile (the actor writes the previous step to Reverb); other
    vector envs step inside `receive()`. `step(action)` is `send(action)` followed by `receive()`.
    """
    if self.current_time_step() is None:
      raise RuntimeError(f'send() before reset() on {self._env_id!r}; call reset() first.')
    if self._pending_action is not None:
      raise RuntimeError(f'send() twice without receive() on {self._env_id!r}.')
    action = np.asarray(action)
    if action.shape[:1] != (self._num_envs,):
      raise ValueError(
          f'Expected actions of shape [{self._num_envs}, ...] for {self._env_id!r}, got shape '
          f'{action.shape}; pass one action per environment.')
    if action.dtype != self._action_dtype:
      action = action.astype(self._action_dtype)
    if self._asynchronous:
      self._env.send(action)
    self._pending_action = action

  def receive(self) -> ts.TimeStep:
    """Waits for the step started by `send()` and returns its time step (see `send`)."""
    if self._pending_action is None:
      raise RuntimeError(f'receive() without send() on {self._env_id!r}.')
    action, self._pending_action = self._pending_action, None
    if self._asynchronous:
      observation, raw_reward, terminated, truncated, self._info = self._env.recv()
    else:
      observation, raw_reward, terminated, truncated, self._info = self._env.step(action)
    self._track(self._info)
    # A copy: the time step must not alias a buffer the vector env might reuse or we modify below.
    reward = np.array(raw_reward, dtype=np.float32)
    # r.r is NaN or inf whenever any reward is, and costs a third of isfinite(r).all(); the exact
    # check runs only then (r.r may also overflow for |r| > 1e19, which the exact check clears).
    if not math.isfinite(reward.dot(reward)) and not np.isfinite(reward).all():
      _raise_non_finite_reward(self._env_id, reward)

    last = np.logical_or(terminated, truncated)
    # MID = 1, LAST = 2; FIRST = 0 is set below for the environments that were reset.
    step_type = last.astype(np.int32)
    step_type += _MID
    discount = np.logical_not(terminated).astype(np.float32)
    if self._any_episode_ended:
      # NEXT_STEP reset step: gymnasium already returns reward 0 here; forcing it keeps the
      # FIRST-step contract (and the episode returns) right for any vector env.
      first = self._episode_ended
      step_type[first] = _FIRST
      reward[first] = 0.0
      self._episode_returns[first] = 0.0
      self._episode_lengths[first] = -1  # The increment below makes the reset step length 0.

    self._episode_returns += reward
    self._episode_lengths += 1
    self._episode_ended = last
    self._any_episode_ended = np.count_nonzero(last) > 0
    if self._any_episode_ended:
      self._finished_returns.append(self._episode_returns[last])
      self._finished_lengths.append(self._episode_lengths[last])
    self._current_time_step = ts.TimeStep(step_type=step_type, reward=reward, discount=discount,
                                          observation=self._observation(observation))
    return self._current_time_step

  def _step(self, action: np.ndarray) -> ts.TimeStep:
    self.send(action)
    return self.receive()

  def close(self) -> None:
    """Closes the wrapped vector environment."""
    self._env.close()
