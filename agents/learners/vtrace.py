"""V-trace, IMPALA's off-policy correction (Espeholt et al. 2018, arXiv 1802.01561), as a pure function.

Tensors in, tensors out: no variables, no gin. Conventions are those of `agents.learners.losses`: time-major
`[T, B]`; transition t is (x_t, a_t, r_t, x_{t+1}); `discounts[t]` = γ · (1 − terminated_{t+1}) already
holds γ and the termination mask; thresholds and λ may be Python floats or scalar tensors / `tf.Variable`s
(read when the compiled step runs, so a schedule or PBT can move them without a retrace); static ranks and
dtypes are checked at trace time with one-line errors.

Paper notation (Section 4.1, eq. 1 and Remark 1), with the per-step discounts in place of γ^{t−s}:

    ρ_t = min(ρ̄, π(a_t|x_t) / μ(a_t|x_t)),     c_i = λ · min(c̄, π(a_i|x_i) / μ(a_i|x_i))
    δ_t V = ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t))
    v_s = V(x_s) + Σ_{t ≥ s} (Π_{i=s}^{t−1} γ_i c_i) δ_t V                               (eq. 1)
        = V(x_s) + δ_s V + γ_s c_s (v_{s+1} − V(x_{s+1}))                                (Remark 1)

and the policy-gradient advantage of Section 4.2, ρ^pg_s (r_s + γ_s v_{s+1} − V(x_s)) with
ρ^pg_s = min(ρ̄_pg, π/μ). `vtrace` runs Remark 1's recursion backwards over time with `tf.scan`.
"""

import typing

import tensorflow as tf

from protege.agents.learners import losses

_float_tensor = losses._float_tensor  # pylint: disable=protected-access
_time_major = losses._time_major  # pylint: disable=protected-access
_hyperparameter = losses._hyperparameter  # pylint: disable=protected-access
_mask_like = losses._mask_like  # pylint: disable=protected-access
_check_same_dtype = losses._check_same_dtype  # pylint: disable=protected-access


class VTraceReturns(typing.NamedTuple):
  """What `vtrace` returns; every field time-major `[T, B]`, gradients stopped.

  Attributes:
    vs: v_s, the V-trace targets of V(x_s) (eq. 1); V(x_s) itself on masked transitions.
    pg_advantages: ρ^pg_s (r_s + γ_s v_{s+1} − V(x_s)), the policy gradient's advantage; 0 where masked.
    log_rhos: log π(a_s|x_s) − log μ(a_s|x_s), unclipped; 0 where masked.
    clipped_rhos: ρ_s = min(ρ̄, π/μ), the weights of the temporal differences; 0 where masked.
    cs: c_s = λ · min(c̄, π/μ), the trace coefficients; 0 where masked.
  """
  vs: tf.Tensor
  pg_advantages: tf.Tensor
  log_rhos: tf.Tensor
  clipped_rhos: tf.Tensor
  cs: tf.Tensor


def _threshold(value, name, dtype):
  """A clipping threshold as a tensor; None means no clipping (+∞)."""
  if value is None:
    return tf.constant(float('inf'), dtype)
  return _hyperparameter(value, name, dtype)


