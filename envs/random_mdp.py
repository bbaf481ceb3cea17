"""Random tabular grid-world MDPs, many at once as TF tensors (Czarnecki et al. 2019, arXiv 1902.02186).

The MDPs follow the appendix "Experimental details" of "Distilling Policy Distillation" (§1.1 MDPs,
§1.2 Distribution over MDPs):

* The states are the cells s_ij of an H x W grid; one initial state, the centre cell
  `(H // 2, W // 2)`.
* Four moves with a desired effect each: up, down, left, right. A move that would leave the state space
  (off the grid, or into a wall: walls are cells removed from it) leaves the agent where it is (the
  paper's z(s, a)). With probability 1 - η the chosen move happens; with probability η the agent moves in
  a uniformly random direction instead (η/4 each, the chosen one included).
* After every action the agent is moved, with probability 0.01, to a special absorbing state: the
  episode ends with no reward. This keeps episodes finite without discounting.
* Rewards are deterministic and belong to states; the reward states are terminal: entering one pays its
  reward (+10) and ends the episode, and the next episode starts again in the initial state.
* A random MDP is drawn by scanning the cells row by row and, with fixed probabilities, turning a cell
  into a wall or (if it is not a wall) into a +10 terminal state. The initial cell is never changed.
* Fully observable agents see the cell's index; partially observable ones a square of vision centred on
  the agent, each cell a wall or its (reward, terminal) pair (`local_views`).

Choices made here where the text we could read does not fix them (each is an argument):
* The wall and reward probabilities: the numbers did not survive in the copies of the appendix we could
  read, so `generate_grid_mdps` takes them as arguments (defaults 0.1 and 0.01: on a 20 x 20 grid about
  40 walls and 4 rewards, so the nearest reward is typically 5-10 moves from the centre and a random walk
  finds one in about a third of its episodes).
* MDPs whose initial state cannot reach any reward (every policy returns 0) are redrawn
  (`require_reachable_reward=True`): they carry no signal about distillation.
* Absorption happens instead of the move (the absorbed step pays nothing), and the reward is paid on
  entering a reward cell.
* More than four actions (the action-count sweep): action `a` has the effect of move `a mod 4`
  (`action_moves`), i.e. the action set is the four moves replicated. The MDP and every policy's
  behaviour over moves stay the same as the action count grows; only the number of logits does.

Layout. M MDPs of S = H·W cells are stored as dense per-MDP tables in a compact index form, never as
an `[M, S, A, S]` transition tensor (1,000 MDPs of 400 states would need 640M floats): `next_cells[m, s, k]`
is z(s, k) for the four moves k, and the noise and absorption are two scalars. Walls are cells that are
never entered. Every dynamic-programming routine works on move distributions `[M, S, 4]`
(`move_probabilities` folds any `[M, S, A]` policy onto them), so its cost does not grow with the action
count.
"""

from typing import NamedTuple, Tuple

import tensorflow as tf

from protege.runtime import errors

MOVES = ('up', 'down', 'left', 'right')
NUM_MOVES = len(MOVES)
# (row, column) offsets of the moves, in the order of MOVES.
_MOVE_OFFSETS = ((-1, 0), (1, 0), (0, -1), (0, 1))


