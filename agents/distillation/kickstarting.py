"""Kickstarting (Schmitt et al. 2018, arXiv 1803.03835): an RL learner plus Σ_k λ_k · distillation from
K teachers, on the student's own trajectories.

`Kickstarter` joins three pieces that stay separate and testable on their own:

* the teachers (`teacher_set_lib.TeacherSet`: PolicySaver or Keras, any architecture, routed per task),
* their weights λ_k (`schedules.TeacherWeights`: `tf.Variable`s moved by a schedule or set by PBT),
* the distillation variant (`variants.DistillationConfig`, default expected entropy
  regularised; the Kickstarting paper's own loss H×(π_T‖π_S) is 'on_policy_distill_with_reward').

A learner (PPO, IMPALA) uses it in four steps, all inside its compiled step:

1. `prepare(batch, discount)` once per batch: every teacher's logits on the batch, each teacher's mask
   (its task's rows, and the value gate), and the variant's pseudo-rewards Σ_k λ_k·r̂_k, computed with
   the behaviour policy as the student (the policy that sampled the batch).
2. The learner adds `pseudo_rewards` to its environment rewards before its returns (GAE, V-trace): the
   R̂ term of the paper's unified update (eq. 1), with the learner's critic as a baseline (PPO, with
   `pseudo_reward_advantages='separate'`: their own GAE and critic head, outside the normalisation).
3. The learner adds `loss(logits, prepared, mask)` — Σ_k λ_k·α·ℓ_k averaged over the policy's steps —
   to its loss; gradients reach the student only (teacher outputs are constants).
4. `update(train_step)` once per iteration moves the λ_k schedules (a no-op in PBT mode).

The environment reward belongs to the learner's RL loss: the "+R" of a variant is the learner itself,
so the variants' own reward terms are not added again here.

What of eq. 1 survives the learners' machinery
-----------------------------------------------
Eq. 1 is E[Σ_t −∇log π_θ(a_t|s_t)·R̂_t + ∇ℓ_t] with R̂_t = Σ_{i≥t} r̂_i. For the variants marked "yes"
(`distillation_losses.TRUE_GRADIENT_FIELD`) its expectation is the gradient of an objective F(θ); for two of
them, n_distill and expected_entropy_regularised, that rests on an exact balance (Theorem 2): r̂ is −ℓ one
step later, so the R̂ term cancels the part of Σ∇ℓ that is not a gradient (on-policy distillation's field,
Theorem 1). entropy_regularised and teacher_value_reward have ℓ = 0 and only the R̂ term. What each piece
of PPO (`agents/learners/ppo.py`) does to it, on a minibatch of N steps:

* The critic as a baseline. A state-dependent b(s_t) subtracted from R̂_t leaves the expectation unchanged,
  however wrong b is. The extrinsic critic learns env + pseudo returns ('joint'); the pseudo-rewards move
  with the student (n_distill's r̂ is a cross-entropy to the student), so it chases a moving target, which
  costs variance, not bias, as long as it is only a baseline.
* GAE's bootstrapping. With λ = 1, A_t = G_t − V(s_t) where G_t sums the rewards to the end of the unroll
  and adds (Π discounts)·V(s_T) there: unbiased up to that one bootstrap (eq. 1 sums to the episode's end).
  With λ < 1 the critic enters the return itself: the λ-return's bias is
  E[G^λ_t|s_t,a_t] − Q(s_t,a_t) = (1−λ) Σ_{n≥1} λ^{n−1} γ^n E[(V − V^π)(s_{t+n}) | s_t, a_t], which depends on
  a_t, so an imperfect critic biases the update; it is eq. 1's only when V = V^π (of the env + pseudo
  returns). The learner's default λ = 0.95 is in this case.
* The clipped ratio. The surrogate's gradient is ρ_t·∇log π_θ·Â_t with ρ_t = π_θ/π_behaviour, or 0 once
  ρ_t has left [1−ε, 1+ε] in the direction Â_t favours; ℓ is not clipped.
  At the first minibatch of the first epoch ρ = 1 and the step is eq. 1's (with the caveats here); later
  steps follow a trust-region surrogate of it, with pseudo-rewards computed once per batch from the
  behaviour policy (stale for the variants whose r̂ reads the student: n_distill, the expected variant's
  last step).
* Per-minibatch advantage normalisation, Â_t = (A_t − μ)/σ (`losses.normalize_advantages`) while
  `loss` adds ℓ unnormalised. The step at ρ = 1 is
      −(1/N) Σ_t ∇log π_θ·(A_t − μ)/σ + (1/N) Σ_t ∇ℓ_t
        = (1/σ)·(1/N)·[ −Σ_t ∇log π_θ·(A_t − μ) + σ·Σ_t ∇ℓ_t ].
  Subtracting μ is a baseline shift (exactly so up to μ's O(1/N) dependence on a_t itself); 1/σ in front is
  a step size. What changes the direction is σ inside the bracket: it is eq. 1 for the variant (q, σ·ℓ, r̂)
  instead of (q, ℓ, r̂). With ℓ weighted σ, Theorem 2's correction is 1/σ of what σ·ℓ needs, and for a
  given σ the expected update is ∇F + (σ − 1)·E[Σ_t ∇ℓ_t]: the gradient field plus (σ − 1) times the field
  of ℓ alone on the student's states, which is not a gradient (Theorem 1's argument). So n_distill and
  expected_entropy_regularised lose the property unless σ = 1; σ is the std of env + pseudo advantages, set by the reward scale, the critic's error and
  λ_k, and changes from minibatch to minibatch. entropy_regularised and teacher_value_reward (ℓ = 0) keep
  eq. 1's direction (only the step size is 1/σ); the variants that are not gradient fields
  (on_policy_distill[_with_reward], value_gated: their r̂ is 0 here) only have the RL term's weight against
  ℓ set by σ, the usual trade-off of PPO with an auxiliary loss.

`PPOLearner.pseudo_reward_advantages = 'separate'` restores the weighting: the pseudo-rewards get their own
GAE on a value head 'kickstart' (a state baseline of their own, so the extrinsic critic learns environment
returns only) and are added after the environment advantages are normalised
(`losses.partly_normalized_advantages`): the step at ρ = 1 is (1/σ_env)·(the RL policy gradient) + eq. 1's
distillation update with R̂ and ℓ at their own weights, so a "yes" variant's part is the gradient of its
F (with GAE's λ < 1 bias above, now from the 'kickstart' head's error), and λ_k weighs it against an RL
term of unit scale. It does not remove the clipping or GAE's bias. Scaling ℓ by the same 1/σ would also
restore eq. 1's direction, but would tie the distillation's weight to the environment's reward scale; not
done. The default stays 'joint' (see `PPOLearner` and BENCHMARKS.md for the measurement).

IMPALA (`agents/learners/impala.py`) has no advantage normalisation: the policy term and ℓ are both means over the
batch's steps, so R̂ and ℓ keep eq. 1's weights exactly. Pseudo-rewards join the rewards after reward
clipping (they are never clipped: clipping at 1 would cut every teacher log-probability below −1), and one
critic learns env + pseudo returns. V-trace's policy-gradient advantage ρ^pg_s·(r_s + γ v_{s+1} − V(x_s))
is, on-policy (π = μ) with λ = 1 and ρ̄, c̄ ≥ 1, the return to the unroll's end bootstrapped by V(x_T) minus a
baseline: eq. 1's up to that bootstrap, as GAE with λ = 1. With a lagging actor the truncated weights
(ρ̄ = c̄ = 1) make V-trace estimate the value of a policy between μ and π (its fixed point V^{π_ρ̄}), and the
pseudo-rewards are computed with μ as the student: both bias the update away from eq. 1's, by amounts that
grow with the lag; `vtrace_lambda` < 1 adds the λ-return's critic bias above.
"""

