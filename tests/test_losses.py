"""Tests for agents/learners/losses.py.

Each function is checked against a slow NumPy reference written with explicit loops in the
paper's notation (random inputs, fixed seeds) and against small cases worked out by hand in the
comments. Every check runs eagerly, under `tf.function`, and under `tf.function(jit_compile=True)`.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from tf_modes import f32, mode, run  # noqa: F401 (mode is a fixture)

from protege.agents.learners import losses

RTOL = 1e-5
ATOL = 1e-6


# ----------------------------------------------------------------------------------------------
# Slow NumPy references, written in the papers' notation with explicit loops.
# ----------------------------------------------------------------------------------------------


def gae_reference(r, discount, v, v_bootstrap, lam):
  """Schulman et al. 2016, eq. 16 as a sum: A_t = Σ_l (Π_{k<l} discount_{t+k} λ_{t+k}) δ_{t+l}."""
  T, B = r.shape
  lam = np.broadcast_to(np.asarray(lam, np.float64), (T, B))
  advantages = np.zeros((T, B))
  for b in range(B):
    V = list(v[:, b]) + [v_bootstrap[b]]  # V(s_0) … V(s_T)
    for t in range(T):
      weight, total = 1.0, 0.0
      for l in range(T - t):
        delta = r[t + l, b] + discount[t + l, b] * V[t + l + 1] - V[t + l]
        total += weight * delta
        weight *= discount[t + l, b] * lam[t + l, b]
      advantages[t, b] = total
  return advantages, advantages + v


def monte_carlo_return_reference(r, discount, v_bootstrap):
  """G_t = Σ_{k=t}^{T−1} (Π_{j=t}^{k−1} discount_j) r_k + (Π_{j=t}^{T−1} discount_j) V(s_T)."""
  T, B = r.shape
  G = np.zeros((T, B))
  for b in range(B):
    for t in range(T):
      product, total = 1.0, 0.0
      for k in range(t, T):
        total += product * r[k, b]
        product *= discount[k, b]
      G[t, b] = total + product * v_bootstrap[b]
  return G


def weighted_mean_reference(x, mask):
  numerator, denominator = 0.0, 0.0
  for index in np.ndindex(*x.shape):
    if mask[index] != 0:
      numerator += mask[index] * x[index]
      denominator += mask[index]
  return numerator / denominator if denominator else 0.0


def surrogate_reference(log_pi, log_pi_old, A, eps, mask):
  """Schulman et al. 2017, eq. 7, one step at a time."""
  objective, clipped, kl, ratio = (np.zeros(A.shape) for _ in range(4))
  for index in np.ndindex(*A.shape):
    rho = math.exp(log_pi[index] - log_pi_old[index])
    rho_clipped = min(max(rho, 1 - eps), 1 + eps)
    objective[index] = min(rho * A[index], rho_clipped * A[index])
    clipped[index] = float(abs(rho - 1) > eps)
    kl[index] = (rho - 1) - math.log(rho)
    ratio[index] = rho
  return (-weighted_mean_reference(objective, mask), {
      "clip_fraction": weighted_mean_reference(clipped, mask),
      "approx_kl": weighted_mean_reference(kl, mask),
      "ratio_mean": weighted_mean_reference(ratio, mask),
  })


def value_loss_reference(V, R, V_old, eps, mask):
  per_step = np.zeros(V.shape)
  for index in np.ndindex(*V.shape):
    error = (V[index] - R[index]) ** 2
    if eps is not None:
      V_clipped = V_old[index] + min(max(V[index] - V_old[index], -eps), eps)
      error = max(error, (V_clipped - R[index]) ** 2)
    per_step[index] = error

  def variance(x):
    mean = weighted_mean_reference(x, mask)
    return weighted_mean_reference((x - mean) ** 2, mask)

  var_R = variance(R)
  explained = 1 - variance(R - V) / var_R if var_R > 0 else 0.0
  return 0.5 * weighted_mean_reference(per_step, mask), {"explained_variance": explained}


def log_softmax_reference(logits_row):
  m = max(logits_row)
  log_z = m + math.log(sum(math.exp(l - m) for l in logits_row))
  return [l - log_z for l in logits_row]


def entropy_reference(logits, mask):
  T, B, _ = logits.shape
  H = np.zeros((T, B))
  for t in range(T):
    for b in range(B):
      H[t, b] = -sum(math.exp(lp) * lp for lp in log_softmax_reference(logits[t, b]))
  mean_H = weighted_mean_reference(H, mask)
  return -mean_H, {"entropy": mean_H}


def assert_close(actual, expected, rtol=RTOL, atol=ATOL):
  np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


def assert_metrics_close(actual, expected, rtol=RTOL, atol=ATOL):
  assert set(actual) == set(expected)
  for key in expected:
    np.testing.assert_allclose(actual[key], expected[key], rtol=rtol, atol=atol, err_msg=key)


# ----------------------------------------------------------------------------------------------
# generalized_advantage_estimation
# ----------------------------------------------------------------------------------------------

# One environment (B = 1), T = 3, γ = 0.9, λ = 0.5:
#   r = [1, 0, 2], V(s_0..s_2) = [0.5, 1.0, 1.5], V(s_3) = bootstrap = 2.0.
HAND_REWARDS = f32([[1.0], [0.0], [2.0]])
HAND_VALUES = f32([[0.5], [1.0], [1.5]])
HAND_BOOTSTRAP = f32([2.0])


def _gae(lambda_):
  return lambda r, d, v, bootstrap: losses.generalized_advantage_estimation(
      r, d, v, bootstrap, lambda_)


def test_gae_hand_computed(mode):
  # δ_2 = 2 + 0.9·2.0 − 1.5 = 2.3
  # δ_1 = 0 + 0.9·1.5 − 1.0 = 0.35
  # δ_0 = 1 + 0.9·1.0 − 0.5 = 1.4
  # γλ = 0.45:  A_2 = 2.3;  A_1 = 0.35 + 0.45·2.3 = 1.385;  A_0 = 1.4 + 0.45·1.385 = 2.02325
  # returns = A + V = [2.52325, 2.385, 3.8]
  discounts = f32([[0.9], [0.9], [0.9]])
  advantages, returns = run(mode, _gae(0.5), HAND_REWARDS, discounts, HAND_VALUES,
                            HAND_BOOTSTRAP)
  assert_close(advantages, [[2.02325], [1.385], [2.3]])
  assert_close(returns, [[2.52325], [2.385], [3.8]])


def test_gae_termination_in_the_middle(mode):
  # The episode terminates at s_2 (discount_1 = 0): δ_1 loses its bootstrap and A_2 (next
  # episode) does not flow back.
  # δ_2 = 2.3;  δ_1 = 0 + 0·1.5 − 1.0 = −1.0;  δ_0 = 1.4
  # A_2 = 2.3;  A_1 = −1.0 + 0·0.5·2.3 = −1.0;  A_0 = 1.4 + 0.45·(−1.0) = 0.95
  # returns = [1.45, 0.0, 3.8]
  discounts = f32([[0.9], [0.0], [0.9]])
  advantages, returns = run(mode, _gae(0.5), HAND_REWARDS, discounts, HAND_VALUES,
                            HAND_BOOTSTRAP)
  assert_close(advantages, [[0.95], [-1.0], [2.3]])
  assert_close(returns, [[1.45], [0.0], [3.8]])


def test_gae_truncation_keeps_bootstrap_with_per_step_lambda(mode):
  # The episode is truncated after step 1 (time limit): discount_1 = γ = 0.9 keeps the bootstrap
  # on V(s_2) = 1.5, while λ_1 = 0 stops A_2 from flowing into A_1.
  # δ_2 = 2.3;  δ_1 = 0 + 0.9·1.5 − 1.0 = 0.35;  δ_0 = 1.4
  # A_2 = 2.3;  A_1 = 0.35 + 0.9·0·2.3 = 0.35;  A_0 = 1.4 + 0.9·0.5·0.35 = 1.5575
  # returns = [2.0575, 1.35, 3.8]   (a termination would have given A_1 = −1.0 instead)
  discounts = f32([[0.9], [0.9], [0.9]])
  lambdas = f32([[0.5], [0.0], [0.5]])
  advantages, returns = run(
      mode, lambda r, d, v, bootstrap, lam: losses.generalized_advantage_estimation(
          r, d, v, bootstrap, lam),
      HAND_REWARDS, discounts, HAND_VALUES, HAND_BOOTSTRAP, lambdas)
  assert_close(advantages, [[1.5575], [0.35], [2.3]])
  assert_close(returns, [[2.0575], [1.35], [3.8]])


def _random_episode_batch(seed, T=9, B=4, gamma=0.97):
  rng = np.random.default_rng(seed)
  r = f32(rng.normal(size=(T, B)))
  terminated = rng.uniform(size=(T, B)) < 0.2
  discount = f32(gamma * (1.0 - terminated))
  v = f32(rng.normal(size=(T, B)))
  v_bootstrap = f32(rng.normal(size=(B,)))
  return r, discount, v, v_bootstrap


@pytest.mark.parametrize("lambda_kind", ["scalar", "per_step"])
def test_gae_matches_numpy_reference(mode, lambda_kind):
  r, discount, v, v_bootstrap = _random_episode_batch(seed=1)
  assert (discount == 0).any(), "the random batch should contain terminations"
  rng = np.random.default_rng(2)
  lam = 0.95 if lambda_kind == "scalar" else f32(rng.uniform(size=r.shape) * (rng.uniform(
      size=r.shape) > 0.2))  # per-step λ with some zeros (truncation boundaries)
  fn = (_gae(lam) if lambda_kind == "scalar" else
        lambda r_, d_, v_, b_, lam_: losses.generalized_advantage_estimation(r_, d_, v_, b_, lam_))
  args = (r, discount, v, v_bootstrap) + (() if lambda_kind == "scalar" else (lam,))
  advantages, returns = run(mode, fn, *args)
  expected_advantages, expected_returns = gae_reference(r, discount, v, v_bootstrap, lam)
  assert_close(advantages, expected_advantages, rtol=1e-5, atol=1e-5)
  assert_close(returns, expected_returns, rtol=1e-5, atol=1e-5)


def test_gae_lambda_one_is_discounted_monte_carlo_return_plus_bootstrap(mode):
  r, discount, v, v_bootstrap = _random_episode_batch(seed=3)
  advantages, returns = run(mode, _gae(1.0), r, discount, v, v_bootstrap)
  expected = monte_carlo_return_reference(r, discount, v_bootstrap)
  assert_close(returns, expected, atol=1e-5)
  assert_close(advantages, expected - v, atol=1e-5)


def test_gae_lambda_zero_is_one_step_td(mode):
  r, discount, v, v_bootstrap = _random_episode_batch(seed=4)
  advantages, returns = run(mode, _gae(0.0), r, discount, v, v_bootstrap)
  v_next = np.concatenate([v[1:], v_bootstrap[None]], axis=0)
  assert_close(returns, r + discount * v_next)
  assert_close(advantages, r + discount * v_next - v)


def test_gae_outputs_carry_no_gradient(mode):
  r, discount, v, v_bootstrap = _random_episode_batch(seed=5, T=4, B=2)

  def gradient_of_outputs(r_, d_, v_, b_):
    with tf.GradientTape() as tape:
      tape.watch([r_, v_, b_])
      advantages, returns = losses.generalized_advantage_estimation(r_, d_, v_, b_, 0.9)
      total = tf.reduce_sum(advantages) + tf.reduce_sum(returns)
    return tape.gradient(total, [r_, v_, b_],
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  for gradient in run(mode, gradient_of_outputs, r, discount, v, v_bootstrap):
    assert not np.any(gradient)


def test_gae_lambda_variable_is_read_at_run_time(mode):
  # PBT assigns λ between steps: the compiled function must see the new value without retracing.
  r, discount, v, v_bootstrap = (tf.constant(x) for x in _random_episode_batch(seed=6))
  lam = tf.Variable(0.9)
  fn = lambda: losses.generalized_advantage_estimation(r, discount, v, v_bootstrap, lam)
  if mode != "eager":
    fn = tf.function(fn, jit_compile=(mode == "xla"))
  for value in (0.9, 0.3):
    lam.assign(value)
    advantages, _ = fn()
    expected, _ = gae_reference(r.numpy(), discount.numpy(), v.numpy(), v_bootstrap.numpy(), value)
    assert_close(advantages.numpy(), expected, atol=1e-5)
  if mode != "eager":
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("bad, message", [
    (dict(rewards=np.zeros([5], np.float32)), r"`rewards` must have rank 2.*\(5,\)"),
    (dict(discounts=np.zeros([5, 3], np.float32)), r"`discounts` has shape \(5, 3\)"),
    (dict(bootstrap_value=np.zeros([5, 2], np.float32)), r"`bootstrap_value`.*\(5, 2\)"),
    (dict(bootstrap_value=np.zeros([3], np.float32)), r"`bootstrap_value`.*\(3,\)"),
    (dict(lambda_=np.zeros([5], np.float32)), r"`lambda_`.*\(5,\)"),
    (dict(lambda_=np.zeros([5, 3], np.float32)), r"`lambda_` has shape \(5, 3\)"),
    (dict(lambda_=1.5), r"`lambda_` must be in \[0.0, 1.0\]; got 1.5"),
])
def test_gae_rejects_bad_shapes(mode, bad, message):
  arguments = dict(rewards=np.zeros([5, 2], np.float32), discounts=np.ones([5, 2], np.float32),
                   values=np.zeros([5, 2], np.float32),
                   bootstrap_value=np.zeros([2], np.float32), lambda_=0.95)
  arguments.update(bad)
  with pytest.raises(ValueError, match=message):
    run(mode, lambda: losses.generalized_advantage_estimation(**arguments))


def test_gae_rejects_mixed_dtypes(mode):
  with pytest.raises(TypeError, match=r"`values` has dtype float64 but `rewards` has float32"):
    run(mode, lambda: losses.generalized_advantage_estimation(
        np.zeros([5, 2], np.float32), np.ones([5, 2], np.float32), np.zeros([5, 2], np.float64),
        np.zeros([2], np.float32), 0.95))


# ----------------------------------------------------------------------------------------------
# masked_mean
# ----------------------------------------------------------------------------------------------


def test_masked_mean_ignores_masked_entries_even_nan(mode):
  # Entries kept: 1, 2, 3 → mean 2.0; the masked NaN must not leak in.
  x = f32([[1.0, 2.0], [3.0, np.nan]])
  for mask in (f32([[1, 1], [1, 0]]), np.array([[True, True], [True, False]])):
    assert_close(run(mode, losses.masked_mean, x, mask), 2.0)


def test_masked_mean_all_zero_mask_is_zero_and_none_is_plain_mean(mode):
  x = f32([[1.0, 2.0], [3.0, 6.0]])
  assert run(mode, losses.masked_mean, x, f32(np.zeros([2, 2]))) == 0.0
  assert_close(run(mode, losses.masked_mean, x), 3.0)


def test_masked_mean_matches_numpy_reference(mode):
  rng = np.random.default_rng(7)
  x = f32(rng.normal(size=(6, 5)))
  mask = f32(rng.uniform(size=(6, 5)) < 0.6)
  weights = f32(rng.uniform(size=(6, 5)))  # a non-binary mask is a weighted mean
  for m in (mask, weights):
    assert_close(run(mode, losses.masked_mean, x, m), weighted_mean_reference(x, m))


def test_masked_mean_rejects_mask_of_another_shape(mode):
  with pytest.raises(ValueError, match=r"`mask` has shape \(3, 2\).*\(2, 3\)"):
    run(mode, losses.masked_mean, f32(np.zeros([2, 3])), f32(np.ones([3, 2])))


# ----------------------------------------------------------------------------------------------
# clipped_surrogate_loss
# ----------------------------------------------------------------------------------------------

# ε = 0.2; T = 5, B = 1; π_old(a|s) = 1 so log π = log ρ.
HAND_RATIOS = f32([[1.5], [0.5], [1.5], [0.5], [1.1]])
HAND_ADVANTAGES = f32([[1.0], [1.0], [-1.0], [-1.0], [2.0]])


def _surrogate_and_gradient(clip_epsilon, mask=None):
  def fn(log_probs, behaviour_log_probs, advantages):
    with tf.GradientTape() as tape:
      tape.watch(log_probs)
      loss, metrics = losses.clipped_surrogate_loss(
          log_probs, behaviour_log_probs, advantages, clip_epsilon, mask=mask)
    return loss, metrics, tape.gradient(loss, log_probs)
  return fn


def test_surrogate_hand_computed_clips_both_sides(mode):
  # step  ρ    A    ρ·A   clip(ρ)·A   min     active  ∂min/∂log π (= ρ·A if unclipped)
  #  0   1.5  +1   1.5     1.2       1.2     clip          0
  #  1   0.5  +1   0.5     0.8       0.5     ρ·A           0.5
  #  2   1.5  −1  −1.5    −1.2      −1.5     ρ·A          −1.5
  #  3   0.5  −1  −0.5    −0.8      −0.8     clip          0
  #  4   1.1  +2   2.2     2.2       2.2     ρ·A (inside)  2.2
  # L^CLIP = (1.2 + 0.5 − 1.5 − 0.8 + 2.2) / 5 = 0.32  →  loss = −0.32
  # ∂loss/∂log π = −(1/5)·[0, 0.5, −1.5, 0, 2.2] = [0, −0.1, 0.3, 0, −0.44]
  # clip_fraction: |ρ − 1| > 0.2 for steps 0–3 → 4/5 = 0.8
  # approx_kl = mean((ρ − 1) − log ρ)
  #           = (2·(0.5 − 0.405465) + 2·(−0.5 + 0.693147) + (0.1 − 0.095310)) / 5 = 0.116011
  # ratio_mean = (1.5 + 0.5 + 1.5 + 0.5 + 1.1) / 5 = 1.02
  loss, metrics, gradient = run(mode, _surrogate_and_gradient(0.2), np.log(HAND_RATIOS),
                                f32(np.zeros([5, 1])), HAND_ADVANTAGES)
  assert_close(loss, -0.32)
  assert_close(gradient, [[0.0], [-0.1], [0.3], [0.0], [-0.44]])
  assert gradient[0, 0] == 0.0 and gradient[3, 0] == 0.0  # exactly zero where clipped
  assert_metrics_close(metrics, {"clip_fraction": 0.8, "approx_kl": 0.116011,
                                 "ratio_mean": 1.02})


def test_surrogate_matches_numpy_reference_with_mask(mode):
  rng = np.random.default_rng(8)
  shape = (8, 6)
  behaviour_log_probs = f32(np.log(rng.uniform(0.05, 1.0, size=shape)))
  log_probs = f32(behaviour_log_probs + rng.normal(scale=0.3, size=shape))
  advantages = f32(rng.normal(size=shape))
  mask = f32(rng.uniform(size=shape) < 0.7)
  loss, metrics, _ = run(mode, _surrogate_and_gradient(0.1, mask=mask), log_probs,
                         behaviour_log_probs, advantages)
  expected_loss, expected_metrics = surrogate_reference(
      log_probs, behaviour_log_probs, advantages, 0.1, mask)
  assert_close(loss, expected_loss)
  assert_metrics_close(metrics, expected_metrics)
  assert 0.0 < metrics["clip_fraction"] < 1.0  # the case exercises both regimes


def test_surrogate_gradient_ignores_masked_steps_and_data_inputs(mode):
  # Masked steps get no gradient; advantages and behaviour log-probs are data (no gradient).
  mask = f32([[1], [0], [1], [0], [1]])

  def fn(log_probs, behaviour_log_probs, advantages):
    with tf.GradientTape() as tape:
      tape.watch([log_probs, behaviour_log_probs, advantages])
      loss, _ = losses.clipped_surrogate_loss(
          log_probs, behaviour_log_probs, advantages, 0.2, mask=mask)
    return tape.gradient(loss, [log_probs, behaviour_log_probs, advantages],
                         unconnected_gradients=tf.UnconnectedGradients.ZERO)

  d_log_probs, d_behaviour, d_advantages = run(
      mode, fn, np.log(HAND_RATIOS), f32(np.zeros([5, 1])), HAND_ADVANTAGES)
  # Kept steps 0, 2, 4 → mean over 3: −(1/3)·[0, −1.5, 2.2]
  assert_close(d_log_probs, [[0.0], [0.0], [0.5], [0.0], [-2.2 / 3]])
  assert not np.any(d_behaviour) and not np.any(d_advantages)


def test_surrogate_clip_epsilon_variable_is_read_at_run_time(mode):
  clip_epsilon = tf.Variable(0.2)
  log_probs, zeros, advantages = (tf.constant(x) for x in (
      np.log(HAND_RATIOS), f32(np.zeros([5, 1])), HAND_ADVANTAGES))
  fn = lambda: losses.clipped_surrogate_loss(log_probs, zeros, advantages, clip_epsilon)
  if mode != "eager":
    fn = tf.function(fn, jit_compile=(mode == "xla"))
  for eps in (0.2, 0.6):
    clip_epsilon.assign(eps)
    loss, metrics = fn()
    expected_loss, expected_metrics = surrogate_reference(
        np.log(HAND_RATIOS), np.zeros([5, 1]), HAND_ADVANTAGES, eps, np.ones([5, 1]))
    assert_close(loss.numpy(), expected_loss)
    assert_close(metrics["clip_fraction"].numpy(), expected_metrics["clip_fraction"])
  if mode != "eager":
    assert fn.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("bad, error, message", [
    (dict(log_probs=np.zeros([4, 2, 3], np.float32)), ValueError,
     r"`log_probs` must have rank 2.*\(4, 2, 3\)"),
    (dict(advantages=np.zeros([4, 3], np.float32)), ValueError, r"`advantages` has shape \(4, 3\)"),
    (dict(mask=np.ones([2, 4], np.float32)), ValueError, r"`mask` has shape \(2, 4\)"),
    (dict(clip_epsilon=np.zeros([2], np.float32)), ValueError, r"`clip_epsilon`.*\(2,\)"),
    (dict(clip_epsilon=-0.1), ValueError, r"`clip_epsilon` must be >= 0.0; got -0.1"),
    (dict(advantages=np.zeros([4, 2], np.int32)), TypeError, r"`advantages`.*int32"),
])
def test_surrogate_rejects_bad_inputs(mode, bad, error, message):
  arguments = dict(log_probs=np.zeros([4, 2], np.float32),
                   behaviour_log_probs=np.zeros([4, 2], np.float32),
                   advantages=np.zeros([4, 2], np.float32), clip_epsilon=0.2)
  arguments.update(bad)
  with pytest.raises(error, match=message):
    run(mode, lambda: losses.clipped_surrogate_loss(**arguments))


# ----------------------------------------------------------------------------------------------
# value_loss
# ----------------------------------------------------------------------------------------------

# ε = 0.2; T = 3, B = 1.
HAND_V = f32([[1.5], [0.9], [0.5]])
HAND_RETURNS = f32([[2.0], [0.0], [1.0]])
HAND_V_OLD = f32([[1.0], [1.0], [1.0]])


def _value_loss_and_gradient(clip_epsilon, mask=None):
  def fn(values, returns, behaviour_values):
    with tf.GradientTape() as tape:
      tape.watch(values)
      loss, metrics = losses.value_loss(values, returns, behaviour_values,
                                        clip_epsilon=clip_epsilon, mask=mask)
    return loss, metrics, tape.gradient(loss, values)
  return fn


def test_value_loss_hand_computed_with_and_without_clipping(mode):
  # step  V    R    V_old  (V−R)²  V_clip = V_old + clip(V−V_old, ±0.2)  (V_clip−R)²  max
  #  0   1.5  2.0   1.0    0.25    1.2                                   0.64       0.64 (clip)
  #  1   0.9  0.0   1.0    0.81    0.9                                   0.81       0.81
  #  2   0.5  1.0   1.0    0.25    0.8                                   0.04       0.25
  # clipped loss   = ½·(0.64 + 0.81 + 0.25)/3 = 0.283333
  # unclipped loss = ½·(0.25 + 0.81 + 0.25)/3 = 0.218333
  # ∂/∂V of ½·mean(max(...)): (V − R)/3 where the unclipped term wins, 0 where the clipped one
  # does (its V_clip is constant in V):  [0, 0.9/3, −0.5/3] = [0, 0.3, −0.166667]
  # Unclipped gradient: (V − R)/3 = [−0.166667, 0.3, −0.166667]
  # explained variance: R − V = [0.5, −0.9, 0.5], Var = (0.25+0.81+0.25)/3 − (0.1/3)² = 0.435556
  #   Var[R] = 5/3 − 1 = 0.666667  →  EV = 1 − 0.435556/0.666667 = 0.346667
  loss, metrics, gradient = run(mode, _value_loss_and_gradient(0.2), HAND_V, HAND_RETURNS,
                                HAND_V_OLD)
  assert_close(loss, 0.283333)
  assert_close(gradient, [[0.0], [0.3], [-0.166667]])
  assert gradient[0, 0] == 0.0
  assert_metrics_close(metrics, {"explained_variance": 0.346667})

  loss, metrics, gradient = run(mode, _value_loss_and_gradient(None), HAND_V, HAND_RETURNS,
                                HAND_V_OLD)
  assert_close(loss, 0.218333)
  assert_close(gradient, [[-0.166667], [0.3], [-0.166667]])
  assert_metrics_close(metrics, {"explained_variance": 0.346667})


@pytest.mark.parametrize("clip_epsilon", [None, 0.1])
def test_value_loss_matches_numpy_reference_with_mask(mode, clip_epsilon):
  rng = np.random.default_rng(9)
  shape = (7, 5)
  returns = f32(rng.normal(size=shape))
  behaviour_values = f32(returns + rng.normal(scale=0.5, size=shape))
  values = f32(behaviour_values + rng.normal(scale=0.2, size=shape))
  mask = f32(rng.uniform(size=shape) < 0.7)
  loss, metrics, _ = run(mode, _value_loss_and_gradient(clip_epsilon, mask=mask), values,
                         returns, behaviour_values)
  expected_loss, expected_metrics = value_loss_reference(
      values, returns, behaviour_values, clip_epsilon, mask)
  assert_close(loss, expected_loss)
  assert_metrics_close(metrics, expected_metrics, atol=1e-5)


def test_value_loss_explained_variance_is_zero_for_constant_returns(mode):
  returns = f32(np.full([4, 2], 3.0))
  values = f32(np.arange(8).reshape([4, 2]))
  _, metrics = run(mode, lambda v, r: losses.value_loss(v, r), values, returns)
  assert metrics["explained_variance"] == 0.0
  # A perfect fit explains everything.
  _, metrics = run(mode, lambda v: losses.value_loss(v, v), values)
  assert_close(metrics["explained_variance"], 1.0)


def test_value_loss_requires_behaviour_values_to_clip(mode):
  with pytest.raises(ValueError, match="clip_epsilon but no behaviour_values"):
    run(mode, lambda: losses.value_loss(HAND_V, HAND_RETURNS, clip_epsilon=0.2))


def test_value_loss_rejects_mismatched_shapes(mode):
  with pytest.raises(ValueError, match=r"`returns` has shape \(3, 2\).*\(3, 1\)"):
    run(mode, lambda: losses.value_loss(HAND_V, f32(np.zeros([3, 2]))))
  with pytest.raises(ValueError, match=r"`behaviour_values` must have rank 2.*\(3,\)"):
    run(mode, lambda: losses.value_loss(HAND_V, HAND_RETURNS, f32(np.zeros([3])), 0.2))


# ----------------------------------------------------------------------------------------------
# entropy_loss
# ----------------------------------------------------------------------------------------------


def test_entropy_of_uniform_logits_is_log_num_actions(mode):
  for num_actions in (2, 7):
    logits = f32(np.full([3, 2, num_actions], 4.2))
    loss, metrics = run(mode, losses.entropy_loss, logits)
    assert_close(metrics["entropy"], math.log(num_actions))
    assert_close(loss, -math.log(num_actions))


def test_entropy_hand_computed_and_illegal_actions(mode):
  # π = [0.5, 0.25, 0.25]: H = 0.5·ln 2 + 2·0.25·ln 4 = 1.5·ln 2 = 1.039721
  # logits [0, 0, −inf]: π = [0.5, 0.5, 0], H = ln 2 = 0.693147 (the −inf action adds 0, not NaN)
  # mask drops the (NaN-free) third step, mean = (1.039721 + 0.693147)/2 = 0.866434
  logits = f32([[[math.log(0.5), math.log(0.25), math.log(0.25)]],
                [[0.0, 0.0, -np.inf]],
                [[10.0, 0.0, 0.0]]])
  mask = f32([[1], [1], [0]])
  loss, metrics = run(mode, losses.entropy_loss, logits, mask)
  assert_close(metrics["entropy"], 0.866434)
  assert_close(loss, -0.866434)


def test_entropy_matches_numpy_reference_with_mask(mode):
  rng = np.random.default_rng(10)
  logits = f32(rng.normal(scale=3.0, size=(5, 4, 6)))
  mask = f32(rng.uniform(size=(5, 4)) < 0.6)
  loss, metrics = run(mode, losses.entropy_loss, logits, mask)
  expected_loss, expected_metrics = entropy_reference(logits, mask)
  assert_close(loss, expected_loss)
  assert_metrics_close(metrics, expected_metrics)


def test_entropy_loss_descent_increases_entropy(mode):
  # Minimising `coef · loss` must make the policy more random.
  logits = f32(np.random.default_rng(11).normal(scale=2.0, size=(4, 3, 5)))

  def fn(logits_):
    with tf.GradientTape() as tape:
      tape.watch(logits_)
      loss, metrics = losses.entropy_loss(logits_)
    stepped = logits_ - 1.0 * tape.gradient(loss, logits_)
    return metrics["entropy"], losses.entropy_loss(stepped)[1]["entropy"]

  before, after = run(mode, fn, logits)
  assert after > before + 1e-3


def test_entropy_rejects_bad_ranks(mode):
  with pytest.raises(ValueError, match=r"`logits` must have rank 3.*\(4, 5\)"):
    run(mode, losses.entropy_loss, f32(np.zeros([4, 5])))
  with pytest.raises(ValueError, match=r"`mask` has shape \(4, 5\).*\(4, 2\)"):
    run(mode, losses.entropy_loss, f32(np.zeros([4, 2, 5])), f32(np.ones([4, 5])))


# ----------------------------------------------------------------------------------------------
# categorical_log_prob
# ----------------------------------------------------------------------------------------------


def test_categorical_log_prob_hand_computed(mode):
  # logits [0, ln 3] → π = [1/4, 3/4]; log π(1) = ln 0.75 = −0.287682, log π(0) = ln 0.25.
  logits = f32([[[0.0, math.log(3.0)], [0.0, math.log(3.0)]]])
  actions = np.array([[1, 0]], np.int64)
  assert_close(run(mode, losses.categorical_log_prob, logits, actions),
               [[math.log(0.75), math.log(0.25)]])


@pytest.mark.parametrize("action_dtype", [np.int32, np.int64, np.uint8])
def test_categorical_log_prob_matches_numpy_reference(mode, action_dtype):
  rng = np.random.default_rng(12)
  logits = f32(rng.normal(scale=3.0, size=(5, 3, 4)))
  actions = rng.integers(0, 4, size=(5, 3)).astype(action_dtype)
  expected = np.zeros([5, 3])
  for t in range(5):
    for b in range(3):
      expected[t, b] = log_softmax_reference(logits[t, b])[actions[t, b]]
  assert_close(run(mode, losses.categorical_log_prob, logits, actions), expected)


def test_categorical_log_prob_rejects_bad_inputs(mode):
  with pytest.raises(ValueError, match=r"logits shape \(5, 3, 4\) and actions shape \(5,\)"):
    run(mode, losses.categorical_log_prob, f32(np.zeros([5, 3, 4])), np.zeros([5], np.int32))
  with pytest.raises(TypeError, match=r"`actions` must be an integer tensor.*float32"):
    run(mode, losses.categorical_log_prob, f32(np.zeros([5, 4])), f32(np.zeros([5])))


# ----------------------------------------------------------------------------------------------
# normalize_advantages
# ----------------------------------------------------------------------------------------------


def test_normalize_advantages_hand_computed(mode):
  # Kept entries 1, 2, 3: mean 2, population std √(2/3) = 0.816497
  # → [−1.224745, 0, 1.224745]; the masked entry (100) is set to 0 and does not shift the stats.
  advantages = f32([[1.0, 2.0], [3.0, 100.0]])
  mask = f32([[1, 1], [1, 0]])
  normalized = run(mode, lambda a, m: losses.normalize_advantages(a, m), advantages, mask)
  assert_close(normalized, [[-1.224745, 0.0], [1.224745, 0.0]])


def test_normalize_advantages_matches_numpy_reference(mode):
  rng = np.random.default_rng(13)
  advantages = f32(rng.normal(loc=3.0, scale=5.0, size=(6, 4)))
  mask = f32(rng.uniform(size=(6, 4)) < 0.7)
  kept = [advantages[index] for index in np.ndindex(6, 4) if mask[index]]
  mean = sum(kept) / len(kept)
  std = math.sqrt(sum((a - mean) ** 2 for a in kept) / len(kept))
  expected = np.where(mask > 0, (advantages - mean) / (std + 1e-8), 0.0)
  normalized = run(mode, losses.normalize_advantages, advantages, mask)
  assert_close(normalized, expected, atol=1e-5)
  unmasked = run(mode, losses.normalize_advantages, advantages)
  assert_close(unmasked.mean(), 0.0, atol=1e-5)
  assert_close(unmasked.std(), 1.0, atol=1e-5)


def test_normalize_advantages_constant_batch_is_zero_not_nan(mode):
  normalized = run(mode, losses.normalize_advantages, f32(np.full([3, 2], 7.0)))
  assert_close(normalized, np.zeros([3, 2]))


def test_partly_normalized_advantages_hand_computed(mode):
  # The kept advantages 1, 2, 3 normalise to [−1.224745, 0, 1.224745] (as above); the unnormalised part
  # [0.5, −1, 2] is added as it is, and ignored where masked (7): the statistics are the first part's alone.
  advantages = f32([[1.0, 2.0], [3.0, 100.0]])
  unnormalized = f32([[0.5, -1.0], [2.0, 7.0]])
  mask = f32([[1, 1], [1, 0]])
  combined = run(mode, losses.partly_normalized_advantages, advantages, unnormalized, mask)
  assert_close(combined, [[-0.724745, -1.0], [3.224745, 0.0]])
  # Without a second part it is normalize_advantages.
  alone = run(mode, lambda a, m: losses.partly_normalized_advantages(a, None, m), advantages, mask)
  assert_close(alone, [[-1.224745, 0.0], [1.224745, 0.0]])


def test_partly_normalized_advantages_matches_numpy_reference(mode):
  rng = np.random.default_rng(17)
  advantages = f32(rng.normal(loc=-2.0, scale=3.0, size=(5, 4)))
  unnormalized = f32(rng.normal(scale=0.3, size=(5, 4)))
  mask = f32(rng.uniform(size=(5, 4)) < 0.8)
  kept = [advantages[index] for index in np.ndindex(5, 4) if mask[index]]
  mean = sum(kept) / len(kept)
  std = math.sqrt(sum((a - mean) ** 2 for a in kept) / len(kept))
  expected = np.where(mask > 0, (advantages - mean) / (std + 1e-8) + unnormalized, 0.0)
  assert_close(run(mode, losses.partly_normalized_advantages, advantages, unnormalized, mask), expected,
               atol=1e-5)
  # Normalising the sum instead (PPO's 'joint') is a different direction unless std(A + Ã) = 1.
  joint = run(mode, losses.normalize_advantages, advantages + unnormalized, mask)
  assert np.abs(joint - expected).max() > 0.1


def test_partly_normalized_advantages_checks_its_arguments():
  with pytest.raises(ValueError, match='unnormalized_advantages'):
    losses.partly_normalized_advantages(f32(np.zeros([3, 2])), f32(np.zeros([2, 3])))
  with pytest.raises(TypeError, match='unnormalized_advantages'):
    losses.partly_normalized_advantages(f32(np.zeros([3, 2])), tf.zeros([3, 2], tf.float64))
