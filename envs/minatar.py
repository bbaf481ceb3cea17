"""MinAtar games (Young & Tian 2019, "MinAtar: An Atari-Inspired Testbed for Thorough and Reproducible
Reinforcement Learning Experiments", arXiv 1903.03176) as vector environments, one game or several.

MinAtar plays Asterix, Breakout, Freeway, Seaquest and Space Invaders on a 10x10 grid: an observation is
`[10, 10, C]` booleans, one channel per kind of object (C is 4 for Asterix and Breakout, 7 for Freeway,
10 for Seaquest, 6 for Space Invaders). Ids are the package's gymnasium ids, 'MinAtar/<Game>-v0' (all six
actions, the same for every game) and 'MinAtar/<Game>-v1' (the game's minimal action set); they are
registered on first use, since importing `minatar.gym` also imports matplotlib and seaborn.

What the vector environments deliver (see `make_vector_env`):

* Observations are float32 in {0, 1}. gymnasium's bool Box has no TF-Agents spec (TensorFlow's bool has
  no minimum), and uint8 would be wrong: the torsos scale uint8 observations by 1/255, as for Atari
  pixels (`networks/torsos.py`). The cast happens per environment in `MinAtarObservation` together with
  the channel padding (one write of 400 floats per step; ~1 us).
* `pad_channels_to` appends all-zero channels, so games of different channel counts share one
  observation shape: the condition for one student network to play several games, and for a teacher
  trained on one game to read a multi-game student's observations. A game's own channels keep their
  indices 0..C-1.
* Several games in one vector env: `'MinAtar/Breakout-v0+MinAtar/SpaceInvaders-v0'` with N envs plays
  game k on envs `[k·N/K, (k+1)·N/K)` (contiguous blocks; sizes differ by at most one when K does not
  divide N), and `task_ids[i]` is the index k of env i's game in the id. The layout never changes, so the
  task of a batch column is fixed by its environment index.
"""

from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

import gin
import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode

from protege.runtime import errors

ID_PREFIX = 'MinAtar/'
# Joins the ids of the games of a multi-game vector env: 'MinAtar/Breakout-v0+MinAtar/SpaceInvaders-v0'.
TASK_SEPARATOR = '+'
# Seaquest has the most channels of the five games; padding to it fits every game.
MAX_CHANNELS = 10


def register_envs() -> None:
  """Registers the 'MinAtar/<Game>-v0/-v1' gymnasium ids once (later calls do nothing)."""
  if f'{ID_PREFIX}Breakout-v0' in gymnasium.registry:
    return
  # pylint: disable=g-import-not-at-top
  import minatar.gym  # the MinAtar package (absolute import), not this module
  minatar.gym.register_envs()


def is_minatar_id(env_id: str) -> bool:
  """True for MinAtar ids, single ('MinAtar/Breakout-v0') or joined by '+'."""
  return env_id.startswith(ID_PREFIX)


def split_env_id(env_id: str) -> List[str]:
  """The game ids of `env_id`: `['MinAtar/Breakout-v0']`, or one per '+'-joined part.

  Raises:
    ValueError: if a part is empty or does not start with 'MinAtar/'.
  """
  parts = env_id.split(TASK_SEPARATOR)
  bad = [part for part in parts if not part.startswith(ID_PREFIX)]
  if bad:
    raise errors.ConfigError(f'Environment id {env_id!r} joins {bad!r}, which are not MinAtar ids; several '
                             'games in one vector env are written '
                             "'MinAtar/Breakout-v0+MinAtar/SpaceInvaders-v0'.")
  return parts


@gin.configurable
def minatar_options(sticky_action_prob: float = 0.1,
                    difficulty_ramping: bool = True,
                    pad_channels_to: Optional[int] = None,
                    max_episode_steps: Optional[int] = None) -> dict:
  """Options of MinAtar environments; the defaults are MinAtar's own (Young & Tian 2019).

  Args:
    sticky_action_prob: with this probability the game repeats the previous action instead of the
      chosen one, at every step. 0.1, MinAtar's default (its analogue of Machado et al.'s 0.25 on ALE);
      it makes the games stochastic so that a policy cannot memorise an action sequence.
    difficulty_ramping: True (MinAtar's default): the games speed up as the episode goes on (e.g. Space
      Invaders' aliens, Asterix's objects), so long episodes become harder.
    pad_channels_to: None (default): observations keep the game's C channels. An int >= C: zero channels
      are appended up to this count, e.g. 10 (`MAX_CHANNELS`) gives every game the shape [10, 10, 10].
      Needed when games of different channel counts share a vector env or a network.
    max_episode_steps: None (default, as MinAtar): no time limit (Freeway ends itself after 2,500 steps;
      the other games end when the agent loses). An int: episodes are truncated after this many agent
      steps (LAST with discount 1), a bound on evaluation time for a policy that never loses.

  Returns:
    A dict with these four keys.
  """
  return dict(sticky_action_prob=sticky_action_prob, difficulty_ramping=difficulty_ramping,
              pad_channels_to=pad_channels_to, max_episode_steps=max_episode_steps)


