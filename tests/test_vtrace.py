"""Tests for agents/learners/vtrace.py.

V-trace is checked against a slow NumPy reference written with explicit loops in the notation of
Espeholt et al. 2018 (eq. 1 as a sum over t ≥ s, not Remark 1's recursion the implementation uses), on
random inputs with several thresholds, λ < 1, terminations and masked reset transitions; against a case
worked out by hand; and, on-policy, against the n-step bootstrapped return. Every check runs eagerly,
under `tf.function` and under `tf.function(jit_compile=True)`.
"""

import math

import numpy as np
import pytest
import tensorflow as tf
from tf_modes import f32, mode, run  # noqa: F401 (mode is a fixture)

from protege.agents.learners import vtrace

RTOL = 1e-5
ATOL = 1e-5
INF = float('inf')


def vtrace_reference(log_mu, log_pi, r, gamma, V_x, V_bootstrap, rho_bar, c_bar, pg_rho_bar, lam, mask=None):
  """Espeholt et al. 2018, eq. 1 and Section 4.2, with explicit loops.

  v_s = V(x_s) + Σ_{t=s}^{n−1} (Π_{i=s}^{t−1} γ_i c_i) δ_t V,   δ_t V = ρ_t (r_t + γ_t V(x_{t+1}) − V(x_t)),
  ρ_t = min(ρ̄, π/μ), c_i = λ min(c̄, π/μ); the sum stops at the trajectory's end: the first masked
  transition n ≥ s (whose v_n is V(x_n)), or T (v_T = V(x_T)).
  Policy-gradient advantage: min(ρ̄_pg, π/μ)(r_s + γ_s v_{s+1} − V(x_s)); 0 on masked transitions.
  None thresholds mean ∞.
  """
  T, B = r.shape
  rho_bar, c_bar, pg_rho_bar = (INF if x is None else x for x in (rho_bar, c_bar, pg_rho_bar))
  mask = np.ones((T, B)) if mask is None else mask
  vs, advantages = np.zeros((T, B)), np.zeros((T, B))
  for b in range(B):
    V = [float(v) for v in V_x[:, b]] + [float(V_bootstrap[b])]  # V(x_0) … V(x_T)
    ratio = [math.exp(log_pi[t, b] - log_mu[t, b]) for t in range(T)]
    rho = [min(rho_bar, ratio[t]) for t in range(T)]
    c = [lam * min(c_bar, ratio[t]) for t in range(T)]

    def v(s):
      if s == T or not mask[s, b]:
        return V[s]
      total, product = V[s], 1.0  # product = Π_{i=s}^{t−1} γ_i c_i
      for t in range(s, T):
        if not mask[t, b]:
          break
        delta = rho[t] * (r[t, b] + gamma[t, b] * V[t + 1] - V[t])
        total += product * delta
        product *= gamma[t, b] * c[t]
      return total

    for s in range(T):
      vs[s, b] = v(s)
      if mask[s, b]:
        advantages[s, b] = min(pg_rho_bar, ratio[s]) * (r[s, b] + gamma[s, b] * v(s + 1) - V[s])
  return vs, advantages


def n_step_return_reference(r, gamma, V_bootstrap):
  """G_s = Σ_{t=s}^{T−1} (Π_{i=s}^{t−1} γ_i) r_t + (Π_{i=s}^{T−1} γ_i) V(x_T)."""
  T, B = r.shape
  G = np.zeros((T, B))
  for b in range(B):
    for s in range(T):
      product, total = 1.0, 0.0
      for t in range(s, T):
        total += product * r[t, b]
        product *= gamma[t, b]
      G[s, b] = total + product * V_bootstrap[b]
  return G


def _random_inputs(seed, T=7, B=3, log_ratio_scale=1.0, terminations=True):
  rng = np.random.default_rng(seed)
  log_mu = np.log(rng.uniform(0.05, 1.0, size=(T, B)))
  log_pi = log_mu + log_ratio_scale * rng.normal(size=(T, B))
  r = rng.normal(size=(T, B))
  gamma = np.full((T, B), 0.9)
  if terminations:
    gamma[rng.uniform(size=(T, B)) < 0.2] = 0.0
  V_x = rng.normal(size=(T, B))
  V_bootstrap = rng.normal(size=B)
  return [f32(x) for x in (log_mu, log_pi, r, gamma, V_x, V_bootstrap)]


