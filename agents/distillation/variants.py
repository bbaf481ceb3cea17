"""The variants of Czarnecki et al.'s "Distilling Policy Distillation" (AISTATS 2019, arXiv 1902.02186), each
as the two parts of its update (eq. 1 and the summary table in `agents/distillation/losses.py`): the per-step
loss ℓ_t and the pseudo-reward r̂_t (`<variant>_terms`, dispatched by `distillation_terms`), the per-state loss
a learner adds on single transitions (`step_loss`), the surrogate whose gradient is the update
(`distillation_surrogate`) and the gin `DistillationConfig` that chooses a variant and its weights. The
table's data (`VARIANTS`, `SAMPLED_BY`, `TRUE_GRADIENT_FIELD`, `REQUIRED_FIELDS`), the inputs and their
checks, the cross-entropy and `pseudo_returns` are in `agents/distillation/losses.py`.

Settled from the paper (the digest's "(check)" items):

* Entropy regularised: ℓ = 0 and r̂_t = log π(a_t|τ_t), the teacher's log-probability of the action
  the student took (summary table; Section 3's "distillation as RL" reading). The student's own
  entropy is not part of r̂: with it the objective would be the trajectory KL, without it the
  trajectory cross-entropy E_πθ[Σ −log π(a_t)]. Both are gradient fields; the table's r̂ has no
  −log π_θ term, and its "expected" variant below (ℓ = H×(π_θ‖π), not a KL) only matches it without one.
* N-distill: ℓ_t = H×(π(τ_t)‖π_θ(τ_t)) and r̂_t = −H×(π(τ_{t+1})‖π_θ(τ_{t+1})), the loss at the NEXT
  state (summary table; Theorem 2, which restores the gradient field of any per-state loss ℓ by
  adding r̂_t = −ℓ at τ_{t+1}).
* Expected entropy regularised: ℓ_t = H×(π_θ(τ_t)‖π(τ_t)), the cross-entropy FROM the student TO the
  teacher (note the order), and r̂_t = log π(a_{t+1}|τ_{t+1}), the teacher's log-probability of the
  NEXT action (summary table; Theorem 2's second form, for losses E_{a∼π_θ}[ℓ̂(a)], whose
  correction is −ℓ̂ at the next step's sampled action).
* R̂ is undiscounted in the paper (episodic, "extends to the discounted case"). Here R̂ uses this
  repository's `discounts[t] = γ·(1 − terminated_{t+1})`; with γ = 1 it is the paper's sum up to the
  episode end. Next-state rewards are multiplied by `discounts[t]`: that is both Theorem 2's
  correction for the discounted objective Σ_t γ^t ℓ_t (the correction for step t is
  Σ_{t'>t} γ^{t'−t}(−ℓ_{t'}) = Σ_{i≥t} γ^{i−t}·[γ·(−ℓ_{i+1})]) and what makes r̂_t = 0 when the episode
  ends at s_{t+1}, where the paper's sum stops. As in policy-gradient practice, the γ^t weight of step
  t itself is dropped, so the update is an exact gradient only at γ = 1.
* Value gate: [x]_{>0} is 1 iff V_π(s) − V_πθ(s) > 0 strictly (Section 4, the actor-critic section).
  The paper's experiment with it ("On-policy distill + R + V cond", the imperfect-teacher figure)
  adds the environment reward, so `value_gated` uses r̂_t = r_t (set `reward_coef = 0` to drop it).
* Teacher V reward: r̂_t = r_t + V_π(τ_{t+1}) − V_π(τ_t) (Section 4, Proposition 4); here with the
  discounted potential form r_t + discounts[t]·V_π(s_{t+1}) − V_π(s_t), which is the same at γ = 1
  and gives V = 0 after a termination.

Source note: the stored copies of the paper reachable here hold its abstract, introduction and the
appendix's experimental details, not the body; the rows above were checked against a detailed
public reading of the paper that reproduces its summary table, eq. 1 and Theorem 2 in the paper's
notation, and each row was re-derived: the rows marked "yes" are verified as exact gradients by
`tests/test_distillation_losses.py`, which enumerates every trajectory of a small MDP.
"""

import dataclasses
from typing import Callable, Dict, Tuple

import gin
import tensorflow as tf

from protege.agents.distillation import losses as distillation_losses
from protege.agents.learners import losses
from protege.runtime import errors

