"""Tests for agents/distillation/losses.py and agents/distillation/variants.py.

Each variant is checked against a slow NumPy reference written with explicit loops in the paper's
notation (Czarnecki et al. 2019, eq. 1 and its summary table), eagerly, under `tf.function` and under
`tf.function(jit_compile=True)`; against values worked out by hand on two-action examples; and by its
gradients: the teacher gets none, the surrogate's gradient is the policy gradient plus ∇ℓ, and the
variants the paper calls true gradient fields give, in expectation over every trajectory of a small
MDP, exactly the gradient of their objective.
"""

import itertools
import math

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_modes import f32, mode, run  # noqa: F401 (mode is a fixture)

from protege.agents.distillation import losses as dl
from protege.agents.distillation import variants
from protege.agents.learners import losses

RTOL = 1e-5
ATOL = 1e-5


# ----------------------------------------------------------------------------------------------
# Slow NumPy references, written from the paper's table with explicit loops over t and b.
# ----------------------------------------------------------------------------------------------


def softmax(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max())
  return e / e.sum()


def np_cross_entropy(p, q):
  """H×(p‖q) = −Σ_a p(a) log q(a)."""
  return -sum(p[a] * math.log(q[a]) for a in range(len(p)) if p[a] > 0)


def reference_terms(variant, batch, alpha=1.0, beta=1.0):
  """(ℓ_t, r̂_t) per the paper's table, one (t, b) at a time; 0 where the mask is 0."""
  student, teacher, actions = batch['student_logits'], batch['teacher_logits'], batch['actions']
  T, B = actions.shape
  discount = batch.get('discounts')
  discount = np.ones((T, B)) if discount is None else discount
  mask = batch.get('mask')
  mask = np.ones((T, B)) if mask is None else mask
  loss, reward = np.zeros((T, B)), np.zeros((T, B))
  for b in range(B):
    for t in range(T):
      if mask[t, b] == 0:
        continue
      pi, pi_theta = softmax(teacher[t, b]), softmax(student[t, b])            # π(s_t), π_θ(s_t)
      pi_next, pi_theta_next = softmax(teacher[t + 1, b]), softmax(student[t + 1, b])
      a_t = actions[t, b]
      if variant in ('teacher_distill', 'on_policy_distill'):
        loss[t, b] = alpha * np_cross_entropy(pi, pi_theta)
      elif variant == 'on_policy_distill_with_reward':
        loss[t, b] = alpha * np_cross_entropy(pi, pi_theta)
        reward[t, b] = beta * batch['rewards'][t, b]
      elif variant == 'entropy_regularised':
        reward[t, b] = alpha * math.log(pi[a_t])
      elif variant == 'n_distill':
        loss[t, b] = alpha * np_cross_entropy(pi, pi_theta)
        reward[t, b] = -alpha * discount[t, b] * np_cross_entropy(pi_next, pi_theta_next)
      elif variant == 'expected_entropy_regularised':
        loss[t, b] = alpha * np_cross_entropy(pi_theta, pi)
        if t + 1 < T:
          next_log_prob = math.log(pi_next[actions[t + 1, b]])
        else:  # a_T is not in the batch: its expectation under the student.
          next_log_prob = sum(pi_theta_next[a] * math.log(pi_next[a]) for a in range(len(pi_next)))
        reward[t, b] = alpha * discount[t, b] * next_log_prob
      elif variant == 'teacher_value_reward':
        v = batch['teacher_values']
        reward[t, b] = beta * batch['rewards'][t, b] + alpha * (discount[t, b] * v[t + 1, b] - v[t, b])
      elif variant == 'value_gated':
        gate = 1.0 if batch['teacher_values'][t, b] > batch['student_values'][t, b] else 0.0
        loss[t, b] = alpha * gate * np_cross_entropy(pi, pi_theta)
        reward[t, b] = beta * batch['rewards'][t, b]
      else:
        raise AssertionError(variant)
  return loss, reward


def reference_returns(reward, discount, bootstrap=None):
  """R̂_t = Σ_{i=t}^{T−1} (Π_{j=t}^{i−1} d_j) r̂_i + (Π_{j=t}^{T−1} d_j) · bootstrap."""
  T, B = reward.shape
  bootstrap = np.zeros(B) if bootstrap is None else bootstrap
  returns = np.zeros((T, B))
  for b in range(B):
    for t in range(T):
      product, total = 1.0, 0.0
      for i in range(t, T):
        total += product * reward[i, b]
        product *= discount[i, b]
      returns[t, b] = total + product * bootstrap[b]
  return returns


