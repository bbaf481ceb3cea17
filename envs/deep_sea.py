"""Deep Sea (Osband et al.), bsuite's hard-exploration chain, as a NumPy-vectorised gymnasium `VectorEnv`.

This reproduces the rules of `bsuite/environments/deep_sea.py` from bsuite 0.3.6 (`DeepSea._step`,
`_reset` and `_get_observation`): an N x N grid, the agent starts top-left and falls one row per step;
in every cell one of the two actions (0/1, by a random per-cell mapping) moves it one column right, at a
cost of `unscaled_move_cost / N`, the other one column left (both clipped to the grid). Moving right in
the last column pays +1, so the only rewarding episode takes "right" N times in a row and returns
`1 - unscaled_move_cost` (0.99); every other policy, and a reward-greedy one in particular, learns to stop
paying the cost, and a uniformly random one finds the treasure once in 2^N episodes. The stochastic
("windy") version moves right only with probability `1 - 1/N` and adds N(0, 1) noise to the reward in
the two bottom corners. Papers: Osband et al. (2017), "Deep Exploration via Randomized Value Functions"
(arXiv:1703.07608), and Osband et al. (2018), "Randomized Prior Functions for Deep Reinforcement
Learning" (arXiv:1806.03335); bsuite: Osband et al. (2020), "Behaviour Suite for Reinforcement Learning".

Why written here rather than imported: bsuite itself pulls pandas, plotnine and scikit-image, and steps
one environment at a time in Python through dm_env. `DeepSeaVectorEnv.step` moves every copy with whole-
batch NumPy operations, and gymnasium's NEXT_STEP autoreset lets `envs.suite.make_environment` wrap it
like any other vector env. Differences from bsuite, none of which changes observations, rewards or
transitions: all copies share one action mapping (they are one MDP instance, as one bsuite env stepped
repeatedly); the stochastic version draws its randomness from gymnasium's `np_random` rather than a
`RandomState`; and bsuite's cumulative logging (`bsuite_info`) is reduced to the per-episode
`'bad_episode'` flag in `info`.

Importing this module registers `'protege/DeepSea-v0'`, so that
`gymnasium.make_vec('protege/DeepSea-v0', n, vectorization_mode='vector_entry_point', size=10)` works.
"""

from __future__ import annotations

import warnings
from typing import Any, Dict, Optional, Tuple, Union

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.vector import AutoresetMode
from gymnasium.vector.utils import batch_space

from protege.runtime import errors
from protege.runtime.properties import read_only

ENV_ID = 'protege/DeepSea-v0'

# np.random.RandomState (bsuite's mapping generator) takes 32-bit seeds.
_MAX_MAPPING_SEED = 2**32 - 1


def _check_mapping_seed(seed: int, name: str) -> int:
  """Returns `seed` as an int if `np.random.RandomState` accepts it; a one-line ValueError otherwise."""
  if not 0 <= int(seed) <= _MAX_MAPPING_SEED:
    raise errors.ConfigError(
        f'DeepSea {name} must be in [0, 2**32 - 1] (a numpy RandomState seed, as in bsuite), got {seed}; '
        'pass a smaller non-negative seed.')
  return int(seed)


def draw_action_mapping(size: int, mapping_seed: Optional[int]) -> np.ndarray:
  """bsuite's action mapping: `RandomState(mapping_seed).binomial(1, 0.5, [size, size])`, int64 0/1.

  Action `a` moves right in cell `(row, column)` iff `a == mapping[row, column]`.
  """
  return np.random.RandomState(mapping_seed).binomial(1, 0.5, [size, size]).astype(np.int64)


