r"""The random-MDP study's tabular trainer: its configuration, the teachers, every distillation variant
trained on all MDPs at once, and the summaries over MDPs (the study: `studies/random_mdp_study.py`).

Every distillation variant of `agents/distillation/variants.py` trains a tabular student on every one of M
random grid worlds (`envs/random_mdp.py`) at once: the students' logits are one `[M·S, A]` variable, the
trajectories of all MDPs are sampled together in one `tf.while_loop`, and one compiled step applies
`distillation_surrogate(variant, ·)` to all of them. Returns, values and state visitation are computed
exactly (linear solves, `envs.random_mdp.evaluate_policy`), not estimated from episodes. The settings
named below are `StudyConfig`'s fields (`binaries/random_mdp_study_main.py` has a flag for each).

What was taken from the paper (its appendix "Experimental details", §1.1-1.2, the only part of the
paper's text available to us besides the abstract; see `envs/random_mdp.py`): grid worlds with one
initial state in the centre; four moves with transition noise η (η/4 to each direction); moves off the
grid or into walls do nothing; absorption with probability 0.01 after each action; +10 terminal reward
states; random MDPs drawn cell by cell with fixed wall/reward probabilities; fully observable tabular
states (the paper found the partially observable versions qualitatively the same). The findings tested
come from the issue's digest of the paper: student-driven sampling learns ≈3× faster than teacher-driven;
entropy-regularised distillation degrades as the action count grows while the expected variant does not;
with a 25%-noisy teacher pure cloning copies the errors while "+R" and value-gated distillation do not.

What we had to choose, and why:

* Grid 20 x 20, wall probability 0.1, reward probability 0.01, η = 0.1, undiscounted returns (γ = 1, the
  absorption ends episodes): the appendix's numbers for the sizes and probabilities did not survive in
  the copies we could read; 1,000 MDPs of 20 x 20 is the digest's figure. These give ~4 reward cells and
  ~40 walls per MDP; MDPs where no reward is reachable from the start are redrawn (they carry no signal).
* The teacher: ε-greedy on the optimal move values from value iteration, ε = 0.1 (ties shared), spread
  evenly over the copies of each move when there are more than 4 actions. A stochastic teacher is needed
  (the entropy-regularised rewards are log π(a|s), −∞ for a deterministic one); ε-greedy keeps every
  log-probability bounded (≥ log(ε/A)) and, unlike a softmax of Q-values, is as decisive far from a
  reward as near one. Its exact return is the target, "the teacher's return" (the paper's teachers'
  construction is not in the text we have).
* The action-count sweep: action a has the effect of move a mod 4 (the four moves replicated), so the
  MDP, the teacher's behaviour and its return are the same at every action count and only the number of
  logits grows. (How the paper grows the action set is not in the text we have.)
* The noisy teacher: in 25% of the open cells of each MDP (drawn at random), the teacher's greedy move is
  replaced by a uniformly drawn non-greedy one (its ε-exploration kept); its exact values are its critic
  V_π. value_gated compares V_π with the exact value of the current student V_πθ, refreshed every
  `critic_refresh_every` (5) updates: an idealised critic (the paper's agents learn one).
* What the student sees (`student_view`): by default the cell index, so the student is tabular and learns
  each cell on its own. The paper also ran partially observable versions, the agent seeing a square of
  vision centred on it (`random_mdp.local_views`); with `student_view` = k the student sees only that k x k
  square, so cells that look alike share one row of logits (`student_rows`): it generalises to cells it
  never visited and cannot tell them apart. The teachers always act on the full state (how the paper's
  partially observable teachers were made is not in the text we have).
* The teacher's ε (`teacher_epsilon`): 0 gives the greedy teacher, as deterministic as the MDPs allow;
  only variants without log π terms can learn from it (StudyConfig refuses the others).
* The student: tabular softmax logits, initialised to 0 (uniform), updated by plain SGD on
  Σ_t surrogate_t summed over each MDP's unroll and averaged over its environments (eq. 1 of the paper
  per trajectory; no clipping). No baseline is subtracted from the pseudo-returns, as in eq. 1 and
  `distillation_surrogate`; `baseline` adds a learned per-state one (BENCHMARKS.md reports what it
  changes). `advantage_normalization` replays what PPO does to the R̂ term (per MDP, the analogue of
  PPO's minibatch: each MDP's student has its own parameters): 'joint' standardises R̂ (minus the baseline,
  if any) over the MDP's B x T steps while ℓ keeps its weight, as `PPOLearner` with
  `pseudo_reward_advantages='joint'`; 'separate' standardises only the environment reward's return (β·r,
  in the "+R" variants) and adds the teacher-derived pseudo-returns at their own scale, as
  `pseudo_reward_advantages='separate'` (both through `losses.partly_normalized_advantages`). Learning
  rates are per variant (`DEFAULT_LEARNING_RATES`, and `DEFAULT_SWEEP_LEARNING_RATES`
  per action count), each the best of {0.03, 0.1, 0.3, 1, 3, 10, 30} by median steps to the teacher's
  return (then by the fraction of MDPs that reach it), found on 200 MDPs of another seed (the sweep: 100
  MDPs, rates {0.1, 1, 10}, and also 0.03, 0.3, 3 at 10 and 100 actions).
  Reward-using variants weight the +10 rewards by `reward_coef` (0.1, so a reward is worth 1, the
  scale of a cross-entropy); teacher_value_reward's V_π shaping gets the same weight (it is on the
  reward's scale), every other teacher-derived term weight 1.
* Sampling: B = `envs_per_mdp` (4) environments per MDP act for T = `unroll_length` (20) steps per
  update, continuing across updates (episodes restart at the centre when they end); pseudo-returns are
  summed to the end of the unroll (no bootstrap), with discounts 1 − terminated.
* "Steps": environment steps per MDP sampled for training (updates × T × B = 80 per update); teacher-
  driven variants count the teacher's steps. "Reaches the teacher's return": the first evaluation at
  which the student's exact expected return is at least `reach_fraction` (0.95) of the teacher's;
  evaluations follow every update at first, then spread geometrically (`eval_growth`). MDPs that never
  reach it count as never (quartiles over MDPs; a median of "never" means fewer than half reached it).
* KL(π‖π_θ) is per state over the A actions and averaged with the TEACHER's state-visitation weights (the
  states imitation is about; study.json also has it under the student's own visitation).
"""

