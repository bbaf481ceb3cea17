"""Pure loss and return functions for PPO (and, reused, for RND and IMPALA learners).

Every function here is stateless: tensors in, tensors out, no variables, no gin, no flags.
Losses return `(loss, metrics)` where `loss` is a scalar to be *minimised* and `metrics` is a
dict of scalar tensors with gradients stopped, ready to be written as summaries.

Conventions shared by every function:

* Tensors are TIME-MAJOR: `[T, B]` (time first, then batch), `[T, B, A]` for logits over `A`
  actions. Index `t` in a docstring is the position along the first axis.
* A transition at index `t` is (s_t, a_t, r_t, s_{t+1}): `rewards[t]` is the reward received
  for acting in s_t, and `discounts[t]` multiplies the value of s_{t+1}. `discounts[t]` already
  contains γ and the termination mask, i.e. `γ · (1 − terminated_{t+1})`. This is the layout of
  a TF-Agents `Trajectory` (its `reward`/`discount` describe the step from t to t+1).
* `mask` arguments (optional, same shape as the per-step quantity, float or bool) mark which
  entries are real data (1) and which are padding (0). Masked-out entries never influence a
  result, even if they hold NaN or inf.
* Hyperparameters that a population-based-training controller moves at run time (`clip_epsilon`,
  `lambda_`) may be Python floats or scalar tensors / `tf.Variable`s; variables are read when the
  compiled step runs, so assigning them takes effect without retracing.
* Static ranks and dtypes are checked when the function is traced; a mismatch raises a one-line
  `ValueError` (shape) or `TypeError` (dtype) naming the argument, the shape it has and the shape
  it needs.
"""

import numbers

import tensorflow as tf

_TIME_MAJOR = "[T, B]"


# ----------------------------------------------------------------------------------------------
# Argument checks (trace time, static shapes only; unknown ranks are let through).
# ----------------------------------------------------------------------------------------------


def _float_tensor(x, name, dtype=None):
  """Converts `x` to a tensor and checks it holds floating-point values."""
  # Only Python values take the dtype hint: a tensor of another dtype must fail with the clear
  # message of `_check_same_dtype`, not tf.convert_to_tensor's.
  x = tf.convert_to_tensor(x, dtype=None if tf.is_tensor(x) or hasattr(x, "dtype") else dtype)
  if not x.dtype.is_floating:
    raise TypeError(
        f"`{name}` must be a floating-point tensor; got dtype {x.dtype.name}. "
        f"Cast it with tf.cast(..., tf.float32).")
  return x


def _check_rank(x, rank, name, layout):
  """Raises a ValueError naming `x`'s shape unless its static rank is `rank`."""
  if x.shape.rank is not None and x.shape.rank != rank:
    raise ValueError(
        f"`{name}` must have rank {rank} (time-major {layout}); got shape {x.shape}.")


def _check_same_shape(x, x_name, reference, reference_name):
  """Raises a ValueError unless `x` and `reference` have compatible static shapes."""
  if not x.shape.is_compatible_with(reference.shape):
    raise ValueError(
        f"`{x_name}` has shape {x.shape} but must match `{reference_name}`'s shape "
        f"{reference.shape}.")


def _check_same_dtype(x, x_name, reference, reference_name):
  """Raises a TypeError unless `x` has the dtype of `reference`."""
  if x.dtype != reference.dtype:
    raise TypeError(
        f"`{x_name}` has dtype {x.dtype.name} but `{reference_name}` has "
        f"{reference.dtype.name}; cast them to the same float dtype.")


def _time_major(x, name, reference=None, reference_name=None):
  """Converts `x` to a float `[T, B]` tensor, matching `reference`'s shape and dtype if given."""
  x = _float_tensor(x, name, dtype=None if reference is None else reference.dtype)
  _check_rank(x, 2, name, _TIME_MAJOR)
  if reference is not None:
    _check_same_dtype(x, name, reference, reference_name)
    _check_same_shape(x, name, reference, reference_name)
  return x


