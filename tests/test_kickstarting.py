"""Kickstarting in the PPO learner: teachers' pull on the student, λ read at run time, routing per task."""

import numpy as np
import pytest
import tensorflow as tf
from test_ppo_learner import B, OBS_SPEC, T, _batch, _learner, _network
from tf_agents.trajectories import time_step as ts

from agents import distillation_losses
from agents import kickstarting
from agents import schedules
from agents import teachers


def _keras_teacher(preferred_action: int, strength: float = 3.0) -> tf.keras.Model:
  """A fixed teacher whose logits favour `preferred_action` whatever the observation."""
  inputs = tf.keras.Input([3])
  layer = tf.keras.layers.Dense(2, kernel_initializer='zeros',
                                bias_initializer=tf.keras.initializers.Constant(
                                    [strength if a == preferred_action else 0.0 for a in range(2)]))
  return tf.keras.Model(inputs, layer(inputs))


def _kickstarter_fn(models, variant='on_policy_distill_with_reward', tasks=None, mode='schedule', **weights):
  def make(observation_spec, action_spec, strategy=None, student_network=None):
    del student_network  # no peer teachers here
    names = [f'teacher_{k}' for k in range(len(models))]
    teacher_set = teachers.TeacherSet(observation_spec, action_spec, paths=models, names=names, tasks=tasks)
    with (strategy or tf.distribute.get_strategy()).scope():
      teacher_weights = schedules.TeacherWeights(names, mode=mode, **weights)
    return kickstarting.Kickstarter(observation_spec, action_spec, teachers=teacher_set,
                                    weights=teacher_weights,
                                    config=distillation_losses.DistillationConfig(variant=variant),
                                    strategy=strategy)
  return make


def _unrewarded_batch(net, **kwargs):
  batch = _batch(net, **kwargs)
  batch['reward'] = np.zeros_like(batch['reward'])
  return batch


def _probability_of(net, observation, action):
  logits = net(observation, step_type=tf.fill([observation.shape[0]], ts.StepType.FIRST))[0][0]
  return tf.nn.softmax(logits)[:, action].numpy()


@pytest.mark.parametrize('variant', ['on_policy_distill_with_reward', 'expected_entropy_regularised',
                                     'n_distill', 'entropy_regularised'])
def test_the_teacher_pulls_the_student_and_is_not_trained(variant):
  net = _network()
  batch = _unrewarded_batch(net)
  model = _keras_teacher(preferred_action=1)
  teacher_weights = [w.copy() for w in model.get_weights()]
  before = _probability_of(net, batch['observation'][0], 1)
  learner = _learner(net, batch, num_epochs=4, learning_rate=3e-2,
                     kickstarter_fn=_kickstarter_fn([model], variant=variant))
  for _ in range(5):
    metrics = learner.run()
  after = _probability_of(net, batch['observation'][0], 1)
  # Variants whose whole signal is a pseudo-reward (entropy regularised) pull more noisily per state.
  assert np.mean(after) > np.mean(before) + 0.1, (variant, before, after)
  for kept, now in zip(teacher_weights, model.get_weights()):
    np.testing.assert_array_equal(kept, now)
  assert float(metrics['kickstart/lambda_teacher_0']) == 1.0


def test_lambda_set_by_a_controller_takes_effect_without_retracing():
  """'pbt' mode: λ = 0 gives no pull at all; λ = 1 assigned after tracing pulls, with no retracing."""
  net = _network()
  batch = _unrewarded_batch(net)
  learner = _learner(net, batch, num_epochs=4, learning_rate=3e-2,
                     kickstarter_fn=_kickstarter_fn([_keras_teacher(1)], mode='pbt'))
  learner.kickstarter.weights.assign('teacher_0', 0.0)
  before = _probability_of(net, batch['observation'][0], 1)
  metrics = learner.run()
  traces = learner._compiled_run.experimental_get_tracing_count()
  assert float(metrics['kickstart/loss']) == 0.0
  # No reward and no teacher: the policy gradient is 0 (the critic alone learns).
  # (The shared torso moves with the critic, so the probabilities shift a little.)
  np.testing.assert_allclose(_probability_of(net, batch['observation'][0], 1), before, atol=1e-3)
  learner.kickstarter.weights.assign('teacher_0', 1.0)
  for _ in range(3):
    metrics = learner.run()
  assert learner._compiled_run.experimental_get_tracing_count() == traces
  assert float(metrics['kickstart/lambda_teacher_0']) == 1.0
  assert np.all(_probability_of(net, batch['observation'][0], 1) > before + 0.1)