class MinAtarObservation(gymnasium.ObservationWrapper):
  """Casts MinAtar's bool `[10, 10, C]` observations to float32 {0, 1} and pads them to `num_channels`."""

  def __init__(self, env: gymnasium.Env, num_channels: Optional[int] = None):
    """Wraps `env`.

    Args:
      env: a MinAtar environment (bool Box observations `[H, W, C]`).
      num_channels: channels of the output, >= C; appended channels are zero. None keeps C.

    Raises:
      ValueError: if `num_channels` is smaller than the game's channel count.
    """
    super().__init__(env)
    height, width, channels = env.observation_space.shape
    num_channels = channels if num_channels is None else int(num_channels)
    if num_channels < channels:
      raise errors.ConfigError(f'minatar_options.pad_channels_to={num_channels} is below the {channels} '
                               f'channels of {env.spec.id if env.spec else env!r}; use at least {channels} '
                               '(10 fits every game).')
    self._shape = (height, width, num_channels)
    self._channels = channels
    self.observation_space = gymnasium.spaces.Box(0.0, 1.0, shape=self._shape, dtype=np.float32)

  def observation(self, observation: np.ndarray) -> np.ndarray:
    padded = np.zeros(self._shape, np.float32)
    padded[..., :self._channels] = observation
    return padded


def _make_game(env_id: str, options: dict, num_channels: Optional[int]):
  """A factory of one wrapped game `env_id` (a zero-argument callable, as `SyncVectorEnv` takes)."""
  def make():
    with warnings.catch_warnings():
      # gymnasium calls every '-v0' id "out of date" because a '-v1' exists; MinAtar's two versions are
      # two action sets (full and minimal), and '-v0' is the one several games share.
      warnings.filterwarnings('ignore', message='.*is out of date', category=DeprecationWarning)
      env = gymnasium.make(env_id, max_episode_steps=options['max_episode_steps'],
                           sticky_action_prob=options['sticky_action_prob'],
                           difficulty_ramping=options['difficulty_ramping'])
    return MinAtarObservation(env, num_channels)
  return make


def task_layout(num_envs: int, num_tasks: int) -> np.ndarray:
  """Task index of each of `num_envs` envs: contiguous blocks, `task_ids[i] = i·K // N`, int32 `[N]`.

  E.g. N=8, K=2: [0, 0, 0, 0, 1, 1, 1, 1]; N=5, K=2: [0, 0, 0, 1, 1].

  Raises:
    ValueError: if there are fewer environments than tasks.
  """
  if num_envs < num_tasks:
    raise errors.ConfigError(f'{num_tasks} games need at least {num_tasks} environments, got '
                             f'num_envs={num_envs}; set make_environment.num_envs (and train.eval_episodes) '
                             'to a multiple of the games.')
  return (np.arange(num_envs) * num_tasks // num_envs).astype(np.int32)


def make_vector_env(env_id: str, num_envs: int,
                    options: Optional[dict] = None) -> Tuple[gymnasium.vector.SyncVectorEnv, np.ndarray]:
  """`num_envs` MinAtar games stepped in one process, and the task index of each.

  Args:
    env_id: one MinAtar id ('MinAtar/Breakout-v0') or several joined by '+'; the ids must be registered
      (`register_envs`) and valid (the suite checks them against gymnasium's registry).
    num_envs: N, the number of environments.
    options: `minatar_options()` (None: read them from gin).

  Returns:
    `(vector_env, task_ids)`: a `SyncVectorEnv` with NEXT_STEP autoreset and float32 observations
    `[N, 10, 10, C']` (C' = `pad_channels_to` or the game's C), and int32 `[N]` task indices (all 0 for
    one game).

  Raises:
    ValueError: if several games have different channel counts and no common `pad_channels_to`, or
      different numbers of actions (use the '-v0' ids: six actions in every game).
  """
  options = minatar_options() if options is None else options
  game_ids = split_env_id(env_id)
  task_ids = task_layout(num_envs, len(game_ids))
  num_channels = options['pad_channels_to']
  if len(game_ids) > 1:
    # Reads each game's spaces from one throwaway instance (MinAtar builds in microseconds).
    spaces = {}
    for game_id in game_ids:
      probe = _make_game(game_id, options, None)()
      spaces[game_id] = (probe.observation_space.shape, int(probe.action_space.n))
      probe.close()
    shapes = {game_id: shape for game_id, (shape, _) in spaces.items()}
    if num_channels is None and len(set(shapes.values())) > 1:
      channels = {game_id: shape[-1] for game_id, shape in shapes.items()}
      raise errors.ConfigError(f'Games of {env_id!r} have different channel counts {channels}; set '
                               f'minatar_options.pad_channels_to = {max(channels.values())} (or 10, every '
                               'game).')
    actions = {game_id: num_actions for game_id, (_, num_actions) in spaces.items()}
    if len(set(actions.values())) > 1:
      raise errors.ConfigError(f'Games of {env_id!r} have different numbers of actions {actions}; use the '
                               "'-v0' ids, whose six actions are the same in every MinAtar game.")
  env_fns = [_make_game(game_ids[task], options, num_channels) for task in task_ids]
  vector_env = gymnasium.vector.SyncVectorEnv(env_fns, autoreset_mode=AutoresetMode.NEXT_STEP)
  return vector_env, task_ids
