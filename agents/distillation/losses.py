"""Policy-distillation updates as pure functions (Czarnecki et al., "Distilling Policy Distillation",
AISTATS 2019, arXiv 1902.02186) and the kickstarting loss (Schmitt et al. 2018, arXiv 1803.03835).

The paper writes every distillation method as one update direction (its eq. 1), to be *descended*:

    E_{τ∼q}[ Σ_t −∇_θ log π_θ(a_t|τ_t) · R̂_t + ∇_θ ℓ_t ],     R̂_t = Σ_{i ≥ t} r̂_i,

with π the teacher, π_θ the student, q the policy that samples the trajectories, ℓ_t a per-step loss
(differentiable in the student) and r̂_i a pseudo-reward (a constant for the gradient). A variant is
the triple (q, ℓ, r̂); H×(p‖q) = −Σ_a p(a) log q(a) is the cross-entropy. The paper's summary table:

  variant                       q    ℓ_t                            r̂_t                            gradient?
  teacher_distill               π    H×(π(s_t)‖π_θ(s_t))            0                              yes
  on_policy_distill             π_θ  H×(π(s_t)‖π_θ(s_t))            0                              no (Thm 1)
  on_policy_distill_with_reward π_θ  H×(π(s_t)‖π_θ(s_t))            r_t                            no
  entropy_regularised           π_θ  0                              log π(a_t | s_t)               yes
  n_distill                     π_θ  H×(π(s_t)‖π_θ(s_t))            −H×(π(s_{t+1})‖π_θ(s_{t+1}))   yes (Thm 2)
  expected_entropy_regularised  π_θ  H×(π_θ(s_t)‖π(s_t))            log π(a_{t+1} | s_{t+1})       yes (Thm 2)
  teacher_value_reward          π_θ  0                              r_t + V_π(s_{t+1}) − V_π(s_t)  yes
  value_gated                   π_θ  H×(π(s_t)‖π_θ(s_t))·[V_π>V_πθ]  r_t                            no

"True gradient" means the expected update is the gradient of a function of θ, so it cannot cycle:
teacher_distill descends E_π[Σ_t H×(π‖π_θ)]; entropy_regularised and expected_entropy_regularised
both descend E_πθ[Σ_t −log π(a_t|s_t)] (the expected variant takes the current step's term in
expectation over a ∼ π_θ, which is its ℓ, and leaves the later steps in the reward; lower variance,
the paper's recommended default); n_distill descends E_πθ[Σ_t H×(π(s_t)‖π_θ(s_t))]; teacher_value_reward
is the policy gradient of the return shaped by the potential V_π, which has the return's optimum.

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

Conventions (as `agents/losses.py`): time-major; transition t is (s_t, a_t, r_t, s_{t+1});
`discounts[t] = γ·(1 − terminated_{t+1})`. Logits have T + 1 rows: row T is s_T, the state after the
last transition (needed by the next-state rewards). The last step of `expected_entropy_regularised`
needs a_T, which the batch does not hold; its log π(a_T|s_T) is replaced by its expectation under the
student, Σ_a π_θ(a|s_T) log π(a|s_T) — unbiased when the student samples, as this variant assumes.
Teacher logits and values, student values and every pseudo-reward have their gradients stopped.
Coefficients may be Python floats or scalar tensors / `tf.Variable`s, read when the compiled step runs.
"""

import dataclasses
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import gin
import tensorflow as tf

from agents import losses
from runtime import errors

# The argument checks of agents/losses.py, shared so both modules report errors the same way.
# pylint: disable=protected-access
_float_tensor = losses._float_tensor
_check_rank = losses._check_rank
_time_major = losses._time_major
_hyperparameter = losses._hyperparameter
# pylint: enable=protected-access

VARIANTS = ('teacher_distill', 'on_policy_distill', 'on_policy_distill_with_reward',
            'entropy_regularised', 'n_distill', 'expected_entropy_regularised',
            'teacher_value_reward', 'value_gated')

