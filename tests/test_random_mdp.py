"""Tests for envs.random_mdp: the grid worlds' rules, the dynamic programming against slow NumPy references
written in the paper's notation, and the sampler against the exact quantities."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from protege.envs import random_mdp

UP, DOWN, LEFT, RIGHT = range(4)
OFFSETS = {UP: (-1, 0), DOWN: (1, 0), LEFT: (0, -1), RIGHT: (0, 1)}


# ----------------------------------------------------------------------------------------------------------
# A slow reference of one MDP, in the paper's notation (appendix §1.1).
# ----------------------------------------------------------------------------------------------------------


class ReferenceMDP:
  """One grid world as explicit transition lists: T(a, s) over next cells, plus the absorbing state."""

  def __init__(self, walls, reward_cells, reward=10.0, noise=0.1, absorb=0.01):
    self.walls = np.asarray(walls, bool)
    self.reward_cells = np.asarray(reward_cells, bool)
    self.height, self.width = self.walls.shape
    self.reward, self.noise, self.absorb = reward, noise, absorb

  def index(self, i, j):
    return i * self.width + j

  def z(self, i, j, a):
    """The paper's z(s_ij, a): a's desired effect if it stays in S (on the grid, not a wall), else s_ij."""
    di, dj = OFFSETS[a]
    ni, nj = i + di, j + dj
    if 0 <= ni < self.height and 0 <= nj < self.width and not self.walls[ni, nj]:
      return ni, nj
    return i, j

  def acting_cells(self):
    return [(i, j) for i in range(self.height) for j in range(self.width)
            if not self.walls[i, j] and not self.reward_cells[i, j]]

  def transition(self, i, j, a):
    """{next cell: probability} for action a in s_ij, absorption excluded (its mass is `absorb`)."""
    out = collections.defaultdict(float)
    out[self.z(i, j, a)] += (1 - self.absorb) * (1 - self.noise)
    for d in range(4):
      out[self.z(i, j, d)] += (1 - self.absorb) * self.noise / 4
    return out

  def backup(self, values, i, j, a, discount=1.0):
    total = 0.0
    for (ni, nj), p in self.transition(i, j, a).items():
      landing = self.reward if self.reward_cells[ni, nj] else 0.0
      if not self.reward_cells[ni, nj]:
        landing += discount * values[ni, nj]
      total += p * landing
    return total

  def value_iteration(self, discount=1.0, sweeps=5000):
    values = np.zeros([self.height, self.width])
    for _ in range(sweeps):
      new = np.zeros_like(values)
      for i, j in self.acting_cells():
        new[i, j] = max(self.backup(values, i, j, a, discount) for a in range(4))
      if np.max(np.abs(new - values)) < 1e-12:
        return new
      values = new
    return values

  def dense_policy_matrices(self, move_probs, discount=1.0):
    """(P_π restricted to continuing, r_π) with P_π[s, s'] and r_π[s], for a [S, 4] policy."""
    size = self.height * self.width
    transitions, rewards = np.zeros([size, size]), np.zeros(size)
    for i, j in self.acting_cells():
      s = self.index(i, j)
      for a in range(4):
        for (ni, nj), p in self.transition(i, j, a).items():
          weight = move_probs[s, a] * p
          if self.reward_cells[ni, nj]:
            rewards[s] += weight * self.reward
          else:
            transitions[s, self.index(ni, nj)] += discount * weight
    return transitions, rewards


def _layout_mdps(walls, reward_cells, **kwargs):
  return random_mdp.grid_mdps_from_layout(np.asarray(walls, bool)[None], np.asarray(reward_cells, bool)[None],
                                          **kwargs)


# A 3 x 3 grid: a wall left of the centre, a reward in the top-right corner.
WALLS_3 = [[0, 0, 0], [1, 0, 0], [0, 0, 0]]
REWARDS_3 = [[0, 0, 1], [0, 0, 0], [0, 0, 0]]


# ----------------------------------------------------------------------------------------------------------
# The generator.
# ----------------------------------------------------------------------------------------------------------


def test_generator_is_reproducible_and_seeded():
  a = random_mdp.generate_grid_mdps(20, height=6, width=6, seed=3)
  b = random_mdp.generate_grid_mdps(20, height=6, width=6, seed=3)
  c = random_mdp.generate_grid_mdps(20, height=6, width=6, seed=4)
  for field in ('next_cells', 'rewards', 'terminal', 'walls'):
    np.testing.assert_array_equal(getattr(a, field).numpy(), getattr(b, field).numpy())
  assert not np.array_equal(a.walls.numpy(), c.walls.numpy())
  assert a.next_cells.shape == (20, 36, 4) and a.next_cells.dtype == tf.int32
  assert a.rewards.shape == (20, 36) and a.terminal.dtype == tf.bool
  assert a.initial_state == 3 * 6 + 3 and a.num_states == 36 and a.num_mdps == 20


def test_generator_cell_rules_and_frequencies():
  mdps = random_mdp.generate_grid_mdps(300, height=20, width=20, wall_probability=0.1,
                                       reward_probability=0.02, seed=0, require_reachable_reward=False)
  walls, terminal, rewards = mdps.walls.numpy(), mdps.terminal.numpy(), mdps.rewards.numpy()
  centre = mdps.initial_state
  assert not walls[:, centre].any() and not terminal[:, centre].any()
  assert not (walls & terminal).any()
  np.testing.assert_array_equal(rewards, np.where(terminal, 10.0, 0.0))
  others = np.delete(np.arange(400), centre)
  wall_rate = walls[:, others].mean()
  reward_rate = terminal[:, others].sum() / (~walls[:, others]).sum()
  # 300 x 399 Bernoulli draws each: 4 standard errors.
  assert abs(wall_rate - 0.1) < 4 * np.sqrt(0.1 * 0.9 / walls[:, others].size)
  assert abs(reward_rate - 0.02) < 4 * np.sqrt(0.02 * 0.98 / (~walls[:, others]).sum())


def _reachable_reference(walls, terminal, next_cells, start):
  """Forward search from the start over moves (no passing through terminal cells)."""
  seen, frontier = {start}, [start]
  while frontier:
    s = frontier.pop()
    if terminal[s]:
      continue
    for t in next_cells[s]:
      if t not in seen:
        seen.add(int(t))
        frontier.append(int(t))
  return any(terminal[s] for s in seen)


def test_reward_reachable_matches_a_search_and_rejection_keeps_only_reachable():
  raw = random_mdp.generate_grid_mdps(200, height=7, width=7, wall_probability=0.35, reward_probability=0.04,
                                      seed=1, require_reachable_reward=False)
  reach = random_mdp.reward_reachable(raw).numpy()
  expected = [_reachable_reference(raw.walls.numpy()[m], raw.terminal.numpy()[m], raw.next_cells.numpy()[m],
                                   raw.initial_state) for m in range(200)]
  np.testing.assert_array_equal(reach, expected)
  assert 0 < reach.mean() < 1  # both kinds occur, so the comparison means something
  kept = random_mdp.generate_grid_mdps(200, height=7, width=7, wall_probability=0.35, reward_probability=0.04,
                                       seed=1)
  assert kept.num_mdps == 200 and random_mdp.reward_reachable(kept).numpy().all()


def test_next_cells_follow_walls_and_edges():
  mdps = _layout_mdps(WALLS_3, REWARDS_3)
  reference = ReferenceMDP(WALLS_3, REWARDS_3)
  next_cells = mdps.next_cells.numpy()[0]
  for i in range(3):
    for j in range(3):
      for a in range(4):
        assert next_cells[i * 3 + j, a] == reference.index(*reference.z(i, j, a)), (i, j, a)
  walls = mdps.walls.numpy()[0]
  assert not walls[next_cells[~walls].reshape(-1)].any()  # from an open cell, never into a wall
  # The centre (1, 1): left is the wall at (1, 0), so it stays.
  assert list(next_cells[4]) == [1, 7, 4, 5]


def test_bad_arguments_raise_one_line_errors():
  with pytest.raises(ValueError, match='wall_probability'):
    random_mdp.generate_grid_mdps(2, wall_probability=1.5)
  with pytest.raises(ValueError, match='at least 2 x 2'):
    random_mdp.generate_grid_mdps(2, height=1)
  with pytest.raises(ValueError, match='raise reward_probability'):
    random_mdp.generate_grid_mdps(2, height=4, width=4, reward_probability=0.0, max_rounds=2)
  with pytest.raises(ValueError, match='initial cell'):
    _layout_mdps(np.eye(3), np.zeros([3, 3]))
  with pytest.raises(ValueError, match='at least 4'):
    random_mdp.action_moves(3)


# ----------------------------------------------------------------------------------------------------------
# Dynamics: the sampler's noise, walls and absorbing state.
# ----------------------------------------------------------------------------------------------------------


def test_step_transition_noise_and_absorption_frequencies():
  walls = np.zeros([3, 3])
  walls[1, 0] = 1  # left of the centre
  mdps = _layout_mdps(walls, np.zeros([3, 3]), noise=0.2, absorb_probability=0.05)
  samples = 200_000
  states = tf.fill([1, samples], 4)
  cells, rewards, terminated = random_mdp.step(mdps, states, tf.fill([1, samples], UP), tf.constant([7, 8]))
  cells, terminated = cells.numpy()[0], terminated.numpy()[0]
  assert not rewards.numpy().any()
  # Absorbed: the episode ends where it is, 5% of the time.
  expected = {'absorbed': 0.05, 1: 0.95 * (0.8 + 0.05), 7: 0.95 * 0.05, 5: 0.95 * 0.05,
              4: 0.95 * 0.05}  # left hits the wall: stays in 4
  observed = {'absorbed': terminated.mean()}
  for cell in (1, 7, 5, 4):
    observed[cell] = np.mean((cells == cell) & ~terminated)
  for key, p in expected.items():
    assert abs(observed[key] - p) < 5 * np.sqrt(p * (1 - p) / samples), (key, observed[key], p)
  assert np.all(cells[terminated] == 4)


def test_entering_a_reward_cell_pays_and_terminates():
  mdps = _layout_mdps(np.zeros([3, 3]), [[0, 1, 0], [0, 0, 0], [0, 0, 0]], noise=0.0, absorb_probability=0.0)
  cells, rewards, terminated = random_mdp.step(mdps, tf.constant([[4, 4]]), tf.constant([[UP, 4 + DOWN]]),
                                               tf.constant([0, 0]))
  np.testing.assert_array_equal(cells.numpy(), [[1, 7]])
  np.testing.assert_array_equal(rewards.numpy(), [[10.0, 0.0]])
  np.testing.assert_array_equal(terminated.numpy(), [[True, False]])


def test_action_moves_replicate_the_four_moves():
  np.testing.assert_array_equal(random_mdp.action_moves(10).numpy(), [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
  probs = tf.constant([[0.1, 0.2, 0.3, 0.05, 0.15, 0.2]])
  np.testing.assert_allclose(random_mdp.move_probabilities(probs).numpy(), [[0.25, 0.4, 0.3, 0.05]],
                             atol=1e-7)


# ----------------------------------------------------------------------------------------------------------
# Dynamic programming against the references.
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize('discount', [1.0, 0.9])
def test_value_iteration_matches_the_numpy_reference_on_a_3x3_grid(discount):
  mdps = _layout_mdps(WALLS_3, REWARDS_3, noise=0.3)
  reference = ReferenceMDP(WALLS_3, REWARDS_3, noise=0.3)
  values, move_q = random_mdp.value_iteration(mdps, discount=discount, tolerance=1e-7)
  expected = reference.value_iteration(discount)
  np.testing.assert_allclose(values.numpy()[0].reshape(3, 3), expected, atol=1e-4)
  for i, j in reference.acting_cells():
    for a in range(4):
      np.testing.assert_allclose(move_q.numpy()[0, i * 3 + j, a],
                                 reference.backup(expected, i, j, a, discount), atol=1e-4)
  # Hand check: next to the reward, moving into it is best; from (0, 1), "right" gets 10 with
  # probability (1 − 0.01)(1 − 0.3 + 0.3/4).
  assert np.argmax(move_q.numpy()[0, 1]) == RIGHT
  assert move_q.numpy()[0, 1, RIGHT] > 0.99 * 0.775 * 10


def test_evaluate_policy_matches_dense_linear_solves():
  rng = np.random.default_rng(0)
  mdps = random_mdp.generate_grid_mdps(30, height=5, width=6, wall_probability=0.25, reward_probability=0.08,
                                       noise=0.2, seed=2)
  move_probs = rng.dirichlet(np.ones(4), size=(30, 30))
  for discount in (1.0, 0.95):
    evaluation = random_mdp.evaluate_policy(mdps, tf.constant(move_probs), discount=discount)
    for m in range(30):
      reference = ReferenceMDP(mdps.walls.numpy()[m].reshape(5, 6), mdps.terminal.numpy()[m].reshape(5, 6),
                               noise=0.2)
      transitions, rewards = reference.dense_policy_matrices(move_probs[m], discount)
      identity = np.eye(30)
      values = np.linalg.solve(identity - transitions, rewards)
      occupancy = np.linalg.solve((identity - transitions).T, identity[mdps.initial_state])
      np.testing.assert_allclose(evaluation.values.numpy()[m], values, atol=1e-9)
      np.testing.assert_allclose(evaluation.occupancy.numpy()[m], occupancy, atol=1e-9)
      np.testing.assert_allclose(evaluation.returns.numpy()[m], values[mdps.initial_state], atol=1e-9)
  # float32 works too, to float32 precision.
  evaluation32 = random_mdp.evaluate_policy(mdps, tf.constant(move_probs, tf.float32))
  evaluation64 = random_mdp.evaluate_policy(mdps, tf.constant(move_probs))
  np.testing.assert_allclose(evaluation32.values.numpy(), evaluation64.values.numpy(), atol=1e-3)


def test_optimal_policy_values_equal_value_iteration():
  mdps = random_mdp.generate_grid_mdps(40, height=8, width=8, seed=5)
  values, move_q = random_mdp.value_iteration(mdps, tolerance=1e-7)
  greedy = tf.one_hot(tf.argmax(move_q, axis=-1), 4, dtype=tf.float64)
  evaluation = random_mdp.evaluate_policy(mdps, greedy)
  np.testing.assert_allclose(evaluation.values.numpy(), values.numpy(), atol=1e-3)
  # A uniform policy does worse from the start in every MDP (they all have a reachable reward).
  uniform = random_mdp.evaluate_policy(mdps, tf.fill([40, 64, 4], tf.constant(0.25, tf.float64)))
  assert np.all(uniform.returns.numpy() < evaluation.returns.numpy())


def test_occupancy_sums_to_the_expected_episode_length():
  # No rewards: an episode ends only by absorption, so it lasts 1 / 0.01 = 100 actions on average.
  mdps = _layout_mdps(np.zeros([5, 5]), np.zeros([5, 5]))
  evaluation = random_mdp.evaluate_policy(mdps, tf.fill([1, 25, 4], tf.constant(0.25, tf.float64)))
  np.testing.assert_allclose(evaluation.occupancy.numpy().sum(), 100.0, rtol=1e-9)


# ----------------------------------------------------------------------------------------------------------
# The sampler against the exact quantities.
# ----------------------------------------------------------------------------------------------------------


def test_rollout_returns_match_exact_policy_evaluation():
  mdps = random_mdp.generate_grid_mdps(3, height=5, width=5, reward_probability=0.08, seed=7)
  rng = np.random.default_rng(1)
  logits = rng.normal(size=(3, 25, 6)).astype(np.float32)  # 6 actions: moves 0, 1 have two copies
  probs = tf.nn.softmax(logits)
  exact = random_mdp.evaluate_policy(mdps, random_mdp.move_probabilities(probs)).returns.numpy()
  states = tf.fill([3, 4000], mdps.initial_state)
  run = tf.function(lambda seed: random_mdp.rollout(mdps, tf.reshape(logits, [75, 6]), states, 300, seed))
  rollout = run(tf.constant([3, 4]))
  rewards = rollout.rewards.numpy().sum(axis=(0, 2))
  episodes = rollout.terminated.numpy().sum(axis=(0, 2))
  # Returns per finished episode (a renewal-reward estimate; the unfinished tails bias it by < 1%).
  np.testing.assert_allclose(rewards / episodes, exact, rtol=0.05)
  # After every termination the next state is the initial one.
  after = rollout.states.numpy()[1:][rollout.terminated.numpy()]
  assert np.all(after == mdps.initial_state)
  # The actions' frequencies follow the logits, in the start state at t = 0.
  first = rollout.actions.numpy()[0]
  np.testing.assert_allclose(np.bincount(first[0], minlength=6) / 4000, probs.numpy()[0, mdps.initial_state],
                             atol=0.03)
  # Seeded: the same seed gives the same rollout.
  np.testing.assert_array_equal(run(tf.constant([3, 4])).actions.numpy(), rollout.actions.numpy())


def test_rollout_reads_a_variable_table():
  mdps = random_mdp.generate_grid_mdps(2, height=4, width=4, seed=0)
  table = tf.Variable(tf.zeros([2 * 16, 4]))
  rollout = random_mdp.rollout(mdps, table, tf.fill([2, 3], mdps.initial_state), 5, tf.constant([0, 1]))
  assert rollout.states.shape == (6, 2, 3) and rollout.actions.shape == (5, 2, 3)
  assert rollout.rewards.dtype == tf.float32 and rollout.terminated.dtype == tf.bool
  assert not mdps.walls.numpy()[0][rollout.states.numpy()[:, 0]].any()