import dataclasses
import math
import time
from typing import Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

from protege.agents.distillation import losses as distillation_losses
from protege.agents.distillation import variants
from protege.agents.learners import losses
from protege.envs import random_mdp
from protege.runtime import errors

PARTS = ('sampling', 'actions', 'noisy')
ADVANTAGE_NORMALIZATIONS = ('none', 'joint', 'separate')
SAMPLING_VARIANTS = distillation_losses.VARIANTS
ACTION_SWEEP_VARIANTS = ('entropy_regularised', 'expected_entropy_regularised')
NOISY_VARIANTS = ('on_policy_distill', 'on_policy_distill_with_reward', 'value_gated', 'teacher_value_reward',
                  'expected_entropy_regularised')
# Variants whose pseudo-rewards are 0: their update has no score-function term, so no baseline.
_NO_PSEUDO_REWARDS = ('teacher_distill', 'on_policy_distill')
# Variants that need log π(a|s) finite for every action: a greedy teacher (ε = 0) cannot teach them.
_NEED_STOCHASTIC_TEACHER = ('entropy_regularised', 'expected_entropy_regularised')
# Chosen by a coarse sweep on other MDPs (see the module docstring and BENCHMARKS.md).
DEFAULT_LEARNING_RATES = {
    'teacher_distill': 3.0,
    'on_policy_distill': 10.0,
    'on_policy_distill_with_reward': 10.0,
    'entropy_regularised': 0.1,
    'n_distill': 1.0,
    'expected_entropy_regularised': 0.1,
    'teacher_value_reward': 3.0,
    'value_gated': 10.0,
}