# The two records every variant reads and returns (`agents/distillation/losses.py`), for the signatures.
_Inputs = distillation_losses.DistillationInputs
_Terms = distillation_losses.DistillationTerms

# ----------------------------------------------------------------------------------------------
# The variants. Each returns DistillationTerms(loss [T, B], pseudo_rewards [T, B]) before masking.
# ----------------------------------------------------------------------------------------------


def _checked(variant: str, inputs, distillation_coef, reward_coef=None):
  """How every variant's terms begin: (the checked inputs, α) and, given `reward_coef`, β too, the
  coefficients as tensors of the logits' dtype."""
  c = distillation_losses.check_inputs(variant, inputs)
  alpha = distillation_losses.coefficient(distillation_coef, 'distillation_coef', c.student_logits.dtype)
  if reward_coef is None:
    return c, alpha
  return c, alpha, distillation_losses.coefficient(reward_coef, 'reward_coef', c.student_logits.dtype)


def _masked_terms(loss, pseudo_rewards, mask) -> _Terms:
  """Both parts, zero at masked-out steps; the pseudo-rewards with their gradient stopped."""
  return distillation_losses.DistillationTerms(
      distillation_losses.apply_mask(loss, mask),
      tf.stop_gradient(distillation_losses.apply_mask(pseudo_rewards, mask)))


def _teacher_student_cross_entropy(c: distillation_losses.CheckedInputs):
  """H×(π(s_t)‖π_θ(s_t)) for t = 0 … T−1, differentiable in the student."""
  return distillation_losses.cross_entropy(c.teacher_logits[:-1], c.student_logits[:-1])


def _cross_entropy_terms(variant: str, inputs: _Inputs, distillation_coef) -> _Terms:
  """ℓ_t = α·H×(π(s_t)‖π_θ(s_t)), r̂_t = 0: the two plain distillation variants (they differ in q only)."""
  c, alpha = _checked(variant, inputs, distillation_coef)
  loss = alpha * _teacher_student_cross_entropy(c)
  return distillation_losses.DistillationTerms(distillation_losses.apply_mask(loss, c.mask),
                                               tf.zeros_like(loss))


def teacher_distill_terms(inputs: _Inputs, distillation_coef=1.0) -> _Terms:
  """Teacher distill: q = π, ℓ_t = α·H×(π(s_t)‖π_θ(s_t)), r̂_t = 0 (summary table, eq. 1).

  Supervised learning on the teacher's trajectories (Rusu et al. 2016's policy distillation); the
  update is the gradient of E_π[Σ_t H×(π‖π_θ)] because the sampling distribution does not depend on θ.

  Args:
    inputs: `DistillationInputs` from trajectories sampled by the TEACHER.
    distillation_coef: α ≥ 0, a Python float or a scalar tensor / tf.Variable.

  Returns:
    `DistillationTerms`, both `[T, B]`.
  """
  return _cross_entropy_terms('teacher_distill', inputs, distillation_coef)


def on_policy_distill_terms(inputs: _Inputs, distillation_coef=1.0) -> _Terms:
  """On-policy distill: q = π_θ, ℓ_t = α·H×(π(s_t)‖π_θ(s_t)), r̂_t = 0 (summary table, eq. 1).

  The most common form in practice; NOT a gradient field (the paper's Theorem 1): it drops the score
  function term of the sampling distribution, so with rewards added the dynamics can cycle.

  Args:
    inputs: `DistillationInputs` from trajectories sampled by the student.
    distillation_coef: α ≥ 0, a Python float or a scalar tensor / tf.Variable.

  Returns:
    `DistillationTerms`, both `[T, B]`.
  """
  return _cross_entropy_terms('on_policy_distill', inputs, distillation_coef)


def on_policy_distill_with_reward_terms(inputs: _Inputs, distillation_coef=1.0,
                                        reward_coef=1.0) -> _Terms:
  """On-policy distill + R: q = π_θ, ℓ_t = α·H×(π(s_t)‖π_θ(s_t)), r̂_t = β·r_t (summary table).

  This is kickstarting (Schmitt et al. 2018) with a REINFORCE learner: the RL gradient of the
  environment return plus the per-state distillation gradient. Not a gradient field.

  Args:
    inputs: `DistillationInputs` from the student's trajectories, with `rewards`.
    distillation_coef: α ≥ 0 (kickstarting's λ), a Python float or a scalar tensor / tf.Variable.
    reward_coef: β ≥ 0, the environment reward's weight, likewise.

  Returns:
    `DistillationTerms`, both `[T, B]`.
  """
  c, alpha, beta = _checked('on_policy_distill_with_reward', inputs, distillation_coef, reward_coef)
  loss = alpha * _teacher_student_cross_entropy(c)
  pseudo_rewards = beta * c.rewards
  return _masked_terms(loss, pseudo_rewards, c.mask)


