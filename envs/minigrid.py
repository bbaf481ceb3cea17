"""MiniGrid tasks (Chevalier-Boisvert et al., Farama's `minigrid` package) as vector environments seen as
pixels: the RND-from-pixels study's environments.

An agent in a grid world sees a 7x7 cell window in front of it (egocentric, walls block the view). Ids are
the package's gymnasium ids, 'MiniGrid-<Task>-v<k>' (e.g. 'MiniGrid-KeyCorridorS3R3-v0'), plus
'MiniGrid-MultiRoom-N7-S4-v0', registered here: seven rooms of side at most 4 and a 140-step limit, the
task of Raileanu & Rocktäschel (2020, "RIDE", Figure 3a) that the package does not register. Every reset
draws a new layout (the tasks are procedurally generated). The reward is 0 except at the goal:
`1 - 0.9 * steps / max_steps`, so any positive return is a success.

What an observation is (`minigrid_options.observation`):

* 'rgb' (default): the agent's 7x7 window rendered as an RGB image, `tile_size` pixels per cell (the
  package's `RGBImgPartialObsWrapper`): uint8 `[7·tile, 7·tile, 3]`, 56x56x3 at the default 8. These are
  pixels in the sense of the RND paper's claim: the networks must learn what a door, a key or a wall looks
  like, and two states that differ in one object differ in a few dozen pixels of one tile.
* 'symbolic': the package's own encoding, `[7, 7, 3]` (object type, colour, state) indices per cell, the
  observation of the RIDE/AMIGo/NovelD papers. Not pixels: each cell already names its object. Delivered
  as float32 (the raw indices 0..10): uint8 would be scaled by 1/255 in the torsos as if it were pixels
  (`networks/torsos.py`).

The mission string and the agent's direction are dropped (`ImgObsWrapper`): the view is egocentric, so it
already shows which way the agent faces, and a MiniGrid task's mission is the same in every episode.
Rendering costs about 0.5 ms a step on one core here (about 7x the symbolic encoding); the environments
of a vector env step one after another in the calling process.
"""

from __future__ import annotations

from typing import Optional

import gin
import gymnasium
import numpy as np
from gymnasium.vector import AutoresetMode

from protege.runtime import errors

ID_PREFIX = 'MiniGrid-'
# Raileanu & Rocktäschel (2020)'s MultiRoom-N7-S4 (their gym-minigrid fork's `MultiRoomEnvN7S4`: 7 rooms,
# sides 4 at most, max_steps = 20 per room). Farama's package registers N2-S4, N4-S5 and N6 only.
MULTIROOM_N7_S4 = 'MiniGrid-MultiRoom-N7-S4-v0'
OBSERVATIONS = ('rgb', 'symbolic')


def register_envs() -> None:
  """Registers the package's 'MiniGrid-...' ids and `MULTIROOM_N7_S4` once (later calls do nothing).

  Raises:
    ConfigError: if the `minigrid` package is not installed, with the command that installs it.
  """
  if MULTIROOM_N7_S4 in gymnasium.registry:
    return
  try:
    # pylint: disable=g-import-not-at-top
    import minigrid  # the Farama package (absolute import), not this module
  except ImportError as error:
    raise errors.ConfigError(
        "MiniGrid ids need Farama's minigrid package, which is not installed: pip install --no-deps "
        f'minigrid==3.2.0 (make setup does; see requirements-nodeps.txt). ({error})') from error
  gymnasium.register_envs(minigrid)
  gymnasium.register(id=MULTIROOM_N7_S4, entry_point='minigrid.envs:MultiRoomEnv',
                     kwargs={'minNumRooms': 7, 'maxNumRooms': 7, 'maxRoomSize': 4})


def is_minigrid_id(env_id: str) -> bool:
  """True for MiniGrid ids ('MiniGrid-KeyCorridorS3R3-v0')."""
  return env_id.startswith(ID_PREFIX)


@gin.configurable
def minigrid_options(observation: str = 'rgb', tile_size: int = 8) -> dict:
  """Options of MiniGrid environments.

  Args:
    observation: 'rgb' (default): the agent's 7x7-cell view rendered as RGB pixels, uint8
      `[7·tile_size, 7·tile_size, 3]`. 'symbolic': the package's (object, colour, state) index grid,
      `[7, 7, 3]`, as float32. See the module docstring.
    tile_size: pixels per grid cell of the 'rgb' view; 8 (the package's default) gives 56x56 images, the
      smallest multiple of 7 that RND's convolutions take is 42 (tile 6: they need 36x36 or more).

  Episodes end at the task's own step limit (`max_steps`: MultiRoom 20 per room, KeyCorridor 30·S²),
  a truncation (LAST, discount 1), or at the goal.

  Returns:
    A dict with these two keys.
  """
  return dict(observation=observation, tile_size=tile_size)


def _check_options(options: dict) -> None:
  if options['observation'] not in OBSERVATIONS:
    raise errors.ConfigError(f"minigrid_options.observation must be one of {OBSERVATIONS}, got "
                             f"{options['observation']!r}.")
  tile_size = options['tile_size']
  if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 1:
    raise errors.ConfigError(f'minigrid_options.tile_size must be an int >= 1 (pixels per cell), got '
                             f'{tile_size!r}.')


def _make_task(env_id: str, options: dict):
  """A factory of one wrapped task `env_id` (a zero-argument callable, as `SyncVectorEnv` takes)."""
  # pylint: disable=g-import-not-at-top
  from minigrid import wrappers

  def make():
    env = gymnasium.make(env_id)
    if options['observation'] == 'rgb':
      return wrappers.ImgObsWrapper(wrappers.RGBImgPartialObsWrapper(env, tile_size=options['tile_size']))
    return gymnasium.wrappers.DtypeObservation(wrappers.ImgObsWrapper(env), np.float32)
  return make


def make_vector_env(env_id: str, num_envs: int,
                    options: Optional[dict] = None) -> gymnasium.vector.SyncVectorEnv:
  """`num_envs` copies of MiniGrid task `env_id` stepped in one process.

  Args:
    env_id: a registered MiniGrid id (`register_envs` first).
    num_envs: N, the number of environments.
    options: `minigrid_options()` (None: read them from gin).

  Returns:
    A `SyncVectorEnv` with NEXT_STEP autoreset and image observations `[N, H, W, 3]` (uint8 pixels or
    float32 indices, see `minigrid_options`) and the task's Discrete(7) actions (left, right, forward, pickup, drop, toggle,
    done).

  Raises:
    ConfigError: for an option no environment can use.
  """
  options = minigrid_options() if options is None else options
  _check_options(options)
  return gymnasium.vector.SyncVectorEnv([_make_task(env_id, options) for _ in range(num_envs)],
                                        autoreset_mode=AutoresetMode.NEXT_STEP)
