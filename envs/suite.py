"""Builds batched environments from an id: Atari through ale-py's native vector env, MinAtar through
`envs.minatar` (one game or several in one vector env), MiniGrid through `envs.minigrid` (pixels), the rest through gymnasium's vector environments,
all behind `VectorGymnasiumEnvironment`."""

from __future__ import annotations

import difflib
from typing import Any, Dict, Optional

import ale_py
import gin
import gymnasium
from gymnasium.vector import AutoresetMode

from protege.envs import deep_sea
from protege.envs import gymnasium_adapter
from protege.envs import minatar
from protege.envs import minigrid
from protege.runtime import errors

# Importing ale_py registers the 'ALE/<Game>-v5' ids, importing envs.deep_sea 'protege/DeepSea-v0';
# registering explicitly documents why the imports are needed and keeps linters from dropping them.
gymnasium.register_envs(ale_py)
gymnasium.register_envs(deep_sea)


@gin.configurable
def atari_options(repeat_action_probability: float = 0.25,
                  frameskip: int = 4,
                  maxpool: bool = True,
                  stack_num: int = 4,
                  img_height: int = 84,
                  img_width: int = 84,
                  grayscale: bool = True,
                  max_num_frames_per_episode: int = 18000,
                  noop_max: int = 0,
                  episodic_life: bool = False,
                  reward_clipping: bool = False,
                  use_fire_reset: bool = False,
                  full_action_space: bool = False,
                  num_threads: int = 0) -> dict:
  """Keyword arguments for ale-py's `AtariVectorEnv`; defaults follow the RND paper.

  The defaults reproduce the Atari set-up of Burda et al. (2018), "Exploration by Random Network
  Distillation" (docs/rnd.md, "Atari preprocessing"), which in turn follows Machado et al. (2018).

  Args:
    repeat_action_probability: sticky actions: with this probability the emulator repeats the
      previous action instead of the chosen one, at every frame. 0.25 as in the RND paper; it
      makes the games stochastic so a policy cannot memorise an action sequence.
    frameskip: emulator frames per agent step ("max-and-skip 4"); the agent's action is repeated
      for this many frames and rewards are summed over them.
    maxpool: take the pixel-wise max over the last two skipped frames, removing the flicker of
      sprites that are drawn only on alternate frames.
    stack_num: number of consecutive (processed) frames stacked into one observation; 4 gives the
      policy velocities. The adapter delivers them as the last axis: `[84, 84, 4]`.
    img_height: observation height in pixels after resizing (84).
    img_width: observation width in pixels after resizing (84).
    grayscale: grey-scale frames (True) rather than RGB.
    max_num_frames_per_episode: episode cap in emulator FRAMES (not agent steps): 18,000 frames
      = 4,500 agent steps at frameskip 4 = 5 minutes of play. Hitting it truncates the episode
      (LAST with discount 1), it does not terminate it.
    noop_max: maximum number of random no-op actions at the start of an episode. 0: the RND
      paper uses no no-op starts (sticky actions already supply the randomness).
    episodic_life: if True, losing a life ends the episode. False: in the RND paper life loss is
      NOT terminal, so an episode (and the score reported for it) lasts until game over (or the frame cap).
    reward_clipping: clip rewards to [-1, 1] inside the environment. False on purpose: the
      learner clips extrinsic rewards itself (RND paper), while episode returns reported to users
      (`pop_finished_episodes`, summaries) stay the true game scores.
    use_fire_reset: press FIRE after each reset in games that need it to start (Breakout, ...).
      False: the RND paper's preprocessing has no fire reset (docs/rnd.md, "Atari preprocessing"), so starting
      the game is part of what the agent learns; turning it on changes the task.
    full_action_space: use all 18 Atari actions rather than the game's minimal action set.
    num_threads: emulator threads of the vector env; 0 lets ale-py use one per hardware thread.

  Returns:
    A dict of `AtariVectorEnv` keyword arguments.
  """
  return dict(
      repeat_action_probability=repeat_action_probability,
      frameskip=frameskip,
      maxpool=maxpool,
      stack_num=stack_num,
      img_height=img_height,
      img_width=img_width,
      grayscale=grayscale,
      max_num_frames_per_episode=max_num_frames_per_episode,
      noop_max=noop_max,
      episodic_life=episodic_life,
      reward_clipping=reward_clipping,
      use_fire_reset=use_fire_reset,
      full_action_space=full_action_space,
      num_threads=num_threads,
  )