# The action-count sweep's rates, 'variant@count' -> rate (other counts use DEFAULT_LEARNING_RATES).
DEFAULT_SWEEP_LEARNING_RATES = {
    'expected_entropy_regularised@10': 10.0,
    'expected_entropy_regularised@100': 10.0,
    'expected_entropy_regularised@1000': 10.0,
}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """Everything a study run depends on (the binary's flags, resolved)."""
  parts: Sequence[str] = PARTS
  num_mdps: int = 1000
  sweep_num_mdps: int = 100
  grid_size: int = 20
  wall_probability: float = 0.1
  reward_probability: float = 0.01
  transition_noise: float = 0.1
  teacher_epsilon: float = 0.1
  noisy_fraction: float = 0.25
  updates: int = 150
  noisy_updates: int = 200
  sweep_updates: int = 100
  unroll_length: int = 20
  envs_per_mdp: int = 4
  eval_growth: float = 1.25
  critic_refresh_every: int = 5
  action_counts: Sequence[int] = (4, 10, 100, 1000)
  learning_rates: Dict[str, float] = dataclasses.field(default_factory=lambda: dict(DEFAULT_LEARNING_RATES))
  sweep_learning_rates: Dict[str, float] = dataclasses.field(
      default_factory=lambda: dict(DEFAULT_SWEEP_LEARNING_RATES))
  common_rates: Sequence[float] = (1.0, 3.0, 10.0)
  common_rate_updates: int = 40
  reward_coef: float = 0.1
  baseline: bool = False
  advantage_normalization: str = 'none'
  baseline_rate: float = 0.5
  reach_fraction: float = 0.95
  seed: int = 0
  sampling_variants: Sequence[str] = SAMPLING_VARIANTS
  student_view: int = 0

  def __post_init__(self):
    unknown = [v for v in self.sampling_variants if v not in SAMPLING_VARIANTS]
    if unknown or not self.sampling_variants:
      raise errors.ConfigError(f'sampling_variants {list(self.sampling_variants)} must be a non-empty '
                               f'selection of {SAMPLING_VARIANTS}.')
    if self.student_view < 0 or (self.student_view and self.student_view % 2 == 0):
      raise errors.ConfigError(f'student_view must be 0 (the student sees the cell index) or an odd size '
                               f'of the square it sees around the agent, got {self.student_view}.')
    trained = set(self.sampling_variants) if 'sampling' in self.parts else set()
    if 'actions' in self.parts:
      trained |= set(ACTION_SWEEP_VARIANTS)
    if 'noisy' in self.parts:
      trained |= set(NOISY_VARIANTS)
    needs = sorted(trained & set(_NEED_STOCHASTIC_TEACHER))
    if self.teacher_epsilon <= 0 and needs:
      raise errors.ConfigError(f'teacher_epsilon = {self.teacher_epsilon} makes the teacher greedy, so log π is '
                               f'−∞ for its other moves and {needs} cannot learn from it; use a teacher_epsilon '
                               'above 0, or run only the cloning variants (e.g. parts=sampling, '
                               'sampling_variants=teacher_distill,on_policy_distill).')

  @property
  def steps_per_update(self) -> int:
    """Environment steps per MDP per update."""
    return self.unroll_length * self.envs_per_mdp


TINY = dict(num_mdps=60, sweep_num_mdps=60, grid_size=8, updates=40, noisy_updates=60, sweep_updates=40,
            critic_refresh_every=2, action_counts=(4, 100), common_rates=(10.0,), common_rate_updates=20)

# ----------------------------------------------------------------------------------------------------------
# Teachers.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Teacher:
  """A tabular teacher on M MDPs: `logits [M, S, A]`, exact `values [M, S]`, `returns [M]`, `occupancy`."""
  logits: tf.Tensor
  move_probs: tf.Tensor
  values: tf.Tensor
  returns: tf.Tensor
  occupancy: tf.Tensor


def greedy_moves(move_q: tf.Tensor) -> tf.Tensor:
  """bool `[M, S, 4]`: the moves within 1e-4 (relative) of the best move value (ties kept)."""
  best = tf.reduce_max(move_q, axis=-1, keepdims=True)
  return move_q >= best - 1e-4 * (1.0 + tf.abs(best))


def teacher_move_probs(mdps: random_mdp.GridMDPs, move_q: tf.Tensor, epsilon: float,
                       noisy_fraction: float = 0.0, seed: int = 0) -> tf.Tensor:
  """The ε-greedy teacher over moves, float `[M, S, 4]`, optionally with wrong moves in some states.

  `(1 − ε)` is shared by the greedy moves of Q* and `ε/4` goes to each move. With `noisy_fraction > 0`, in
  that fraction of the open cells where some move is not greedy, the greedy set is replaced by one
  uniformly drawn non-greedy move (the teacher's mistake).
  """
  greedy = greedy_moves(move_q)
  if noisy_fraction > 0:
    shape = tf.shape(move_q)
    open_cells = ~mdps.walls & ~mdps.terminal
    can_err = open_cells & ~tf.reduce_all(greedy, axis=-1)
    errs = can_err & (tf.random.stateless_uniform(shape[:2], [seed, 1]) < noisy_fraction)
    scores = tf.where(greedy, -1.0, tf.random.stateless_uniform(shape, [seed, 2]))
    wrong = tf.one_hot(tf.argmax(scores, axis=-1), random_mdp.NUM_MOVES, on_value=True, off_value=False)
    greedy = tf.where(errs[..., None], wrong, greedy)
  greedy = tf.cast(greedy, tf.float32)
  greedy /= tf.reduce_sum(greedy, axis=-1, keepdims=True)
  return (1.0 - epsilon) * greedy + epsilon / random_mdp.NUM_MOVES


