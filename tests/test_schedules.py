"""λ_k schedules against hand values, and TeacherWeights: live variables, PBT mode, checkpoints, gin."""

import math

import gin
import numpy as np
import pytest
import tensorflow as tf

from protege.agents.distillation import schedules
from protege.runtime import errors


def _values(weights):
  return [float(v) for v in weights.values()]


@pytest.mark.parametrize('wrap', ['eager', 'function', 'xla'])
def test_schedules_match_hand_values(wrap):
  cases = [
      (schedules.constant_schedule(0.5), [(0, 0.5), (7, 0.5), (10**9, 0.5)]),
      # 1 + (0 − 1)·min(step / 100, 1); negative steps give the initial value.
      (schedules.linear_decay(1.0, 0.0, 100), [(-5, 1.0), (0, 1.0), (25, 0.75), (100, 0.0), (200, 0.0)]),
      (schedules.linear_decay(0.2, 1.0, 4), [(1, 0.4), (3, 0.8)]),
      # 2 · 0.5^(step / 10).
      (schedules.exponential_decay(2.0, 0.5, 10), [(0, 2.0), (10, 1.0), (20, 0.5), (5, 2 / math.sqrt(2))]),
      # ... floored at 0.6: 2 · 0.5² = 0.5 < 0.6.
      (schedules.exponential_decay(2.0, 0.5, 10, minimum=0.6), [(10, 1.0), (20, 0.6)]),
      # Staircase: the exponent is floor(15 / 10) = 1.
      (schedules.exponential_decay(2.0, 0.5, 10, staircase=True), [(9, 2.0), (15, 1.0)]),
  ]
  for schedule, points in cases:
    call = {'eager': schedule, 'function': tf.function(schedule),
            'xla': tf.function(schedule, jit_compile=True)}[wrap]
    for step, expected in points:
      for step_value in (step, tf.constant(step, tf.int64), tf.constant(float(step))):
        value = call(step_value)
        assert value.dtype == tf.float32 and value.shape == ()
        assert float(value) == pytest.approx(expected, rel=1e-6, abs=1e-7), (schedule, step)


def test_schedule_arguments_are_checked():
  with pytest.raises(ValueError, match='linear_decay.decay_steps must be > 0, got 0'):
    schedules.linear_decay(1.0, 0.0, 0)
  with pytest.raises(ValueError, match='exponential_decay.initial must be a finite number'):
    schedules.exponential_decay(float('nan'), 0.5, 10)
  with pytest.raises(ValueError, match='takes a scalar step'):
    schedules.constant_schedule(1.0)(tf.zeros([2]))
  expected_repr = 'linear_decay(initial=1.0, final=0.0, decay_steps=100)'
  assert repr(schedules.linear_decay(1.0, 0.0, 100)) == expected_repr


def test_weights_change_inside_a_traced_function_without_retracing():
  weights = schedules.TeacherWeights(['a', 'b'], schedules=[schedules.linear_decay(1.0, 0.0, 10),
                                                            schedules.exponential_decay(1.0, 0.5, 10)])
  step = tf.Variable(0, dtype=tf.int64)
  traces = []

  @tf.function
  def train_step():
    traces.append(1)
    lambdas = weights.update(step)
    step.assign_add(5)
    return lambdas

  seen = [[float(v) for v in train_step()] for _ in range(3)]
  np.testing.assert_allclose(seen, [[1.0, 1.0], [0.5, 2**-0.5], [0.0, 0.5]], rtol=1e-6)
  assert len(traces) == 1
  np.testing.assert_allclose(_values(weights), [0.0, 0.5], rtol=1e-6)


def test_factorised_weights_multiply_the_global_scale():
  weights = schedules.TeacherWeights(['a', 'b'], schedules={'b': 0.5},
                                     scale_schedule=schedules.linear_decay(2.0, 0.0, 10))
  assert weights.factorised and list(weights.variables_by_name()) == ['scale', 'a', 'b']
  np.testing.assert_allclose(_values(weights), [2.0, 1.0])  # λ = 2, λ̂ = (1, 0.5).
  np.testing.assert_allclose([float(v) for v in weights.update(5)], [1.0, 0.5])


def test_pbt_mode_leaves_the_variables_to_a_controller():
  weights = schedules.TeacherWeights(['a', 'b'], schedules=schedules.linear_decay(0.8, 0.0, 10),
                                     scale_schedule=1.0, mode='pbt')
  traces = []

  @tf.function
  def train_step(step):
    traces.append(1)
    return weights.update(step)

  np.testing.assert_allclose([float(v) for v in train_step(tf.constant(5))], [0.8, 0.8])  # Step-0 values.
  weights.assign('a', 0.3)
  weights.assign('scale', tf.constant(0.5))
  weights.variables_by_name()['b'].assign(weights.variables_by_name()['b'] * 1.2)  # A PBT perturbation.
  np.testing.assert_allclose([float(v) for v in train_step(tf.constant(6))], [0.15, 0.48], rtol=1e-6)
  assert len(traces) == 1
  with pytest.raises(ValueError, match=r"no λ named 'c'; the names are \['scale', 'a', 'b'\]"):
    weights.assign('c', 1.0)
  with pytest.raises(ValueError, match='must be >= 0'):
    weights.assign('a', -0.1)
  with pytest.raises(tf.errors.InvalidArgumentError):
    weights.assign('a', tf.constant(-0.1))