def entropy_regularised_terms(inputs: _Inputs, distillation_coef=1.0) -> _Terms:
  """Entropy regularised: q = π_θ, ℓ_t = 0, r̂_t = α·log π(a_t|s_t) (summary table; Section 3).

  Distillation as RL: the teacher's log-probability of the student's action is the reward, so the
  update is the policy gradient of −α·E_πθ[Σ_t log π(a_t|s_t)], a true gradient field. All of the
  signal travels through the sampled-reward channel, so its variance grows with the number of actions
  (the paper's 4 → 1000 actions experiment).

  Args:
    inputs: `DistillationInputs` from the student's trajectories.
    distillation_coef: α ≥ 0, a Python float or a scalar tensor / tf.Variable.

  Returns:
    `DistillationTerms`, both `[T, B]` (the loss is 0).
  """
  c, alpha = _checked('entropy_regularised', inputs, distillation_coef)
  teacher_log_probs = losses.categorical_log_prob(c.teacher_logits[:-1], c.actions)
  pseudo_rewards = alpha * teacher_log_probs
  loss = tf.zeros_like(pseudo_rewards)
  return distillation_losses.DistillationTerms(
      loss, tf.stop_gradient(distillation_losses.apply_mask(pseudo_rewards, c.mask)))


def n_distill_terms(inputs: _Inputs, distillation_coef=1.0) -> _Terms:
  """N-distill: q = π_θ, ℓ_t = α·H×(π(s_t)‖π_θ(s_t)),
  r̂_t = −α·discounts_t·H×(π(s_{t+1})‖π_θ(s_{t+1})) (summary table; Theorem 2).

  On-policy distill plus Theorem 2's correction: the next state's loss enters as a (negative) reward,
  so the update is the gradient of α·E_πθ[Σ_t H×(π(s_t)‖π_θ(s_t))] and the student is also taught to
  reach states where it already agrees with the teacher. `discounts_t` carries γ and ends the sum at
  a termination (see the module docstring). The next-state cross-entropy uses the student's logits at
  s_{t+1} with the gradient stopped (it is a reward).

  Args:
    inputs: `DistillationInputs` from the student's trajectories.
    distillation_coef: α ≥ 0, a Python float or a scalar tensor / tf.Variable.

  Returns:
    `DistillationTerms`, both `[T, B]`.
  """
  c, alpha = _checked('n_distill', inputs, distillation_coef)
  loss = alpha * _teacher_student_cross_entropy(c)
  next_cross_entropy = distillation_losses.cross_entropy(c.teacher_logits[1:],
                                                         tf.stop_gradient(c.student_logits[1:]))
  pseudo_rewards = -alpha * c.discounts * next_cross_entropy
  return _masked_terms(loss, pseudo_rewards, c.mask)