from typing import Any, Dict, List, Optional, Tuple

import gin
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.agents.distillation import losses as distillation_losses
from protege.agents.distillation import schedules
from protege.agents.distillation import teacher_set as teacher_set_lib
from protege.agents.distillation import teachers as teachers_lib
from protege.agents.distillation import variants
from protege.replay import frame_stacks
from protege.runtime import config as run_config
from protege.runtime import errors

# Variants that read the teacher's value estimates (its critic): refused for teachers without one.
_NEEDS_TEACHER_VALUES = ('teacher_value_reward', 'value_gated')


# The learners that take a `kickstarter_fn` (RND's inner learner is one of them).
_LEARNERS = ('PPOLearner', 'IMPALALearner')


def kickstarter_configured() -> bool:
  """Whether the parsed gin gives the run's learner a kickstarter (`<Learner>.kickstarter_fn`)."""
  return any(run_config.bound(f'{learner}.kickstarter_fn', None) is not None for learner in _LEARNERS)


def actor_teachers(observation_spec, action_spec,
                   kickstarter: Optional['Kickstarter'] = None) -> Optional[teacher_set_lib.TeacherSet]:
  """The teachers whose states an actor records, or None when there is none to record.

  A kickstarted run's recurrent teachers (`TeacherSet.recorded_state_specs`): `kickstarter`'s own, when the
  actor shares the learner's process, else loaded from gin (a separate actor or the Reverb server, which
  needs their specs for its table signature). Every process of a run reads the same gin, so all agree on
  what a step holds.
  """
  if kickstarter is not None:
    teacher_set = kickstarter.teacher_set
  elif kickstarter_configured():
    teacher_set = teacher_set_lib.TeacherSet(observation_spec, action_spec, recurrent_only=True)
  else:
    return None
  return teacher_set if teacher_set.recorded_state_specs() else None


