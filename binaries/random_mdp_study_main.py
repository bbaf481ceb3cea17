r"""The random-MDP study of "Distilling Policy Distillation" (Czarnecki et al., AISTATS 2019, 1902.02186).

  python binaries/random_mdp_study_main.py --output_dir=runs/random_mdp_study   # the full study, ~7.5 min
  python binaries/random_mdp_study_main.py --output_dir=/tmp/s --tiny             # ~30 s, for tests
  python binaries/random_mdp_study_main.py --output_dir=/tmp/s --parts=sampling --num_mdps=200

Every distillation variant of `agents/distillation_losses.py` trains a tabular student on every one of M
random grid worlds (`envs/random_mdp.py`) at once: the students' logits are one `[M·S, A]` variable, the
trajectories of all MDPs are sampled together in one `tf.while_loop`, and one compiled step applies
`distillation_surrogate(variant, ·)` to all of them. Returns, values and state visitation are computed
exactly (linear solves, `envs.random_mdp.evaluate_policy`), not estimated from episodes. Three parts:

1. `sampling`: every variant at its own learning rate, 4 actions, M MDPs; then teacher_distill
   (teacher-driven) against on_policy_distill (student-driven) at common learning rates: the two differ in
   who samples and in nothing else.
2. `actions`: entropy_regularised against expected_entropy_regularised as the action count grows (4, 10,
   100, 1000), on the first `--sweep_num_mdps` (200) of the MDPs: at 1,000 actions a student table is
   400 x 1,000 logits per MDP, and 1,000 MDPs of them would not fit the 10-minute budget.
3. `noisy`: a teacher that takes a wrong move in 25% of the states; on_policy_distill (pure cloning)
   against on_policy_distill_with_reward (+R), value_gated (+R, gated) and two other reward-aware variants.

Outputs in `--output_dir`: `study.md` (tables), `study.json` (configuration, per-variant summaries and
median/quartile learning curves; a step count of null means never reached), and the plots
`sampling_curves.png`, `action_sweep.png`, `noisy_teacher.png`. The console shows the part, each finished
run, the elapsed time and an ETA.

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
  `--critic_refresh_every` (5) updates: an idealised critic (the paper's agents learn one).
* The student: tabular softmax logits, initialised to 0 (uniform), updated by plain SGD on
  Σ_t surrogate_t summed over each MDP's unroll and averaged over its environments (eq. 1 of the paper
  per trajectory; no clipping). No baseline is subtracted from the pseudo-returns, as in eq. 1 and
  `distillation_surrogate`; `--baseline` adds a learned per-state one (BENCHMARKS.md reports what it
  changes). `--advantage_normalization` replays what PPO does to the R̂ term (per MDP, the analogue of
  PPO's minibatch: each MDP's student has its own parameters): 'joint' standardises R̂ (minus the baseline,
  if any) over the MDP's B x T steps while ℓ keeps its weight, as `PPOLearner` with
  `pseudo_reward_advantages='joint'`; 'separate' standardises only the environment reward's return (β·r,
  in the "+R" variants) and adds the teacher-derived pseudo-returns at their own scale, as
  `pseudo_reward_advantages='separate'` (both through `losses.partly_normalized_advantages`). Learning
  rates are per variant (`DEFAULT_LEARNING_RATES`, and `DEFAULT_SWEEP_LEARNING_RATES`
  per action count), each the best of {0.03, 0.1, 0.3, 1, 3, 10, 30} by median steps to the teacher's
  return (then by the fraction of MDPs that reach it), found on 200 MDPs of another seed (the sweep: 100
  MDPs, rates {0.1, 1, 10}, and also 0.03, 0.3, 3 at 10 and 100 actions).
  Reward-using variants weight the +10 rewards by `--reward_coef` (0.1, so a reward is worth 1, the
  scale of a cross-entropy); teacher_value_reward's V_π shaping gets the same weight (it is on the
  reward's scale), every other teacher-derived term weight 1.
* Sampling: B = `--envs_per_mdp` (4) environments per MDP act for T = `--unroll_length` (20) steps per
  update, continuing across updates (episodes restart at the centre when they end); pseudo-returns are
  summed to the end of the unroll (no bootstrap), with discounts 1 − terminated.
* "Steps": environment steps per MDP sampled for training (updates × T × B = 80 per update); teacher-
  driven variants count the teacher's steps. "Reaches the teacher's return": the first evaluation at
  which the student's exact expected return is at least `--reach_fraction` (0.95) of the teacher's;
  evaluations follow every update at first, then spread geometrically (`--eval_growth`). MDPs that never
  reach it count as never (quartiles over MDPs; a median of "never" means fewer than half reached it).
* KL(π‖π_θ) is per state over the A actions and averaged with the TEACHER's state-visitation weights (the
  states imitation is about; study.json also has it under the student's own visitation).
"""

import dataclasses
import json
import math
import os
import sys
import time
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from agents import distillation_losses  # noqa: E402
from agents import losses  # noqa: E402
from envs import random_mdp  # noqa: E402
from runtime import run_directory  # noqa: E402