class DeepSeaVectorEnv(gymnasium.vector.VectorEnv):
  """`num_envs` copies of one Deep Sea MDP, stepped together (bsuite 0.3.6 rules, NEXT_STEP autoreset).

  Per step and environment (bsuite's `DeepSea._step`, same order of reward terms):
    right = (action == mapping[row, column])
    reward = +1 if column == N - 1 and right
    stochastic only: reward += noise ~ N(0, 1) if row == N - 1 and column in {0, N - 1}
    if right: column += 1 (stochastic: only if uniform > 1 / N), clipped; reward -= cost / N
    else: column -= 1, clipped at 0 (and the episode is "bad" if row == column, i.e. it left the
      optimal diagonal)
    row += 1; terminated when row == N (after exactly N steps; never truncated).

  Observations are float32 `[N, N]` one-hot of `(row, column)`, batched `[num_envs, N, N]`; the one
  after the final step (row == N) is all zeros, as in bsuite. Rewards are float64 `[num_envs]`
  (bsuite's Python floats). The step after a terminal one is gymnasium's NEXT_STEP reset step: start
  observation, reward 0, terminated and truncated False, action ignored.

  The stochastic version draws, on every `step`, `noise = np_random.standard_normal(num_envs)` and then
  `uniform = np_random.random(num_envs)` (used only where bsuite draws its `randn()` / `rand()`), from the
  generator seeded by `reset(seed=...)`. All copies share that generator (not `seed + i` per copy).

  `info['bad_episode']` (bool `[num_envs]`, mask `info['_bad_episode']`) is bsuite's flag: the current
  episode took a "left" action while on the diagonal `row == column`, after which the +1 is unreachable
  in the deterministic version. On a terminal step it describes the episode that just ended.
  """

  metadata = {'render_modes': [], 'autoreset_mode': AutoresetMode.NEXT_STEP}

  def __init__(self,
               num_envs: int,
               size: int = 20,
               deterministic: bool = True,
               unscaled_move_cost: float = 0.01,
               randomize_actions: bool = True,
               mapping_seed: Optional[int] = None,
               autoreset_mode: Union[AutoresetMode, str] = AutoresetMode.NEXT_STEP):
    """Creates the environments; the action mapping is fixed by `mapping_seed` or the first reset.

    Args:
      num_envs: number of copies of the MDP stepped together (the batch size).
      size: N, the grid is N x N and every episode lasts N steps. 20 by default (the RND study's task);
        at least 2.
      deterministic: True (default): moving right always succeeds and rewards are noise-free. False:
        bsuite's stochastic version ("right" succeeds with probability 1 - 1/N, N(0, 1) reward noise
        in the bottom corners).
      unscaled_move_cost: the cost of an episode of N right moves; each right move costs
        `unscaled_move_cost / N`. The default 0.01 gives the optimal policy a return of 0.99.
      randomize_actions: True (default, the real Deep Sea): a random per-cell mapping decides which
        action is "right". False: action 1 is "right" everywhere (bsuite's debug mode; warns).
      mapping_seed: seed of bsuite's mapping draw `RandomState(mapping_seed).binomial(1, 0.5, [N, N])`.
        None (default): the mapping is drawn at the first `reset`, from that reset's seed if it has
        one (so different run seeds give different instances), else from an unseeded generator. The
        mapping then never changes: later resets, seeded or not, keep the same MDP.
      autoreset_mode: only `AutoresetMode.NEXT_STEP` (default) is supported.

    Raises:
      ValueError: if `size < 2`, `num_envs < 1`, `mapping_seed` is not a 32-bit non-negative int, or
        the autoreset mode is not NEXT_STEP.
    """
    super().__init__()
    try:
      mode = AutoresetMode(autoreset_mode)
    except ValueError:
      mode = None
    if mode is not AutoresetMode.NEXT_STEP:
      raise ValueError(
          f'DeepSeaVectorEnv supports only autoreset_mode=AutoresetMode.NEXT_STEP, got {autoreset_mode!r}; '
          'drop the autoreset_mode argument.')
    if size < 2:
      raise errors.ConfigError(
          f'DeepSea size must be at least 2, got {size}; pass size=N with N >= 2 (bsuite sweeps 10 to 50).')
    if num_envs < 1:
      raise errors.ConfigError(f'DeepSea num_envs must be at least 1, got {num_envs}.')
    self.num_envs = int(num_envs)
    self._size = int(size)
    self._deterministic = bool(deterministic)
    self._unscaled_move_cost = float(unscaled_move_cost)
    self._randomize_actions = bool(randomize_actions)

    self._action_mapping: Optional[np.ndarray] = None
    if not self._randomize_actions:
      warnings.warn('DeepSea is in debug mode (randomize_actions=False): action 1 is "right" in every '
                    'cell. Only randomize_actions=True is the DeepSea environment.')
      self._action_mapping = np.ones([self._size, self._size], dtype=np.int64)
    elif mapping_seed is not None:
      mapping_seed = _check_mapping_seed(mapping_seed, 'mapping_seed')
      self._action_mapping = draw_action_mapping(self._size, mapping_seed)

    self.single_observation_space = spaces.Box(0.0, 1.0, shape=(self._size, self._size), dtype=np.float32)
    self.observation_space = batch_space(self.single_observation_space, self.num_envs)
    self.single_action_space = spaces.Discrete(2)
    self.action_space = batch_space(self.single_action_space, self.num_envs)

    self._row = np.zeros(self.num_envs, dtype=np.int64)
    self._column = np.zeros(self.num_envs, dtype=np.int64)
    self._bad_episode = np.zeros(self.num_envs, dtype=bool)
    # NEXT_STEP autoreset: copies whose previous step was terminal reset on this step.
    self._needs_reset = np.zeros(self.num_envs, dtype=bool)
    self._has_reset = False

  size = read_only('_size', 'N: the grid is N x N and every episode lasts N steps.')
  deterministic = read_only('_deterministic', 'Whether transitions and rewards are deterministic.')

  @property
  def action_mapping(self) -> np.ndarray:
    """A copy of the int64 `[N, N]` mapping: action `a` moves right in `(row, column)` iff `a == mapping`.

    Raises:
      RuntimeError: before the first `reset` when the mapping is drawn there (no `mapping_seed`).
    """
    if self._action_mapping is None:
      raise RuntimeError('The DeepSea action mapping is drawn at the first reset(); call reset() first '
                         'or pass mapping_seed.')
    return self._action_mapping.copy()

  @property
  def optimal_return(self) -> float:
    """bsuite's `_optimal_return`: the expected return of always moving right (ignoring reward noise).

    `1 - unscaled_move_cost` when deterministic, `(1 - 1/N)^(N - 1) - unscaled_move_cost` otherwise.
    """
    optimal_no_cost = 1.0 if self._deterministic else (1 - 1 / self._size)**(self._size - 1)
    return optimal_no_cost - self._unscaled_move_cost

  def _observation(self) -> np.ndarray:
    """One-hot `[num_envs, N, N]` float32 of `(row, column)`; all zeros where `row == N` (episode over)."""
    observation = np.zeros((self.num_envs, self._size, self._size), dtype=np.float32)
    in_grid = np.flatnonzero(self._row < self._size)
    observation[in_grid, self._row[in_grid], self._column[in_grid]] = 1.0
    return observation

  def _info(self) -> Dict[str, np.ndarray]:
    return {'bad_episode': self._bad_episode.copy(), '_bad_episode': np.ones(self.num_envs, dtype=bool)}

  def reset(self,
            *,
            seed: Optional[int] = None,
            options: Optional[Dict[str, Any]] = None) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Starts a new episode in every copy (top-left cell).

    Args:
      seed: seeds `np_random` (the stochastic version's randomness) and, on the first reset without a
        `mapping_seed`, the action mapping (`RandomState(seed)`, exactly bsuite's `mapping_seed=seed`).
      options: unused.

    Returns:
      `(observation [num_envs, N, N] float32, info)`.
    """
    del options  # Unused: Deep Sea has a single start state.
    if seed is not None and self._action_mapping is None:
      _check_mapping_seed(seed, 'reset seed')
    super().reset(seed=seed)
    if self._action_mapping is None:
      self._action_mapping = draw_action_mapping(self._size, seed)
    self._row[:] = 0
    self._column[:] = 0
    self._bad_episode[:] = False
    self._needs_reset[:] = False
    self._has_reset = True
    return self._observation(), self._info()

  def step(self, actions: np.ndarray
          ) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, Dict[str, np.ndarray]]:
    """Steps every copy once (bsuite's `DeepSea._step`, or a NEXT_STEP reset after a terminal step).

    Args:
      actions: int `[num_envs]` of 0/1.

    Returns:
      `(observation [num_envs, N, N] float32, reward [num_envs] float64, terminated [num_envs] bool,
      truncated [num_envs] bool (always False), info)`.

    Raises:
      RuntimeError: before the first `reset`.
      ValueError: if `actions` is not `[num_envs]` of 0/1.
    """
    if not self._has_reset:
      raise RuntimeError('DeepSeaVectorEnv.step() before reset(); call reset() first.')
    actions = np.asarray(actions)
    if actions.shape != (self.num_envs,):
      raise ValueError(f'DeepSea expects actions of shape [{self.num_envs}], got shape {actions.shape}; '
                       'pass one 0/1 action per environment.')
    if np.any((actions != 0) & (actions != 1)):
      raise ValueError(f'DeepSea actions must be 0 or 1, got {np.unique(actions)}; the action space is '
                       'Discrete(2).')
    size = self._size
    row, column = self._row, self._column
    # Copies awaiting their NEXT_STEP reset sit at row == N; clip the index, their results are replaced below.
    action_right = actions == self._action_mapping[np.minimum(row, size - 1), column]

    # Reward, in bsuite's order of terms: +1, noise, - move cost.
    reward = np.where((column == size - 1) & action_right, 1.0, 0.0)
    if self._deterministic:
      moves_right = action_right
    else:
      noise = self.np_random.standard_normal(self.num_envs)
      uniform = self.np_random.random(self.num_envs)
      in_end_state = (row == size - 1) & ((column == 0) | (column == size - 1))
      reward = np.where(in_end_state, reward + noise, reward)
      moves_right = action_right & (uniform > 1 / size)
    reward = np.where(action_right, reward - self._unscaled_move_cost / size, reward)

    # Transitions.
    self._bad_episode |= ~action_right & (row == column)
    self._column = np.where(moves_right, np.minimum(column + 1, size - 1), column)
    self._column = np.where(action_right, self._column, np.maximum(column - 1, 0))
    self._row = row + 1
    terminated = self._row == size

    # NEXT_STEP autoreset: copies whose previous step was terminal start a new episode instead.
    resetting = self._needs_reset
    self._row[resetting] = 0
    self._column[resetting] = 0
    self._bad_episode[resetting] = False
    reward[resetting] = 0.0
    terminated[resetting] = False
    self._needs_reset = terminated.copy()

    truncated = np.zeros(self.num_envs, dtype=bool)
    return self._observation(), reward, terminated, truncated, self._info()


if ENV_ID not in gymnasium.registry:
  # Only a vector entry point: the id is meant for gymnasium.make_vec (and envs.suite.make_environment).
  gymnasium.register(ENV_ID, vector_entry_point=DeepSeaVectorEnv, kwargs={'size': 20})