def test_a_schedule_moves_lambda_inside_the_compiled_step():
  net = _network()
  learner = _learner(net, _unrewarded_batch(net), kickstarter_fn=_kickstarter_fn(
      [_keras_teacher(1)], schedules=schedules.linear_decay(initial=1.0, final=0.0, decay_steps=4)))
  lambdas = [float(learner.run()['kickstart/lambda_teacher_0']) for _ in range(3)]
  np.testing.assert_allclose(lambdas, [1.0, 0.75, 0.5])
  assert learner._compiled_run.experimental_get_tracing_count() == 1


def test_pseudo_rewards_are_the_variants_and_stop_at_resets():
  """entropy_regularised: r̂_t = λ·log π_T(a_t|s_t), zero on the reset transition."""
  net = _network()
  step_types = np.full((T + 1, B), ts.StepType.MID, np.int32)
  step_types[2, :] = ts.StepType.LAST
  step_types[3, :] = ts.StepType.FIRST
  batch = tf.nest.map_structure(tf.convert_to_tensor, _unrewarded_batch(net, step_types=step_types))
  make = _kickstarter_fn([_keras_teacher(1, strength=2.0)], variant='entropy_regularised', mode='pbt')
  kick = make(OBS_SPEC, net.action_spec)
  kick.weights.assign('teacher_0', 0.5)
  prepared = kick.prepare(batch)
  log_probs = np.log(np.exp([0.0, 2.0]) / np.exp([0.0, 2.0]).sum())
  expected = 0.5 * log_probs[batch['action'].numpy()[:-1]]
  expected[2] = 0.0  # s_2 is LAST: its action was ignored by the environment
  np.testing.assert_allclose(prepared['pseudo_rewards'].numpy(), expected, rtol=1e-5)
  assert prepared['teacher_logits'][0].shape == (T, B, 2)


def test_each_task_is_taught_by_its_own_teacher():
  """Columns of task 0 go to a teacher of action 0, task 1 to a teacher of action 1."""
  net = _network()
  batch = _unrewarded_batch(net)
  task_ids = np.array([0, 1, 1, 0], np.int32)
  batch['task_id'] = np.tile(task_ids, (T + 1, 1))
  batch['observation'][..., 0] = np.where(task_ids == 0, 3.0, -3.0)  # the task is observable
  learner = _learner(net, batch, num_epochs=4, learning_rate=3e-2,
                     kickstarter_fn=_kickstarter_fn([_keras_teacher(0), _keras_teacher(1)], tasks=[0, 1]))
  kick = learner.kickstarter
  prepared = kick.prepare(tf.nest.map_structure(tf.convert_to_tensor, batch))
  np.testing.assert_array_equal(prepared['teacher_masks'][0].numpy()[0], task_ids == 0)
  np.testing.assert_array_equal(prepared['teacher_masks'][1].numpy()[0], task_ids == 1)
  before = tf.nn.softmax(net(batch['observation'][0], step_type=tf.fill([B], 0))[0][0]).numpy()
  for _ in range(5):
    learner.run()
  after = tf.nn.softmax(net(batch['observation'][0], step_type=tf.fill([B], 0))[0][0]).numpy()
  preferred = task_ids  # task k's teacher prefers action k
  gained = after[np.arange(B), preferred] - before[np.arange(B), preferred]
  assert np.all(gained > 0.05), gained


def test_kickstarter_errors_name_the_fix():
  with pytest.raises(ValueError, match='TeacherSet.paths'):
    kickstarting.Kickstarter(OBS_SPEC, _network().action_spec,
                             teachers=teachers.TeacherSet(OBS_SPEC, _network().action_spec))
  with pytest.raises(ValueError, match="'teacher_distill'.*samples with the student"):
    _kickstarter_fn([_keras_teacher(1)], variant='teacher_distill')(OBS_SPEC, _network().action_spec)
  with pytest.raises(ValueError, match='needs each teacher.s critic'):
    _kickstarter_fn([_keras_teacher(1)], variant='value_gated')(OBS_SPEC, _network().action_spec)


def test_lambdas_are_checkpointed():
  net = _network()
  learner = _learner(net, _unrewarded_batch(net), kickstarter_fn=_kickstarter_fn([_keras_teacher(1)],
                                                                                 mode='pbt'))
  items = learner.checkpoint_items()
  assert 'kickstart_weights' in items
  learner.kickstarter.weights.assign('teacher_0', 0.25)
  checkpoint = tf.train.Checkpoint(**items)
  path = checkpoint.write(f'{pytest.importorskip("tempfile").mkdtemp()}/ckpt')
  learner.kickstarter.weights.assign('teacher_0', 0.9)
  checkpoint.read(path).assert_consumed()
  assert float(learner.kickstarter.weights.values()[0]) == 0.25