def _find_spec(env_id: str) -> gymnasium.envs.registration.EnvSpec:
  """Looks `env_id` up in gymnasium's registry; a one-line ValueError with suggestions if absent."""
  try:
    return gymnasium.spec(env_id)
  except gymnasium.error.Error:
    pass
  suggestions = difflib.get_close_matches(env_id, list(gymnasium.registry.keys()), n=3, cutoff=0.6)
  hint = (f'did you mean {" or ".join(repr(s) for s in suggestions)}?' if suggestions else
          'no registered id is close.')
  raise errors.ConfigError(
      f'Unknown environment id {env_id!r}; {hint} gymnasium.pprint_registry() lists the '
      "registered ids; Atari games are 'ALE/<Game>-v5' (e.g. 'ALE/MontezumaRevenge-v5').")


class RAMInfo(gymnasium.Wrapper):
  """Adds bytes of the Atari console's RAM to `info`, e.g. `{'room': 3}` for Montezuma's Revenge's room."""

  def __init__(self, env: gymnasium.Env, addresses: Dict[str, int]):
    super().__init__(env)
    self._addresses = dict(addresses)

  def _add(self, info: dict) -> dict:
    ram = self.env.unwrapped.ale.getRAM()
    return dict(info, **{key: int(ram[address]) for key, address in self._addresses.items()})

  def reset(self, **kwargs):
    observation, info = self.env.reset(**kwargs)
    return observation, self._add(info)

  def step(self, action):
    observation, reward, terminated, truncated, info = self.env.step(action)
    return observation, reward, terminated, truncated, self._add(info)


def _gymnasium_atari(env_id: str, num_envs: int, options: dict, ram_info: Dict[str, int]):
  """`num_envs` single ALE environments with gymnasium's Atari wrappers, stepped in one process.

  The same preprocessing as `atari_options` describes (AtariPreprocessing: grey, resize, max-pool of the
  last two frames, frame skip, no-op starts, life loss; FrameStackObservation), built from single
  environments so that each one's RAM can be read (`ram_info`); ale-py's `AtariVectorEnv` exposes none.
  Slower than the vector env: the emulators step one after another in the calling thread.
  """
  if options['use_fire_reset'] or options['reward_clipping'] or not options['grayscale']:
    raise errors.ConfigError(
        "make_environment.atari_backend = 'gymnasium' supports grey frames without fire reset or reward "
        'clipping; set atari_options.use_fire_reset/reward_clipping = False and grayscale = True, or use '
        "atari_backend = 'ale_vector'.")
  screen = (options['img_width'], options['img_height'])
  wrappers = [
      lambda env: gymnasium.wrappers.AtariPreprocessing(
          env, noop_max=options['noop_max'], frame_skip=options['frameskip'], screen_size=screen,
          terminal_on_life_loss=options['episodic_life'], grayscale_obs=True),
      lambda env: gymnasium.wrappers.FrameStackObservation(env, options['stack_num']),
  ]
  if ram_info:
    wrappers.append(lambda env: RAMInfo(env, ram_info))
  return gymnasium.make_vec(
      env_id, num_envs, vectorization_mode='sync',
      vector_kwargs={'autoreset_mode': AutoresetMode.NEXT_STEP}, wrappers=wrappers,
      frameskip=1, repeat_action_probability=options['repeat_action_probability'],
      full_action_space=options['full_action_space'],
      max_num_frames_per_episode=options['max_num_frames_per_episode'])