# Who samples the trajectories the update expects (the paper's control policy q).
SAMPLED_BY = {
    'teacher_distill': 'teacher',
    'on_policy_distill': 'student',
    'on_policy_distill_with_reward': 'student',
    'entropy_regularised': 'student',
    'n_distill': 'student',
    'expected_entropy_regularised': 'student',
    'teacher_value_reward': 'student',
    'value_gated': 'student',
}

# Whether the variant's expected update is the gradient of a function of θ (the summary table).
TRUE_GRADIENT_FIELD = {
    'teacher_distill': True,
    'on_policy_distill': False,
    'on_policy_distill_with_reward': False,
    'entropy_regularised': True,
    'n_distill': True,
    'expected_entropy_regularised': True,
    'teacher_value_reward': True,
    'value_gated': False,
}

# The paper's recommended default (Section 3's conclusion and its decision tree).
DEFAULT_VARIANT = 'expected_entropy_regularised'

# The `DistillationInputs` fields each variant needs besides the logits and actions.
REQUIRED_FIELDS = {
    'teacher_distill': (),
    'on_policy_distill': (),
    'on_policy_distill_with_reward': ('rewards',),
    'entropy_regularised': (),
    'n_distill': (),
    'expected_entropy_regularised': (),
    'teacher_value_reward': ('rewards', 'teacher_values'),
    'value_gated': ('rewards', 'teacher_values', 'student_values'),
}


class DistillationInputs(NamedTuple):
  """One time-major batch for a distillation update (T transitions, B sequences, A actions).

  Attributes:
    student_logits: float `[T+1, B, A]`, the student's logits at s_0 … s_T (row T is the state after
      the last transition). The only input gradients flow into.
    teacher_logits: float `[T+1, B, A]`, the teacher's logits at s_0 … s_T (gradient stopped inside).
    actions: integer `[T, B]`, a_0 … a_{T−1}, sampled by `SAMPLED_BY[variant]`.
    rewards: optional float `[T, B]`, environment rewards r_t; needed by `REQUIRED_FIELDS[variant]`.
    discounts: optional float `[T, B]`, γ·(1 − terminated_{t+1}); None means 1 everywhere (the paper's
      undiscounted setting, one episode per column). Use γ = 1 with the termination mask for eq. 1
      exactly.
    teacher_values: optional float `[T+1, B]`, V_π(s_0 … s_T) from the teacher's critic (gradient
      stopped inside).
    student_values: optional float `[T+1, B]`, V_πθ(s_0 … s_T) from the student's critic, used only by
      the value gate (gradient stopped inside; train the critic with its own loss).
    mask: optional float/bool `[T, B]`, 1 for real transitions; outputs are 0 where it is 0.
  """
  student_logits: tf.Tensor
  teacher_logits: tf.Tensor
  actions: tf.Tensor
  rewards: Optional[tf.Tensor] = None
  discounts: Optional[tf.Tensor] = None
  teacher_values: Optional[tf.Tensor] = None
  student_values: Optional[tf.Tensor] = None
  mask: Optional[tf.Tensor] = None


class DistillationTerms(NamedTuple):
  """The two parts of a variant's update (eq. 1).

  Attributes:
    loss: float `[T, B]`, ℓ_t, differentiable with respect to `student_logits`.
    pseudo_rewards: float `[T, B]`, r̂_t, gradient stopped; R̂ = `pseudo_returns(r̂, discounts)`.
  """
  loss: tf.Tensor
  pseudo_rewards: tf.Tensor


# ----------------------------------------------------------------------------------------------
# Distribution helpers.
# ----------------------------------------------------------------------------------------------