def expected_entropy_regularised_terms(inputs: _Inputs,
                                       distillation_coef=1.0) -> _Terms:
  """Expected entropy regularised: q = π_θ, ℓ_t = α·H×(π_θ(s_t)‖π(s_t)),
  r̂_t = α·discounts_t·log π(a_{t+1}|s_{t+1}) (summary table; Theorem 2's E_{a∼π_θ} form).

  The paper's recommended default. Same objective as `entropy_regularised_terms`,
  −α·E_πθ[Σ_t log π(a_t|s_t)], but the current step's term is taken in expectation over a ∼ π_θ:
  ℓ_t = −Σ_a π_θ(a|s_t) log π(a|s_t) is differentiated exactly, and only the later steps' teacher
  log-probabilities go through the reward channel, so the variance stays low as the action count grows.

  For t = T−1 the next action a_T is not in the batch; log π(a_T|s_T) is replaced by its expectation
  under the student, Σ_a π_θ(a|s_T) log π(a|s_T) (gradient stopped), which leaves the expected update
  unchanged when the student samples.

  Args:
    inputs: `DistillationInputs` from the student's trajectories.
    distillation_coef: α ≥ 0, a Python float or a scalar tensor / tf.Variable.

  Returns:
    `DistillationTerms`, both `[T, B]`.
  """
  c, alpha = _checked('expected_entropy_regularised', inputs, distillation_coef)
  loss = alpha * distillation_losses.cross_entropy(c.student_logits[:-1], c.teacher_logits[:-1])
  # log π(a_{t+1}|s_{t+1}) for t = 0 … T−2, from the actions the batch holds.
  sampled_next = losses.categorical_log_prob(c.teacher_logits[1:-1], c.actions[1:])
  # t = T−1: E_{a∼π_θ(s_T)} log π(a|s_T) = −H×(π_θ(s_T)‖π(s_T)).
  expected_last = -distillation_losses.cross_entropy(tf.stop_gradient(c.student_logits[-1:]),
                                                     c.teacher_logits[-1:])
  next_teacher_log_probs = tf.concat([sampled_next, expected_last], axis=0)
  pseudo_rewards = alpha * c.discounts * next_teacher_log_probs
  return _masked_terms(loss, pseudo_rewards, c.mask)


def teacher_value_reward_terms(inputs: _Inputs, distillation_coef=1.0,
                               reward_coef=1.0) -> _Terms:
  """Teacher V reward: q = π_θ, ℓ_t = 0,
  r̂_t = β·r_t + α·(discounts_t·V_π(s_{t+1}) − V_π(s_t)) (Section 4, Proposition 4).

  Potential-based shaping of the environment reward by the teacher's critic (Ng et al. 1999): the
  shaped return differs from the true one by a term that does not depend on the student's actions
  (−α·V_π(s_0) at γ = 1), so the optimum is unchanged, while a step off the teacher's path is
  penalised at once when the teacher is good. The paper writes r_t + V_π(τ_{t+1}) − V_π(τ_t) (γ = 1);
  `discounts_t` gives the discounted potential form and V = 0 after a termination.

  Args:
    inputs: `DistillationInputs` from the student's trajectories, with `rewards` and
      `teacher_values` (`[T+1, B]`: row T is V_π(s_T), used by the last step).
    distillation_coef: α ≥ 0, the weight of the shaping term.
    reward_coef: β ≥ 0, the weight of the environment reward.

  Returns:
    `DistillationTerms`, both `[T, B]` (the loss is 0).
  """
  c, alpha, beta = _checked('teacher_value_reward', inputs, distillation_coef, reward_coef)
  shaping = c.discounts * c.teacher_values[1:] - c.teacher_values[:-1]
  pseudo_rewards = beta * c.rewards + alpha * shaping
  loss = tf.zeros_like(pseudo_rewards)
  return distillation_losses.DistillationTerms(
      loss, tf.stop_gradient(distillation_losses.apply_mask(pseudo_rewards, c.mask)))


def value_gated_terms(inputs: _Inputs, distillation_coef=1.0,
                      reward_coef=1.0) -> _Terms:
  """Value-gated distill + R: q = π_θ, ℓ_t = α·H×(π(s_t)‖π_θ(s_t))·[V_π(s_t) > V_πθ(s_t)], r̂_t = β·r_t
  (Section 4's gated loss, Proposition 2; the "On-policy distill + R + V cond" of the imperfect-teacher
  experiment).

  The student imitates the teacher only in states where the teacher's critic values them above the
  student's own critic, so a noisy teacher's mistakes are not copied where the student already does
  better; the environment reward drives learning elsewhere. The gate is strict (ties do not distil)
  and carries no gradient. Not a gradient field.

  Args:
    inputs: `DistillationInputs` from the student's trajectories, with `rewards`, `teacher_values`
      and `student_values` (`[T+1, B]`; rows 0 … T−1 are used).
    distillation_coef: α ≥ 0, a Python float or a scalar tensor / tf.Variable.
    reward_coef: β ≥ 0, the environment reward's weight (0 gives pure gated distillation).

  Returns:
    `DistillationTerms`, both `[T, B]`.
  """
  c, alpha, beta = _checked('value_gated', inputs, distillation_coef, reward_coef)
  dtype = c.student_logits.dtype
  gate = tf.cast(c.teacher_values[:-1] > c.student_values[:-1], dtype)
  loss = alpha * gate * _teacher_student_cross_entropy(c)
  pseudo_rewards = beta * c.rewards
  return _masked_terms(loss, pseudo_rewards, c.mask)