def _vtrace_fn(**kwargs):
  def fn(log_mu, log_pi, r, gamma, V_x, V_bootstrap, *mask):
    returns = vtrace.vtrace(log_mu, log_pi, r, gamma, V_x, V_bootstrap, mask=mask[0] if mask else None,
                            **kwargs)
    return returns.vs, returns.pg_advantages
  return fn


def test_hand_computed(mode):
  # T = 2, B = 1: V(x) = (1, 2), V(x_2) = 3, r = (1, 0), γ = 0.9, π/μ = (2, 0.5), ρ̄ = c̄ = 1, λ = 1.
  # ρ = c = (1, 0.5). δ_1 = 0.5·(0 + 0.9·3 − 2) = 0.35, v_1 = 2.35.
  # δ_0 = 1·(1 + 0.9·2 − 1) = 1.8, v_0 = 1 + 1.8 + 0.9·1·0.35 = 3.115.
  # pg_0 = 1·(1 + 0.9·2.35 − 1) = 2.115, pg_1 = 0.5·(0 + 0.9·3 − 2) = 0.35.
  log_mu = f32([[0.0], [0.0]])
  log_pi = f32([[math.log(2.0)], [math.log(0.5)]])
  vs, pg = run(mode, _vtrace_fn(), log_mu, log_pi, f32([[1.0], [0.0]]), f32([[0.9], [0.9]]),
               f32([[1.0], [2.0]]), f32([3.0]))
  np.testing.assert_allclose(vs[:, 0], [3.115, 2.35], rtol=RTOL)
  np.testing.assert_allclose(pg[:, 0], [2.115, 0.35], rtol=RTOL)