def cross_entropy(target_logits, logits):
  """Shannon cross-entropy H×(p‖q) = −Σ_a p(a) log q(a), with p = softmax(target_logits) and
  q = softmax(logits) (the paper's H×, Section 2). Not symmetric: H×(π‖π_θ) is the usual distillation
  loss, H×(π_θ‖π) the expected entropy regularised one.

  Actions with p(a) = 0 contribute 0 even where log q(a) = −inf. Gradients flow into both arguments;
  stop them at the caller.

  Args:
    target_logits: float `[..., A]`, the logits of p.
    logits: float `[..., A]`, the logits of q, same shape and dtype.

  Returns:
    float `[...]`.
  """
  target_log_probs = tf.nn.log_softmax(target_logits, axis=-1)
  log_probs = tf.nn.log_softmax(logits, axis=-1)
  return -tf.reduce_sum(tf.math.multiply_no_nan(log_probs, tf.exp(target_log_probs)), axis=-1)


def _entropy(logits):
  return cross_entropy(logits, logits)


# ----------------------------------------------------------------------------------------------
# Argument checks.
# ----------------------------------------------------------------------------------------------


class _Checked(NamedTuple):
  """Converted and checked inputs; the teacher's tensors and the values are already stopped."""
  student_logits: tf.Tensor   # [T+1, B, A]
  teacher_logits: tf.Tensor   # [T+1, B, A]
  actions: tf.Tensor          # [T, B]
  rewards: Optional[tf.Tensor]
  discounts: tf.Tensor        # [T, B], ones when not given
  teacher_values: Optional[tf.Tensor]
  student_values: Optional[tf.Tensor]
  mask: Optional[tf.Tensor]   # [T, B] in the logits' dtype, or None


def check_variant(variant: str) -> str:
  """Returns `variant` if it is one of `VARIANTS`, else raises a one-line ValueError listing them."""
  if variant not in VARIANTS:
    raise errors.ConfigError(f'Unknown distillation variant {variant!r}; use one of {", ".join(VARIANTS)}.')
  return variant


def _steps_shape(logits):
  """The static `[T, B]` shape of the transitions, from logits of shape `[T+1, B, A]`."""
  rows = logits.shape[0]
  return tf.TensorShape([None if rows is None else rows - 1, logits.shape[1]])


def _check_rows(x, name, shape, dtype, layout='[T, B]', meaning='one row per transition'):
  """Converts `x` to a float tensor of `dtype` matching the static `shape` (`layout`, e.g. `[T, B]`)."""
  x = _float_tensor(x, name, dtype=dtype)
  _check_rank(x, 2, name, layout)
  if x.dtype != dtype:
    raise TypeError(f'`{name}` has dtype {x.dtype.name} but the logits have {dtype.name}; '
                    'cast them to the same float dtype.')
  if not x.shape.is_compatible_with(shape):
    raise ValueError(f'`{name}` must have shape {layout} = {shape} ({meaning}); got shape {x.shape}.')
  return x


def _check_steps(x, name, steps, dtype):
  """Converts `x` to a float `[T, B]` tensor of `dtype` matching the transitions' static shape."""
  return _check_rows(x, name, steps, dtype)


def _check_states(x, name, states, dtype):
  """Converts `x` to a float `[T+1, B]` tensor of `dtype` matching the states' static shape."""
  return _check_rows(x, name, states, dtype, '[T+1, B]', 'one row per state s_0 … s_T')