PARTS = ('sampling', 'actions', 'noisy')
ADVANTAGE_NORMALIZATIONS = ('none', 'joint', 'separate')
SAMPLING_VARIANTS = distillation_losses.VARIANTS
ACTION_SWEEP_VARIANTS = ('entropy_regularised', 'expected_entropy_regularised')
NOISY_VARIANTS = ('on_policy_distill', 'on_policy_distill_with_reward', 'value_gated', 'teacher_value_reward',
                  'expected_entropy_regularised')
# Variants whose pseudo-rewards are 0: their update has no score-function term, so no baseline.
_NO_PSEUDO_REWARDS = ('teacher_distill', 'on_policy_distill')
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

flags.DEFINE_string('output_dir', None, 'Where study.md, study.json and the PNG plots are written.')
flags.DEFINE_list('parts', list(PARTS), f'Parts to run, from {PARTS}.')
flags.DEFINE_integer('num_mdps', 1000, 'M, random MDPs of the sampling and noisy-teacher parts.')
flags.DEFINE_integer('sweep_num_mdps', 100, 'MDPs of the action-count sweep (its first M of the same draw).')
flags.DEFINE_integer('grid_size', 20, 'Grids are grid_size x grid_size.')
flags.DEFINE_float('wall_probability', 0.1, 'Probability that a cell is a wall.')
flags.DEFINE_float('reward_probability', 0.01, 'Probability that a non-wall cell is a +10 terminal state.')
flags.DEFINE_float('transition_noise', 0.1, 'η: probability that a move goes in a random direction.')
flags.DEFINE_float('teacher_epsilon', 0.1, 'ε of the ε-greedy teacher.')
flags.DEFINE_float('noisy_fraction', 0.25, 'Fraction of states where the noisy teacher moves wrongly.')
flags.DEFINE_integer('updates', 150, 'Updates per run (each of unroll_length x envs_per_mdp steps per MDP).')
flags.DEFINE_integer('noisy_updates', 200, 'Updates per run of the noisy-teacher part.')
flags.DEFINE_integer('sweep_updates', 100, 'Updates per run of the action-count sweep.')
flags.DEFINE_integer('unroll_length', 20, 'T, steps per environment per update.')
flags.DEFINE_integer('envs_per_mdp', 4, 'B, environments per MDP.')
flags.DEFINE_float('eval_growth', 1.25, 'Students are evaluated exactly after update 0, 1, 2, ... spaced '
                   'geometrically by this factor (at least 1 update apart), and after the last.')
flags.DEFINE_integer('critic_refresh_every', 5, 'Updates between refreshes of the exact student values '
                     '(value_gated only).')
flags.DEFINE_list('action_counts', ['4', '10', '100', '1000'], 'Action counts of the sweep.')
flags.DEFINE_multi_string('learning_rates', [], 'Per-variant learning rates, e.g. entropy_regularised=0.3 '
                          f'(defaults: {DEFAULT_LEARNING_RATES}).')
flags.DEFINE_list('common_rates', ['1', '3', '10'], 'Learning rates at which teacher_distill and '
                  'on_policy_distill are also compared (same rate for both).')
flags.DEFINE_integer('common_rate_updates', 40, 'Updates per run of that comparison.')
flags.DEFINE_multi_string('sweep_learning_rates', [], 'Learning rates of the action-count sweep per variant '
                          'and count, e.g. entropy_regularised@1000=0.1 (defaults: '
                          'DEFAULT_SWEEP_LEARNING_RATES).')
flags.DEFINE_float('reward_coef', 0.1, 'β, the weight of the environment reward (+10) in the variants that '
                   'use one.')
flags.DEFINE_bool('baseline', False, 'Subtract a learned per-state baseline b(s) from the pseudo-returns R̂ '
                  '(a variance-reduction variant of eq. 1; its expected update is unchanged). Off by '
                  'default: the paper\'s eq. 1 and distillation_surrogate have none.')
flags.DEFINE_enum('advantage_normalization', 'none', ADVANTAGE_NORMALIZATIONS,
                  "What happens to the score-function term's returns before the update: 'none' (eq. 1), "
                  "'joint' (standardised per MDP, as PPO's per-minibatch normalisation of env + pseudo "
                  "advantages) or 'separate' (only the environment reward's part standardised, the "
                  "teacher-derived part added at its own scale).")
flags.DEFINE_float('baseline_rate', 0.5, 'Step size of the baseline towards the batch mean of R̂ in each '
                   'visited state.')
flags.DEFINE_float('reach_fraction', 0.95, 'The student reaches the teacher when its return is at least this '
                   'fraction of the teacher\'s.')
flags.DEFINE_integer('seed', 0, 'Seed of the MDPs and of the training randomness.')
flags.DEFINE_bool('tiny', False, 'A small study (60 MDPs of 8 x 8, short runs, actions 4 and 100) that runs '
                  'in seconds, for tests; explicit flags are overridden.')
flags.DEFINE_bool('plots', True, 'Write the PNG plots.')
FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """Everything a study run depends on (the flags, resolved)."""
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


