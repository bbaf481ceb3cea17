"""RND's maths: running mean/std, moments from all-reducible sums, the return filter, the predictor's error.

Everything is checked against slow NumPy references (float64) and hand-computed values; the pure
functions run eagerly, under `tf.function` and with `jit_compile=True`.
"""

import numpy as np
import pytest
import tensorflow as tf

from protege.agents.learners import normalization
from protege.agents.learners import rnd_losses

MODES = ['eager', 'function', 'jit']


def _run(mode, fn, *args):
  """Calls `fn(*args)` eagerly, under tf.function (autograph off, as the learner) or XLA-compiled."""
  if mode == 'eager':
    return fn(*args)
  if mode == 'function':
    return tf.function(fn, autograph=False)(*args)
  return tf.function(fn, jit_compile=True)(*args)


# --- NumPy references -------------------------------------------------------------------------------


class _NumpyRunningMeanStd:
  """OpenAI baselines' RunningMeanStd, float64."""

  def __init__(self, shape, epsilon=1e-4):
    self.mean, self.var, self.count = np.zeros(shape), np.ones(shape), epsilon

  def update(self, x, num_leading_axes):
    axes = tuple(range(num_leading_axes))
    self.update_from_moments(x.mean(axis=axes), x.var(axis=axes), np.prod(x.shape[:num_leading_axes]))

  def update_from_moments(self, batch_mean, batch_var, batch_count):
    delta = batch_mean - self.mean
    total = self.count + batch_count
    m2 = self.var * self.count + batch_var * batch_count + delta ** 2 * self.count * batch_count / total
    self.mean, self.var, self.count = self.mean + delta * batch_count / total, m2 / total, total


def _filter_reference(rewards, initial, gamma):
  """R_t = γ R_{t−1} + r_t over axis 0, one column at a time."""
  returns = np.zeros_like(rewards, dtype=np.float64)
  for b in range(rewards.shape[1]):
    running = initial[b]
    for t in range(rewards.shape[0]):
      running = gamma * running + rewards[t, b]
      returns[t, b] = running
  return returns


# --- RunningMeanStd ---------------------------------------------------------------------------------


def test_initial_state():
  rms = normalization.RunningMeanStd((2, 3), name='obs')
  np.testing.assert_array_equal(rms.mean.numpy(), np.zeros((2, 3)))
  np.testing.assert_array_equal(rms.var.numpy(), np.ones((2, 3)))
  np.testing.assert_allclose(rms.count.numpy(), 1e-4)
  np.testing.assert_array_equal(rms.std.numpy(), np.ones((2, 3)))
  assert all(not v.trainable for v in (rms.mean, rms.var, rms.count))
  assert len(rms.variables) == 3 and rms.trainable_variables == ()
  assert rms.mean.dtype == rms.var.dtype == rms.count.dtype == tf.float32