def _check_inputs(variant: str, inputs: DistillationInputs) -> _Checked:
  """Checks `inputs` for `variant` at trace time and converts them (static shapes only)."""
  check_variant(variant)
  if not isinstance(inputs, DistillationInputs):
    raise TypeError(f'`inputs` must be a DistillationInputs; got {type(inputs).__name__}.')
  for field in REQUIRED_FIELDS[variant]:
    if getattr(inputs, field) is None:
      raise ValueError(f'Variant {variant!r} needs `inputs.{field}`; got None. '
                       f'It needs: {", ".join(REQUIRED_FIELDS[variant])}.')

  student_logits = _float_tensor(inputs.student_logits, 'student_logits')
  _check_rank(student_logits, 3, 'student_logits', '[T+1, B, A]')
  dtype = student_logits.dtype
  teacher_logits = _float_tensor(inputs.teacher_logits, 'teacher_logits', dtype=dtype)
  _check_rank(teacher_logits, 3, 'teacher_logits', '[T+1, B, A]')
  if teacher_logits.dtype != dtype:
    raise TypeError(f'`teacher_logits` has dtype {teacher_logits.dtype.name} but `student_logits` has '
                    f'{dtype.name}; cast them to the same float dtype.')
  if not teacher_logits.shape.is_compatible_with(student_logits.shape):
    raise ValueError(f'`teacher_logits` has shape {teacher_logits.shape} but must match '
                     f'`student_logits`\' shape {student_logits.shape} ([T+1, B, A]).')
  if student_logits.shape[0] is not None and student_logits.shape[0] < 2:
    raise ValueError(f'`student_logits` must have at least 2 rows (s_0 and the state after the first '
                     f'transition, [T+1, B, A]); got shape {student_logits.shape}.')
  states = student_logits.shape[:2].merge_with(teacher_logits.shape[:2])
  steps = _steps_shape(student_logits).merge_with(_steps_shape(teacher_logits))

  actions = tf.convert_to_tensor(inputs.actions)
  if not actions.dtype.is_integer:
    raise TypeError(f'`actions` must be an integer tensor of action indices; got dtype '
                    f'{actions.dtype.name}.')
  _check_rank(actions, 2, 'actions', '[T, B]')
  if not actions.shape.is_compatible_with(steps):
    raise ValueError(f'`actions` must have shape [T, B] = {steps}, one row fewer than the logits '
                     f'([T+1, B, A]); got shape {actions.shape}.')

  rewards = None if inputs.rewards is None else _check_steps(inputs.rewards, 'rewards', steps, dtype)
  if inputs.discounts is None:
    discounts = tf.ones_like(student_logits[1:, :, 0])
  else:
    discounts = _check_steps(inputs.discounts, 'discounts', steps, dtype)
  teacher_values = student_values = None
  if inputs.teacher_values is not None:
    teacher_values = tf.stop_gradient(
        _check_states(inputs.teacher_values, 'teacher_values', states, dtype))
  if inputs.student_values is not None:
    student_values = tf.stop_gradient(
        _check_states(inputs.student_values, 'student_values', states, dtype))
  mask = None
  if inputs.mask is not None:
    mask = tf.convert_to_tensor(inputs.mask)
    if not (mask.dtype.is_floating or mask.dtype.is_bool or mask.dtype.is_integer):
      raise TypeError(f'`mask` must be a float, int or bool tensor; got dtype {mask.dtype.name}.')
    if not mask.shape.is_compatible_with(steps):
      raise ValueError(f'`mask` must have shape [T, B] = {steps}; got shape {mask.shape}.')
    mask = tf.cast(mask, dtype)
  return _Checked(student_logits, tf.stop_gradient(teacher_logits), actions, rewards, discounts,
                  teacher_values, student_values, mask)


def _coefficient(value, name, dtype):
  return _hyperparameter(value, name, dtype)


def _apply_mask(x, mask):
  """Zeroes the masked-out entries of a `[T, B]` tensor (by selection, so NaN padding cannot leak)."""
  if mask is None:
    return x
  return tf.where(mask != 0, x, tf.zeros_like(x))


# ----------------------------------------------------------------------------------------------
# The variants. Each returns DistillationTerms(loss [T, B], pseudo_rewards [T, B]) before masking.
# ----------------------------------------------------------------------------------------------


def _teacher_student_cross_entropy(c: _Checked):
  """H×(π(s_t)‖π_θ(s_t)) for t = 0 … T−1, differentiable in the student."""
  return cross_entropy(c.teacher_logits[:-1], c.student_logits[:-1])


def _cross_entropy_terms(variant: str, inputs: DistillationInputs, distillation_coef) -> DistillationTerms:
  """ℓ_t = α·H×(π(s_t)‖π_θ(s_t)), r̂_t = 0: the two plain distillation variants (they differ in q only)."""
  c = _check_inputs(variant, inputs)
  alpha = _coefficient(distillation_coef, 'distillation_coef', c.student_logits.dtype)
  loss = alpha * _teacher_student_cross_entropy(c)
  return DistillationTerms(_apply_mask(loss, c.mask), tf.zeros_like(loss))