def train_variant(variant: str, mdps: random_mdp.GridMDPs, teacher: Teacher, config: StudyConfig,
                  updates: int, seed: int, learning_rate: float) -> Curves:
  """Trains one tabular student per MDP with `variant`; evaluates them exactly (`evaluation_updates`)."""
  start_time = time.time()
  num_mdps, num_states = mdps.num_mdps, mdps.num_states
  num_actions = int(teacher.logits.shape[-1])
  batch = config.envs_per_mdp
  sampled_by = distillation_losses.SAMPLED_BY[variant]
  teacher_flat = tf.reshape(teacher.logits, [num_mdps * num_states, num_actions])
  teacher_values_flat = tf.reshape(teacher.values, [-1])
  offsets = tf.range(num_mdps, dtype=tf.int32)[:, None] * num_states  # [M, 1]

  logits = tf.Variable(tf.zeros([num_mdps * num_states, num_actions]), name='student_logits')
  student_values = tf.Variable(tf.zeros([num_mdps, num_states]), name='student_values')
  baseline = tf.Variable(tf.zeros([num_mdps * num_states]), name='pseudo_return_baseline')
  # 'separate': the teacher-derived part of the baseline; the environment's part is baseline − this (both
  # move towards their batch means at the same rate, so their sum is the total's baseline).
  teacher_baseline = tf.Variable(tf.zeros([num_mdps * num_states]), name='teacher_pseudo_return_baseline')
  normalization = config.advantage_normalization
  env_states = tf.Variable(tf.fill([num_mdps, batch], mdps.initial_state), name='env_states')
  # teacher_value_reward shapes the reward with V_π, whose scale is the reward's: both get β, so the
  # shaping stays potential-based, β·(r + V_π(s') − V_π(s)) (Proposition 4 of the paper).
  distillation_coef = config.reward_coef if variant == 'teacher_value_reward' else 1.0
  use_baseline = config.baseline and variant not in _NO_PSEUDO_REWARDS

  @tf.function
  def update(step_seed):
    behaviour = teacher_flat if sampled_by == 'teacher' else logits
    rollout = random_mdp.rollout(mdps, behaviour, env_states, config.unroll_length, step_seed)
    env_states.assign(rollout.states[-1])
    flat_states = tf.reshape(rollout.states + offsets, [config.unroll_length + 1, num_mdps * batch])
    steps_shape = [config.unroll_length, num_mdps * batch]
    with tf.GradientTape() as tape:
      inputs = distillation_losses.DistillationInputs(
          student_logits=tf.gather(logits, flat_states),
          teacher_logits=tf.gather(teacher_flat, flat_states),
          actions=tf.reshape(rollout.actions, steps_shape),
          rewards=tf.reshape(rollout.rewards, steps_shape),
          discounts=tf.reshape(1.0 - tf.cast(rollout.terminated, tf.float32), steps_shape),
          teacher_values=tf.gather(teacher_values_flat, flat_states),
          student_values=tf.gather(tf.reshape(student_values, [-1]), flat_states))
      if normalization != 'none':
        surrogate = normalized_surrogate(inputs, flat_states[:-1])
      else:
        surrogate = distillation_losses.distillation_surrogate(
            variant, inputs, distillation_coef=distillation_coef, reward_coef=config.reward_coef)
      if use_baseline and normalization == 'none':
        # −log π_θ(a_t|s_t)·(R̂_t − b(s_t)): a state baseline leaves eq. 1's expectation unchanged.
        log_probs = losses.categorical_log_prob(inputs.student_logits[:-1], inputs.actions)
        surrogate += log_probs * tf.gather(baseline, flat_states[:-1])
      # Eq. 1 summed over each environment's unroll, averaged over the B environments of an MDP; MDPs
      # have separate parameters, so summing over them keeps each MDP's update its own.
      loss = tf.reduce_sum(surrogate) / batch
    gradient = tape.gradient(loss, logits)
    logits.scatter_sub(tf.IndexedSlices(learning_rate * gradient.values, gradient.indices))
    if use_baseline:
      terms = distillation_losses.distillation_terms(variant, inputs, distillation_coef=distillation_coef,
                                                     reward_coef=config.reward_coef)
      pseudo_returns = distillation_losses.pseudo_returns(terms.pseudo_rewards, inputs.discounts)
      visited = tf.reshape(flat_states[:-1], [-1])
      sums = tf.math.unsorted_segment_sum(tf.reshape(pseudo_returns, [-1]), visited, num_mdps * num_states)
      counts = tf.math.unsorted_segment_sum(tf.ones_like(visited, tf.float32), visited, num_mdps * num_states)
      batch_means = sums / tf.maximum(counts, 1.0)
      baseline.assign_add(tf.where(counts > 0, config.baseline_rate * (batch_means - baseline), 0.0))
      if normalization == 'separate':
        teacher_returns = distillation_losses.pseudo_returns(
            distillation_losses.distillation_terms(variant, inputs, distillation_coef=distillation_coef,
                                                   reward_coef=0.0).pseudo_rewards, inputs.discounts)
        sums = tf.math.unsorted_segment_sum(tf.reshape(teacher_returns, [-1]), visited, num_mdps * num_states)
        teacher_baseline.assign_add(
            tf.where(counts > 0, config.baseline_rate * (sums / tf.maximum(counts, 1.0) - teacher_baseline),
                     0.0))

  def per_mdp(x):
    """`[T, M·B]` (columns MDP-major) -> `[M, T, B]`."""
    return tf.transpose(tf.reshape(x, [config.unroll_length, num_mdps, batch]), [1, 0, 2])

  def normalized_surrogate(inputs, states):
    """−log π_θ(a_t|s_t)·Â_t + ℓ_t with Â standardised per MDP as PPO does (`advantage_normalization`);
    `states` `[T, M·B]` are the visited states' flat indices (the baselines' rows)."""
    full = distillation_losses.distillation_terms(variant, inputs, distillation_coef=distillation_coef,
                                                  reward_coef=config.reward_coef)
    teacher = distillation_losses.distillation_terms(variant, inputs, distillation_coef=distillation_coef,
                                                     reward_coef=0.0)
    total_returns = distillation_losses.pseudo_returns(full.pseudo_rewards, inputs.discounts)
    teacher_returns = distillation_losses.pseudo_returns(teacher.pseudo_rewards, inputs.discounts)
    total_baseline = tf.gather(baseline, states) if use_baseline else 0.0
    teacher_part = teacher_returns - (tf.gather(teacher_baseline, states) if use_baseline else 0.0)
    if normalization == 'joint':
      normalized, unnormalized = total_returns - total_baseline, None
    else:
      normalized, unnormalized = total_returns - total_baseline - teacher_part, teacher_part
    if unnormalized is None:
      advantages = tf.vectorized_map(losses.partly_normalized_advantages, per_mdp(normalized))
    else:
      advantages = tf.vectorized_map(lambda pair: losses.partly_normalized_advantages(*pair),
                                     (per_mdp(normalized), per_mdp(unnormalized)))
    advantages = tf.reshape(tf.transpose(advantages, [1, 0, 2]), tf.shape(total_returns))
    log_probs = losses.categorical_log_prob(inputs.student_logits[:-1], inputs.actions)
    return -log_probs * tf.stop_gradient(advantages) + full.loss

  teacher_log_probs = tf.nn.log_softmax(teacher.logits)
  teacher_probs = tf.exp(teacher_log_probs)

  @tf.function
  def evaluate():
    student_log_probs = tf.nn.log_softmax(tf.reshape(logits, [num_mdps, num_states, num_actions]))
    evaluation = random_mdp.evaluate_policy(mdps, random_mdp.move_probabilities(tf.exp(student_log_probs)))
    kl = tf.reduce_sum(teacher_probs * (teacher_log_probs - student_log_probs), axis=-1)
    return (evaluation.returns, _weighted_state_mean(kl, teacher.occupancy),
            _weighted_state_mean(kl, evaluation.occupancy), evaluation.values)

  steps, returns, kl_teacher, kl_student = [], [], [], []

  def record(update_index):
    results = evaluate()
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
        values = evaluate()[3]
      student_values.assign(values)
    update(tf.constant([seed, update_index], tf.int32))
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