def _hyperparameter(value, name, dtype, minimum=0.0, maximum=None, allowed_ranks=(0,),
                    reference=None):
  """Returns `value` as a tensor of `dtype`, reading variables at run time.

  Python numbers are validated against [minimum, maximum] immediately. Tensors and variables are
  only rank-checked: their value is not known until run time (PBT may assign them).
  """
  if isinstance(value, numbers.Real) and not isinstance(value, bool):
    if value < minimum or (maximum is not None and value > maximum):
      bounds = f"in [{minimum}, {maximum}]" if maximum is not None else f">= {minimum}"
      raise ValueError(f"`{name}` must be {bounds}; got {value}.")
    return tf.constant(value, dtype=dtype)
  # tf.cast reads a tf.Variable's current value inside the compiled step.
  tensor = tf.cast(value, dtype)
  rank = tensor.shape.rank
  if rank is not None and rank not in allowed_ranks:
    wanted = " or ".join("a scalar" if r == 0 else f"rank {r} {_TIME_MAJOR}"
                         for r in allowed_ranks)
    raise ValueError(f"`{name}` must be {wanted}; got shape {tensor.shape}.")
  if reference is not None and rank == 2:
    _check_same_shape(tensor, name, reference, "rewards")
  return tensor


def _mask_like(mask, x, x_description):
  """Converts `mask` (float or bool) to `x`'s dtype after checking it has `x`'s shape."""
  mask = tf.convert_to_tensor(mask)
  if not (mask.dtype.is_floating or mask.dtype.is_bool or mask.dtype.is_integer):
    raise TypeError(f"`mask` must be a float, int or bool tensor; got dtype {mask.dtype.name}.")
  if not mask.shape.is_compatible_with(x.shape):
    raise ValueError(
        f"`mask` has shape {mask.shape} but must have the shape of {x_description}, "
        f"{x.shape}.")
  return tf.cast(mask, x.dtype)


# ----------------------------------------------------------------------------------------------
# Reductions.
# ----------------------------------------------------------------------------------------------


def masked_mean(x, mask=None):
  """Mean of `x` over the entries where `mask` is non-zero.

  `mean = Σ_i mask_i · x_i / Σ_i mask_i`, with entries whose mask is 0 replaced by 0 first, so
  NaN or inf in padding cannot leak in. A non-binary float mask gives a weighted mean.
  An all-zero mask returns 0 (not NaN), so an empty minibatch does not poison a summed loss.

  Args:
    x: float tensor of any shape (in this module usually time-major `[T, B]`).
    mask: optional float/int/bool tensor with the same shape as `x`; None means all ones.

  Returns:
    A scalar tensor of `x`'s dtype.

  Raises:
    ValueError: if `mask`'s static shape differs from `x`'s.
    TypeError: if `x` is not floating point.
  """
  x = _float_tensor(x, "x")
  if mask is None:
    return tf.reduce_mean(x)
  mask = _mask_like(mask, x, "`x`")
  total = tf.reduce_sum(tf.where(mask != 0, x * mask, tf.zeros_like(x)))
  return tf.math.divide_no_nan(total, tf.reduce_sum(mask))


def _masked_variance(x, mask):
  """Population variance (ddof = 0) of `x` over the entries selected by `mask`."""
  mean = masked_mean(x, mask)
  return masked_mean(tf.square(x - mean), mask)


def normalize_advantages(advantages, mask=None, epsilon=1e-8):
  """Standardises advantages: `(A − mean(A)) / (std(A) + ε)` over the masked entries.

  The mean and the population standard deviation (ddof = 0, as OpenAI baselines' PPO2) are taken
  over every entry where `mask` is non-zero; masked-out entries of the output are set to 0 so
  they contribute nothing downstream even if the input held garbage there.

  Args:
    advantages: float tensor, time-major `[T, B]` (any shape is accepted: the statistics are over
      all entries, e.g. a whole minibatch).
    mask: optional float/bool tensor with `advantages`' shape; None means all ones.
    epsilon: small non-negative float added to the standard deviation so a constant batch maps
      to 0 instead of NaN.

  Returns:
    A tensor with `advantages`' shape and dtype.
  """
  advantages = _float_tensor(advantages, "advantages")
  epsilon = _hyperparameter(epsilon, "epsilon", advantages.dtype)
  if mask is not None:
    mask = _mask_like(mask, advantages, "`advantages`")
  mean = masked_mean(advantages, mask)
  std = tf.sqrt(_masked_variance(advantages, mask))
  normalized = (advantages - mean) / (std + epsilon)
  if mask is None:
    return normalized
  return tf.where(mask != 0, normalized, tf.zeros_like(normalized))