@pytest.mark.parametrize('rho_bar,c_bar,pg_rho_bar,lam', [
    (1.0, 1.0, 1.0, 1.0),        # the paper's setting
    (2.0, 0.5, 1.5, 1.0),        # thresholds apart
    (None, None, None, 1.0),     # no clipping: importance-weighted returns
    (1.0, 1.0, 1.0, 0.6),        # λ < 1 (Remark 2)
    (0.5, 0.3, None, 0.8),
])
def test_matches_paper_reference(mode, rho_bar, c_bar, pg_rho_bar, lam):
  inputs = _random_inputs(seed=1)
  expected_vs, expected_pg = vtrace_reference(*inputs, rho_bar, c_bar, pg_rho_bar, lam)
  vs, pg = run(mode, _vtrace_fn(clip_rho_threshold=rho_bar, clip_c_threshold=c_bar,
                                clip_pg_rho_threshold=pg_rho_bar, lambda_=lam), *inputs)
  np.testing.assert_allclose(vs, expected_vs, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(pg, expected_pg, rtol=RTOL, atol=ATOL)


def test_matches_paper_reference_with_masked_transitions(mode):
  inputs = _random_inputs(seed=2, T=8, B=4)
  mask = np.ones((8, 4), np.float32)
  mask[[2, 5, 7, 0], [0, 1, 2, 3]] = 0.0
  mask[3, 0] = 0.0  # two in a row
  expected_vs, expected_pg = vtrace_reference(*inputs, 1.0, 1.0, 1.0, 0.9, mask=mask)
  vs, pg = run(mode, _vtrace_fn(lambda_=0.9), *inputs, mask)
  np.testing.assert_allclose(vs, expected_vs, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(pg, expected_pg, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('threshold', [1.0, None])
def test_on_policy_is_the_n_step_return(mode, threshold):
  """π = μ, λ = 1: every ρ and c is 1, v_s is the n-step bootstrapped return and the policy gradient's
  advantage is r_s + γ_s G_{s+1} − V(x_s)."""
  log_mu, _, r, gamma, V_x, V_bootstrap = _random_inputs(seed=3)
  vs, pg = run(mode, _vtrace_fn(clip_rho_threshold=threshold, clip_c_threshold=threshold,
                                clip_pg_rho_threshold=threshold), log_mu, log_mu, r, gamma, V_x, V_bootstrap)
  G = n_step_return_reference(r, gamma, V_bootstrap)
  np.testing.assert_allclose(vs, G, rtol=RTOL, atol=ATOL)
  G_next = np.concatenate([G[1:], V_bootstrap[None]], axis=0)
  np.testing.assert_allclose(pg, r + gamma * G_next - V_x, rtol=RTOL, atol=ATOL)


def test_unclipped_with_lambda_one_and_equal_policies_is_the_n_step_return_whatever_the_thresholds(mode):
  """ρ̄ = c̄ = ∞ and π = μ: the same n-step return (the ratios are exactly 1)."""
  log_mu, _, r, gamma, V_x, V_bootstrap = _random_inputs(seed=4, terminations=False)
  vs, _ = run(mode, _vtrace_fn(clip_rho_threshold=None, clip_c_threshold=None), log_mu, log_mu, r, gamma,
              V_x, V_bootstrap)
  np.testing.assert_allclose(vs, n_step_return_reference(r, gamma, V_bootstrap), rtol=RTOL, atol=ATOL)


def _episode_end_inputs(truncated):
  """B = 1, T = 5, the learner's layout: x_2 is LAST (terminated or truncated), x_3 FIRST of the next
  episode. Transition 2 (x_2 → x_3) is the reset: masked. On-policy, so v_s are n-step returns."""
  T = 5
  log_mu = np.zeros((T, 1), np.float32)
  r = f32([[1.0], [2.0], [100.0], [3.0], [4.0]])   # r_2 belongs to the reset: never used
  gamma = np.full((T, 1), 0.9, np.float32)
  gamma[1] = 0.9 if truncated else 0.0             # transition 1 arrives at the LAST step x_2
  V_x = f32([[0.5], [0.6], [0.7], [0.8], [0.9]])
  V_bootstrap = f32([1.0])
  mask = f32([[1.0], [1.0], [0.0], [1.0], [1.0]])
  return log_mu, r, gamma, V_x, V_bootstrap, mask


@pytest.mark.parametrize('truncated', [False, True])
def test_reset_transition_is_not_crossed(mode, truncated):
  log_mu, r, gamma, V_x, V_bootstrap, mask = _episode_end_inputs(truncated)
  vs, pg = run(mode, _vtrace_fn(), log_mu, log_mu, r, gamma, V_x, V_bootstrap, mask)
  # Episode 1 ends at x_2: G_1 = r_1 + γ_1 V(x_2) (V(x_2) = 0.7 is the truncated episode's bootstrap).
  g1 = 2.0 + (0.9 * 0.7 if truncated else 0.0)
  np.testing.assert_allclose(vs[:, 0], [1.0 + 0.9 * g1, g1, 0.7, 3.0 + 0.9 * (4.0 + 0.9 * 1.0),
                                        4.0 + 0.9 * 1.0], rtol=RTOL)
  np.testing.assert_allclose(pg[2, 0], 0.0)
  np.testing.assert_allclose(pg[1, 0], g1 - 0.6, rtol=RTOL)  # r_1 + γ_1 v_2 − V(x_1), v_2 = V(x_2)


def test_masked_transitions_never_leak_even_nan(mode):
  log_mu, r, gamma, V_x, V_bootstrap, mask = _episode_end_inputs(truncated=True)
  clean = run(mode, _vtrace_fn(clip_rho_threshold=None, clip_c_threshold=None), log_mu, log_mu, r, gamma, V_x,
              V_bootstrap, mask)
  log_pi, r, gamma = log_mu.copy(), r.copy(), gamma.copy()
  log_pi[2], r[2], gamma[2] = np.nan, np.inf, np.nan
  dirty = run(mode, _vtrace_fn(clip_rho_threshold=None, clip_c_threshold=None), log_mu, log_pi, r, gamma, V_x,
              V_bootstrap, mask)
  for a, b in zip(clean, dirty):
    np.testing.assert_array_equal(a, b)
  # The next episode's rewards do not change the first episode's targets.
  r[3:] += 10.0
  shifted = run(mode, _vtrace_fn(), log_mu, log_mu, r, gamma, V_x, V_bootstrap, mask)
  np.testing.assert_array_equal(shifted[0][:3], clean[0][:3])


def test_lambda_zero_gives_one_step_targets(mode):
  inputs = _random_inputs(seed=5)
  log_mu, log_pi, r, gamma, V_x, V_bootstrap = inputs
  vs, _ = run(mode, _vtrace_fn(lambda_=0.0), *inputs)
  rho = np.minimum(1.0, np.exp(log_pi - log_mu))
  V_next = np.concatenate([V_x[1:], V_bootstrap[None]], axis=0)
  np.testing.assert_allclose(vs, V_x + rho * (r + gamma * V_next - V_x), rtol=RTOL, atol=ATOL)


def test_outputs_carry_no_gradient(mode):
  del mode  # a tape is an eager construct; the outputs' stop_gradient is what matters
  inputs = [tf.constant(x) for x in _random_inputs(seed=6)]
  with tf.GradientTape(persistent=True) as tape:
    for x in inputs:
      tape.watch(x)
    returns = vtrace.vtrace(*inputs)
    total = sum(tf.reduce_sum(field) for field in returns)
  assert all(g is None for g in tape.gradient(total, inputs))


def test_thresholds_and_lambda_variables_are_read_at_run_time():
  inputs = [tf.constant(x) for x in _random_inputs(seed=7)]
  rho_bar, c_bar, lam = (tf.Variable(1.0), tf.Variable(1.0), tf.Variable(1.0))

  @tf.function(jit_compile=True)
  def fn():
    returns = vtrace.vtrace(*inputs, clip_rho_threshold=rho_bar, clip_c_threshold=c_bar,
                            clip_pg_rho_threshold=rho_bar, lambda_=lam)
    return returns.vs, returns.pg_advantages

  np_inputs = [x.numpy() for x in inputs]
  for values in ((1.0, 1.0, 1.0), (2.0, 0.5, 0.7)):
    for variable, value in zip((rho_bar, c_bar, lam), values):
      variable.assign(value)
    expected = vtrace_reference(*np_inputs, values[0], values[1], values[0], values[2])
    for got, want in zip(fn(), expected):
      np.testing.assert_allclose(got.numpy(), want, rtol=RTOL, atol=ATOL)
  assert fn.experimental_get_tracing_count() == 1


def test_metrics_fields_are_the_ratios():
  inputs = _random_inputs(seed=8)
  log_mu, log_pi = inputs[:2]
  returns = vtrace.vtrace(*inputs, clip_rho_threshold=1.5, clip_c_threshold=0.5, lambda_=0.8)
  np.testing.assert_allclose(returns.log_rhos.numpy(), log_pi - log_mu, rtol=RTOL, atol=ATOL)
  ratios = np.exp(log_pi - log_mu)
  np.testing.assert_allclose(returns.clipped_rhos.numpy(), np.minimum(1.5, ratios), rtol=RTOL)
  np.testing.assert_allclose(returns.cs.numpy(), 0.8 * np.minimum(0.5, ratios), rtol=RTOL)


@pytest.mark.parametrize('index,bad,error,message', [
    (2, np.zeros((7,), np.float32), ValueError, r'`rewards` must have rank 2'),
    (3, np.zeros((6, 3), np.float32), ValueError, r'`discounts` has shape'),
    (5, np.zeros((7, 3), np.float32), ValueError, r'`bootstrap_value` must have shape'),
    (4, np.zeros((7, 3), np.float64), TypeError, r'`values` has dtype float64'),
    (1, np.zeros((7, 3), np.int32), TypeError, r'`target_log_probs` must be a float'),
])
def test_rejects_bad_inputs(index, bad, error, message):
  inputs = list(_random_inputs(seed=9))
  inputs[index] = bad
  with pytest.raises(error, match=message):
    vtrace.vtrace(*inputs)


@pytest.mark.parametrize('kwargs,message', [
    (dict(clip_rho_threshold=-1.0), r'`clip_rho_threshold` must be >= 0'),
    (dict(lambda_=1.5), r'`lambda_` must be in \[0.0, 1.0\]'),
])
def test_rejects_bad_hyperparameters(kwargs, message):
  with pytest.raises(ValueError, match=message):
    vtrace.vtrace(*_random_inputs(seed=10), **kwargs)