@gin.configurable
class Kickstarter(tf.Module):
  """Teachers, their weights λ_k and the distillation variant, for any on-policy or V-trace learner.

  gin, e.g. one teacher with a decaying weight:

    PPOLearner.kickstarter_fn = @Kickstarter
    TeacherSet.paths = ['/runs/teacher/policy']
    TeacherWeights.schedules = @linear_decay()
    linear_decay.initial = 1.0
    linear_decay.decay_steps = 200      # learner iterations
    DistillationConfig.variant = 'on_policy_distill_with_reward'   # Kickstarting's H×(π_T‖π_S)

  Args:
    observation_spec: the student's observation spec.
    action_spec: the student's discrete action spec (teachers must match both).
    teachers: a `TeacherSet`; None builds one from gin (`TeacherSet.paths`, `.names`, `.tasks`).
    weights: a `TeacherWeights` over the teachers' names; None builds one from gin (default: constant 1).
    config: a `DistillationConfig`; None builds one from gin (default: expected entropy regularised).
    strategy: the learner's `tf.distribute.Strategy` (the λ variables are created in its scope).
    student_network: the student's network, which the learners pass: `TeacherSet.peers` copies it for its
      peer teachers (codistillation).
    total_iterations: the learner's run length (its `total_iterations` variable), which λ schedules over the
      run follow (`linear_decay`'s default `decay_steps=None`); the learners pass it.
    name: the `tf.Module` name (its variables' scope).
  """

  def __init__(self, observation_spec, action_spec, teachers: Optional[teacher_set_lib.TeacherSet] = None,
               weights: Optional[schedules.TeacherWeights] = None,
               config: Optional[variants.DistillationConfig] = None,
               strategy: Optional[tf.distribute.Strategy] = None, student_network=None,
               total_iterations=None, name: str = 'Kickstarter'):
    super().__init__(name=name)
    self._teachers = teachers if teachers is not None else teacher_set_lib.TeacherSet(
        observation_spec, action_spec, student_network=student_network)
    if len(self._teachers) == 0:  # pylint: disable=g-explicit-length-test
      raise errors.ConfigError("Kickstarter has no teacher: set TeacherSet.paths to the teachers' policy "
                               'directories (PolicySaver exports, e.g. <root_dir>/policy of a train_main '
                               'run).')
    self._config = config if config is not None else variants.DistillationConfig()
    variant = self._config.variant
    if distillation_losses.SAMPLED_BY[variant] != 'student':
      students = [v for v in distillation_losses.VARIANTS if distillation_losses.SAMPLED_BY[v] == 'student']
      raise errors.ConfigError(f"DistillationConfig.variant={variant!r} learns from the teacher's "
                               'trajectories; a kickstarted learner samples with the student: use one of '
                               f'{students}.')
    if variant in _NEEDS_TEACHER_VALUES:
      valueless = [t.name for t in self._teachers.teachers if not t.has_value]
      if valueless:
        raise errors.ConfigError(f"DistillationConfig.variant={variant!r} needs each teacher's critic, but "
                                 f'{valueless} export no value: use teachers exported with value heads or '
                                 'another variant.')
    strategy = strategy or tf.distribute.get_strategy()
    with strategy.scope():
      self.weights = weights if weights is not None else schedules.TeacherWeights(
          self._teachers.names, total_iterations=total_iterations)
      self.distillation_coef = tf.Variable(float(self._config.distillation_coef), dtype=tf.float32,
                                           trainable=False, name='distillation_coef')
    if tuple(self.weights.teacher_names) != tuple(self._teachers.names):
      raise errors.ConfigError(f'TeacherWeights names {list(self.weights.teacher_names)} differ from the '
                               f"teachers' {list(self._teachers.names)}: build the weights over "
                               'TeacherSet.names.')

  @property
  def variant(self) -> str:
    return self._config.variant

  @property
  def teacher_set(self) -> teacher_set_lib.TeacherSet:
    return self._teachers

  @property
  def teacher_names(self) -> Tuple[str, ...]:
    return self._teachers.names

  @property
  def peer_teachers(self) -> List[teachers_lib.PeerTeacher]:
    """The codistillation teachers (`TeacherSet.peers`) whose weights a population member loads."""
    return self._teachers.peer_teachers

  def checkpoint_items(self) -> Dict[str, Any]:
    """The λ_k (and α) variables; the teachers are reloaded from their paths, not checkpointed."""
    return {'kickstart_weights': self.weights, 'kickstart_distillation_coef': self.distillation_coef}

  def update(self, step) -> None:
    """Moves the λ_k schedules to `step` (in-graph; a no-op when PBT owns the weights)."""
    self.weights.update(step)

  def prepare(self, batch, discount=1.0) -> Dict[str, Any]:
    """Per replica: teacher logits, masks and pseudo-rewards of a time-major `[T+1, B]` batch.

    Args:
      batch: the learner's batch: 'observation', 'step_type', 'action', 'discount' (the termination
        mask), 'behaviour_logits', optional 'behaviour_values' (value_gated) and 'task_id' (`[B]` or
        `[T+1, B]`; required when a teacher teaches one task).
      discount: γ of the learner's returns (a float or a variable), applied to the next-state pseudo-rewards.

    Returns:
      `{'teacher_logits': K × [T, B, A], 'teacher_masks': K × [T, B], 'pseudo_rewards': [T, B]}`, all
      without gradient.
    """
    observation, step_type = frame_stacks.full_observations(batch), batch['step_type']
    task_ids = batch.get('task_id')
    if task_ids is not None and task_ids.shape.rank == 2:
      task_ids = task_ids[0]  # one task per batch column
    outputs = self._teachers.outputs(observation, task_ids=task_ids, step_type=step_type,
                                     policy_states=self._recorded_states(batch))
    not_last = tf.cast(tf.not_equal(step_type, ts.StepType.LAST), tf.float32)
    policy_mask = not_last[:-1]  # a reset transition's action was ignored by the environment
    discounts = discount * tf.cast(batch['discount'][1:], tf.float32)
    behaviour_logits = tf.cast(batch['behaviour_logits'], tf.float32)
    student_values = None
    if self.variant == 'value_gated':
      student_values = batch['behaviour_values']['extrinsic']
    zeros = tf.zeros_like(discounts)
    pseudo_rewards = zeros
    teacher_logits, teacher_masks = [], []
    for lambda_k, output in zip(self.weights.values(), outputs):
      mask = output.mask if output.mask.shape.rank == 2 else tf.broadcast_to(output.mask, tf.shape(not_last))
      mask = mask[:-1] * policy_mask
      inputs = distillation_losses.DistillationInputs(
          student_logits=behaviour_logits, teacher_logits=output.logits, actions=batch['action'][:-1],
          rewards=zeros, discounts=discounts, teacher_values=output.value, student_values=student_values,
          mask=mask)
      # The environment reward is the learner's own: reward_coef 0.
      terms = variants.distillation_terms(self.variant, inputs,
                                          distillation_coef=self.distillation_coef, reward_coef=0.0)
      pseudo_rewards += lambda_k * terms.pseudo_rewards
      if self.variant == 'value_gated':
        mask *= tf.cast(output.value[:-1] > student_values[:-1], tf.float32)
      teacher_logits.append(tf.stop_gradient(output.logits[:-1]))
      teacher_masks.append(tf.stop_gradient(mask))
    return {'teacher_logits': tuple(teacher_logits), 'teacher_masks': tuple(teacher_masks),
            'pseudo_rewards': tf.stop_gradient(pseudo_rewards)}

  def _recorded_states(self, batch) -> List[Any]:
    """Each teacher's state at the batch's first step as the actors recorded it (None: its initial state)."""
    recorded = batch.get('teacher_state', {})
    states = []
    for name, teacher in zip(self.teacher_names, self._teachers.teachers):
      if name in recorded:
        first = [x[0] for x in tf.nest.flatten(recorded[name])]
        states.append(tf.nest.pack_sequence_as(teacher.state_spec, first))
      else:
        states.append(None)
    return states

  def loss(self, student_logits, prepared, mask=None) -> Tuple[tf.Tensor, Dict[str, tf.Tensor]]:
    """Σ_k λ_k·α·ℓ_k summed over the steps where teacher k teaches, divided by the policy's step count.

    Normalised like the learner's own policy loss (a mean over the policy's steps): in a multi-task batch
    a teacher that teaches a third of the steps adds a third of what it would add teaching all of them, so
    each step of the batch carries the same weight whichever teacher teaches it. ℓ_k is the variant's
    per-state loss (`variants.step_loss`): H×(π_S‖π_k) for expected entropy regularised (the
    default), H×(π_k‖π_S) for the distill variants, 0 for the reward-only ones. Tested against
    hand-computed values (`tests/test_kickstarting.py`).

    Args:
      student_logits: float `[T', B', A]`, differentiable.
      prepared: `prepare`'s output, sliced or gathered like `student_logits`.
      mask: optional `[T', B']`, the policy's mask (1 for real steps).

    Returns:
      (scalar loss, metrics): per teacher `kickstart/lambda_<name>`, `kickstart/cross_entropy_<name>`
      (H×(π_k‖π_S) on its steps) and `kickstart/loss`.
    """
    student_logits = tf.cast(student_logits, tf.float32)
    if mask is None:
      mask = tf.ones(tf.shape(student_logits)[:-1], tf.float32)
    mask = tf.cast(mask, tf.float32)
    count = tf.reduce_sum(mask)
    # The value gate is folded into the masks by `prepare`: the ungated cross-entropy here.
    variant = 'on_policy_distill' if self.variant == 'value_gated' else self.variant
    total, metrics = 0.0, {}
    for name, lambda_k, logits_k, mask_k in zip(self.teacher_names, self.weights.values(),
                                                 prepared['teacher_logits'], prepared['teacher_masks']):
      steps = mask * mask_k
      per_step = variants.step_loss(variant, student_logits, logits_k)
      term = tf.math.divide_no_nan(tf.reduce_sum(tf.where(steps > 0, per_step * steps, 0.0)), count)
      total += lambda_k * self.distillation_coef * term
      cross_entropy = distillation_losses.cross_entropy(logits_k, tf.stop_gradient(student_logits))
      metrics[f'kickstart/lambda_{name}'] = lambda_k
      metrics[f'kickstart/cross_entropy_{name}'] = tf.math.divide_no_nan(
          tf.reduce_sum(tf.where(steps > 0, cross_entropy * steps, 0.0)), tf.reduce_sum(steps))
    metrics['kickstart/loss'] = tf.stop_gradient(total)
    return total, metrics