def _quartiles(x: np.ndarray) -> List[float]:
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
      'final_return_over_teacher_quartiles': _quartiles(relative[-1]),
      'final_return_over_teacher_mean': float(relative[-1].mean()),
      'final_kl_teacher_visits_quartiles': _quartiles(curves.kl_teacher_visits[-1]),
      'final_kl_student_visits_quartiles': _quartiles(curves.kl_student_visits[-1]),
      'seconds': round(curves.seconds, 1),
      'curve_steps': curves.steps.tolist(),
      'curve_return_over_teacher_quartiles': np.percentile(relative, [25, 50, 75], axis=1).T.tolist(),
      'curve_kl_teacher_visits_quartiles': np.percentile(
          curves.kl_teacher_visits, [25, 50, 75], axis=1).T.tolist(),
  }
  if reference_returns is not None:
    summary['final_return_over_clean_teacher_quartiles'] = _quartiles(curves.returns[-1] / reference_returns)
    summary['curve_return_over_clean_teacher_quartiles'] = np.percentile(
        curves.returns / reference_returns[None, :], [25, 50, 75], axis=1).T.tolist()
  return summary


def _steps_text(quartiles: Sequence[float]) -> str:
  def one(x):
    return 'never' if math.isinf(x) else f'{x:,.0f}'
  return f'{one(quartiles[1])} ({one(quartiles[0])}–{one(quartiles[2])})'


def _quartile_text(quartiles: Sequence[float], digits: int = 3) -> str:
  return f'{quartiles[1]:.{digits}f} ({quartiles[0]:.{digits}f}–{quartiles[2]:.{digits}f})'


def sampling_table(rows: Sequence[dict]) -> str:
  lines = ['| variant | sampled by | lr | env steps per MDP to 95% of the teacher\'s return, median (IQR) | '
           'MDPs that reach it | final return / teacher, median (IQR) | final KL(π‖π_θ), teacher-visit '
           'weighted, median (IQR) |',
           '|---|---|---|---|---|---|---|']
  for row in rows:
    lines.append(f'| {row["variant"]} | {row["sampled_by"]} | {row["learning_rate"]:g} | '
                 f'{_steps_text(row["steps_to_teacher_quartiles"])} | {100 * row["fraction_reached"]:.1f}% | '
                 f'{_quartile_text(row["final_return_over_teacher_quartiles"])} | '
                 f'{_quartile_text(row["final_kl_teacher_visits_quartiles"])} |')
  return '\n'.join(lines)