def spread_over_actions(move_probs: tf.Tensor, num_actions: int) -> tf.Tensor:
  """Logits `[M, S, A]` of the policy that picks move k with `move_probs[..., k]`, split evenly among the
  actions that have move k's effect (`random_mdp.action_moves`)."""
  moves = random_mdp.action_moves(num_actions)
  copies = tf.math.bincount(moves, minlength=random_mdp.NUM_MOVES, dtype=tf.float32)
  return tf.math.log(tf.gather(move_probs / copies, moves, axis=-1))


def make_teacher(mdps: random_mdp.GridMDPs, move_probs: tf.Tensor, num_actions: int) -> Teacher:
  """The teacher acting with `move_probs` over `num_actions` actions, with its exact values and return."""
  evaluation = random_mdp.evaluate_policy(mdps, move_probs)
  return Teacher(logits=spread_over_actions(move_probs, num_actions), move_probs=move_probs,
                 values=evaluation.values, returns=evaluation.returns, occupancy=evaluation.occupancy)


# ----------------------------------------------------------------------------------------------------------
# Training one variant on all MDPs at once.
# ----------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Curves:
  """Per-evaluation results of one run: `steps [E]` and per-MDP `[E, M]` arrays."""
  steps: np.ndarray
  returns: np.ndarray
  kl_teacher_visits: np.ndarray
  kl_student_visits: np.ndarray
  seconds: float


def student_rows(mdps: random_mdp.GridMDPs, view_size: int) -> tf.Tensor:
  """int32 `[M·S]`: the row of the students' logit table `[M·S, A]` that the student of MDP m reads in cell s.

  `view_size` 0: the student sees the cell index (fully observable, tabular), row `m·S + s`. Otherwise it sees
  only the `view_size` x `view_size` square around it (`random_mdp.local_views`): the cells of an MDP with
  the same view read the same row, `m·S + (index of the view among the MDP's distinct views)`, so an update
  in one of them moves the policy in all of them (the generalisation, and the aliasing, of a student that
  cannot tell them apart). A view as large as 2·max(H, W) − 1 sees the whole grid, and every cell its own row.
  """
  num_mdps, num_states = mdps.num_mdps, mdps.num_states
  offsets = np.arange(num_mdps, dtype=np.int32)[:, None] * num_states
  if view_size == 0:
    return tf.reshape(tf.range(num_mdps * num_states, dtype=tf.int32), [-1])
  views = random_mdp.local_views(mdps, view_size).numpy()
  view_ids = np.empty([num_mdps, num_states], np.int32)
  for mdp in range(num_mdps):
    view_ids[mdp] = np.unique(views[mdp], axis=0, return_inverse=True)[1].reshape(-1)
  return tf.constant((view_ids + offsets).reshape(-1))


def _weighted_state_mean(per_state: tf.Tensor, weights: tf.Tensor) -> tf.Tensor:
  return tf.reduce_sum(per_state * weights, axis=-1) / tf.maximum(tf.reduce_sum(weights, axis=-1), 1e-12)


def evaluation_updates(updates: int, growth: float) -> List[int]:
  """The updates after which the students are evaluated: 0, then roughly geometric (factor `growth`, at
  least one update apart), then the last. Dense early, where the fast variants reach the teacher."""
  points, x = {0, updates}, 1.0
  while x < updates:
    points.add(math.ceil(x))
    x = max(x * growth, x + 1.0)
  return sorted(p for p in points if p <= updates)