def reference_surrogate(variant, batch, alpha=1.0, beta=1.0):
  """−log π_θ(a_t|s_t) · R̂_t + ℓ_t (eq. 1's bracket before differentiation)."""
  loss, reward = reference_terms(variant, batch, alpha, beta)
  T, B = loss.shape
  discount = batch.get('discounts')
  returns = reference_returns(reward, np.ones((T, B)) if discount is None else discount)
  mask = batch.get('mask')
  surrogate = np.zeros((T, B))
  for b in range(B):
    for t in range(T):
      if mask is not None and mask[t, b] == 0:
        continue
      log_prob = math.log(softmax(batch['student_logits'][t, b])[batch['actions'][t, b]])
      surrogate[t, b] = -log_prob * returns[t, b] + loss[t, b]
  return surrogate


def random_batch(seed=0, T=5, B=3, A=4, dtype=np.float32):
  """A batch with an episode end (discount 0), padding (mask 0) and every optional field."""
  rng = np.random.default_rng(seed)
  discounts = np.full((T, B), 0.9)
  discounts[1, 0] = 0.0            # the episode of column 0 terminates at s_2
  discounts[T - 2, B - 1] = 0.0    # and that of the last column at s_{T−1}
  mask = np.ones((T, B))
  mask[T - 1, 1] = 0.0       # last step of column 1 is padding
  return {
      'student_logits': rng.normal(size=(T + 1, B, A)).astype(dtype),
      'teacher_logits': (2.0 * rng.normal(size=(T + 1, B, A))).astype(dtype),
      'actions': rng.integers(0, A, size=(T, B)).astype(np.int32),
      'rewards': rng.normal(size=(T, B)).astype(dtype),
      'discounts': discounts.astype(dtype),
      'teacher_values': rng.normal(size=(T + 1, B)).astype(dtype),
      'student_values': rng.normal(size=(T + 1, B)).astype(dtype),
      'mask': mask.astype(dtype),
  }


def to_inputs(batch):
  return dl.DistillationInputs(**{k: tf.convert_to_tensor(v) for k, v in batch.items()})


# ----------------------------------------------------------------------------------------------
# The variants against the NumPy reference.
# ----------------------------------------------------------------------------------------------


def test_variant_tables_are_complete():
  assert set(dl.SAMPLED_BY) == set(dl.VARIANTS) == set(dl.TRUE_GRADIENT_FIELD) == set(dl.REQUIRED_FIELDS)
  assert dl.DEFAULT_VARIANT == 'expected_entropy_regularised'
  assert dl.SAMPLED_BY['teacher_distill'] == 'teacher'
  assert all(dl.SAMPLED_BY[v] == 'student' for v in dl.VARIANTS if v != 'teacher_distill')