def common_rate_table(comparison: Sequence[dict]) -> str:
  lines = ['| learning rate | teacher_distill (teacher-driven): steps to 95%, median (IQR) | '
           'on_policy_distill (student-driven): steps to 95%, median (IQR) | '
           'teacher-driven / student-driven (medians) |',
           '|---|---|---|---|']
  for entry in comparison:
    teacher_steps = entry['teacher_distill']['steps_to_teacher_quartiles']
    student_steps = entry['on_policy_distill']['steps_to_teacher_quartiles']
    ratio = (f'{teacher_steps[1] / student_steps[1]:.2f}'
             if math.isfinite(teacher_steps[1]) and math.isfinite(student_steps[1]) else '—')
    lines.append(f'| {entry["learning_rate"]:g} | {_steps_text(teacher_steps)} | '
                 f'{_steps_text(student_steps)} | {ratio} |')
  return '\n'.join(lines)


def sweep_table(rows: Sequence[dict]) -> str:
  lines = ['| actions | variant | lr | env steps per MDP to 95% of the teacher\'s return, median (IQR) | '
           'MDPs that reach it | final return / teacher, median (IQR) | final KL(π‖π_θ), median (IQR) |',
           '|---|---|---|---|---|---|---|']
  for row in rows:
    lines.append(f'| {row["num_actions"]} | {row["variant"]} | {row["learning_rate"]:g} | '
                 f'{_steps_text(row["steps_to_teacher_quartiles"])} | {100 * row["fraction_reached"]:.1f}% | '
                 f'{_quartile_text(row["final_return_over_teacher_quartiles"])} | '
                 f'{_quartile_text(row["final_kl_teacher_visits_quartiles"])} |')
  return '\n'.join(lines)


def noisy_table(rows: Sequence[dict], noisy_teacher: dict) -> str:
  lines = ['| variant | lr | final return / clean teacher, median (IQR) | final return / noisy teacher, '
           'median (IQR) | final KL(noisy π‖π_θ), median (IQR) |',
           '|---|---|---|---|---|',
           '| (the noisy teacher itself) | — | '
           f'{_quartile_text(noisy_teacher["return_over_clean_quartiles"])} | 1 | 0 |']
  for row in rows:
    lines.append(f'| {row["variant"]} | {row["learning_rate"]:g} | '
                 f'{_quartile_text(row["final_return_over_clean_teacher_quartiles"])} | '
                 f'{_quartile_text(row["final_return_over_teacher_quartiles"])} | '
                 f'{_quartile_text(row["final_kl_teacher_visits_quartiles"])} |')
  return '\n'.join(lines)


# ----------------------------------------------------------------------------------------------------------
# Plots.
# ----------------------------------------------------------------------------------------------------------


def _pyplot():
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


def _steps_axis(axis):
  """Env steps on a symmetric-log axis: the fast variants finish within the first few updates."""
  axis.set_xscale('symlog', linthresh=80)
  axis.set_xlim(left=0)
  axis.set_xlabel('env steps per MDP (linear to 80 = one update, then log)')


def _band(axis, row, key, label, style='-'):
  steps = np.array(row['curve_steps'])
  quartiles = np.array(row[key])
  line, = axis.plot(steps, quartiles[:, 1], style, label=label)
  axis.fill_between(steps, quartiles[:, 0], quartiles[:, 2], color=line.get_color(), alpha=0.15)


def plot_sampling(rows, path, reach_fraction):
  """Median (IQR band) return / teacher and KL against env steps, one line per variant."""
  plt = _pyplot()
  figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
  for row in rows:
    style = '--' if row['sampled_by'] == 'teacher' else '-'
    _band(left, row, 'curve_return_over_teacher_quartiles', row['variant'], style)
    _band(right, row, 'curve_kl_teacher_visits_quartiles', row['variant'], style)
  left.axhline(1.0, color='k', lw=0.8)
  left.axhline(reach_fraction, color='k', lw=0.8, ls=':')
  left.set(ylabel='student return / teacher return (median, IQR)',
           title='Return (dashed: teacher-driven sampling)')
  right.set(ylabel='KL(π‖π_θ), teacher-visit weighted (median, IQR)', yscale='log', title='KL to the teacher')
  for axis in (left, right):
    _steps_axis(axis)
  left.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_sweep(rows, path, reach_fraction):
  """One panel of learning curves per action count, and the final returns against the count."""
  plt = _pyplot()
  counts = sorted({row['num_actions'] for row in rows})
  figure, axes = plt.subplots(1, len(counts) + 1, figsize=(4.5 * (len(counts) + 1), 4.5))
  for axis, count in zip(axes, counts):
    for row in rows:
      if row['num_actions'] == count:
        label = f'{row["variant"]} (lr {row["learning_rate"]:g})'
        _band(axis, row, 'curve_return_over_teacher_quartiles', label)
    axis.axhline(1.0, color='k', lw=0.8)
    axis.axhline(reach_fraction, color='k', lw=0.8, ls=':')
    axis.set(title=f'{count} actions', ylabel='return / teacher (median, IQR)')
    _steps_axis(axis)
    axis.legend(fontsize=7)
  summary = axes[-1]
  for variant in ACTION_SWEEP_VARIANTS:
    mine = sorted((r for r in rows if r['variant'] == variant), key=lambda r: r['num_actions'])
    summary.plot([r['num_actions'] for r in mine],
                 [r['final_return_over_teacher_quartiles'][1] for r in mine], 'o-', label=variant)
  summary.set(xscale='log', xlabel='number of actions', ylabel='final return / teacher (median)',
              title='Final return against action count')
  summary.legend(fontsize=7)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def plot_noisy(rows, noisy_teacher, path):
  """Return / clean teacher and KL to the noisy teacher against env steps, with the noisy teacher's level."""
  plt = _pyplot()
  figure, (left, right) = plt.subplots(1, 2, figsize=(14, 5.5))
  for row in rows:
    _band(left, row, 'curve_return_over_clean_teacher_quartiles', row['variant'])
    _band(right, row, 'curve_kl_teacher_visits_quartiles', row['variant'])
  left.axhline(noisy_teacher['return_over_clean_quartiles'][1], color='r', lw=1, ls='--',
               label='the noisy teacher (median)')
  left.axhline(1.0, color='k', lw=0.8, label='the clean teacher')
  left.set(ylabel='student return / clean teacher return (median, IQR)',
           title='Distilling a teacher that errs in 25% of the states')
  right.set(ylabel='KL(noisy π‖π_θ), teacher-visit weighted', yscale='log', title='KL to the noisy teacher')
  for axis in (left, right):
    _steps_axis(axis)
  left.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