class _TabularStudents:
  """One tabular softmax student per MDP, trained with `variant`: the logits `[M·S, A]` (a row per cell, or
  per distinct view with `config.student_view`: `student_rows`), the baselines of the pseudo-returns, the
  environments' states, and the compiled update and exact evaluation."""

  def __init__(self, variant: str, mdps: random_mdp.GridMDPs, teacher: Teacher, config: StudyConfig,
               learning_rate: float):
    self.variant, self.mdps, self.teacher, self.config = variant, mdps, teacher, config
    self.learning_rate = learning_rate
    self.num_mdps, self.num_states = mdps.num_mdps, mdps.num_states
    self.num_actions = int(teacher.logits.shape[-1])
    self.batch = config.envs_per_mdp
    self.sampled_by = distillation_losses.SAMPLED_BY[variant]
    num_rows = self.num_mdps * self.num_states
    self.teacher_flat = tf.reshape(teacher.logits, [num_rows, self.num_actions])
    self.teacher_values_flat = tf.reshape(teacher.values, [-1])
    self.offsets = tf.range(self.num_mdps, dtype=tf.int32)[:, None] * self.num_states  # [M, 1]

    self.logits = tf.Variable(tf.zeros([num_rows, self.num_actions]), name='student_logits')
    self.rows = student_rows(mdps, config.student_view)  # [M·S]: the logits' row of each (MDP, cell)
    self.student_values = tf.Variable(tf.zeros([self.num_mdps, self.num_states]), name='student_values')
    self.baseline = tf.Variable(tf.zeros([num_rows]), name='pseudo_return_baseline')
    # 'separate': the teacher-derived part of the baseline; the environment's part is baseline − this (both
    # move towards their batch means at the same rate, so their sum is the total's baseline).
    self.teacher_baseline = tf.Variable(tf.zeros([num_rows]), name='teacher_pseudo_return_baseline')
    self.normalization = config.advantage_normalization
    self.env_states = tf.Variable(tf.fill([self.num_mdps, self.batch], mdps.initial_state), name='env_states')
    # teacher_value_reward shapes the reward with V_π, whose scale is the reward's: both get β, so the
    # shaping stays potential-based, β·(r + V_π(s') − V_π(s)) (Proposition 4 of the paper).
    self.distillation_coef = config.reward_coef if variant == 'teacher_value_reward' else 1.0
    self.use_baseline = config.baseline and variant not in _NO_PSEUDO_REWARDS
    self.teacher_log_probs = tf.nn.log_softmax(teacher.logits)
    self.teacher_probs = tf.exp(self.teacher_log_probs)

  def policy_logits(self) -> tf.Tensor:
    """The students' logits in every (MDP, cell), `[M·S, A]` (rows shared between cells of the same view)."""
    return tf.gather(self.logits, self.rows)

  def _terms(self, inputs, reward_coef: float):
    return variants.distillation_terms(self.variant, inputs, distillation_coef=self.distillation_coef,
                                       reward_coef=reward_coef)

  @tf.function
  def update(self, step_seed):
    """One update of every student from `unroll_length` steps of its `envs_per_mdp` environments."""
    config, batch, num_mdps = self.config, self.batch, self.num_mdps
    behaviour = self.teacher_flat if self.sampled_by == 'teacher' else self.policy_logits()
    rollout = random_mdp.rollout(self.mdps, behaviour, self.env_states, config.unroll_length, step_seed)
    self.env_states.assign(rollout.states[-1])
    flat_states = tf.reshape(rollout.states + self.offsets, [config.unroll_length + 1, num_mdps * batch])
    steps_shape = [config.unroll_length, num_mdps * batch]
    with tf.GradientTape() as tape:
      inputs = distillation_losses.DistillationInputs(
          student_logits=tf.gather(self.logits, tf.gather(self.rows, flat_states)),
          teacher_logits=tf.gather(self.teacher_flat, flat_states),
          actions=tf.reshape(rollout.actions, steps_shape),
          rewards=tf.reshape(rollout.rewards, steps_shape),
          discounts=tf.reshape(1.0 - tf.cast(rollout.terminated, tf.float32), steps_shape),
          teacher_values=tf.gather(self.teacher_values_flat, flat_states),
          student_values=tf.gather(tf.reshape(self.student_values, [-1]), flat_states))
      if self.normalization != 'none':
        surrogate = self._normalized_surrogate(inputs, flat_states[:-1])
      else:
        surrogate = variants.distillation_surrogate(
            self.variant, inputs, distillation_coef=self.distillation_coef, reward_coef=config.reward_coef)
      if self.use_baseline and self.normalization == 'none':
        # −log π_θ(a_t|s_t)·(R̂_t − b(s_t)): a state baseline leaves eq. 1's expectation unchanged.
        log_probs = losses.categorical_log_prob(inputs.student_logits[:-1], inputs.actions)
        surrogate += log_probs * tf.gather(self.baseline, flat_states[:-1])
      # Eq. 1 summed over each environment's unroll, averaged over the B environments of an MDP; MDPs
      # have separate parameters, so summing over them keeps each MDP's update its own.
      loss = tf.reduce_sum(surrogate) / batch
    gradient = tape.gradient(loss, self.logits)
    self.logits.scatter_sub(tf.IndexedSlices(self.learning_rate * gradient.values, gradient.indices))
    if self.use_baseline:
      self._update_baselines(inputs, flat_states[:-1])

  def _update_baselines(self, inputs, states):
    """Moves b(s) (and, for 'separate', its teacher-derived part) towards the batch mean of R̂ in each
    visited state; `states` `[T, M·B]` are their flat indices."""
    rate, num_rows = self.config.baseline_rate, self.num_mdps * self.num_states
    pseudo_returns = distillation_losses.pseudo_returns(
        self._terms(inputs, self.config.reward_coef).pseudo_rewards, inputs.discounts)
    visited = tf.reshape(states, [-1])
    sums = tf.math.unsorted_segment_sum(tf.reshape(pseudo_returns, [-1]), visited, num_rows)
    counts = tf.math.unsorted_segment_sum(tf.ones_like(visited, tf.float32), visited, num_rows)
    batch_means = sums / tf.maximum(counts, 1.0)
    self.baseline.assign_add(tf.where(counts > 0, rate * (batch_means - self.baseline), 0.0))
    if self.normalization == 'separate':
      teacher_returns = distillation_losses.pseudo_returns(self._terms(inputs, 0.0).pseudo_rewards,
                                                           inputs.discounts)
      sums = tf.math.unsorted_segment_sum(tf.reshape(teacher_returns, [-1]), visited, num_rows)
      self.teacher_baseline.assign_add(
          tf.where(counts > 0, rate * (sums / tf.maximum(counts, 1.0) - self.teacher_baseline), 0.0))

  def _per_mdp(self, x):
    """`[T, M·B]` (columns MDP-major) -> `[M, T, B]`."""
    return tf.transpose(tf.reshape(x, [self.config.unroll_length, self.num_mdps, self.batch]), [1, 0, 2])

  def _normalized_surrogate(self, inputs, states):
    """−log π_θ(a_t|s_t)·Â_t + ℓ_t with Â standardised per MDP as PPO does (`advantage_normalization`);
    `states` `[T, M·B]` are the visited states' flat indices (the baselines' rows)."""
    full = self._terms(inputs, self.config.reward_coef)
    teacher = self._terms(inputs, 0.0)
    total_returns = distillation_losses.pseudo_returns(full.pseudo_rewards, inputs.discounts)
    teacher_returns = distillation_losses.pseudo_returns(teacher.pseudo_rewards, inputs.discounts)
    total_baseline = tf.gather(self.baseline, states) if self.use_baseline else 0.0
    teacher_part = teacher_returns - (tf.gather(self.teacher_baseline, states) if self.use_baseline else 0.0)
    if self.normalization == 'joint':
      normalized, unnormalized = total_returns - total_baseline, None
    else:
      normalized, unnormalized = total_returns - total_baseline - teacher_part, teacher_part
    if unnormalized is None:
      advantages = tf.vectorized_map(losses.partly_normalized_advantages, self._per_mdp(normalized))
    else:
      advantages = tf.vectorized_map(lambda pair: losses.partly_normalized_advantages(*pair),
                                     (self._per_mdp(normalized), self._per_mdp(unnormalized)))
    advantages = tf.reshape(tf.transpose(advantages, [1, 0, 2]), tf.shape(total_returns))
    log_probs = losses.categorical_log_prob(inputs.student_logits[:-1], inputs.actions)
    return -log_probs * tf.stop_gradient(advantages) + full.loss

  @tf.function
  def evaluate(self):
    """Exact `(returns [M], KL teacher-visit weighted [M], KL student-visit weighted [M], values [M, S])`."""
    student_log_probs = tf.nn.log_softmax(
        tf.reshape(self.policy_logits(), [self.num_mdps, self.num_states, self.num_actions]))
    evaluation = random_mdp.evaluate_policy(self.mdps,
                                            random_mdp.move_probabilities(tf.exp(student_log_probs)))
    # A greedy teacher (ε = 0) has log π = −∞ where π = 0; those actions add 0 to the KL.
    kl = tf.reduce_sum(tf.where(self.teacher_probs > 0, self.teacher_probs * (self.teacher_log_probs
                                                                             - student_log_probs), 0.0), axis=-1)
    return (evaluation.returns, _weighted_state_mean(kl, self.teacher.occupancy),
            _weighted_state_mean(kl, evaluation.occupancy), evaluation.values)