_TERMS: Dict[str, Callable[..., distillation_losses.DistillationTerms]] = {
    'teacher_distill': teacher_distill_terms,
    'on_policy_distill': on_policy_distill_terms,
    'on_policy_distill_with_reward': on_policy_distill_with_reward_terms,
    'entropy_regularised': entropy_regularised_terms,
    'n_distill': n_distill_terms,
    'expected_entropy_regularised': expected_entropy_regularised_terms,
    'teacher_value_reward': teacher_value_reward_terms,
    'value_gated': value_gated_terms,
}
_USES_REWARD_COEF = ('on_policy_distill_with_reward', 'teacher_value_reward', 'value_gated')


def step_loss(variant: str, student_logits, teacher_logits, teacher_values=None, student_values=None):
  """The variant's per-state loss ℓ(s) at unit weight, for any leading shape (the table's ℓ column).

  What a learner adds to its loss on a minibatch of single transitions, where the `[T+1, B]` layout of
  `distillation_terms` is not available (its pseudo-rewards are computed once per batch instead):
  H×(π‖π_θ) for the distill variants, H×(π_θ‖π) for expected entropy regularised, the gated H×(π‖π_θ)
  for value_gated (`teacher_values`, `student_values` `[...]` needed), 0 for the reward-only variants.
  Equal to `distillation_terms(variant, ...).loss` at distillation_coef 1 (tested).

  Args:
    variant: one of `VARIANTS`.
    student_logits: float `[..., A]`; gradients flow into it.
    teacher_logits: float `[..., A]`; gradient stopped.
    teacher_values, student_values: float `[...]`, only for 'value_gated' (gradients stopped).

  Returns:
    float `[...]`.
  """
  distillation_losses.check_variant(variant)
  teacher_logits = tf.stop_gradient(teacher_logits)
  if variant in ('entropy_regularised', 'teacher_value_reward'):
    return tf.zeros_like(student_logits[..., 0])
  if variant == 'expected_entropy_regularised':
    return distillation_losses.cross_entropy(student_logits, teacher_logits)
  loss = distillation_losses.cross_entropy(teacher_logits, student_logits)
  if variant == 'value_gated':
    if teacher_values is None or student_values is None:
      raise ValueError("step_loss('value_gated') needs teacher_values and student_values.")
    loss *= tf.cast(tf.stop_gradient(teacher_values) > tf.stop_gradient(student_values), loss.dtype)
  return loss


# ----------------------------------------------------------------------------------------------
# The public entry points.
# ----------------------------------------------------------------------------------------------


def distillation_terms(variant: str, inputs: _Inputs, distillation_coef=1.0,
                       reward_coef=1.0) -> _Terms:
  """The per-step loss ℓ_t and pseudo-reward r̂_t of `variant` (eq. 1; see the module's table).

  Dispatches to `<variant>_terms`. `distillation_coef` (α) scales the teacher-derived parts, ℓ and
  the distillation pseudo-rewards, together, so a variant's update is α times its own update and keeps
  its gradient-field property. `reward_coef` (β) scales the environment reward in the variants that
  use one (`on_policy_distill_with_reward`, `teacher_value_reward`, `value_gated`) and is ignored by
  the others.

  Args:
    variant: one of `VARIANTS`.
    inputs: a `DistillationInputs` holding the fields `REQUIRED_FIELDS[variant]` names.
    distillation_coef: α ≥ 0; a Python float or a scalar tensor / tf.Variable read at run time.
    reward_coef: β ≥ 0; likewise.

  Returns:
    `DistillationTerms(loss [T, B], pseudo_rewards [T, B])`, 0 at masked-out steps.

  Raises:
    ValueError: on an unknown variant (the message lists `VARIANTS`), a missing field, a shape
      mismatch or a negative Python coefficient.
    TypeError: on non-float logits/rewards/values, non-integer actions or mixed float dtypes.
  """
  distillation_losses.check_variant(variant)
  if variant in _USES_REWARD_COEF:
    return _TERMS[variant](inputs, distillation_coef=distillation_coef, reward_coef=reward_coef)
  return _TERMS[variant](inputs, distillation_coef=distillation_coef)