def teacher_distill_terms(inputs: DistillationInputs, distillation_coef=1.0) -> DistillationTerms:
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


def on_policy_distill_terms(inputs: DistillationInputs, distillation_coef=1.0) -> DistillationTerms:
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


def on_policy_distill_with_reward_terms(inputs: DistillationInputs, distillation_coef=1.0,
                                        reward_coef=1.0) -> DistillationTerms:
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
  c = _check_inputs('on_policy_distill_with_reward', inputs)
  dtype = c.student_logits.dtype
  alpha = _coefficient(distillation_coef, 'distillation_coef', dtype)
  beta = _coefficient(reward_coef, 'reward_coef', dtype)
  loss = alpha * _teacher_student_cross_entropy(c)
  pseudo_rewards = beta * c.rewards
  return DistillationTerms(_apply_mask(loss, c.mask), tf.stop_gradient(_apply_mask(pseudo_rewards, c.mask)))


def entropy_regularised_terms(inputs: DistillationInputs, distillation_coef=1.0) -> DistillationTerms:
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
  c = _check_inputs('entropy_regularised', inputs)
  alpha = _coefficient(distillation_coef, 'distillation_coef', c.student_logits.dtype)
  teacher_log_probs = losses.categorical_log_prob(c.teacher_logits[:-1], c.actions)
  pseudo_rewards = alpha * teacher_log_probs
  loss = tf.zeros_like(pseudo_rewards)
  return DistillationTerms(loss, tf.stop_gradient(_apply_mask(pseudo_rewards, c.mask)))


def n_distill_terms(inputs: DistillationInputs, distillation_coef=1.0) -> DistillationTerms:
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
  c = _check_inputs('n_distill', inputs)
  alpha = _coefficient(distillation_coef, 'distillation_coef', c.student_logits.dtype)
  loss = alpha * _teacher_student_cross_entropy(c)
  next_cross_entropy = cross_entropy(c.teacher_logits[1:], tf.stop_gradient(c.student_logits[1:]))
  pseudo_rewards = -alpha * c.discounts * next_cross_entropy
  return DistillationTerms(_apply_mask(loss, c.mask), tf.stop_gradient(_apply_mask(pseudo_rewards, c.mask)))


def expected_entropy_regularised_terms(inputs: DistillationInputs,
                                       distillation_coef=1.0) -> DistillationTerms:
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
  c = _check_inputs('expected_entropy_regularised', inputs)
  alpha = _coefficient(distillation_coef, 'distillation_coef', c.student_logits.dtype)
  loss = alpha * cross_entropy(c.student_logits[:-1], c.teacher_logits[:-1])
  # log π(a_{t+1}|s_{t+1}) for t = 0 … T−2, from the actions the batch holds.
  sampled_next = losses.categorical_log_prob(c.teacher_logits[1:-1], c.actions[1:])
  # t = T−1: E_{a∼π_θ(s_T)} log π(a|s_T) = −H×(π_θ(s_T)‖π(s_T)).
  expected_last = -cross_entropy(tf.stop_gradient(c.student_logits[-1:]), c.teacher_logits[-1:])
  next_teacher_log_probs = tf.concat([sampled_next, expected_last], axis=0)
  pseudo_rewards = alpha * c.discounts * next_teacher_log_probs
  return DistillationTerms(_apply_mask(loss, c.mask), tf.stop_gradient(_apply_mask(pseudo_rewards, c.mask)))