def train_variant(variant: str, mdps: random_mdp.GridMDPs, teacher: Teacher, config: StudyConfig,
                  updates: int, seed: int, learning_rate: float) -> Curves:
  """Trains one tabular student per MDP with `variant`; evaluates them exactly (`evaluation_updates`)."""
  start_time = time.time()
  students = _TabularStudents(variant, mdps, teacher, config, learning_rate)
  steps, returns, kl_teacher, kl_student = [], [], [], []

  def record(update_index):
    results = students.evaluate()
    steps.append(update_index * config.steps_per_update)
    returns.append(results[0].numpy())
    kl_teacher.append(results[1].numpy())
    kl_student.append(results[2].numpy())
    return results[3]

  evaluated = set(evaluation_updates(updates, config.eval_growth))
  values = record(0)
  for update_index in range(1, updates + 1):
    if variant == 'value_gated' and (update_index - 1) % config.critic_refresh_every == 0:
      if update_index - 1 not in evaluated:
        values = students.evaluate()[3]
      students.student_values.assign(values)
    students.update(tf.constant([seed, update_index], tf.int32))
    if update_index in evaluated:
      values = record(update_index)
  return Curves(np.array(steps), np.array(returns), np.array(kl_teacher), np.array(kl_student),
                time.time() - start_time)