def test_weights_are_checked():
  with pytest.raises(ValueError, match="needs mode='pbt'"):
    schedules.TeacherWeights(['a']).assign('a', 0.5)
  with pytest.raises(ValueError, match=r"unknown teachers \['c'\]; the teachers are \['a', 'b'\]"):
    schedules.TeacherWeights(['a', 'b'], schedules={'c': 1.0})
  with pytest.raises(ValueError, match='2 schedules for 3 teachers'):
    schedules.TeacherWeights(['a', 'b', 'c'], schedules=[1.0, 1.0])
  with pytest.raises(ValueError, match="λ of 'a' starts at -1.0"):
    schedules.TeacherWeights(['a'], schedules=-1.0)
  with pytest.raises(ValueError, match='unique non-empty names'):
    schedules.TeacherWeights(['a', 'a'])
  with pytest.raises(ValueError, match="may not be named 'scale'"):
    schedules.TeacherWeights(['scale'], scale_schedule=1.0)
  with pytest.raises(ValueError, match="mode must be 'schedule' or 'pbt'"):
    schedules.TeacherWeights(['a'], mode='evolve')
  going_negative = schedules.TeacherWeights(['a'], schedules=schedules.linear_decay(1.0, -1.0, 10))
  with pytest.raises(tf.errors.InvalidArgumentError, match='negative'):
    going_negative.update(10)


def test_checkpoint_round_trip(tmp_path):
  weights = schedules.TeacherWeights(['seek', 'avoid'], scale_schedule=1.0, mode='pbt')
  weights.assign('seek', 0.25)
  weights.assign('scale', 3.0)
  path = tf.train.Checkpoint(weights=weights).save(str(tmp_path / 'ckpt'))
  restored = schedules.TeacherWeights(['seek', 'avoid'], scale_schedule=1.0, mode='pbt')
  tf.train.Checkpoint(weights=restored).restore(path).assert_existing_objects_matched()
  np.testing.assert_allclose(_values(restored), [0.75, 3.0])
  assert not restored.trainable_variables


def test_update_in_a_mirrored_replica_context(mirrored_strategy):
  with mirrored_strategy.scope():
    weights = schedules.TeacherWeights(['a'], schedules=schedules.linear_decay(1.0, 0.0, 10))

  @tf.function
  def train_step(step):
    return mirrored_strategy.run(lambda: weights.update(step)[0])

  lambdas = mirrored_strategy.experimental_local_results(train_step(tf.constant(4)))
  np.testing.assert_allclose([float(v) for v in lambdas], [0.6, 0.6], rtol=1e-6)
  np.testing.assert_allclose(_values(weights), [0.6], rtol=1e-6)


def test_weights_from_gin():
  gin.parse_config([
      'TeacherWeights.schedules = {"seek": @seek/linear_decay(), "avoid": @avoid/exponential_decay()}',
      'TeacherWeights.scale_schedule = @constant_schedule()',
      'constant_schedule.value = 2.0',
      'seek/linear_decay.decay_steps = 100  # learner steps',
      'avoid/exponential_decay.decay_rate = 0.5',
      'avoid/exponential_decay.decay_steps = 10  # learner steps',
  ])
  weights = schedules.TeacherWeights(['seek', 'avoid'])
  np.testing.assert_allclose([float(v) for v in weights.update(20)], [1.6, 0.5], rtol=1e-6)


def test_a_schedule_over_the_run_needs_the_runs_length_and_follows_it():
  schedule = schedules.linear_decay(2.0, 0.0)  # decay_steps=None: the whole run
  with pytest.raises(errors.ConfigError, match="follows the run's length"):
    schedule(0)
  total = tf.Variable(4.0)
  over = schedule.over(total)
  assert [float(over(step)) for step in (0, 1, 4, 9)] == [2.0, 1.5, 0.0, 0.0]
  total.assign(8.0)
  assert float(over(2)) == 1.5
  weights = schedules.TeacherWeights(['a'], schedules=schedule, total_iterations=10)
  weights.update(5)
  assert _values(weights) == [1.0]
  # In PBT mode only the start is read, which needs no length.
  assert _values(schedules.TeacherWeights(['a'], schedules=schedule, mode='pbt')) == [2.0]
  with pytest.raises(errors.ConfigError, match="follows the run's length"):
    schedules.TeacherWeights(['a'], schedules=schedule)