def teacher_value_reward_terms(inputs: DistillationInputs, distillation_coef=1.0,
                               reward_coef=1.0) -> DistillationTerms:
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
  c = _check_inputs('teacher_value_reward', inputs)
  dtype = c.student_logits.dtype
  alpha = _coefficient(distillation_coef, 'distillation_coef', dtype)
  beta = _coefficient(reward_coef, 'reward_coef', dtype)
  shaping = c.discounts * c.teacher_values[1:] - c.teacher_values[:-1]
  pseudo_rewards = beta * c.rewards + alpha * shaping
  loss = tf.zeros_like(pseudo_rewards)
  return DistillationTerms(loss, tf.stop_gradient(_apply_mask(pseudo_rewards, c.mask)))


def value_gated_terms(inputs: DistillationInputs, distillation_coef=1.0,
                      reward_coef=1.0) -> DistillationTerms:
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
  c = _check_inputs('value_gated', inputs)
  dtype = c.student_logits.dtype
  alpha = _coefficient(distillation_coef, 'distillation_coef', dtype)
  beta = _coefficient(reward_coef, 'reward_coef', dtype)
  gate = tf.cast(c.teacher_values[:-1] > c.student_values[:-1], dtype)
  loss = alpha * gate * _teacher_student_cross_entropy(c)
  pseudo_rewards = beta * c.rewards
  return DistillationTerms(_apply_mask(loss, c.mask), tf.stop_gradient(_apply_mask(pseudo_rewards, c.mask)))


