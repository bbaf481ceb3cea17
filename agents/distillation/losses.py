"""The shared parts of the policy-distillation updates (Czarnecki et al., "Distilling Policy Distillation",
AISTATS 2019, arXiv 1902.02186), the kickstarting loss (Schmitt et al. 2018, arXiv 1803.03835) among them.

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

This module holds what every variant shares: the table above as data (`VARIANTS`, `SAMPLED_BY`,
`TRUE_GRADIENT_FIELD`, `REQUIRED_FIELDS`), the batch an update reads (`DistillationInputs`) and its checks,
the cross-entropy H×, the returns R̂ of the pseudo-rewards (`pseudo_returns`) and the student–teacher
metrics. Each variant's (ℓ, r̂), the surrogate whose gradient is eq. 1 and the gin `DistillationConfig` are
in `agents/distillation/variants.py`, with how each row was settled from the paper.

Conventions (as `agents/learners/losses.py`): time-major; transition t is (s_t, a_t, r_t, s_{t+1});
`discounts[t] = γ·(1 − terminated_{t+1})`. Logits have T + 1 rows: row T is s_T, the state after the
last transition (needed by the next-state rewards). The last step of `expected_entropy_regularised`
needs a_T, which the batch does not hold; its log π(a_T|s_T) is replaced by its expectation under the
student, Σ_a π_θ(a|s_T) log π(a|s_T) — unbiased when the student samples, as this variant assumes.
Teacher logits and values, student values and every pseudo-reward have their gradients stopped.
Coefficients may be Python floats or scalar tensors / `tf.Variable`s, read when the compiled step runs.
"""

from typing import Dict, NamedTuple, Optional

import tensorflow as tf

from protege.agents.learners import losses
from protege.runtime import errors

# The argument checks of agents/learners/losses.py, shared so both modules report errors the same way.
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


class CheckedInputs(NamedTuple):
  """Converted and checked inputs (`check_inputs`); the teacher's tensors and the values are already stopped."""
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


def check_inputs(variant: str, inputs: DistillationInputs) -> CheckedInputs:
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
  return CheckedInputs(student_logits, tf.stop_gradient(teacher_logits), actions, rewards, discounts,
                  teacher_values, student_values, mask)


def coefficient(value, name, dtype):
  """A variant's weight (α or β) as a scalar of `dtype`: a Python float ≥ 0 or a scalar tensor / variable."""
  return _hyperparameter(value, name, dtype)


def apply_mask(x, mask):
  """Zeroes the masked-out entries of a `[T, B]` tensor (by selection, so NaN padding cannot leak)."""
  if mask is None:
    return x
  return tf.where(mask != 0, x, tf.zeros_like(x))



# ----------------------------------------------------------------------------------------------
# Returns of the pseudo-rewards, and metrics.
# ----------------------------------------------------------------------------------------------


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



def distillation_metrics(inputs: DistillationInputs) -> Dict[str, tf.Tensor]:
  """Summaries of how far the student is from the teacher on the batch's states s_0 … s_{T−1}.

  Args:
    inputs: a `DistillationInputs`; only the logits and the mask are read.

  Returns:
    Masked means, gradients stopped: `kl_teacher_student` = KL(π‖π_θ), `kl_student_teacher` =
    KL(π_θ‖π), `student_entropy` and `teacher_entropy` (nats).
  """
  c = check_inputs(DEFAULT_VARIANT, inputs)
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