def partly_normalized_advantages(advantages, unnormalized_advantages=None, mask=None, epsilon=1e-8):
  """`normalize_advantages(advantages, mask) + unnormalized_advantages`: the normalisation of one part only.

  PPO's per-minibatch standardisation divides the policy-gradient term by std(A) while a loss added beside
  it (a kickstarter's ℓ) keeps its weight. For advantages of pseudo-rewards that are meant to be weighed
  against that loss exactly (eq. 1 of Czarnecki et al. 2019, see `agents/distillation/kickstarting.py`), the
  statistics are taken over `advantages` alone and `unnormalized_advantages` are added after:

      Â_t = (A_t − mean(A)) / (std(A) + ε) + Ã_t          (mean and std over the masked entries)

  Args:
    advantages: float `[T, B]` (any shape), the part that is standardised (the environment's).
    unnormalized_advantages: float, `advantages`' shape, added unchanged; None: nothing is added (the
      result is `normalize_advantages(advantages, mask, epsilon)`).
    mask: optional float/bool, `advantages`' shape; masked-out entries of the result are 0.
    epsilon: added to the standard deviation, as in `normalize_advantages`.

  Returns:
    A tensor with `advantages`' shape and dtype.
  """
  normalized = normalize_advantages(advantages, mask, epsilon)
  if unnormalized_advantages is None:
    return normalized
  unnormalized_advantages = _float_tensor(unnormalized_advantages, "unnormalized_advantages",
                                          dtype=normalized.dtype)
  _check_same_dtype(unnormalized_advantages, "unnormalized_advantages", normalized, "advantages")
  _check_same_shape(unnormalized_advantages, "unnormalized_advantages", normalized, "advantages")
  if mask is not None:
    mask = _mask_like(mask, normalized, "`advantages`")
    unnormalized_advantages = tf.where(mask != 0, unnormalized_advantages,
                                       tf.zeros_like(unnormalized_advantages))
  return normalized + unnormalized_advantages

# ----------------------------------------------------------------------------------------------
# Returns.
# ----------------------------------------------------------------------------------------------