@pytest.mark.parametrize('variant', dl.VARIANTS)
def test_terms_and_surrogate_match_numpy_reference(variant, mode):
  batch = random_batch()
  alpha, beta = 0.7, 1.3

  def fn(inputs):
    terms = variants.distillation_terms(variant, inputs, distillation_coef=alpha, reward_coef=beta)
    surrogate = variants.distillation_surrogate(variant, inputs, distillation_coef=alpha, reward_coef=beta)
    return terms.loss, terms.pseudo_rewards, surrogate

  loss, pseudo_rewards, surrogate = run(mode, fn, to_inputs(batch))
  expected_loss, expected_rewards = reference_terms(variant, batch, alpha, beta)
  np.testing.assert_allclose(loss, expected_loss, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(pseudo_rewards, expected_rewards, rtol=RTOL, atol=ATOL)
  np.testing.assert_allclose(surrogate, reference_surrogate(variant, batch, alpha, beta),
                             rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize('variant', ['n_distill', 'expected_entropy_regularised', 'teacher_distill'])
def test_defaults_without_optional_fields(variant):
  """No discounts means 1 everywhere, no mask means every step counts."""
  batch = random_batch(seed=3)
  minimal = {k: batch[k] for k in ('student_logits', 'teacher_logits', 'actions')}
  surrogate = variants.distillation_surrogate(variant, to_inputs(minimal)).numpy()
  np.testing.assert_allclose(surrogate, reference_surrogate(variant, minimal), rtol=RTOL, atol=ATOL)


def test_float64_inputs_give_float64_outputs():
  batch = random_batch(seed=4, dtype=np.float64)
  surrogate = variants.distillation_surrogate('value_gated', to_inputs(batch))
  assert surrogate.dtype == tf.float64
  np.testing.assert_allclose(surrogate.numpy(), reference_surrogate('value_gated', batch), rtol=1e-10)


# ----------------------------------------------------------------------------------------------
# Values worked out by hand: T = 2, B = 1, two actions, known probabilities.
#   teacher π:   s_0 (0.5, 0.5)   s_1 (0.9, 0.1)   s_2 (0.25, 0.75)
#   student π_θ: s_0 (0.8, 0.2)   s_1 (0.5, 0.5)   s_2 (0.5, 0.5)
#   actions a_0 = 1, a_1 = 0; discounts 1 (one episode, the paper's undiscounted sum).
# ----------------------------------------------------------------------------------------------

LN2 = math.log(2.0)


def hand_batch(**extra):
  teacher = np.log([[[0.5, 0.5]], [[0.9, 0.1]], [[0.25, 0.75]]])
  student = np.log([[[0.8, 0.2]], [[0.5, 0.5]], [[0.5, 0.5]]])
  batch = {'student_logits': f32(student), 'teacher_logits': f32(teacher),
           'actions': np.array([[1], [0]], np.int32)}
  batch.update({k: f32(v) for k, v in extra.items()})
  return batch


def test_hand_computed_entropy_regularised():
  # r̂_0 = log π(a_0=1|s_0) = log 0.5, r̂_1 = log π(a_1=0|s_1) = log 0.9; ℓ = 0.
  # R̂_0 = log 0.5 + log 0.9, R̂_1 = log 0.9.
  # surrogate_0 = −log π_θ(1|s_0)·R̂_0 = −log 0.2 · (log 0.5 + log 0.9) = −1.28515…
  # surrogate_1 = −log π_θ(0|s_1)·R̂_1 = −log 0.5 · log 0.9 = −0.07303…
  inputs = to_inputs(hand_batch())
  terms = variants.distillation_terms('entropy_regularised', inputs)
  np.testing.assert_allclose(terms.pseudo_rewards.numpy()[:, 0], [math.log(0.5), math.log(0.9)], rtol=1e-6)
  np.testing.assert_allclose(terms.loss.numpy(), 0.0)
  surrogate = variants.distillation_surrogate('entropy_regularised', inputs).numpy()[:, 0]
  np.testing.assert_allclose(surrogate, [-1.2851493, -0.0730297], rtol=1e-5)


def test_hand_computed_n_distill():
  # ℓ_0 = H×((.5,.5)‖(.8,.2)) = −.5 log .8 − .5 log .2 = 0.91629…;  ℓ_1 = H×((.9,.1)‖(.5,.5)) = log 2.
  # r̂_0 = −H×(π(s_1)‖π_θ(s_1)) = −log 2;  r̂_1 = −H×((.25,.75)‖(.5,.5)) = −log 2.
  terms = variants.distillation_terms('n_distill', to_inputs(hand_batch()))
  np.testing.assert_allclose(terms.loss.numpy()[:, 0], [0.9162907, LN2], rtol=1e-6)
  np.testing.assert_allclose(terms.pseudo_rewards.numpy()[:, 0], [-LN2, -LN2], rtol=1e-6)
  # R̂ = (−2 log 2, −log 2): surrogate_0 = −log 0.2·(−2 log 2) + 0.91629 = −2.23118… + 0.91629…
  surrogate = variants.distillation_surrogate('n_distill', to_inputs(hand_batch())).numpy()[:, 0]
  np.testing.assert_allclose(surrogate, [math.log(0.2) * 2 * LN2 + 0.9162907, math.log(0.5) * LN2 + LN2],
                             rtol=1e-5)


def test_hand_computed_expected_entropy_regularised():
  # ℓ_0 = H×((.8,.2)‖(.5,.5)) = log 2;  ℓ_1 = H×((.5,.5)‖(.9,.1)) = −.5 log .9 − .5 log .1 = 1.20397…
  # r̂_0 = log π(a_1=0|s_1) = log .9;  r̂_1 = E_{a∼π_θ(s_2)} log π(a|s_2) = .5 log .25 + .5 log .75.
  terms = variants.distillation_terms('expected_entropy_regularised', to_inputs(hand_batch()))
  np.testing.assert_allclose(terms.loss.numpy()[:, 0], [LN2, 1.2039728], rtol=1e-6)
  np.testing.assert_allclose(terms.pseudo_rewards.numpy()[:, 0],
                             [math.log(0.9), 0.5 * math.log(0.25) + 0.5 * math.log(0.75)], rtol=1e-6)
  # A termination at s_2 (discount_1 = 0) removes the last step's next-state reward.
  ended = variants.distillation_terms('expected_entropy_regularised',
                                      to_inputs(hand_batch(discounts=[[1.0], [0.0]])))
  np.testing.assert_allclose(ended.pseudo_rewards.numpy()[:, 0], [math.log(0.9), 0.0], rtol=1e-6)


def test_hand_computed_teacher_value_reward_and_value_gate():
  # V_π = (1, 2, 4), r = (0.5, −1), discounts = (1, 0): the episode ends at s_2, whose value is dropped.
  # r̂_0 = 0.5 + 2 − 1 = 1.5;  r̂_1 = −1 + 0·4 − 2 = −3.
  batch = hand_batch(rewards=[[0.5], [-1.0]], discounts=[[1.0], [0.0]], teacher_values=[[1.0], [2.0], [4.0]],
                     student_values=[[2.0], [1.0], [0.0]])
  terms = variants.distillation_terms('teacher_value_reward', to_inputs(batch))
  np.testing.assert_allclose(terms.pseudo_rewards.numpy()[:, 0], [1.5, -3.0], rtol=1e-6)
  np.testing.assert_allclose(terms.loss.numpy(), 0.0)
  # Gate: V_π(s_0) = 1 < V_πθ(s_0) = 2 → no distillation at s_0; V_π(s_1) = 2 > 1 → ℓ_1 = log 2.
  gated = variants.distillation_terms('value_gated', to_inputs(batch))
  np.testing.assert_allclose(gated.loss.numpy()[:, 0], [0.0, LN2], rtol=1e-6)
  np.testing.assert_allclose(gated.pseudo_rewards.numpy()[:, 0], [0.5, -1.0], rtol=1e-6)
  # Equal values do not distil (the gate is strict).
  tied = variants.distillation_terms('value_gated', to_inputs(dict(batch, student_values=batch['teacher_values'])))
  np.testing.assert_allclose(tied.loss.numpy(), 0.0)


def test_hand_computed_cross_entropy_directions():
  inputs = to_inputs(hand_batch())
  forward = variants.distillation_terms('on_policy_distill', inputs).loss.numpy()[0, 0]    # H×(π‖π_θ)
  backward = variants.distillation_terms('expected_entropy_regularised', inputs).loss.numpy()[0, 0]  # H×(π_θ‖π)
  np.testing.assert_allclose(forward, -0.5 * math.log(0.8) - 0.5 * math.log(0.2), rtol=1e-6)
  np.testing.assert_allclose(backward, LN2, rtol=1e-6)


# ----------------------------------------------------------------------------------------------
# pseudo_returns: episode boundaries, bootstrap, masks.
# ----------------------------------------------------------------------------------------------


def test_pseudo_returns_hand_computed_boundary():
  # r̂ = (1, 2, 3), discounts = (0.5, 0, 0.5), bootstrap 10:
  # R̂_2 = 3 + 0.5·10 = 8;  R̂_1 = 2 + 0·8 = 2 (the episode ends at s_2);  R̂_0 = 1 + 0.5·2 = 2.
  returns = dl.pseudo_returns(f32([[1.0], [2.0], [3.0]]), f32([[0.5], [0.0], [0.5]]), f32([10.0]))
  np.testing.assert_allclose(returns.numpy()[:, 0], [2.0, 2.0, 8.0])


def test_pseudo_returns_match_reference(mode):
  rng = np.random.default_rng(1)
  rewards = f32(rng.normal(size=(6, 4)))
  discounts = f32(rng.choice([0.0, 0.9, 1.0], size=(6, 4)))
  bootstrap = f32(rng.normal(size=4))
  got = run(mode, dl.pseudo_returns, tf.constant(rewards), tf.constant(discounts), tf.constant(bootstrap))
  np.testing.assert_allclose(got, reference_returns(rewards, discounts, bootstrap), rtol=RTOL, atol=ATOL)
  undiscounted = dl.pseudo_returns(rewards, None).numpy()
  np.testing.assert_allclose(undiscounted, np.cumsum(rewards[::-1], axis=0)[::-1], rtol=RTOL, atol=ATOL)


def test_pseudo_returns_stop_gradient():
  rewards = tf.Variable(f32(np.ones((3, 2))))
  with tf.GradientTape() as tape:
    total = tf.reduce_sum(dl.pseudo_returns(rewards, None))
  assert tape.gradient(total, rewards) is None


def test_masked_steps_are_zero_and_padding_garbage_does_not_leak():
  batch = random_batch(seed=5)
  batch['mask'][2, 1] = 0.0
  for field in ('rewards', 'teacher_values', 'student_values'):
    batch[field] = batch[field].copy()
  batch['rewards'][2, 1] = np.nan
  batch['rewards'][4, 1] = np.inf      # the padding step of column 1
  for variant in dl.VARIANTS:
    surrogate = variants.distillation_surrogate(variant, to_inputs(batch)).numpy()
    assert np.all(np.isfinite(surrogate)), variant
    assert np.all(surrogate[batch['mask'] == 0] == 0.0), variant
    clean = dict(batch, rewards=np.nan_to_num(batch['rewards'], nan=0.0, posinf=0.0))
    np.testing.assert_allclose(surrogate, reference_surrogate(variant, clean), rtol=RTOL, atol=ATOL,
                               err_msg=variant)


def test_bootstrap_extends_the_last_return():
  batch = random_batch(seed=6)
  inputs = to_inputs(batch)
  base = variants.distillation_surrogate('on_policy_distill_with_reward', inputs).numpy()
  boosted = variants.distillation_surrogate('on_policy_distill_with_reward', inputs,
                                            bootstrap=f32([1.0, 1.0, 1.0])).numpy()
  log_probs = losses.categorical_log_prob(batch['student_logits'][:-1], batch['actions']).numpy()
  extra = reference_returns(np.zeros_like(batch['rewards']), batch['discounts'], np.ones(3))
  np.testing.assert_allclose(boosted - base, -log_probs * extra * batch['mask'], rtol=1e-4, atol=1e-5)


# ----------------------------------------------------------------------------------------------
# Gradients.
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize('variant', dl.VARIANTS)
def test_teacher_and_values_get_no_gradient(variant):
  batch = random_batch(seed=7)
  variables = {k: tf.Variable(batch[k]) for k in ('teacher_logits', 'teacher_values', 'student_values')}
  with tf.GradientTape() as tape:
    inputs = to_inputs(batch)._replace(**variables)
    total = tf.reduce_sum(variants.distillation_surrogate(variant, inputs))
  for name, grad in zip(variables, tape.gradient(total, list(variables.values()))):
    assert grad is None or not np.any(grad.numpy()), (variant, name)


def reference_gradient(variant, batch):
  """∂/∂z Σ_t surrogate_t for student logits z: −(onehot(a_t) − π_θ(s_t))·R̂_t + ∇ℓ_t, rows 0 … T−1.

  ∇_z H×(π‖π_θ) = π_θ − π;  ∇_z H×(π_θ‖π) = −π_θ ⊙ (log π − Σ_a π_θ(a) log π(a)).
  """
  _, reward = reference_terms(variant, batch)
  returns = reference_returns(reward, batch['discounts'])
  student, teacher, actions = batch['student_logits'], batch['teacher_logits'], batch['actions']
  T, B = actions.shape
  grad = np.zeros(student.shape)
  for b in range(B):
    for t in range(T):
      if batch['mask'][t, b] == 0:
        continue
      p, q = softmax(student[t, b]), softmax(teacher[t, b])
      onehot = np.eye(len(p))[actions[t, b]]
      grad[t, b] = -(onehot - p) * returns[t, b]
      if variant in ('teacher_distill', 'on_policy_distill', 'on_policy_distill_with_reward', 'n_distill'):
        grad[t, b] += p - q
      elif variant == 'value_gated':
        if batch['teacher_values'][t, b] > batch['student_values'][t, b]:
          grad[t, b] += p - q
      elif variant == 'expected_entropy_regularised':
        grad[t, b] += -p * (np.log(q) - np.sum(p * np.log(q)))
  return grad


@pytest.mark.parametrize('variant', dl.VARIANTS)
def test_surrogate_gradient_is_policy_gradient_plus_loss_gradient(variant):
  batch = random_batch(seed=8, T=3, B=2, A=3, dtype=np.float64)
  student = tf.Variable(batch['student_logits'])
  with tf.GradientTape() as tape:
    inputs = to_inputs(batch)._replace(student_logits=student)
    total = tf.reduce_sum(variants.distillation_surrogate(variant, inputs))
  grad = tape.gradient(total, student).numpy()
  np.testing.assert_allclose(grad, reference_gradient(variant, batch), rtol=1e-9, atol=1e-12)
  assert not np.any(grad[-1]), 'the bootstrap state s_T only enters pseudo-rewards, which are constants'


class TreeMDP:
  """A small deterministic MDP whose every trajectory can be enumerated (tabular student).

  States 0 … 4; from s, action a leads to (2s + a + 1) mod 5; episodes last exactly `horizon` steps
  (discount 1, then 0 at the end: the paper's undiscounted episodic setting). With 2 actions there are
  2^horizon trajectories; column b of the batch is the b-th action sequence.
  """
  num_states, num_actions, horizon = 5, 2, 3

  def __init__(self, seed=0):
    rng = np.random.default_rng(seed)
    self.teacher_table = rng.normal(size=(self.num_states, self.num_actions)) * 1.5
    self.student_init = rng.normal(size=(self.num_states, self.num_actions))
    self.reward_table = rng.normal(size=(self.num_states, self.num_actions))
    self.teacher_value_table = rng.normal(size=self.num_states)
    sequences = list(itertools.product(range(self.num_actions), repeat=self.horizon))
    B, T = len(sequences), self.horizon
    self.actions = np.array(sequences, np.int32).T                      # [T, B]
    self.states = np.zeros((T + 1, B), np.int32)
    for b in range(B):
      for t in range(T):
        self.states[t + 1, b] = (2 * self.states[t, b] + self.actions[t, b] + 1) % self.num_states
    self.discounts = np.ones((T, B))
    self.discounts[-1] = 0.0
    self.rewards = self.reward_table[self.states[:-1], self.actions]

  def inputs(self, student_table):
    return dl.DistillationInputs(
        student_logits=tf.gather(student_table, self.states),
        teacher_logits=tf.constant(self.teacher_table[self.states]),
        actions=tf.constant(self.actions), rewards=tf.constant(self.rewards),
        discounts=tf.constant(self.discounts),
        teacher_values=tf.constant(self.teacher_value_table[self.states]))

  def trajectory_log_probs(self, table):
    """log of Π_t policy(a_t|s_t) for each trajectory, `[B]`, for a table of logits."""
    return tf.reduce_sum(losses.categorical_log_prob(tf.gather(table, self.states[:-1]), self.actions), 0)


def expected_update(mdp, variant, sampler_table=None):
  """Σ_τ q(τ) ∇_θ Σ_t surrogate_t(τ): the variant's update in expectation over every trajectory."""
  table = tf.Variable(mdp.student_init)
  with tf.GradientTape() as tape:
    sampler = table if sampler_table is None else tf.constant(sampler_table)
    weights = tf.stop_gradient(tf.exp(mdp.trajectory_log_probs(sampler)))
    surrogate = variants.distillation_surrogate(variant, mdp.inputs(table))
    update = tf.reduce_sum(weights * tf.reduce_sum(surrogate, 0))
  return tf.convert_to_tensor(tape.gradient(update, table)).numpy()


def objective_gradient(mdp, per_trajectory_objective, sampler_table=None):
  """∇_θ Σ_τ q_θ(τ) f_θ(τ), differentiating through the sampling probabilities too."""
  table = tf.Variable(mdp.student_init)
  with tf.GradientTape() as tape:
    sampler = table if sampler_table is None else tf.constant(sampler_table)
    weights = tf.exp(mdp.trajectory_log_probs(sampler))
    objective = tf.reduce_sum(weights * per_trajectory_objective(table))
  return tf.convert_to_tensor(tape.gradient(objective, table)).numpy()


def test_true_gradient_fields_are_exact_gradients_of_their_objectives():
  """The table's "yes" rows: the expected update equals ∇ of the objective each one descends."""
  mdp = TreeMDP()
  teacher_log_prob_sum = lambda table: tf.reduce_sum(  # Σ_t −log π(a_t|s_t), independent of θ
      -losses.categorical_log_prob(mdp.teacher_table[mdp.states[:-1]], mdp.actions), 0)

  def cross_entropy_sum(table):  # Σ_t H×(π(s_t)‖π_θ(s_t))
    return tf.reduce_sum(dl.cross_entropy(mdp.teacher_table[mdp.states[:-1]],
                                          tf.gather(table, mdp.states[:-1])), 0)

  def negative_shaped_return(table):  # −Σ_t (r_t + d_t V_π(s_{t+1}) − V_π(s_t))
    del table
    v = mdp.teacher_value_table[mdp.states]
    return -np.sum(mdp.rewards + mdp.discounts * v[1:] - v[:-1], 0)

  for variant, objective in (('entropy_regularised', teacher_log_prob_sum),
                             ('expected_entropy_regularised', teacher_log_prob_sum),
                             ('n_distill', cross_entropy_sum),
                             ('teacher_value_reward', negative_shaped_return)):
    np.testing.assert_allclose(expected_update(mdp, variant), objective_gradient(mdp, objective),
                               rtol=1e-9, atol=1e-12, err_msg=variant)
  # Teacher distill: the teacher samples, so the sampling probabilities do not depend on θ.
  np.testing.assert_allclose(
      expected_update(mdp, 'teacher_distill', sampler_table=mdp.teacher_table),
      objective_gradient(mdp, cross_entropy_sum, sampler_table=mdp.teacher_table), rtol=1e-9, atol=1e-12)
  # On-policy distill is not: it misses the score-function term of its own sampling (Theorem 1).
  on_policy = expected_update(mdp, 'on_policy_distill')
  assert not np.allclose(on_policy, objective_gradient(mdp, cross_entropy_sum), atol=1e-3)


# ----------------------------------------------------------------------------------------------
# Errors.
# ----------------------------------------------------------------------------------------------


def assert_one_line(error, *fragments):
  message = str(error.value)
  # Gin appends "In call to configurable ..." on a line of its own; the error itself is the first line.
  message = message.split('\n  In call to configurable')[0]
  assert '\n' not in message, message
  for fragment in fragments:
    assert fragment in message, (fragment, message)


def test_unknown_variant_names_the_value_and_lists_the_valid_ones():
  inputs = to_inputs(random_batch())
  for call in (lambda: variants.distillation_surrogate('kickstart', inputs),
               lambda: variants.distillation_terms('kickstart', inputs),
               lambda: variants.DistillationConfig(variant='kickstart')):
    with pytest.raises(ValueError) as error:
      call()
    assert_one_line(error, "'kickstart'", *dl.VARIANTS)


@pytest.mark.parametrize('field, value, fragment', [
    ('actions', np.zeros((6, 3), np.int32), '`actions`'),
    ('actions', np.zeros((5, 3, 1), np.int32), '`actions`'),
    ('teacher_logits', np.zeros((6, 3, 5), np.float32), '`teacher_logits`'),
    ('student_logits', np.zeros((6, 3), np.float32), '`student_logits`'),
    ('rewards', np.zeros((6, 3), np.float32), '`rewards`'),
    ('discounts', np.zeros((5,), np.float32), '`discounts`'),
    ('teacher_values', np.zeros((5, 3), np.float32), '`teacher_values`'),
    ('student_values', np.zeros((6, 2), np.float32), '`student_values`'),
    ('mask', np.zeros((5, 2), np.float32), '`mask`'),
])
def test_shape_errors_are_one_line_naming_the_argument(field, value, fragment):
  batch = random_batch()
  batch[field] = value
  with pytest.raises(ValueError) as error:
    variants.distillation_surrogate('value_gated', to_inputs(batch))
  assert_one_line(error, fragment)


def test_dtype_errors_name_the_argument():
  batch = random_batch()
  with pytest.raises(TypeError) as error:
    variants.distillation_surrogate('on_policy_distill', to_inputs(dict(batch, actions=batch['actions'] * 1.0)))
  assert_one_line(error, '`actions`')
  with pytest.raises(TypeError) as error:
    variants.distillation_surrogate('on_policy_distill_with_reward',
                                    to_inputs(dict(batch, rewards=batch['rewards'].astype(np.float64))))
  assert_one_line(error, '`rewards`')


def test_missing_field_names_it():
  batch = random_batch()
  del batch['teacher_values']
  with pytest.raises(ValueError) as error:
    variants.distillation_surrogate('teacher_value_reward', to_inputs(batch))
  assert_one_line(error, "'teacher_value_reward'", '`inputs.teacher_values`')


def test_negative_coefficient_is_rejected():
  with pytest.raises(ValueError) as error:
    variants.distillation_surrogate('n_distill', to_inputs(random_batch()), distillation_coef=-1.0)
  assert_one_line(error, '`distillation_coef`')


# ----------------------------------------------------------------------------------------------
# Run-time coefficients and gin.
# ----------------------------------------------------------------------------------------------


def test_coefficient_variables_are_read_at_run_time():
  batch = random_batch(seed=9)
  alpha = tf.Variable(1.0)
  traces = []

  @tf.function
  def mean_surrogate(inputs):
    traces.append(1)
    return losses.masked_mean(variants.distillation_surrogate('n_distill', inputs, distillation_coef=alpha),
                              inputs.mask)

  inputs = to_inputs(batch)
  first = mean_surrogate(inputs).numpy()
  alpha.assign(2.0)
  second = mean_surrogate(inputs).numpy()
  assert len(traces) == 1
  np.testing.assert_allclose(second, 2.0 * first, rtol=1e-5)


def test_distillation_config_from_gin():
  gin.parse_config_files_and_bindings([], [
      "DistillationConfig.variant = 'n_distill'",
      'DistillationConfig.distillation_coef = 0.5',
  ])
  config = variants.DistillationConfig()
  assert (config.variant, config.distillation_coef, config.reward_coef) == ('n_distill', 0.5, 1.0)
  assert config.sampled_by == 'student' and config.required_fields == ()
  inputs = to_inputs(random_batch())
  np.testing.assert_allclose(config.surrogate(inputs).numpy(),
                             variants.distillation_surrogate('n_distill', inputs, distillation_coef=0.5).numpy())
  gin.clear_config()
  assert variants.DistillationConfig().variant == dl.DEFAULT_VARIANT
  with pytest.raises(ValueError, match='reward_coef'):
    variants.DistillationConfig(reward_coef=-1.0)


def test_distillation_metrics_match_numpy():
  batch = random_batch(seed=10)
  metrics = {k: v.numpy() for k, v in dl.distillation_metrics(to_inputs(batch)).items()}
  T, B = batch['actions'].shape
  kl, count = 0.0, 0
  for t in range(T):
    for b in range(B):
      if batch['mask'][t, b]:
        p, q = softmax(batch['teacher_logits'][t, b]), softmax(batch['student_logits'][t, b])
        kl += np.sum(p * np.log(p / q))
        count += 1
  np.testing.assert_allclose(metrics['kl_teacher_student'], kl / count, rtol=1e-5)
  assert metrics['kl_student_teacher'] > 0 and metrics['student_entropy'] > 0


@pytest.mark.parametrize('variant', dl.VARIANTS)
def test_step_loss_is_the_terms_loss(variant):
  """`step_loss` (a learner's per-minibatch ℓ) equals `distillation_terms(...).loss` row by row."""
  rng = np.random.default_rng(3)
  T_, B_, A_ = 3, 2, 4
  student = f32(rng.normal(size=(T_ + 1, B_, A_)))
  teacher = f32(rng.normal(size=(T_ + 1, B_, A_)))
  teacher_values = f32(rng.normal(size=(T_ + 1, B_)))
  student_values = f32(rng.normal(size=(T_ + 1, B_)))
  inputs = dl.DistillationInputs(
      student_logits=student, teacher_logits=teacher, actions=rng.integers(0, A_, (T_, B_)),
      rewards=f32(rng.normal(size=(T_, B_))), discounts=np.full((T_, B_), 0.9, np.float32),
      teacher_values=teacher_values, student_values=student_values)
  expected = variants.distillation_terms(variant, inputs).loss.numpy()
  got = variants.step_loss(variant, student[:-1], teacher[:-1], teacher_values[:-1], student_values[:-1]).numpy()
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