class GridMDPs(NamedTuple):
  """M grid-world MDPs of the same size, as tensors (one row per MDP).

  Attributes:
    next_cells: int32 `[M, S, 4]`, z(s, k): the cell reached from cell s by move k (MOVES order) when the
      move happens; s itself when the move would leave the grid or enter a wall. Cells are numbered
      row-major, `s = row * width + column`.
    rewards: float32 `[M, S]`, the reward paid on entering cell s (+10 at reward cells, else 0).
    terminal: bool `[M, S]`, entering cell s ends the episode (the reward cells).
    walls: bool `[M, S]`, cells removed from the state space (never entered).
    height: H, rows of the grid.
    width: W, columns of the grid.
    noise: η, the probability that the move goes in a uniformly random direction instead.
    absorb_probability: the probability that an action ends the episode in the absorbing state.
  """
  next_cells: tf.Tensor
  rewards: tf.Tensor
  terminal: tf.Tensor
  walls: tf.Tensor
  height: int
  width: int
  noise: float
  absorb_probability: float

  @property
  def num_mdps(self) -> int:
    """M."""
    return int(self.next_cells.shape[0])

  @property
  def num_states(self) -> int:
    """S = H·W (walls included: they are cells that are never entered)."""
    return self.height * self.width

  @property
  def initial_state(self) -> int:
    """The centre cell, `(H // 2) * W + W // 2`: every episode starts there."""
    return (self.height // 2) * self.width + self.width // 2


class Rollout(NamedTuple):
  """A time-major batch of transitions from `rollout`; B environments per MDP.

  Attributes:
    states: int32 `[T+1, M, B]`, s_0..s_T: the cell each environment acts in (row T: where the next
      rollout continues). After a terminal step, the next row is the initial state of a new episode.
    actions: int32 `[T, M, B]`, a_t, in [0, A).
    rewards: float32 `[T, M, B]`, r_t, paid for the step from s_t.
    terminated: bool `[T, M, B]`, the step from s_t ended the episode (a reward cell or absorption).
  """
  states: tf.Tensor
  actions: tf.Tensor
  rewards: tf.Tensor
  terminated: tf.Tensor


def _uniform(shape, seed, index: int) -> tf.Tensor:
  """Stateless uniform [0, 1) draws: stream `index` of `seed` (an int32 `[2]` tensor)."""
  return tf.random.stateless_uniform(shape, seed=tf.random.experimental.stateless_fold_in(seed, index))


def _grid_next_cells(walls: tf.Tensor, height: int, width: int) -> tf.Tensor:
  """z(s, k) for every cell and move: int32 `[M, S, 4]` from bool walls `[M, H, W]`."""
  cells = tf.reshape(tf.range(height * width, dtype=tf.int32), [height, width])
  # A border of walls makes "off the grid" and "into a wall" the same test.
  blocked = tf.pad(walls, [[0, 0], [1, 1], [1, 1]], constant_values=True)
  next_cells = []
  for d_row, d_column in _MOVE_OFFSETS:
    target_blocked = blocked[:, 1 + d_row:1 + d_row + height, 1 + d_column:1 + d_column + width]
    target = cells + d_row * width + d_column
    next_cells.append(tf.where(target_blocked, cells[tf.newaxis], target[tf.newaxis]))
  return tf.reshape(tf.stack(next_cells, axis=-1), [-1, height * width, NUM_MOVES])


def _gather_cells(table: tf.Tensor, cells: tf.Tensor) -> tf.Tensor:
  """`table[m, cells[m, ...]]` for a `[M, S]` table and int cells `[M, ...]`."""
  flat = tf.reshape(cells, [tf.shape(cells)[0], -1])
  return tf.reshape(tf.gather(table, flat, batch_dims=1), tf.shape(cells))


def reward_reachable(mdps: GridMDPs) -> tf.Tensor:
  """bool `[M]`: some policy reaches a reward cell from the initial state with non-zero probability.

  Backward flood fill: a cell reaches a reward if it is one, or if it is a non-terminal open cell with a
  move into a cell that reaches one. At most S sweeps (vectorised over MDPs).
  """
  reward_cells = mdps.terminal & (mdps.rewards > 0)
  open_cells = ~mdps.walls & ~mdps.terminal

  def sweep(reach, _):
    through_move = tf.reduce_any(_gather_cells(tf.cast(reach, tf.int32), mdps.next_cells) > 0, axis=-1)
    return reach | (open_cells & through_move), reach

  def not_converged(reach, previous):
    return tf.reduce_any(reach != previous)

  reach, _ = tf.while_loop(not_converged, sweep, sweep(reward_cells, None),
                           maximum_iterations=mdps.num_states)
  return reach[:, mdps.initial_state]


def grid_mdps_from_layout(walls, reward_cells, reward: float = 10.0, noise: float = 0.1,
                          absorb_probability: float = 0.01) -> GridMDPs:
  """M grid worlds with the given walls and reward cells (the paper's dynamics, §1.1).

  Args:
    walls: bool `[M, H, W]`, True where a cell is removed from the state space.
    reward_cells: bool `[M, H, W]`, True where entering pays `reward` and ends the episode; must not
      overlap `walls`.
    reward: the reward of a reward cell (+10 by default, the paper's).
    noise: η (default 0.1).
    absorb_probability: probability of absorption after each action (default 0.01, the paper's).

  Raises:
    ValueError: if the layouts' shapes differ or are not `[M, H, W]`, or a cell is both wall and reward,
      or the initial (centre) cell is either.
  """
  walls = tf.convert_to_tensor(walls, tf.bool)
  reward_cells = tf.convert_to_tensor(reward_cells, tf.bool)
  if walls.shape.rank != 3 or walls.shape != reward_cells.shape:
    raise ValueError(f'walls and reward_cells must both be bool [M, H, W]; got shapes {walls.shape} and '
                     f'{reward_cells.shape}.')
  num_mdps, height, width = walls.shape
  if bool(tf.reduce_any(walls & reward_cells)):
    raise ValueError('A cell is both a wall and a reward cell; make walls and reward_cells disjoint.')
  if bool(tf.reduce_any(walls[:, height // 2, width // 2] | reward_cells[:, height // 2, width // 2])):
    raise ValueError(f'The initial cell ({height // 2}, {width // 2}) (the centre) must be neither a wall '
                     'nor a reward cell.')
  return GridMDPs(
      next_cells=_grid_next_cells(walls, height, width),
      rewards=tf.reshape(tf.where(reward_cells, tf.constant(reward, tf.float32), 0.0), [num_mdps, -1]),
      terminal=tf.reshape(reward_cells, [num_mdps, -1]),
      walls=tf.reshape(walls, [num_mdps, -1]),
      height=int(height), width=int(width), noise=float(noise), absorb_probability=float(absorb_probability))


def _draw_grid_mdps(num_mdps, height, width, wall_probability, reward_probability, reward, noise,
                    absorb_probability, seed) -> GridMDPs:
  """One vectorised draw of `num_mdps` MDPs (appendix §1.2), no rejection."""
  shape = [num_mdps, height, width]
  # One draw per cell for "wall?" and one for "reward?"; a wall is never also a reward (the paper moves on
  # to the next cell once a cell is modified). The row-by-row scan order of the paper does not matter
  # because the draws are independent.
  walls = _uniform(shape, seed, 0) < wall_probability
  reward_cells = ~walls & (_uniform(shape, seed, 1) < reward_probability)
  centre = tf.one_hot((height // 2) * width + width // 2, height * width, on_value=True, off_value=False)
  centre = tf.reshape(centre, [1, height, width])
  return grid_mdps_from_layout(walls & ~centre, reward_cells & ~centre, reward, noise, absorb_probability)


def select_mdps(mdps: GridMDPs, indices) -> GridMDPs:
  """The MDPs at `indices` (int `[K]`), in that order."""
  take = lambda x: tf.gather(x, indices)  # noqa: E731
  return mdps._replace(next_cells=take(mdps.next_cells), rewards=take(mdps.rewards),
                       terminal=take(mdps.terminal), walls=take(mdps.walls))


def _concat_mdps(parts) -> GridMDPs:
  join = lambda field: tf.concat([getattr(p, field) for p in parts], axis=0)  # noqa: E731
  return parts[0]._replace(next_cells=join('next_cells'), rewards=join('rewards'),
                           terminal=join('terminal'), walls=join('walls'))


def generate_grid_mdps(num_mdps: int,
                       height: int = 20,
                       width: int = 20,
                       wall_probability: float = 0.1,
                       reward_probability: float = 0.01,
                       reward: float = 10.0,
                       noise: float = 0.1,
                       absorb_probability: float = 0.01,
                       seed: int = 0,
                       require_reachable_reward: bool = True,
                       max_rounds: int = 100) -> GridMDPs:
  """Draws `num_mdps` random grid worlds at once (appendix §1.2 of Czarnecki et al. 2019).

  Reproducible: the same arguments give the same MDPs (stateless random ops seeded by `seed`).

  Args:
    num_mdps: M, how many MDPs.
    height: H, rows of the grid (20 by default).
    width: W, columns of the grid (20 by default).
    wall_probability: probability that a cell (other than the initial one) is a wall. Default 0.1.
    reward_probability: probability that a non-wall cell (other than the initial one) is a terminal
      reward state. Default 0.01.
    reward: the reward paid on entering a reward cell; the paper's +10 by default.
    noise: η, the transition noise (default 0.1): with probability η the move is replaced by a uniformly
      random one of the four.
    absorb_probability: probability of being sent to the absorbing state after each action (the paper's
      0.01, the default).
    seed: the random seed of the draw.
    require_reachable_reward: True (default): MDPs in which no reward can be reached from the initial
      state are redrawn, so that every MDP rewards a good policy; draws continue in rounds of M until M
      are kept. False: the first M draws, as they come.
    max_rounds: the most rounds of M draws before giving up (default 100).

  Returns:
    A `GridMDPs` of M MDPs.

  Raises:
    ValueError: for a grid smaller than 2 x 2, a probability outside [0, 1], or when `max_rounds` rounds
      do not give M MDPs with a reachable reward.
  """
  if num_mdps < 1:
    raise errors.ConfigError(f'num_mdps must be at least 1, got {num_mdps}.')
  if height < 2 or width < 2:
    raise errors.ConfigError(f'The grid must be at least 2 x 2, got {height} x {width}; pass larger '
                             'height/width.')
  for name, value in (('wall_probability', wall_probability), ('reward_probability', reward_probability),
                      ('noise', noise), ('absorb_probability', absorb_probability)):
    if not 0.0 <= value <= 1.0:
      raise errors.ConfigError(f'{name} must be a probability in [0, 1], got {value}.')
  kept, num_kept = [], 0
  for round_index in range(max_rounds if require_reachable_reward else 1):
    round_seed = tf.constant([seed, round_index], tf.int32)
    mdps = _draw_grid_mdps(num_mdps, height, width, wall_probability, reward_probability, reward, noise,
                           absorb_probability, round_seed)
    if require_reachable_reward:
      mdps = select_mdps(mdps, tf.where(reward_reachable(mdps))[:, 0])
    kept.append(mdps)
    num_kept += mdps.num_mdps
    if num_kept >= num_mdps:
      return select_mdps(_concat_mdps(kept), tf.range(num_mdps))
  raise errors.ConfigError(
      f'Only {num_kept} of {num_mdps} MDPs drawn in {max_rounds} rounds can reach a reward from the '
      f'initial state; raise reward_probability (now {reward_probability}) or lower wall_probability '
      f'(now {wall_probability}).')


VIEW_EMPTY, VIEW_WALL, VIEW_REWARD = 0, 1, 2  # what a cell is in a partially observable view (`local_views`)


def local_views(mdps: GridMDPs, view_size: int) -> tf.Tensor:
  """The partially observable observation of every cell: the `view_size` x `view_size` square centred on it.

  The paper's partially observable grid worlds (appendix §1.1) show the agent a square of vision centred
  on its position, each cell seen as a wall or as its (reward, terminal) pair; here every reward cell is
  (+10, terminal), so a cell is one of `VIEW_EMPTY`, `VIEW_WALL` (cells off the grid too) and
  `VIEW_REWARD`. The agent's own position is not part of the observation, so cells with the same
  surroundings look the same (aliasing): a student that acts on views shares its parameters between them.

  Args:
    mdps: the MDPs.
    view_size: k, odd and at least 1.

  Returns:
    int32 `[M, S, k·k]`: the view of each cell, row-major over the square.

  Raises:
    ConfigError: for an even or non-positive `view_size`.
  """
  if view_size < 1 or view_size % 2 == 0:
    raise errors.ConfigError(f'view_size must be odd and at least 1 (a square centred on the agent), got '
                             f'{view_size}.')
  radius, height, width = view_size // 2, mdps.height, mdps.width
  kinds = tf.where(mdps.walls, VIEW_WALL, tf.where(mdps.terminal, VIEW_REWARD, VIEW_EMPTY))
  kinds = tf.pad(tf.reshape(kinds, [-1, height, width]), [[0, 0], [radius, radius], [radius, radius]],
                 constant_values=VIEW_WALL)
  # Window (d_row, d_column) of the padded grid, for each offset in the square, row-major.
  windows = [kinds[:, d_row:d_row + height, d_column:d_column + width]
             for d_row in range(view_size) for d_column in range(view_size)]
  return tf.reshape(tf.stack(windows, axis=-1), [-1, height * width, view_size * view_size])


def action_moves(num_actions: int) -> tf.Tensor:
  """int32 `[A]`: the move (index into MOVES) of each action; action a moves as `a mod 4`.

  With more than four actions the four moves are replicated (the action-count sweep); see the module
  docstring.
  """
  if num_actions < NUM_MOVES:
    raise errors.ConfigError(f'num_actions must be at least {NUM_MOVES} (one per move), got {num_actions}.')
  return tf.range(num_actions, dtype=tf.int32) % NUM_MOVES


def move_probabilities(action_probabilities: tf.Tensor) -> tf.Tensor:
  """Folds a policy over A actions onto the four moves: float `[..., A]` -> `[..., 4]`."""
  num_actions = action_probabilities.shape[-1]
  fold = tf.one_hot(action_moves(num_actions), NUM_MOVES, dtype=action_probabilities.dtype)  # [A, 4]
  return tf.einsum('...a,ak->...k', action_probabilities, fold)


def move_values(mdps: GridMDPs, values: tf.Tensor, discount: float = 1.0) -> tf.Tensor:
  """Q(s, k) of each move k given state values V: float `[M, S, 4]` from `[M, S]`.

    U(s') = r(s') + γ·(1 − terminal(s'))·V(s')
    Q(s, k) = (1 − p_absorb)·[(1 − η)·U(z(s, k)) + η·mean_j U(z(s, j))]

  Args:
    mdps: the MDPs.
    values: float `[M, S]`, V(s) (ignored at terminal cells and walls).
    discount: γ (default 1: the episode ends by absorption, as in the paper).
  """
  continuation = tf.where(mdps.terminal, 0.0, discount * values)
  landing = mdps.rewards + continuation
  landing_next = _gather_cells(landing, mdps.next_cells)  # [M, S, 4]
  slip = tf.reduce_mean(landing_next, axis=-1, keepdims=True)
  return (1.0 - mdps.absorb_probability) * ((1.0 - mdps.noise) * landing_next + mdps.noise * slip)


def _open_cells(mdps: GridMDPs) -> tf.Tensor:
  """float `[M, S]`: 1 at cells an agent can act in (not a wall, not terminal)."""
  return tf.cast(~mdps.walls & ~mdps.terminal, tf.float32)


def value_iteration(mdps: GridMDPs, discount: float = 1.0, tolerance: float = 1e-5,
                    max_iterations: int = 10_000) -> Tuple[tf.Tensor, tf.Tensor]:
  """Optimal values by value iteration, all MDPs at once.

  Iterates V ← max_k Q(s, k) (`move_values`) from V = 0 until no value changes by more than
  `tolerance`. The Bellman operator contracts by (1 − p_absorb)·γ per sweep.

  Args:
    mdps: the MDPs.
    discount: γ (default 1).
    tolerance: stop when max |ΔV| < tolerance (default 1e-5).
    max_iterations: the most sweeps (default 10,000).

  Returns:
    `(values [M, S], move_q [M, S, 4])`: V* (0 at walls and terminal cells) and Q*(s, k) of the moves.
  """
  open_cells = _open_cells(mdps)

  def sweep(values, _):
    return tf.reduce_max(move_values(mdps, values, discount), axis=-1) * open_cells, values

  def not_converged(values, previous):
    return tf.reduce_max(tf.abs(values - previous)) >= tolerance

  values, _ = tf.while_loop(not_converged, sweep, sweep(tf.zeros_like(open_cells), None),
                            maximum_iterations=max_iterations)
  return values, move_values(mdps, values, discount)


class PolicyEvaluation(NamedTuple):
  """Exact quantities of a tabular policy, per MDP (`evaluate_policy`).

  Attributes:
    values: float `[M, S]`, V_π(s): the expected return from cell s (0 at walls and terminal cells).
    occupancy: float `[M, S]`, the expected (discounted) number of visits to each cell in one episode from
      the initial state (0 at walls and terminal cells); it sums to the expected episode length when γ = 1.
    returns: float `[M]`, the expected return of an episode, `values[:, initial_state]`.
  """
  values: tf.Tensor
  occupancy: tf.Tensor
  returns: tf.Tensor


def _transition_blocks(mdps: GridMDPs, move_probs: tf.Tensor, discount: float):
  """The policy's reward vector and its transition matrix between open cells, in block form.

  With cells numbered row-major, the transition matrix P_π (restricted to acting in open cells and
  continuing in non-terminal ones) is block tridiagonal: H x H blocks of W x W, the diagonal blocks
  tridiagonal (stay, left, right) and the off-diagonal ones diagonal (up, down).

  Returns:
    `(expected_rewards [M, S], same_row [M, H, W, W], to_row_above [M, H, W], to_row_below [M, H, W])`,
    where `same_row[m, r, c, c']` = P_π((r, c) → (r, c')), `to_row_above[m, r, c]` = P_π((r, c) → (r-1, c))
    and `to_row_below[m, r, c]` = P_π((r, c) → (r+1, c)).
  """
  height, width = mdps.height, mdps.width
  dtype = move_probs.dtype
  acting = tf.cast(~mdps.walls & ~mdps.terminal, dtype)  # rows of cells the agent acts in
  # q(s, k): probability that the cell reached is z(s, k) (the chosen move, or a slip in direction k),
  # times the probability of not being absorbed.
  reach = (1.0 - mdps.absorb_probability) * ((1.0 - mdps.noise) * move_probs + mdps.noise / NUM_MOVES)
  reach *= acting[:, :, None]
  landing_rewards = _gather_cells(tf.cast(mdps.rewards, dtype), mdps.next_cells)
  expected_rewards = tf.reduce_sum(reach * landing_rewards, axis=-1)
  continuing = discount * _gather_cells(1.0 - tf.cast(mdps.terminal, dtype), mdps.next_cells)
  flow = reach * continuing  # [M, S, 4]: probability of moving to z(s, k) and continuing from there
  cells = tf.range(height * width, dtype=tf.int32)[None, :, None]
  moved = tf.cast(tf.not_equal(mdps.next_cells, cells), dtype)
  stay = tf.reduce_sum(flow * (1.0 - moved), axis=-1)
  flow *= moved
  as_grid = lambda x: tf.reshape(x, [-1, height, width])  # noqa: E731
  up, down, left, right = [as_grid(flow[..., k]) for k in range(NUM_MOVES)]
  same_row = (tf.linalg.diag(as_grid(stay))
              + tf.linalg.diag(right[..., :-1], k=1)
              + tf.linalg.diag(left[..., 1:], k=-1))
  return expected_rewards, same_row, up, down


class _BlockLU(NamedTuple):
  """Block LU factors of a block-tridiagonal matrix A (`_block_lu`); lists over the H row blocks.

  A = L·U with L block lower bidiagonal (identity diagonal, L[r, r-1] = lower[r]·pivots[r-1]⁻¹) and U
  block upper bidiagonal (U[r, r] = pivots[r], U[r, r+1] = upper[r]).
  """
  inverse_pivots: list  # pivots[r]⁻¹, [M, W, W] each
  lower: list  # lower[r], [M, W, W] each (row block r couples to r-1; lower[0] unused)
  upper: list  # upper[r], [M, W, W] each (row block r couples to r+1; upper[H-1] unused)


def _block_lu(diagonal, upper, lower) -> _BlockLU:
  """Block Gaussian elimination (block Thomas algorithm) of a block-tridiagonal matrix.

  Row block r of A reads `lower[r]·x[r-1] + diagonal[r]·x[r] + upper[r]·x[r+1]`. No pivoting across
  blocks: the matrices here (I − P_π, whose P_π rows sum to at most 1 − p_absorb) are strictly diagonally
  dominant, for which block elimination is stable. The H pivot inverses are the only inversions; the
  solves that follow are matrix products.

  Args:
    diagonal, upper, lower: `[M, H, W, W]`.
  """
  height = diagonal.shape[1]
  inverse_pivots = [tf.linalg.inv(diagonal[:, 0])]
  for r in range(1, height):
    # pivots[r] = diagonal[r] − lower[r]·pivots[r-1]⁻¹·upper[r-1]
    pivot = diagonal[:, r] - tf.matmul(lower[:, r], tf.matmul(inverse_pivots[-1], upper[:, r - 1]))
    inverse_pivots.append(tf.linalg.inv(pivot))
  return _BlockLU(inverse_pivots, tf.unstack(lower, axis=1), tf.unstack(upper, axis=1))


def _block_lu_solve(lu: _BlockLU, rhs: tf.Tensor) -> tf.Tensor:
  """x with A·x = rhs, from A's block LU factors; rhs and x `[M, H, W]`."""
  height = len(lu.inverse_pivots)
  rhs = tf.unstack(rhs[..., None], axis=1)
  # L·y = rhs (forward), then U·x = y (backward).
  y = [rhs[0]]
  for r in range(1, height):
    y.append(rhs[r] - tf.matmul(lu.lower[r], tf.matmul(lu.inverse_pivots[r - 1], y[-1])))
  x = [tf.matmul(lu.inverse_pivots[-1], y[-1])]
  for r in range(height - 2, -1, -1):
    x.append(tf.matmul(lu.inverse_pivots[r], y[r] - tf.matmul(lu.upper[r], x[-1])))
  return tf.stack(x[::-1], axis=1)[..., 0]


def _block_lu_solve_transposed(lu: _BlockLU, rhs: tf.Tensor) -> tf.Tensor:
  """x with Aᵀ·x = rhs, from A's block LU factors (Aᵀ = Uᵀ·Lᵀ); rhs and x `[M, H, W]`."""
  height = len(lu.inverse_pivots)
  rhs = tf.unstack(rhs[..., None], axis=1)
  # Uᵀ·w = rhs (forward): pivots[r]ᵀ·w[r] = rhs[r] − upper[r-1]ᵀ·w[r-1].
  w = [tf.matmul(lu.inverse_pivots[0], rhs[0], transpose_a=True)]
  for r in range(1, height):
    w.append(tf.matmul(lu.inverse_pivots[r], rhs[r] - tf.matmul(lu.upper[r - 1], w[-1], transpose_a=True),
                       transpose_a=True))
  # Lᵀ·x = w (backward): x[r] = w[r] − (lower[r+1]·pivots[r]⁻¹)ᵀ·x[r+1].
  x = [w[-1]]
  for r in range(height - 2, -1, -1):
    x.append(w[r] - tf.matmul(lu.inverse_pivots[r], tf.matmul(lu.lower[r + 1], x[-1], transpose_a=True),
                              transpose_a=True))
  return tf.stack(x[::-1], axis=1)[..., 0]


def evaluate_policy(mdps: GridMDPs, move_probs: tf.Tensor, discount: float = 1.0) -> PolicyEvaluation:
  """Exact values, state occupancy and expected return of tabular policies, all MDPs at once.

  Solves the Bellman expectation equations as linear systems, (I − P_π) V = r_π and
  (I − P_π)ᵀ d = e_init, with one block LU factorisation over the H rows of the grid (`[M, W, W]`
  inversions and products, O(M·H·W³) work; a dense `[M, S, S]` solve would cost O(M·S³) and M·S² memory).

  Args:
    mdps: the MDPs.
    move_probs: float `[M, S, 4]` (float32 or float64), the policy over moves
      (`move_probabilities` of an action policy). Rows at walls and terminal cells are ignored.
    discount: γ (default 1: episodes end by absorption or at a reward, as in the paper).

  Returns:
    A `PolicyEvaluation` in the dtype of `move_probs`.
  """
  num_mdps, height, width = mdps.num_mdps, mdps.height, mdps.width
  dtype = move_probs.dtype
  expected_rewards, same_row, up, down = _transition_blocks(mdps, move_probs, discount)
  identity = tf.eye(width, batch_shape=[num_mdps, height], dtype=dtype)
  diagonal = identity - same_row
  # Row block r → r+1 (down) and r → r-1 (up); the first "up" and last "down" are zero (walls of the grid).
  to_below = -tf.linalg.diag(down)
  to_above = -tf.linalg.diag(up)
  lu = _block_lu(diagonal, upper=to_below, lower=to_above)
  values = _block_lu_solve(lu, tf.reshape(expected_rewards, [num_mdps, height, width]))
  start = tf.reshape(tf.one_hot(tf.fill([num_mdps], mdps.initial_state), height * width, dtype=dtype),
                     [num_mdps, height, width])
  occupancy = _block_lu_solve_transposed(lu, start)
  values = tf.reshape(values, [num_mdps, -1])
  occupancy = tf.reshape(occupancy, [num_mdps, -1])
  return PolicyEvaluation(values=values, occupancy=occupancy, returns=values[:, mdps.initial_state])


def step(mdps: GridMDPs, states: tf.Tensor, actions: tf.Tensor, seed: tf.Tensor
         ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """One step of B environments in each of the M MDPs.

  Args:
    mdps: the MDPs.
    states: int32 `[M, B]`, the current (open) cells.
    actions: int32 `[M, B]`, actions in [0, A); action a moves as `a mod 4`.
    seed: int32 `[2]`, the stateless seed of this step's randomness.

  Returns:
    `(cells [M, B] int32, rewards [M, B] float32, terminated [M, B] bool)`: the cell entered (the
    current cell when absorbed), the reward paid, and whether the episode ended (reward cell or
    absorption). The caller restarts terminated episodes at `mdps.initial_state`.
  """
  shape = tf.shape(states)
  moves = actions % NUM_MOVES
  slip_moves = tf.random.stateless_uniform(shape, tf.random.experimental.stateless_fold_in(seed, 0),
                                           minval=0, maxval=NUM_MOVES, dtype=tf.int32)
  moves = tf.where(_uniform(shape, seed, 1) < mdps.noise, slip_moves, moves)
  flat_next = tf.reshape(mdps.next_cells, [mdps.num_mdps, -1])
  cells = tf.gather(flat_next, states * NUM_MOVES + moves, batch_dims=1)
  absorbed = _uniform(shape, seed, 2) < mdps.absorb_probability
  cells = tf.where(absorbed, states, cells)
  rewards = tf.where(absorbed, 0.0, tf.gather(mdps.rewards, cells, batch_dims=1))
  terminated = absorbed | tf.gather(mdps.terminal, cells, batch_dims=1)
  return cells, rewards, terminated


def rollout(mdps: GridMDPs, behaviour_logits: tf.Tensor, states: tf.Tensor, num_steps: int,
            seed: tf.Tensor) -> Rollout:
  """T steps of B environments per MDP under a tabular policy, all MDPs at once (one `tf.while_loop`).

  Episodes that end restart at the initial state (the next row of `states` is the initial cell).

  Args:
    mdps: the MDPs.
    behaviour_logits: float `[M·S, A]`, the logits of the policy that acts, one row per (MDP, cell):
      row `m·S + s` (a tensor, or a `tf.Variable` such as a student's logits: only the visited rows are
      read, never the whole table).
    states: int32 `[M, B]`, the cells the environments are in.
    num_steps: T.
    seed: int32 `[2]`, the stateless seed of the rollout.

  Returns:
    A `Rollout` with `[T+1, M, B]` states and `[T, M, B]` actions, rewards and terminations.
  """
  num_mdps = mdps.num_mdps
  batch = tf.shape(states)[1]
  initial = tf.fill(tf.shape(states), tf.constant(mdps.initial_state, tf.int32))
  offsets = tf.range(num_mdps, dtype=tf.int32)[:, None] * mdps.num_states

  def body(t, current, state_ta, action_ta, reward_ta, terminated_ta):
    step_seed = tf.random.experimental.stateless_fold_in(seed, t)
    logits = tf.gather(behaviour_logits, tf.reshape(current + offsets, [-1]))  # [M·B, A]
    actions = tf.random.stateless_categorical(
        logits, 1, seed=tf.random.experimental.stateless_fold_in(step_seed, 1), dtype=tf.int32)
    actions = tf.reshape(actions, [num_mdps, batch])
    cells, rewards, terminated = step(mdps, current, actions,
                                      tf.random.experimental.stateless_fold_in(step_seed, 2))
    return (t + 1, tf.where(terminated, initial, cells), state_ta.write(t, current),
            action_ta.write(t, actions), reward_ta.write(t, rewards), terminated_ta.write(t, terminated))

  arrays = [tf.TensorArray(dtype, size=num_steps) for dtype in (tf.int32, tf.int32, tf.float32, tf.bool)]
  _, last, state_ta, action_ta, reward_ta, terminated_ta = tf.while_loop(
      lambda t, *_: t < num_steps, body, [tf.constant(0), states] + arrays)
  return Rollout(states=tf.concat([state_ta.stack(), last[tf.newaxis]], axis=0),
                 actions=action_ta.stack(), rewards=reward_ta.stack(), terminated=terminated_ta.stack())