def distillation_surrogate(variant: str, inputs: _Inputs, distillation_coef=1.0,
                           reward_coef=1.0, bootstrap=None) -> tf.Tensor:
  """The per-step surrogate whose gradient is the paper's update (eq. 1) for `variant`:

      surrogate_t = −log π_θ(a_t|s_t) · stop(R̂_t) + ℓ_t,    R̂ = pseudo_returns(r̂, discounts, bootstrap)

  Minimise its mean over the real steps, e.g. `losses.masked_mean(surrogate, inputs.mask)`: the
  gradient of Σ_t surrogate_t on one trajectory is exactly the bracket of eq. 1, and on trajectories
  sampled by `SAMPLED_BY[variant]` its expectation is the variant's update (the true gradient of its
  objective for the variants marked in `TRUE_GRADIENT_FIELD`). No baseline is subtracted from R̂; a
  learner that wants one should compute its own advantages from `distillation_terms(...).pseudo_rewards`.

  Args:
    variant: one of `VARIANTS`.
    inputs: a `DistillationInputs` (see `REQUIRED_FIELDS[variant]`).
    distillation_coef: α ≥ 0, see `distillation_terms`.
    reward_coef: β ≥ 0, see `distillation_terms`.
    bootstrap: optional float `[B]`, R̂_T for sequences cut before their episode ends (None: 0).

  Returns:
    float `[T, B]`, 0 at masked-out steps.

  Raises:
    ValueError: on an unknown variant (the message names it and lists `VARIANTS`), a missing field
      or a shape mismatch (one line naming the argument).
    TypeError: on wrong dtypes.
  """
  terms = distillation_terms(variant, inputs, distillation_coef=distillation_coef,
                             reward_coef=reward_coef)
  c = distillation_losses.check_inputs(variant, inputs)
  returns = distillation_losses.pseudo_returns(terms.pseudo_rewards, c.discounts, bootstrap)
  log_probs = losses.categorical_log_prob(c.student_logits[:-1], c.actions)
  surrogate = -log_probs * returns + terms.loss
  return distillation_losses.apply_mask(surrogate, c.mask)


# ----------------------------------------------------------------------------------------------
# Configuration.
# ----------------------------------------------------------------------------------------------


@gin.configurable
@dataclasses.dataclass(frozen=True)
class DistillationConfig:
  """Which distillation update a learner uses and with what weights (bind it with gin).

  The functions above stay pure: a learner reads this once, creates a `tf.Variable` for each
  coefficient a schedule or PBT may move (initialised from the value here), and passes the variables.

  Attributes:
    variant: one of `VARIANTS`; default 'expected_entropy_regularised', the paper's recommendation
      (low variance and a true gradient field).
    distillation_coef: α ≥ 0, weight of the teacher-derived loss and pseudo-rewards; default 1.0
      (the paper's unweighted updates). Kickstarting's λ.
    reward_coef: β ≥ 0, weight of the environment reward in the variants that use one; default 1.0.
  """
  variant: str = distillation_losses.DEFAULT_VARIANT
  distillation_coef: float = 1.0
  reward_coef: float = 1.0

  def __post_init__(self):
    distillation_losses.check_variant(self.variant)
    for name in ('distillation_coef', 'reward_coef'):
      value = getattr(self, name)
      if value < 0:
        raise errors.ConfigError(f'DistillationConfig.{name} must be >= 0; got {value}.')

  @property
  def sampled_by(self) -> str:
    """'teacher' or 'student': whose trajectories the variant's update expects."""
    return distillation_losses.SAMPLED_BY[self.variant]

  @property
  def required_fields(self) -> Tuple[str, ...]:
    """The optional `DistillationInputs` fields the variant needs."""
    return distillation_losses.REQUIRED_FIELDS[self.variant]

  def surrogate(self, inputs: _Inputs, distillation_coef=None, reward_coef=None,
                bootstrap=None) -> tf.Tensor:
    """`distillation_surrogate` with this config's variant; coefficients default to this config's
    (pass variables to override them with values read at run time)."""
    return distillation_surrogate(
        self.variant, inputs,
        distillation_coef=self.distillation_coef if distillation_coef is None else distillation_coef,
        reward_coef=self.reward_coef if reward_coef is None else reward_coef,
        bootstrap=bootstrap)