def _refuse_env_kwargs(env_kwargs: Optional[Dict[str, Any]], env_id: str, family: str, instead: str) -> None:
  """Raises a one-line ConfigError when `env_kwargs` is given for a family configured through its own
  gin options; `instead` names them (e.g. "the games with minatar_options (e.g. gin '...')")."""
  if env_kwargs:
    raise errors.ConfigError(
        f'make_environment.env_kwargs {env_kwargs!r} is not used for {family} id {env_id!r}; configure '
        f'{instead} instead.')


def _minatar(env_id: str, num_envs: int, seed: int, env_kwargs: Optional[Dict[str, Any]]
             ) -> gymnasium_adapter.VectorGymnasiumEnvironment:
  """`make_environment` for 'MinAtar/...' ids, one game or several joined by '+' (see `envs/minatar.py`)."""
  _refuse_env_kwargs(env_kwargs, env_id, 'MinAtar',
                     "the games with minatar_options (e.g. gin 'minatar_options.sticky_action_prob = 0.1')")
  minatar.register_envs()
  for game_id in minatar.split_env_id(env_id):
    _find_spec(game_id)  # an unknown game: the same one-line error, with suggestions, as other ids
  vector_env, task_ids = minatar.make_vector_env(env_id, num_envs)
  return gymnasium_adapter.VectorGymnasiumEnvironment(
      vector_env, seed=seed, env_id=env_id, frames_per_step=1, task_ids=task_ids)


def _minigrid(env_id: str, num_envs: int, seed: int, env_kwargs: Optional[Dict[str, Any]]
              ) -> gymnasium_adapter.VectorGymnasiumEnvironment:
  """`make_environment` for 'MiniGrid-...' ids (registered on first use; see `envs/minigrid.py`)."""
  _refuse_env_kwargs(env_kwargs, env_id, 'MiniGrid',
                     "the observation with minigrid_options (e.g. gin 'minigrid_options.tile_size = 6')")
  minigrid.register_envs()
  _find_spec(env_id)  # an unknown task: the same one-line error, with suggestions, as other ids
  return gymnasium_adapter.VectorGymnasiumEnvironment(
      minigrid.make_vector_env(env_id, num_envs), seed=seed, env_id=env_id, frames_per_step=1)