def generalized_advantage_estimation(rewards, discounts, values, bootstrap_value, lambda_):
  """Generalized advantage estimation, GAE(γ, λ) (Schulman et al. 2016, arXiv 1506.02438).

  With time-major `[T, B]` inputs, for t = T−1 … 0:

      δ_t = r_t + discount_t · V(s_{t+1}) − V(s_t)                       (eq. 10's TD residual)
      A_t = δ_t + discount_t · λ_t · A_{t+1},   A_T = 0
          = Σ_{l ≥ 0} (Π_{k < l} discount_{t+k} λ_{t+k}) δ_{t+l}         (eq. 16)
      returns_t = A_t + V(s_t)                      (the λ-return, the value-function target)

  where V(s_T) = `bootstrap_value`. `discount_t` already folds in γ and the termination mask
  (0 when the episode terminated at s_{t+1}), which replaces the paper's γ^l by the product of
  discounts so no advantage crosses a termination.

  A per-step `lambda_` (`[T, B]`) stops propagation without touching the bootstrap: for an
  episode *truncated* after step t (time limit, not a terminal state), set `discounts[t] = γ` (so
  δ_t still bootstraps on V(s_{t+1})) and `lambda_[t] = 0` (so A_{t+1}, which belongs to the
  next episode, does not flow into A_t). For this to be correct `values[t + 1]` (or
  `bootstrap_value`) must be the value of the truncated episode's last observation.
  λ = 1 gives the discounted Monte-Carlo return plus bootstrap; λ = 0 gives one-step TD.

  Non-episodic use (e.g. RND's intrinsic stream): pass `discounts = γ_I` everywhere.

  Args:
    rewards: float `[T, B]`, r_t, the reward after acting at step t.
    discounts: float `[T, B]`, discount_t = γ · (1 − terminated_{t+1}); multiplies V(s_{t+1}).
    values: float `[T, B]`, V(s_t) under the policy that is being evaluated.
    bootstrap_value: float `[B]`, V(s_T), the value of the state after the last transition.
    lambda_: λ in [0, 1]; a Python float, a scalar tensor / tf.Variable, or a `[T, B]` tensor of
      per-step λ_t.

  Returns:
    `(advantages, returns)`, both float `[T, B]` with gradients stopped (they are regression
    and policy-gradient targets, never differentiated through).

  Raises:
    ValueError: on a rank or shape mismatch (the message names the offending shape), or a
      Python `lambda_` outside [0, 1].
    TypeError: on non-float inputs or mixed float dtypes.
  """
  rewards = _time_major(rewards, "rewards")
  discounts = _time_major(discounts, "discounts", rewards, "rewards")
  values = _time_major(values, "values", rewards, "rewards")
  bootstrap_value = _float_tensor(bootstrap_value, "bootstrap_value", dtype=rewards.dtype)
  _check_same_dtype(bootstrap_value, "bootstrap_value", rewards, "rewards")
  if bootstrap_value.shape.rank is not None and (
      bootstrap_value.shape.rank != 1
      or not bootstrap_value.shape.is_compatible_with(rewards.shape[1:])):
    raise ValueError(
        f"`bootstrap_value` must have shape [B] = {rewards.shape[1:]} (V(s_T) per batch "
        f"entry); got shape {bootstrap_value.shape}.")
  lambda_ = _hyperparameter(lambda_, "lambda_", rewards.dtype, minimum=0.0, maximum=1.0,
                            allowed_ranks=(0, 2), reference=rewards)

  v_t = values
  v_tp1 = tf.concat([values[1:], bootstrap_value[tf.newaxis]], axis=0)
  delta_t = rewards + discounts * v_tp1 - v_t
  # λ_t · discount_t is the weight with which A_{t+1} flows back into A_t.
  trace_decay_t = discounts * tf.broadcast_to(lambda_, tf.shape(rewards))

  def backward_step(advantage_tp1, step):
    delta, decay = step
    return delta + decay * advantage_tp1

  advantages = tf.scan(
      backward_step, (delta_t, trace_decay_t),
      initializer=tf.zeros_like(bootstrap_value), reverse=True)
  returns = advantages + v_t
  return tf.stop_gradient(advantages), tf.stop_gradient(returns)


# ----------------------------------------------------------------------------------------------
# Policy terms.
# ----------------------------------------------------------------------------------------------


def categorical_log_prob(logits, actions):
  """log π(a | s) of a categorical policy: `log_softmax(logits)[..., a]`.

  Args:
    logits: float `[..., A]` unnormalised log-probabilities (time-major `[T, B, A]` in the
      learner). Entries of −inf (illegal actions) are allowed as long as the chosen action's
      logit is finite.
    actions: integer `[...]` (same leading shape as `logits`), values in [0, A).

  Returns:
    float `[...]` log-probabilities, differentiable with respect to `logits`.

  Raises:
    ValueError: if `logits`' rank is not `actions`' rank + 1 or the leading shapes differ.
    TypeError: if `actions` is not an integer tensor or `logits` not floating point.
  """
  logits = _float_tensor(logits, "logits")
  actions = tf.convert_to_tensor(actions)
  if not actions.dtype.is_integer:
    raise TypeError(
        f"`actions` must be an integer tensor of action indices; got dtype {actions.dtype.name}.")
  if logits.shape.rank is not None and actions.shape.rank is not None and (
      logits.shape.rank != actions.shape.rank + 1
      or not logits.shape[:-1].is_compatible_with(actions.shape)):
    raise ValueError(
        f"`logits` must have shape `actions.shape + [A]`; got logits shape {logits.shape} and "
        f"actions shape {actions.shape}.")
  if actions.dtype not in (tf.int32, tf.int64):
    actions = tf.cast(actions, tf.int64)
  # The fused kernel equals −log_softmax(logits)[a] and is stable for large or −inf logits.
  return -tf.nn.sparse_softmax_cross_entropy_with_logits(labels=actions, logits=logits)