@pytest.mark.parametrize('shape', [(), (3, 2)], ids=['scalar', 'per_element'])
def test_update_matches_numpy_over_several_batches_inside_tf_function(shape):
  rng = np.random.default_rng(0)
  rms, reference = normalization.RunningMeanStd(shape), _NumpyRunningMeanStd(shape)
  update = tf.function(rms.update)
  batches = [rng.normal(3.0, 2.0, size=(5, 4) + shape), rng.normal(-1.0, 0.5, size=(7,) + shape),
             rng.normal(10.0, 3.0, size=(2, 3, 2) + shape)]
  for batch in batches:
    update(tf.constant(batch, tf.float32))
    reference.update(batch, batch.ndim - len(shape))
    np.testing.assert_allclose(rms.mean.numpy(), reference.mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms.var.numpy(), reference.var, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rms.count.numpy(), reference.count, rtol=1e-6)
  # With epsilon = 1e-4 the statistics are those of all the data seen.
  flat = np.concatenate([b.reshape((-1,) + shape) for b in batches])
  np.testing.assert_allclose(rms.mean.numpy(), flat.mean(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(rms.var.numpy(), flat.var(0), rtol=1e-4)
  np.testing.assert_allclose(rms.std.numpy(), flat.std(0), rtol=1e-4)
  np.testing.assert_allclose(rms.count.numpy(), len(flat) + 1e-4)


def test_parallel_merge_of_parts_equals_one_update_of_the_whole():
  data = np.random.default_rng(1).normal(5.0, 3.0, size=(40, 4))
  whole, parts = normalization.RunningMeanStd((4,)), normalization.RunningMeanStd((4,))
  whole.update(data)
  merge = tf.function(parts.update_from_moments, autograph=False)
  for part in (data[:7], data[7:30], data[30:]):
    merge(part.mean(0), part.var(0), float(len(part)))
  for attribute in ('mean', 'var', 'count'):
    np.testing.assert_allclose(getattr(parts, attribute).numpy(), getattr(whole, attribute).numpy(),
                               rtol=1e-5)


def test_update_from_moments_by_hand():
  # Prior: mean 0, var 1, count 1 (epsilon = 1). Batch {2, 4}: mean 3, var 1, count 2.
  # δ = 3, n = 3, mean = 0 + 3·2/3 = 2, var = (1·1 + 1·2 + 9·1·2/3) / 3 = 9/3 = 3.
  rms = normalization.RunningMeanStd((), epsilon=1.0)
  rms.update(tf.constant([2.0, 4.0]))
  np.testing.assert_allclose([rms.mean.numpy(), rms.var.numpy(), rms.count.numpy()], [2.0, 3.0, 3.0],
                             rtol=1e-6)


def test_an_empty_batch_changes_nothing():
  rms = normalization.RunningMeanStd((2,))
  rms.update(tf.constant([[1.0, 2.0], [3.0, 5.0]]))
  before = [v.numpy().copy() for v in rms.variables]
  rms.update(tf.zeros([0, 2]))
  rms.update_from_moments(*normalization.moments_from_sums(*normalization.moments_sums(tf.zeros([0, 2]), 1)))
  for b, v in zip(before, rms.variables):
    np.testing.assert_array_equal(v.numpy(), b)


def test_update_inside_strategy_run_uses_the_global_batch(mirrored_strategy):
  strategy = mirrored_strategy
  with strategy.scope():
    rms = normalization.RunningMeanStd((3,))
  assert isinstance(rms.mean, tf.distribute.DistributedValues)
  data = np.random.default_rng(2).normal(2.0, 4.0, size=(2, 6, 3)).astype(np.float32)
  per_replica = strategy.experimental_distribute_values_from_function(
      lambda context: tf.constant(data[context.replica_id_in_sync_group]))
  tf.function(lambda x: strategy.run(rms.update, (x,)))(per_replica)
  reference = _NumpyRunningMeanStd((3,))
  reference.update(data.astype(np.float64), 2)
  np.testing.assert_allclose(rms.mean.numpy(), reference.mean, rtol=1e-5)
  np.testing.assert_allclose(rms.var.numpy(), reference.var, rtol=1e-5)
  np.testing.assert_allclose(rms.count.numpy(), reference.count)
  # Every replica's copy holds the same values.
  for variable in (rms.mean, rms.var, rms.count):
    copies = [v.numpy() for v in strategy.experimental_local_results(variable)]
    np.testing.assert_array_equal(copies[0], copies[1])


def test_replica_sums_all_reduced_then_merged_in_cross_replica_context(mirrored_strategy):
  # The learner's way: moments_sums per replica, SUM across replicas, moments_from_sums, one merge.
  strategy = mirrored_strategy
  with strategy.scope():
    rms = normalization.RunningMeanStd(())
  data = np.random.default_rng(3).normal(1.0, 2.0, size=(2, 5, 4)).astype(np.float32)
  per_replica = strategy.experimental_distribute_values_from_function(
      lambda context: tf.constant(data[context.replica_id_in_sync_group]))

  @tf.function(autograph=False)
  def step(x):
    sums = strategy.run(lambda y: normalization.moments_sums(y, 2), (x,))
    sums = [strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]
    rms.update_from_moments(*normalization.moments_from_sums(*sums))

  step(per_replica)
  reference = _NumpyRunningMeanStd(())
  reference.update(data.astype(np.float64), 3)
  np.testing.assert_allclose(rms.mean.numpy(), reference.mean, rtol=1e-5)
  np.testing.assert_allclose(rms.var.numpy(), reference.var, rtol=1e-5)


def test_normalize_and_clip():
  rms = normalization.RunningMeanStd((2,))
  rms.mean.assign([1.0, -2.0])
  rms.var.assign([4.0, 0.25])
  x = np.array([[3.0, -2.0], [1.0, 0.0], [-20.0, -5.0]], np.float32)
  # By hand: (x − mean) / sqrt(var): [[1, 0], [0, 4], [−10.5, −6]].
  expected = np.array([[1.0, 0.0], [0.0, 4.0], [-10.5, -6.0]])
  np.testing.assert_allclose(rms.normalize(x), expected, rtol=1e-6)
  np.testing.assert_allclose(rms.normalize(x, clip=5.0), np.clip(expected, -5.0, 5.0), rtol=1e-6)
  clip = tf.Variable(2.0)
  normalize = tf.function(lambda y: rms.normalize(y, clip=clip), autograph=False)
  np.testing.assert_allclose(normalize(x), np.clip(expected, -2.0, 2.0), rtol=1e-6)
  clip.assign(3.0)  # read when the step runs, not frozen at trace time
  np.testing.assert_allclose(normalize(x), np.clip(expected, -3.0, 3.0), rtol=1e-6)
  np.testing.assert_allclose(rms.normalize(np.uint8([[3, 1]])), [[1.0, 6.0]], rtol=1e-6)


def test_normalize_uses_the_1e8_epsilon():
  rms = normalization.RunningMeanStd(())
  rms.var.assign(0.0)
  np.testing.assert_allclose(rms.normalize(tf.constant([1e-4])), [1.0], rtol=1e-6)


def test_wrong_trailing_shape_raises():
  rms = normalization.RunningMeanStd((3, 2))
  with pytest.raises(ValueError, match=r'trailing dimensions must be \[3, 2\]'):
    rms.update(tf.zeros([4, 2, 3]))
  with pytest.raises(ValueError, match=r'trailing dimensions must be \[3, 2\]'):
    rms.normalize(tf.zeros([2]))


def test_checkpoint_round_trip_restores_mean_var_count(tmp_path):
  rms = normalization.RunningMeanStd((2,))
  rms.update(np.random.default_rng(4).normal(size=(9, 2)))
  path = tf.train.Checkpoint(normalizer=rms).save(str(tmp_path / 'ckpt'))
  fresh = normalization.RunningMeanStd((2,))
  tf.train.Checkpoint(normalizer=fresh).restore(path).assert_consumed()
  for attribute in ('mean', 'var', 'count'):
    np.testing.assert_array_equal(getattr(fresh, attribute).numpy(), getattr(rms, attribute).numpy())
  fresh.reset()
  np.testing.assert_array_equal(fresh.var.numpy(), [1.0, 1.0])
  np.testing.assert_allclose(fresh.count.numpy(), 1e-4)


# --- moments_sums / moments_from_sums ---------------------------------------------------------------


@pytest.mark.parametrize('mode', MODES)
def test_moments_from_sums_matches_numpy(mode):
  x = np.random.default_rng(5).normal(2.0, 3.0, size=(4, 5, 3)).astype(np.float32)
  for leading in (1, 2, 3):
    sums = _run(mode, lambda y, k=leading: normalization.moments_sums(y, k), tf.constant(x))
    axes = tuple(range(leading))
    np.testing.assert_allclose(sums[0], x.astype(np.float64).sum(axes), rtol=1e-5)
    np.testing.assert_allclose(sums[1], np.square(x.astype(np.float64)).sum(axes), rtol=1e-5)
    assert float(sums[2]) == np.prod(x.shape[:leading])
    mean, var, count = _run(mode, normalization.moments_from_sums, *sums)
    np.testing.assert_allclose(mean, x.mean(axes), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(var, x.astype(np.float64).var(axes), rtol=1e-4)
    assert float(count) == np.prod(x.shape[:leading])


def test_sums_of_parts_add_up_to_the_whole():
  x = np.random.default_rng(6).normal(size=(10, 2)).astype(np.float32)
  parts = [normalization.moments_sums(p, 1) for p in (x[:3], x[3:])]
  summed = [a + b for a, b in zip(*parts)]
  for got, want in zip(normalization.moments_from_sums(*summed),
                       normalization.moments_from_sums(*normalization.moments_sums(x, 1))):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_moments_by_hand():
  # {1, 2, 3, 6}: sum 12, sum of squares 50, n 4, mean 3, var 50/4 − 9 = 3.5.
  sums = normalization.moments_sums(tf.constant([1.0, 2.0, 3.0, 6.0]), 1)
  np.testing.assert_allclose([float(s) for s in sums], [12.0, 50.0, 4.0])
  np.testing.assert_allclose([float(m) for m in normalization.moments_from_sums(*sums)], [3.0, 3.5, 4.0])


def test_variance_is_never_negative_and_a_shift_removes_the_cancellation():
  rng = np.random.default_rng(7)
  constant = np.full((1000,), 12345.678, np.float32)
  _, var, _ = normalization.moments_from_sums(*normalization.moments_sums(constant, 1))
  assert float(var) >= 0.0
  x = (1e4 + rng.normal(0.0, 0.01, size=(4096,))).astype(np.float32)
  shift = tf.constant(1e4)
  mean, var, _ = normalization.moments_from_sums(*normalization.moments_sums(x, 1, shift=shift), shift=shift)
  np.testing.assert_allclose(float(mean), x.astype(np.float64).mean(), rtol=1e-7)
  np.testing.assert_allclose(float(var), x.astype(np.float64).var(), rtol=1e-3)


def test_moments_sums_rejects_a_bad_axis_count():
  with pytest.raises(ValueError, match='num_leading_axes'):
    normalization.moments_sums(tf.zeros([2, 3]), 3)


# --- the discounted return filter ---------------------------------------------------------------


@pytest.mark.parametrize('mode', MODES)
def test_return_filter_matches_a_numpy_loop(mode):
  rng = np.random.default_rng(8)
  rewards = rng.uniform(size=(6, 3)).astype(np.float32)
  initial = rng.uniform(size=(3,)).astype(np.float32)
  returns, final = _run(mode, lambda r, i: rnd_losses.discounted_return_filter(r, i, 0.99),
                        tf.constant(rewards), tf.constant(initial))
  expected = _filter_reference(rewards.astype(np.float64), initial.astype(np.float64), 0.99)
  np.testing.assert_allclose(returns, expected, rtol=1e-6)
  np.testing.assert_allclose(final, expected[-1], rtol=1e-6)


def test_return_filter_by_hand():
  # γ = 0.5, R_{−1} = [4, 0]. Column 0: 0.5·4 + 1 = 3, then 0.5·3 + 2 = 3.5.
  # Column 1: 0.5·0 + 1 = 1, then 0.5·1 + 0 = 0.5.
  returns, final = rnd_losses.discounted_return_filter([[1.0, 1.0], [2.0, 0.0]], tf.constant([4.0, 0.0]), 0.5)
  np.testing.assert_allclose(returns, [[3.0, 1.0], [3.5, 0.5]])
  np.testing.assert_allclose(final, [3.5, 0.5])


def test_return_filter_runs_over_time_not_over_environments():
  # Column 0 gets a reward at t = 0 only; column 1 never does. Over time, column 0 decays and column 1
  # stays 0; the mistaken filter over the env axis would leak column 0's reward into column 1.
  rewards = np.array([[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], np.float32)
  returns, _ = rnd_losses.discounted_return_filter(rewards, tf.zeros([2]), 0.9)
  np.testing.assert_allclose(returns, [[1.0, 0.0], [0.9, 0.0], [0.81, 0.0]], rtol=1e-6)
  over_envs = _filter_reference(rewards.T.astype(np.float64), np.zeros(3), 0.9).T
  np.testing.assert_allclose(over_envs, [[1.0, 0.9], [0.0, 0.0], [0.0, 0.0]])
  assert not np.allclose(returns, over_envs)
  # On random data too.
  rng = np.random.default_rng(9)
  rewards = rng.uniform(size=(5, 4)).astype(np.float32)
  returns, _ = rnd_losses.discounted_return_filter(rewards, tf.zeros([4]), 0.99)
  over_envs = _filter_reference(rewards.T.astype(np.float64), np.zeros(5), 0.99).T
  assert not np.allclose(returns, over_envs, rtol=1e-3)


def test_return_filter_carries_across_batches_and_reads_a_variable_discount():
  rng = np.random.default_rng(10)
  rewards = rng.uniform(size=(8, 3)).astype(np.float32)
  discount = tf.Variable(0.9)
  step = tf.function(lambda r, i: rnd_losses.discounted_return_filter(r, i, discount), jit_compile=True)
  first, carry = step(tf.constant(rewards[:5]), tf.zeros([3]))
  second, _ = step(tf.constant(rewards[5:]), carry)
  whole = _filter_reference(rewards.astype(np.float64), np.zeros(3), 0.9)
  np.testing.assert_allclose(np.concatenate([first, second]), whole, rtol=1e-6)
  discount.assign(0.5)  # no retrace needed: the variable is read when the step runs
  returns, _ = step(tf.constant(rewards[:5]), tf.zeros([3]))
  np.testing.assert_allclose(returns, _filter_reference(rewards[:5].astype(np.float64), np.zeros(3), 0.5),
                             rtol=1e-6)


def test_return_filter_with_no_steps_returns_the_initial_return():
  returns, final = rnd_losses.discounted_return_filter(tf.zeros([0, 2]), tf.constant([1.0, 2.0]), 0.99)
  assert returns.shape == (0, 2)
  np.testing.assert_array_equal(final, [1.0, 2.0])


@pytest.mark.parametrize('rewards, initial, discount, error, message', [
    (np.zeros([3], np.float32), np.zeros([3], np.float32), 0.9, ValueError, 'rewards'),
    (np.zeros([3, 2], np.float32), np.zeros([3], np.float32), 0.9, ValueError, 'initial_return'),
    (np.zeros([3, 2], np.float32), np.zeros([3, 2], np.float32), 0.9, ValueError, 'initial_return'),
    (np.zeros([3, 2], np.float32), np.zeros([2], np.float32), [0.9, 0.9], ValueError, 'discount'),
    (np.zeros([3, 2], np.int32), np.zeros([2], np.int32), 0.9, TypeError, 'rewards'),
    (np.zeros([3, 2], np.float32), np.zeros([2], np.float64), 0.9, TypeError, 'initial_return'),
])
def test_return_filter_rejects_bad_arguments(rewards, initial, discount, error, message):
  with pytest.raises(error, match=message):
    rnd_losses.discounted_return_filter(tf.constant(rewards), tf.constant(initial), discount)


# --- prediction error and predictor loss -------------------------------------------------------------


@pytest.mark.parametrize('mode', MODES)
def test_prediction_error_by_hand_and_against_numpy(mode):
  predicted = tf.constant([[1.0, 2.0], [0.0, 0.0]])
  target = tf.constant([[0.0, 0.0], [1.0, 1.0]])
  # (1 + 4) / 2 = 2.5 and (1 + 1) / 2 = 1.
  np.testing.assert_allclose(_run(mode, rnd_losses.prediction_error, predicted, target), [2.5, 1.0])
  rng = np.random.default_rng(11)
  p, t = rng.normal(size=(2, 3, 8)).astype(np.float32), rng.normal(size=(2, 3, 8)).astype(np.float32)
  error = _run(mode, rnd_losses.prediction_error, tf.constant(p), tf.constant(t))
  assert error.shape == (2, 3)
  np.testing.assert_allclose(error, np.mean((p.astype(np.float64) - t) ** 2, axis=-1), rtol=1e-5)


def test_prediction_error_stops_the_target_gradient():
  predicted, target = tf.Variable([[1.0, 3.0]]), tf.Variable([[0.0, 0.0]])
  with tf.GradientTape() as tape:
    error = rnd_losses.prediction_error(predicted, target)
  grad_predicted, grad_target = tape.gradient(error, [predicted, target])
  np.testing.assert_allclose(grad_predicted, [[1.0, 3.0]])  # d/dp mean((p − t)²) = 2(p − t)/K, K = 2
  assert grad_target is None


@pytest.mark.parametrize('mode', MODES)
def test_predictor_loss_by_hand_and_against_numpy(mode):
  predicted = tf.constant([[1.0, 2.0], [0.0, 0.0], [3.0, 3.0]])
  target = tf.constant([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
  # Errors [2.5, 1, 9]; mask [1, 0, 1] → (2.5 + 9) / 2 = 5.75.
  loss = _run(mode, rnd_losses.predictor_loss, predicted, target, tf.constant([1.0, 0.0, 1.0]))
  np.testing.assert_allclose(loss, 5.75)
  loss = _run(mode, rnd_losses.predictor_loss, predicted, target, tf.constant([True, True, False]))
  np.testing.assert_allclose(loss, 1.75)
  # An empty selection gives 0, not NaN.
  np.testing.assert_allclose(_run(mode, rnd_losses.predictor_loss, predicted, target, tf.zeros([3])), 0.0)
  rng = np.random.default_rng(12)
  p, t = rng.normal(size=(32, 16)).astype(np.float32), rng.normal(size=(32, 16)).astype(np.float32)
  mask = (rng.uniform(size=32) < 0.25).astype(np.float32)
  errors = np.mean((p.astype(np.float64) - t) ** 2, axis=-1)
  expected = np.sum(errors * mask) / max(mask.sum(), 1.0)
  np.testing.assert_allclose(_run(mode, rnd_losses.predictor_loss, tf.constant(p), tf.constant(t),
                                  tf.constant(mask)), expected, rtol=1e-5)
  # A full mask is the mean error.
  np.testing.assert_allclose(_run(mode, rnd_losses.predictor_loss, tf.constant(p), tf.constant(t),
                                  tf.ones([32])), errors.mean(), rtol=1e-5)


def test_losses_reject_bad_arguments():
  with pytest.raises(ValueError, match='predicted'):
    rnd_losses.prediction_error(tf.zeros([2, 3]), tf.zeros([2, 4]))
  with pytest.raises(TypeError, match='predicted'):
    rnd_losses.prediction_error(tf.zeros([2, 3], tf.int32), tf.zeros([2, 3]))
  with pytest.raises(TypeError, match='target'):
    rnd_losses.prediction_error(tf.zeros([2, 3]), tf.zeros([2, 3], tf.float64))
  with pytest.raises(ValueError, match='update_mask'):
    rnd_losses.predictor_loss(tf.zeros([2, 3]), tf.zeros([2, 3]), tf.ones([3]))
  with pytest.raises(TypeError, match='update_mask'):
    rnd_losses.predictor_loss(tf.zeros([2, 3]), tf.zeros([2, 3]), tf.constant(['a', 'b']))