# ----------------------------------------------------------------------------------------------------------
# Summaries.
# ----------------------------------------------------------------------------------------------------------


def steps_to_reach(curves: Curves, target_returns: np.ndarray, fraction: float) -> np.ndarray:
  """Per MDP, the first evaluated step count at which return ≥ fraction · target; inf if never."""
  reached = curves.returns >= fraction * target_returns[None, :]
  first = np.argmax(reached, axis=0)
  return np.where(reached.any(axis=0), curves.steps[first].astype(float), np.inf)


def quartiles(x: np.ndarray) -> List[float]:
  return [float(q) for q in np.percentile(x, [25, 50, 75])]


def summarize(variant: str, curves: Curves, teacher: Teacher, config: StudyConfig, learning_rate: float,
              reference_returns: Optional[np.ndarray] = None) -> dict:
  """Medians/quartiles over MDPs of steps-to-teacher, final KL and final return relative to the teacher."""
  teacher_returns = teacher.returns.numpy()
  steps = steps_to_reach(curves, teacher_returns, config.reach_fraction)
  relative = curves.returns / teacher_returns[None, :]
  summary = {
      'variant': variant,
      'sampled_by': distillation_losses.SAMPLED_BY[variant],
      'learning_rate': learning_rate,
      'num_mdps': int(curves.returns.shape[1]),
      'budget_steps': int(curves.steps[-1]),
      'fraction_reached': float(np.isfinite(steps).mean()),
      # No interpolation between quartile neighbours: "never" (inf) stays inf.
      'steps_to_teacher_quartiles': [
          float(q) for q in np.percentile(steps, [25, 50, 75], method='inverted_cdf')],
      'final_return_over_teacher_quartiles': quartiles(relative[-1]),
      'final_return_over_teacher_mean': float(relative[-1].mean()),
      'final_kl_teacher_visits_quartiles': quartiles(curves.kl_teacher_visits[-1]),
      'final_kl_student_visits_quartiles': quartiles(curves.kl_student_visits[-1]),
      'seconds': round(curves.seconds, 1),
      'curve_steps': curves.steps.tolist(),
      'curve_return_over_teacher_quartiles': np.percentile(relative, [25, 50, 75], axis=1).T.tolist(),
      'curve_kl_teacher_visits_quartiles': np.percentile(
          curves.kl_teacher_visits, [25, 50, 75], axis=1).T.tolist(),
  }
  if reference_returns is not None:
    summary['final_return_over_clean_teacher_quartiles'] = quartiles(curves.returns[-1] / reference_returns)
    summary['curve_return_over_clean_teacher_quartiles'] = np.percentile(
        curves.returns / reference_returns[None, :], [25, 50, 75], axis=1).T.tolist()
  return summary