def clipped_surrogate_loss(log_probs, behaviour_log_probs, advantages, clip_epsilon, mask=None):
  """PPO's clipped surrogate objective, negated (Schulman et al. 2017, arXiv 1707.06347, eq. 7).

  With time-major `[T, B]` inputs:

      ρ_t = exp(log π(a_t|s_t) − log π_old(a_t|s_t))
      L^CLIP = mean_t[ min(ρ_t · A_t, clip(ρ_t, 1 − ε, 1 + ε) · A_t) ]
      loss = −L^CLIP

  Where the clipped term is the smaller one (ρ > 1 + ε with A > 0, or ρ < 1 − ε with A < 0) the
  loss is constant in the policy, so its gradient there is exactly 0.

  `behaviour_log_probs` and `advantages` are data: gradients through them are stopped.

  Args:
    log_probs: float `[T, B]`, log π(a_t|s_t) under the policy being trained.
    behaviour_log_probs: float `[T, B]`, log π_old(a_t|s_t) recorded when acting.
    advantages: float `[T, B]`, A_t (e.g. from `generalized_advantage_estimation`).
    clip_epsilon: ε ≥ 0; a Python float or a scalar tensor / tf.Variable read at run time.
    mask: optional float/bool `[T, B]`; 0 marks padding to ignore.

  Returns:
    `(loss, metrics)`: scalar loss; metrics (gradients stopped, masked means):
      `clip_fraction`: fraction of steps with |ρ − 1| > ε.
      `approx_kl`: mean((ρ − 1) − log ρ), a non-negative, unbiased estimator of KL(π_old ‖ π).
      `ratio_mean`: mean(ρ).

  Raises:
    ValueError: on a rank or shape mismatch, or a negative Python `clip_epsilon`.
    TypeError: on non-float inputs or mixed float dtypes.
  """
  log_probs = _time_major(log_probs, "log_probs")
  behaviour_log_probs = _time_major(
      behaviour_log_probs, "behaviour_log_probs", log_probs, "log_probs")
  advantages = _time_major(advantages, "advantages", log_probs, "log_probs")
  clip_epsilon = _hyperparameter(clip_epsilon, "clip_epsilon", log_probs.dtype)
  if mask is not None:
    mask = _mask_like(mask, log_probs, "`log_probs`")

  advantages = tf.stop_gradient(advantages)
  log_ratio = log_probs - tf.stop_gradient(behaviour_log_probs)
  ratio = tf.exp(log_ratio)
  clipped_ratio = tf.clip_by_value(ratio, 1.0 - clip_epsilon, 1.0 + clip_epsilon)
  surrogate = tf.minimum(ratio * advantages, clipped_ratio * advantages)
  loss = -masked_mean(surrogate, mask)

  ratio = tf.stop_gradient(ratio)
  log_ratio = tf.stop_gradient(log_ratio)
  clipped = tf.cast(tf.abs(ratio - 1.0) > clip_epsilon, ratio.dtype)
  metrics = {
      "clip_fraction": masked_mean(clipped, mask),
      # The "k3" estimator: E_old[(ρ − 1) − log ρ] = KL(π_old ‖ π), each term ≥ 0.
      "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
      "ratio_mean": masked_mean(ratio, mask),
  }
  return loss, metrics


def entropy_loss(logits, mask=None):
  """Negative mean policy entropy: `loss = −mean_t H(softmax(logits_t))`.

  H(π) = −Σ_a π(a) log π(a), computed from `log_softmax` for stability. Adding
  `entropy_coef · loss` to a minimised total therefore *maximises* entropy (the exploration
  bonus of Mnih et al. 2016 and PPO's c₂ term, Schulman et al. 2017, eq. 9). Actions with logit
  −inf (illegal) contribute 0, not NaN.

  Args:
    logits: float `[T, B, A]`, time-major unnormalised log-probabilities over A actions.
    mask: optional float/bool `[T, B]`; 0 marks padding to ignore.

  Returns:
    `(loss, metrics)`: scalar loss; metrics: `entropy`, the masked mean entropy (nats),
    gradients stopped.

  Raises:
    ValueError: if `logits` is not rank 3 or `mask` is not `logits.shape[:2]`.
    TypeError: if `logits` is not floating point.
  """
  logits = _float_tensor(logits, "logits")
  _check_rank(logits, 3, "logits", "[T, B, A]")
  log_policy = tf.nn.log_softmax(logits, axis=-1)
  policy = tf.exp(log_policy)
  # multiply_no_nan gives 0 · (−inf) = 0 for illegal actions (probability exactly 0).
  entropy = -tf.reduce_sum(tf.math.multiply_no_nan(log_policy, policy), axis=-1)
  if mask is not None:
    mask = _mask_like(mask, entropy, "`logits` without its action axis ([T, B])")
  mean_entropy = masked_mean(entropy, mask)
  return -mean_entropy, {"entropy": tf.stop_gradient(mean_entropy)}