# ----------------------------------------------------------------------------------------------------------
# The study.
# ----------------------------------------------------------------------------------------------------------


class Progress:
  """Console progress: part, run, elapsed time and an ETA from the runs' measured cost."""

  def __init__(self, planned_work: float):
    self._start = time.time()
    self._planned = planned_work
    self._done = 0.0

  def report(self, part: str, message: str, work: float):
    self._done += work
    elapsed = time.time() - self._start
    eta = elapsed / max(self._done, 1e-9) * max(self._planned - self._done, 0.0)
    print(f'[{part}] {message} | elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min', flush=True)


def _cost(num_actions: int) -> float:
  """Relative cost of an MDP-update with `num_actions` actions (measured: ~1 at 4, ~60 at 1000)."""
  return 1.0 + num_actions / 15.0


def _run_work(config: StudyConfig) -> Dict[str, float]:
  """Relative cost of each part (MDP-updates, times actions/4 for the sweep), for the ETA."""
  work = {'sampling': len(SAMPLING_VARIANTS) * config.num_mdps * config.updates,
          'sampling_common_rates': (2 * len(config.common_rates) * config.num_mdps
                                    * config.common_rate_updates),
          'noisy': len(NOISY_VARIANTS) * config.num_mdps * config.noisy_updates,
          'actions': sum(len(ACTION_SWEEP_VARIANTS) * config.sweep_num_mdps * config.sweep_updates * _cost(a)
                         for a in config.action_counts)}
  if 'sampling' in config.parts:
    config_parts = list(config.parts) + ['sampling_common_rates']
  else:
    config_parts = list(config.parts)
  return {part: work[part] for part in config_parts}