@gin.configurable
def make_environment(env_id: str = 'CartPole-v1',
                     num_envs: int = 8,
                     seed: int = 0,
                     env_kwargs: Optional[Dict[str, Any]] = None,
                     atari_backend: str = 'ale_vector',
                     ram_info: Optional[Dict[str, int]] = None
                     ) -> gymnasium_adapter.VectorGymnasiumEnvironment:
  """Creates `num_envs` copies of `env_id` as one batched TF-Agents environment.

  'ALE/...' ids use ale-py's native multi-threaded `AtariVectorEnv` configured by
  `atari_options()`; 'MinAtar/...' ids (registered on first use) a `SyncVectorEnv` of MinAtar games
  configured by `minatar.minatar_options()`, with float32 observations and, for several games joined by
  '+', the envs split into one block per game (`envs/minatar.py`); other ids use their gymnasium vector
  entry point when they have one (e.g. CartPole's `CartPoleVectorEnv`) and a `SyncVectorEnv` otherwise.
  All use gymnasium's NEXT_STEP autoreset, which `VectorGymnasiumEnvironment` turns into TF-Agents' FIRST
  steps. 'MiniGrid-...' ids (registered on first use) give a `SyncVectorEnv` of the task seen as RGB
  pixels, configured by `minigrid.minigrid_options()`.

  Args:
    env_id: a gymnasium registry id, e.g. 'CartPole-v1', 'ALE/MontezumaRevenge-v5',
      'MinAtar/Breakout-v0' or 'MiniGrid-MultiRoom-N7-S4-v0'; or MinAtar ids joined by '+' ('MinAtar/Breakout-v0+MinAtar/SpaceInvaders-v0'):
      the first N/2 envs play the first game, the others the second, and the returned env's `task_ids`
      say which (needs equal observation shapes: `minatar_options.pad_channels_to`).
    num_envs: number of environments stepped together (the batch size of every time step).
    seed: seeds environment i with `seed + i` on the first reset, so a run is reproducible.
      (Vector envs that share one generator, like 'protege/DeepSea-v0', get `seed` itself; DeepSea
      also draws its action mapping from it, so each seed is a different instance.)
    env_kwargs: keyword arguments of a non-Atari environment's constructor, merged over the id's
      registered kwargs by `gymnasium.make_vec`: the vector entry point's (e.g.
      `{'size': 10}` for 'protege/DeepSea-v0', `{'max_episode_steps': 200}` for CartPole) or,
      without one, each single environment's. None (default) keeps the registered ones. Atari
      games take theirs from `atari_options` instead, MinAtar games from `minatar_options`, MiniGrid
      tasks from `minigrid_options`.
    atari_backend: 'ale_vector' (default): ale-py's multi-threaded `AtariVectorEnv`. 'gymnasium': single
      ALE environments with gymnasium's Atari wrappers in one process, slower, but their RAM can be
      read (`ram_info`).
    ram_info: Atari only, with atari_backend 'gymnasium': `{info_key: RAM address}` bytes to report in
      each step's info and to track (`VectorGymnasiumEnvironment.visited_info_values`, logged by the
      training run as `env/visited_<key>`), e.g. `{'room': 3}`: Montezuma's Revenge's room number.

  Returns:
    A `VectorGymnasiumEnvironment` with `batch_size == num_envs`.

  Raises:
    ValueError: if `num_envs < 1`, `env_id` is not registered (with the closest ids), or
      `env_kwargs` is given for an 'ALE/...', 'MinAtar/...' or 'MiniGrid-...' id.
  """
  if num_envs < 1:
    raise errors.ConfigError(f'num_envs must be at least 1, got {num_envs}; set make_environment.num_envs.')
  if minatar.is_minatar_id(env_id):
    return _minatar(env_id, num_envs, seed, env_kwargs)
  if minigrid.is_minigrid_id(env_id):
    return _minigrid(env_id, num_envs, seed, env_kwargs)
  spec = _find_spec(env_id)
  env_kwargs = dict(env_kwargs or {})
  frames_per_step = None
  if env_id.startswith('ALE/'):
    _refuse_env_kwargs(env_kwargs, env_id, 'Atari',
                       "the emulator with atari_options (e.g. gin 'atari_options.frameskip = 4')")
    options = atari_options()
    frames_per_step = options['frameskip']
    if atari_backend == 'gymnasium':
      vector_env = _gymnasium_atari(env_id, num_envs, options, dict(ram_info or {}))
      return gymnasium_adapter.VectorGymnasiumEnvironment(
          vector_env, seed=seed, env_id=env_id, frames_per_step=frames_per_step, channels_first_stack=True,
          tracked_info_keys=tuple(ram_info or ()), frame_stack_padding='reset')
    if atari_backend != 'ale_vector':
      raise errors.ConfigError(f'make_environment.atari_backend={atari_backend!r} is unknown; use '
                               "'ale_vector' or 'gymnasium'.")
    if ram_info:
      raise errors.ConfigError(f'make_environment.ram_info {ram_info!r} needs atari_backend = \'gymnasium\' '
                               '(ale-py\'s vector env exposes no RAM).')
    # make_vec merges these over the id's registered kwargs (which carry sticky actions 0.25,
    # frameskip 4 and a 108,000-frame cap) and passes them to AtariVectorEnv.
    vector_env = gymnasium.make_vec(
        env_id, num_envs, vectorization_mode='vector_entry_point',
        autoreset_mode=AutoresetMode.NEXT_STEP, **options)
  elif spec.vector_entry_point is not None:
    vector_env = gymnasium.make_vec(env_id, num_envs, vectorization_mode='vector_entry_point', **env_kwargs)
  else:
    vector_env = gymnasium.make_vec(
        env_id, num_envs, vectorization_mode='sync',
        vector_kwargs={'autoreset_mode': AutoresetMode.NEXT_STEP}, **env_kwargs)
  return gymnasium_adapter.VectorGymnasiumEnvironment(
      vector_env, seed=seed, env_id=env_id, frames_per_step=frames_per_step)