# ----------------------------------------------------------------------------------------------
# Value terms.
# ----------------------------------------------------------------------------------------------


def value_loss(values, returns, behaviour_values=None, clip_epsilon=None, mask=None):
  """Squared-error value loss, optionally with PPO2's value clipping.

  With time-major `[T, B]` inputs:

      unclipped:  loss = ½ · mean_t (V_t − R_t)²
      clipped:    V^clip_t = V^old_t + clip(V_t − V^old_t, −ε, ε)
                  loss = ½ · mean_t max((V_t − R_t)², (V^clip_t − R_t)²)

  The clipped form is the one in OpenAI baselines' PPO2 (not in the PPO paper, whose eq. 9 uses
  the plain squared error); it is pessimistic: where the clipped error is the larger one, the
  gradient is 0. `returns` and `behaviour_values` are targets: gradients through them are
  stopped.

  Args:
    values: float `[T, B]`, V(s_t) under the network being trained.
    returns: float `[T, B]`, the regression targets R_t (e.g. GAE's λ-returns).
    behaviour_values: float `[T, B]`, V_old(s_t) recorded when the batch was collected;
      required when `clip_epsilon` is given, otherwise unused.
    clip_epsilon: None (no clipping), or ε ≥ 0 as a Python float or a scalar tensor /
      tf.Variable read at run time. Note ε is in the units of the value (returns), not a ratio.
    mask: optional float/bool `[T, B]`; 0 marks padding to ignore.

  Returns:
    `(loss, metrics)`: scalar loss; metrics (gradients stopped):
      `explained_variance`: 1 − Var[R − V] / Var[R] over masked entries; 1 is a perfect fit,
      0 no better than a constant; reported as 0 when Var[R] = 0.

  Raises:
    ValueError: on a rank or shape mismatch, or `clip_epsilon` without `behaviour_values`.
    TypeError: on non-float inputs or mixed float dtypes.
  """
  values = _time_major(values, "values")
  returns = tf.stop_gradient(_time_major(returns, "returns", values, "values"))
  if mask is not None:
    mask = _mask_like(mask, values, "`values`")

  squared_error = tf.square(values - returns)
  if clip_epsilon is None:
    per_step = squared_error
  else:
    if behaviour_values is None:
      raise ValueError(
          "`value_loss` got clip_epsilon but no behaviour_values; pass the values recorded at "
          "collection time, or clip_epsilon=None to disable value clipping.")
    behaviour_values = tf.stop_gradient(
        _time_major(behaviour_values, "behaviour_values", values, "values"))
    clip_epsilon = _hyperparameter(clip_epsilon, "clip_epsilon", values.dtype)
    clipped_values = behaviour_values + tf.clip_by_value(
        values - behaviour_values, -clip_epsilon, clip_epsilon)
    per_step = tf.maximum(squared_error, tf.square(clipped_values - returns))
  loss = 0.5 * masked_mean(per_step, mask)

  stopped_values = tf.stop_gradient(values)
  returns_variance = _masked_variance(returns, mask)
  residual_variance = _masked_variance(returns - stopped_values, mask)
  explained_variance = tf.where(
      returns_variance > 0,
      1.0 - tf.math.divide_no_nan(residual_variance, returns_variance),
      tf.zeros_like(returns_variance))
  return loss, {"explained_variance": explained_variance}