def vtrace(behaviour_log_probs,
           target_log_probs,
           rewards,
           discounts,
           values,
           bootstrap_value,
           clip_rho_threshold=1.0,
           clip_c_threshold=1.0,
           clip_pg_rho_threshold=1.0,
           lambda_=1.0,
           mask=None) -> VTraceReturns:
  """V-trace targets and policy-gradient advantages (Espeholt et al. 2018, eq. 1, Remark 1, Section 4.2).

  With time-major `[T, B]` inputs, for s = T−1 … 0 (see the module docstring for the notation):

      v_s − V(x_s) = δ_s V + γ_s c_s (v_{s+1} − V(x_{s+1})),     v_T = V(x_T) = `bootstrap_value`
      pg_advantage_s = ρ^pg_s (r_s + γ_s v_{s+1} − V(x_s))

  On-policy (π = μ) with ρ̄, c̄ ≥ 1 and λ = 1, every ρ and c is 1 and v_s is the n-step bootstrapped
  return Σ_{t=s}^{T−1} (Π_{i=s}^{t−1} γ_i) r_t + (Π_{i=s}^{T−1} γ_i) V(x_T). With ρ̄ = c̄ = ∞ (None) it
  is the importance-weighted off-policy return; λ < 1 shortens the traces (Remark 2).

  `mask` removes transitions from the trajectory, e.g. the reset transition that starts at an episode's
  LAST step (the environment ignored its action; x_{s+1} is the next episode's FIRST step). A masked
  transition has δ_s = 0 and c_s = 0, so v_s = V(x_s) and no trace crosses it: the transition before it
  bootstraps on V(x_s) alone — the value of the episode's final observation, which is what a truncated
  episode (γ_{s−1} > 0) needs; a terminated one has γ_{s−1} = 0 anyway. A masked transition's log-probs,
  reward and discount never reach an output, even if they are NaN or inf (its V(x_s) does, as above).

  Args:
    behaviour_log_probs: float `[T, B]`, log μ(a_s|x_s) of the policy that acted (recorded by the actor).
    target_log_probs: float `[T, B]`, log π(a_s|x_s) under the policy being learned.
    rewards: float `[T, B]`, r_s.
    discounts: float `[T, B]`, γ_s = γ · (1 − terminated_{s+1}); multiplies values of x_{s+1}.
    values: float `[T, B]`, V(x_s) of the value function being learned.
    bootstrap_value: float `[B]`, V(x_T).
    clip_rho_threshold: ρ̄ ≥ 0 (paper: 1), or None for no clipping; float, scalar tensor or tf.Variable.
    clip_c_threshold: c̄ ≥ 0 (paper: 1; ρ̄ ≥ c̄ in the paper's analysis), or None for no clipping.
    clip_pg_rho_threshold: ρ̄_pg ≥ 0 for the policy-gradient weights (paper: ρ̄ = 1), or None.
    lambda_: λ in [0, 1] of c_i (Remark 2); a float, scalar tensor / tf.Variable, or `[T, B]` per step.
    mask: optional float/bool `[T, B]`; 0 removes a transition (see above). None: every transition counts.

  Returns:
    A `VTraceReturns` of `[T, B]` tensors with gradients stopped (targets and weights, never
    differentiated through).

  Raises:
    ValueError: on a rank or shape mismatch (the message names the shape), or a Python threshold < 0 or
      λ outside [0, 1].
    TypeError: on non-float inputs or mixed float dtypes.
  """
  rewards = _time_major(rewards, 'rewards')
  behaviour_log_probs = _time_major(behaviour_log_probs, 'behaviour_log_probs', rewards, 'rewards')
  target_log_probs = _time_major(target_log_probs, 'target_log_probs', rewards, 'rewards')
  discounts = _time_major(discounts, 'discounts', rewards, 'rewards')
  values = _time_major(values, 'values', rewards, 'rewards')
  bootstrap_value = _float_tensor(bootstrap_value, 'bootstrap_value', dtype=rewards.dtype)
  _check_same_dtype(bootstrap_value, 'bootstrap_value', rewards, 'rewards')
  if bootstrap_value.shape.rank is not None and (
      bootstrap_value.shape.rank != 1 or not bootstrap_value.shape.is_compatible_with(rewards.shape[1:])):
    raise ValueError(f'`bootstrap_value` must have shape [B] = {rewards.shape[1:]} (V(x_T) per batch '
                     f'entry); got shape {bootstrap_value.shape}.')
  dtype = rewards.dtype
  rho_bar = _threshold(clip_rho_threshold, 'clip_rho_threshold', dtype)
  c_bar = _threshold(clip_c_threshold, 'clip_c_threshold', dtype)
  pg_rho_bar = _threshold(clip_pg_rho_threshold, 'clip_pg_rho_threshold', dtype)
  lambda_ = _hyperparameter(lambda_, 'lambda_', dtype, minimum=0.0, maximum=1.0, allowed_ranks=(0, 2),
                            reference=rewards)
  if mask is None:
    keep = tf.ones_like(rewards, dtype=tf.bool)
  else:
    keep = _mask_like(mask, rewards, '`rewards`') != 0

  # Masked entries are replaced before any arithmetic, so their NaN or inf cannot leak (NaN · 0 is NaN).
  # `values` stay as given: V(x_s) of a masked s is the bootstrap of transition s − 1.
  zeros = tf.zeros_like(rewards)
  clean = lambda x: tf.where(keep, x, zeros)
  log_rhos = clean(target_log_probs - behaviour_log_probs)
  rewards, discounts = clean(rewards), clean(discounts)
  rhos = tf.exp(log_rhos)
  clipped_rhos = clean(tf.minimum(rho_bar, rhos))
  cs = clean(lambda_ * tf.minimum(c_bar, rhos))
  values_tp1 = tf.concat([values[1:], bootstrap_value[tf.newaxis]], axis=0)
  deltas = clean(clipped_rhos * (rewards + discounts * values_tp1 - values))

  def backward_step(vs_minus_v_tp1, step):
    delta, discount, c, kept = step
    # A masked step restarts the recursion at 0 (v_s = V(x_s)); `where`, not a product with c_s = 0, so
    # nothing of the next episode leaks back, not even a NaN.
    return tf.where(kept, delta + discount * c * vs_minus_v_tp1, tf.zeros_like(delta))

  vs_minus_v = tf.scan(backward_step, (deltas, discounts, cs, keep),
                       initializer=tf.zeros_like(bootstrap_value), reverse=True)
  vs = values + vs_minus_v
  vs_tp1 = tf.concat([vs[1:], bootstrap_value[tf.newaxis]], axis=0)
  clipped_pg_rhos = tf.minimum(pg_rho_bar, rhos)
  pg_advantages = clean(clipped_pg_rhos * (rewards + discounts * vs_tp1 - values))
  return VTraceReturns(vs=tf.stop_gradient(vs), pg_advantages=tf.stop_gradient(pg_advantages),
                       log_rhos=tf.stop_gradient(log_rhos), clipped_rhos=tf.stop_gradient(clipped_rhos),
                       cs=tf.stop_gradient(cs))