def _json_safe(value):
  """`value` with inf ("never reached") as None and tuples as lists, so study.json is strict JSON."""
  if isinstance(value, dict):
    return {key: _json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(item) for item in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


def run_study(config: StudyConfig, output_dir: str, plots: bool = True) -> dict:
  """Runs the parts of `config`; writes study.md, study.json and the plots; returns the JSON dict."""
  os.makedirs(output_dir, exist_ok=True)
  start = time.time()
  num_generated = max(config.num_mdps if set(config.parts) & {'sampling', 'noisy'} else 0,
                      config.sweep_num_mdps if 'actions' in config.parts else 0)
  mdps = random_mdp.generate_grid_mdps(
      num_generated, height=config.grid_size, width=config.grid_size,
      wall_probability=config.wall_probability, reward_probability=config.reward_probability,
      noise=config.transition_noise, seed=config.seed)
  _, move_q = random_mdp.value_iteration(mdps)
  clean_moves = teacher_move_probs(mdps, move_q, config.teacher_epsilon)
  print(f'{num_generated} MDPs of {config.grid_size} x {config.grid_size} drawn and solved in '
        f'{time.time() - start:.1f} s', flush=True)
  work = _run_work(config)
  progress = Progress(sum(work.values()))
  results = {'config': dataclasses.asdict(config), 'parts': {}}
  markdown = [f'Random-MDP study of "Distilling Policy Distillation": {config.num_mdps} MDPs '
              f'({config.sweep_num_mdps} in the action sweep) of {config.grid_size} x {config.grid_size}, '
              f'η = {config.transition_noise}, ε-greedy teacher ε = {config.teacher_epsilon}, '
              f'{config.envs_per_mdp} envs x {config.unroll_length} steps per MDP per update, '
              f'seed {config.seed}. '
              f'"Steps" are environment steps per MDP; the target is {config.reach_fraction:.0%} of the '
              f'teacher\'s exact expected return.\n']

  def select(count):
    return mdps if count == mdps.num_mdps else random_mdp.select_mdps(mdps, tf.range(count))

  if 'sampling' in config.parts:
    part_mdps = select(config.num_mdps)
    teacher = make_teacher(part_mdps, clean_moves[:config.num_mdps], 4)
    rows = []
    for variant in SAMPLING_VARIANTS:
      learning_rate = config.learning_rates[variant]
      curves = train_variant(variant, part_mdps, teacher, config, config.updates, config.seed, learning_rate)
      rows.append(summarize(variant, curves, teacher, config, learning_rate))
      progress.report('sampling', f'{variant}: median steps to teacher '
                      f'{_steps_text(rows[-1]["steps_to_teacher_quartiles"])}, final return/teacher '
                      f'{rows[-1]["final_return_over_teacher_quartiles"][1]:.3f} ({curves.seconds:.0f} s)',
                      work['sampling'] / len(SAMPLING_VARIANTS))
    # The same comparison at common learning rates: cloning the teacher with teacher-driven against
    # student-driven sampling (the two variants differ in nothing else).
    comparison = []
    for learning_rate in config.common_rates:
      pair = {}
      for variant in ('teacher_distill', 'on_policy_distill'):
        tuned = next(r for r in rows if r['variant'] == variant)
        if tuned['learning_rate'] == learning_rate and config.common_rate_updates == config.updates:
          pair[variant] = tuned
          continue
        curves = train_variant(variant, part_mdps, teacher, config, config.common_rate_updates, config.seed,
                               learning_rate)
        pair[variant] = summarize(variant, curves, teacher, config, learning_rate)
      comparison.append({'learning_rate': learning_rate, **{
          variant: {key: row[key] for key in ('steps_to_teacher_quartiles', 'fraction_reached',
                                              'final_return_over_teacher_quartiles', 'budget_steps')}
          for variant, row in pair.items()}})
      teacher_steps = comparison[-1]['teacher_distill']['steps_to_teacher_quartiles']
      student_steps = comparison[-1]['on_policy_distill']['steps_to_teacher_quartiles']
      progress.report('sampling', f'common rate {learning_rate:g}: steps to teacher, teacher-driven '
                      f'{_steps_text(teacher_steps)}, student-driven {_steps_text(student_steps)}',
                      work['sampling_common_rates'] / max(len(config.common_rates), 1))
    results['parts']['sampling'] = {
        'teacher_return_quartiles': _quartiles(teacher.returns.numpy()),
        'optimal_return_quartiles': _quartiles(random_mdp.evaluate_policy(
            part_mdps, tf.one_hot(tf.argmax(move_q[:config.num_mdps], -1), 4)).returns.numpy()),
        'rows': rows,
        'common_rates': comparison}
    sampling_results = results['parts']['sampling']
    markdown += ['## Teacher-driven against student-driven sampling (4 actions)\n',
                 f'Teacher\'s return (ε-greedy, exact), median (IQR) over MDPs: '
                 f'{_quartile_text(sampling_results["teacher_return_quartiles"], 2)}; the optimal '
                 f'policy\'s: {_quartile_text(sampling_results["optimal_return_quartiles"], 2)}. '
                 'Each variant at its own learning rate:\n', sampling_table(rows), '',
                 f'Cloning the teacher at common learning rates ({config.common_rate_updates} updates):\n',
                 common_rate_table(comparison), '']
    if plots:
      plot_sampling(rows, os.path.join(output_dir, 'sampling_curves.png'), config.reach_fraction)

  if 'actions' in config.parts:
    part_mdps = select(config.sweep_num_mdps)
    rows = []
    for count in config.action_counts:
      teacher = make_teacher(part_mdps, clean_moves[:config.sweep_num_mdps], count)
      for variant in ACTION_SWEEP_VARIANTS:
        learning_rate = config.sweep_learning_rates.get(f'{variant}@{count}', config.learning_rates[variant])
        curves = train_variant(variant, part_mdps, teacher, config, config.sweep_updates, config.seed,
                               learning_rate)
        rows.append(dict(summarize(variant, curves, teacher, config, learning_rate), num_actions=count))
        progress.report('actions', f'{count} actions, {variant}: median steps to teacher '
                        f'{_steps_text(rows[-1]["steps_to_teacher_quartiles"])}, final return/teacher '
                        f'{rows[-1]["final_return_over_teacher_quartiles"][1]:.3f} ({curves.seconds:.0f} s)',
                        work['actions'] * _cost(count)
                        / (len(ACTION_SWEEP_VARIANTS) * sum(_cost(a) for a in config.action_counts)))
    results['parts']['actions'] = {'rows': rows}
    markdown += ['## Action-count sweep: entropy regularised against expected entropy regularised\n',
                 'Extra actions replicate the four moves (action a moves as a mod 4); the teacher and its '
                 'return are the same at every count.\n', sweep_table(rows), '']
    if plots:
      plot_sweep(rows, os.path.join(output_dir, 'action_sweep.png'), config.reach_fraction)

  if 'noisy' in config.parts:
    part_mdps = select(config.num_mdps)
    clean_returns = random_mdp.evaluate_policy(part_mdps, clean_moves[:config.num_mdps]).returns.numpy()
    noisy_moves = teacher_move_probs(part_mdps, move_q[:config.num_mdps], config.teacher_epsilon,
                                     noisy_fraction=config.noisy_fraction, seed=config.seed + 1)
    teacher = make_teacher(part_mdps, noisy_moves, 4)
    noisy_teacher = {'return_over_clean_quartiles': _quartiles(teacher.returns.numpy() / clean_returns)}
    rows = []
    for variant in NOISY_VARIANTS:
      learning_rate = config.learning_rates[variant]
      curves = train_variant(variant, part_mdps, teacher, config, config.noisy_updates, config.seed,
                             learning_rate)
      rows.append(summarize(variant, curves, teacher, config, learning_rate, reference_returns=clean_returns))
      final = rows[-1]['final_return_over_clean_teacher_quartiles'][1]
      progress.report('noisy', f'{variant}: final return / clean teacher {final:.3f} '
                      f'({curves.seconds:.0f} s)',
                      work['noisy'] / len(NOISY_VARIANTS))
    results['parts']['noisy'] = {'noisy_teacher': noisy_teacher, 'rows': rows}
    markdown += [f'## A teacher that errs in {config.noisy_fraction:.0%} of the states\n',
                 f'{config.noisy_updates} updates per variant '
                 f'({config.noisy_updates * config.steps_per_update:,} env steps per MDP).\n',
                 noisy_table(rows, noisy_teacher), '']
    if plots:
      plot_noisy(rows, noisy_teacher, os.path.join(output_dir, 'noisy_teacher.png'))

  results['seconds'] = round(time.time() - start, 1)
  markdown.append(f'Wall time: {results["seconds"] / 60:.1f} min.')
  with run_directory.atomic_file(os.path.join(output_dir, 'study.md')) as f:
    f.write('\n'.join(markdown) + '\n')
  with run_directory.atomic_file(os.path.join(output_dir, 'study.json')) as f:
    json.dump(_json_safe(results), f, indent=1)
  print('\n'.join(markdown), flush=True)
  return results


def _parse_learning_rates(entries: Sequence[str], defaults: Dict[str, float], flag: str,
                          example: str) -> Dict[str, float]:
  """`name=rate` entries over `defaults`; the name is a variant, optionally `@count` for the sweep."""
  rates = dict(defaults)
  for entry in entries:
    name, _, value = entry.partition('=')
    name = name.strip()
    variant, _, count = name.partition('@')
    if variant not in distillation_losses.VARIANTS:
      raise app.UsageError(f'--{flag} entry {entry!r} names no variant; use one of '
                           f'{", ".join(distillation_losses.VARIANTS)}.')
    try:
      rates[name] = float(value)
      if count:
        int(count)
    except ValueError:
      raise app.UsageError(f'--{flag} entry {entry!r} is not of the form {example}.') from None
  return rates


def config_from_flags() -> StudyConfig:
  unknown = [p for p in FLAGS.parts if p not in PARTS]
  if unknown:
    raise app.UsageError(f'Unknown part(s) {unknown}; choose from {PARTS}.')
  values = dict(
      parts=tuple(FLAGS.parts), num_mdps=FLAGS.num_mdps, sweep_num_mdps=FLAGS.sweep_num_mdps,
      grid_size=FLAGS.grid_size, wall_probability=FLAGS.wall_probability,
      reward_probability=FLAGS.reward_probability, transition_noise=FLAGS.transition_noise,
      teacher_epsilon=FLAGS.teacher_epsilon, noisy_fraction=FLAGS.noisy_fraction, updates=FLAGS.updates,
      noisy_updates=FLAGS.noisy_updates, sweep_updates=FLAGS.sweep_updates, unroll_length=FLAGS.unroll_length,
      envs_per_mdp=FLAGS.envs_per_mdp,
      eval_growth=FLAGS.eval_growth, critic_refresh_every=FLAGS.critic_refresh_every,
      action_counts=tuple(int(a) for a in FLAGS.action_counts),
      learning_rates=_parse_learning_rates(FLAGS.learning_rates, DEFAULT_LEARNING_RATES, 'learning_rates',
                                           'entropy_regularised=0.3'),
      sweep_learning_rates=_parse_learning_rates(FLAGS.sweep_learning_rates, DEFAULT_SWEEP_LEARNING_RATES,
                                                 'sweep_learning_rates', 'entropy_regularised@1000=0.1'),
      common_rates=tuple(float(r) for r in FLAGS.common_rates), common_rate_updates=FLAGS.common_rate_updates,
      reward_coef=FLAGS.reward_coef,
      baseline=FLAGS.baseline, advantage_normalization=FLAGS.advantage_normalization,
      baseline_rate=FLAGS.baseline_rate,
      reach_fraction=FLAGS.reach_fraction, seed=FLAGS.seed)
  if FLAGS.tiny:
    values.update(TINY)
  if min(values['action_counts']) < random_mdp.NUM_MOVES:
    raise app.UsageError(f'--action_counts must all be >= 4, got {values["action_counts"]}.')
  return StudyConfig(**values)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.output_dir:
    raise app.UsageError('--output_dir is required.')
  run_study(config_from_flags(), FLAGS.output_dir, plots=FLAGS.plots)


if __name__ == '__main__':
  sys.exit(app.run(main))