_TERMS: Dict[str, Callable[..., DistillationTerms]] = {
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
  check_variant(variant)
  teacher_logits = tf.stop_gradient(teacher_logits)
  if variant in ('entropy_regularised', 'teacher_value_reward'):
    return tf.zeros_like(student_logits[..., 0])
  if variant == 'expected_entropy_regularised':
    return cross_entropy(student_logits, teacher_logits)
  loss = cross_entropy(teacher_logits, student_logits)
  if variant == 'value_gated':
    if teacher_values is None or student_values is None:
      raise ValueError("step_loss('value_gated') needs teacher_values and student_values.")
    loss *= tf.cast(tf.stop_gradient(teacher_values) > tf.stop_gradient(student_values), loss.dtype)
  return loss


# ----------------------------------------------------------------------------------------------
# The public entry points.
# ----------------------------------------------------------------------------------------------


def distillation_terms(variant: str, inputs: DistillationInputs, distillation_coef=1.0,
                       reward_coef=1.0) -> DistillationTerms:
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
  check_variant(variant)
  if variant in _USES_REWARD_COEF:
    return _TERMS[variant](inputs, distillation_coef=distillation_coef, reward_coef=reward_coef)
  return _TERMS[variant](inputs, distillation_coef=distillation_coef)


def pseudo_returns(pseudo_rewards, discounts, bootstrap=None) -> tf.Tensor:
  """The returns of the pseudo-rewards, R̂_t = Σ_{i ≥ t} (Π_{t ≤ j < i} discounts_j) r̂_i (+ bootstrap).

  Computed backwards as R̂_t = r̂_t + discounts_t · R̂_{t+1}, with R̂_T = `bootstrap` (0 if None). With
  discounts = 1 − terminated this is the paper's R̂_t = Σ_{i=t}^{|τ|} r̂_i (eq. 1): a termination
  (discounts_t = 0) stops the sum, so no return crosses an episode boundary in a column.

  Args:
    pseudo_rewards: float `[T, B]`, r̂_t.
    discounts: float `[T, B]`, γ·(1 − terminated_{t+1}); None means 1 everywhere.
    bootstrap: optional float `[B]`, an estimate of R̂_T for sequences cut before their episode ends.

  Returns:
    float `[T, B]` R̂_t, gradient stopped.

  Raises:
    ValueError: on a rank or shape mismatch (the message names the argument).
    TypeError: on non-float inputs or mixed float dtypes.
  """
  pseudo_rewards = _time_major(pseudo_rewards, 'pseudo_rewards')
  if discounts is None:
    discounts = tf.ones_like(pseudo_rewards)
  else:
    discounts = _time_major(
        discounts, 'discounts', pseudo_rewards, 'pseudo_rewards')
  if bootstrap is None:
    bootstrap = tf.zeros_like(pseudo_rewards[0])
  else:
    bootstrap = _float_tensor(bootstrap, 'bootstrap', dtype=pseudo_rewards.dtype)
    if bootstrap.dtype != pseudo_rewards.dtype:
      raise TypeError(f'`bootstrap` has dtype {bootstrap.dtype.name} but `pseudo_rewards` has '
                      f'{pseudo_rewards.dtype.name}; cast them to the same float dtype.')
    if bootstrap.shape.rank is not None and (
        bootstrap.shape.rank != 1 or not bootstrap.shape.is_compatible_with(pseudo_rewards.shape[1:])):
      raise ValueError(f'`bootstrap` must have shape [B] = {pseudo_rewards.shape[1:]} (R̂_T per '
                       f'sequence); got shape {bootstrap.shape}.')

  def backward_step(return_tp1, step):
    reward, discount = step
    return reward + discount * return_tp1

  returns = tf.scan(backward_step, (pseudo_rewards, discounts), initializer=bootstrap, reverse=True)
  return tf.stop_gradient(returns)


def distillation_surrogate(variant: str, inputs: DistillationInputs, distillation_coef=1.0,
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
  c = _check_inputs(variant, inputs)
  returns = pseudo_returns(terms.pseudo_rewards, c.discounts, bootstrap)
  log_probs = losses.categorical_log_prob(c.student_logits[:-1], c.actions)
  surrogate = -log_probs * returns + terms.loss
  return _apply_mask(surrogate, c.mask)


def distillation_metrics(inputs: DistillationInputs) -> Dict[str, tf.Tensor]:
  """Summaries of how far the student is from the teacher on the batch's states s_0 … s_{T−1}.

  Args:
    inputs: a `DistillationInputs`; only the logits and the mask are read.

  Returns:
    Masked means, gradients stopped: `kl_teacher_student` = KL(π‖π_θ), `kl_student_teacher` =
    KL(π_θ‖π), `student_entropy` and `teacher_entropy` (nats).
  """
  c = _check_inputs(DEFAULT_VARIANT, inputs)
  student = tf.stop_gradient(c.student_logits[:-1])
  teacher = c.teacher_logits[:-1]
  student_entropy = _entropy(student)
  teacher_entropy = _entropy(teacher)
  return {
      'kl_teacher_student': losses.masked_mean(cross_entropy(teacher, student) - teacher_entropy, c.mask),
      'kl_student_teacher': losses.masked_mean(cross_entropy(student, teacher) - student_entropy, c.mask),
      'student_entropy': losses.masked_mean(student_entropy, c.mask),
      'teacher_entropy': losses.masked_mean(teacher_entropy, c.mask),
  }


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
  variant: str = DEFAULT_VARIANT
  distillation_coef: float = 1.0
  reward_coef: float = 1.0

  def __post_init__(self):
    check_variant(self.variant)
    for name in ('distillation_coef', 'reward_coef'):
      value = getattr(self, name)
      if value < 0:
        raise errors.ConfigError(f'DistillationConfig.{name} must be >= 0; got {value}.')

  @property
  def sampled_by(self) -> str:
    """'teacher' or 'student': whose trajectories the variant's update expects."""
    return SAMPLED_BY[self.variant]

  @property
  def required_fields(self) -> Tuple[str, ...]:
    """The optional `DistillationInputs` fields the variant needs."""
    return REQUIRED_FIELDS[self.variant]

  def surrogate(self, inputs: DistillationInputs, distillation_coef=None, reward_coef=None,
                bootstrap=None) -> tf.Tensor:
    """`distillation_surrogate` with this config's variant; coefficients default to this config's
    (pass variables to override them with values read at run time)."""
    return distillation_surrogate(
        self.variant, inputs,
        distillation_coef=self.distillation_coef if distillation_coef is None else distillation_coef,
        reward_coef=self.reward_coef if reward_coef is None else reward_coef,
        bootstrap=bootstrap)
