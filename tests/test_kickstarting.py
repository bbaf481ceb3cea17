"""Kickstarting in the PPO learner: teachers' pull on the student, λ read at run time, routing per task."""

import numpy as np
import pytest
import tensorflow as tf
from test_ppo_learner import ACTION_SPEC, B, OBS_SPEC, T, _batch, _learner, _network
from tf_agents.trajectories import time_step as ts

from protege.agents.distillation import kickstarting
from protege.agents.distillation import schedules
from protege.agents.distillation import teacher_set as teacher_set_lib
from protege.agents.distillation import variants
from protege.agents.learners import ppo
from protege.networks import actor_critic
from protege.networks import torsos


def _keras_teacher(preferred_action: int, strength: float = 3.0) -> tf.keras.Model:
  """A fixed teacher whose logits favour `preferred_action` whatever the observation."""
  inputs = tf.keras.Input([3])
  layer = tf.keras.layers.Dense(2, kernel_initializer='zeros',
                                bias_initializer=tf.keras.initializers.Constant(
                                    [strength if a == preferred_action else 0.0 for a in range(2)]))
  return tf.keras.Model(inputs, layer(inputs))


def _kickstarter_fn(models, variant='on_policy_distill_with_reward', tasks=None, mode='schedule', **weights):
  def make(observation_spec, action_spec, strategy=None, student_network=None, total_iterations=None):
    del student_network  # no peer teachers here
    names = [f'teacher_{k}' for k in range(len(models))]
    teacher_set = teacher_set_lib.TeacherSet(observation_spec, action_spec, paths=models, names=names, tasks=tasks)
    with (strategy or tf.distribute.get_strategy()).scope():
      teacher_weights = schedules.TeacherWeights(names, mode=mode, total_iterations=total_iterations, **weights)
    return kickstarting.Kickstarter(observation_spec, action_spec, teachers=teacher_set,
                                    weights=teacher_weights,
                                    config=variants.DistillationConfig(variant=variant),
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
  traces = learner.tracing_count()
  assert float(metrics['kickstart/loss']) == 0.0
  # No reward and no teacher: the policy gradient is 0 (the critic alone learns).
  # (The shared torso moves with the critic, so the probabilities shift a little.)
  np.testing.assert_allclose(_probability_of(net, batch['observation'][0], 1), before, atol=1e-3)
  learner.kickstarter.weights.assign('teacher_0', 1.0)
  for _ in range(3):
    metrics = learner.run()
  assert learner.tracing_count() == traces
  assert float(metrics['kickstart/lambda_teacher_0']) == 1.0
  assert np.all(_probability_of(net, batch['observation'][0], 1) > before + 0.1)


def test_a_schedule_moves_lambda_inside_the_compiled_step():
  net = _network()
  learner = _learner(net, _unrewarded_batch(net), kickstarter_fn=_kickstarter_fn(
      [_keras_teacher(1)], schedules=schedules.linear_decay(initial=1.0, final=0.0, decay_steps=4)))
  lambdas = [float(learner.run()['kickstart/lambda_teacher_0']) for _ in range(3)]
  np.testing.assert_allclose(lambdas, [1.0, 0.75, 0.5])
  assert learner.tracing_count() == 1


def test_a_schedule_over_the_run_ends_with_the_learners_iterations():
  """linear_decay's default decay_steps (None) is the learner's total_iterations (10 here), read at run time."""
  net = _network()
  learner = _learner(net, _unrewarded_batch(net), kickstarter_fn=_kickstarter_fn(
      [_keras_teacher(1)], schedules=schedules.linear_decay(initial=2.0, final=0.0)))
  lambdas = [float(learner.run()['kickstart/lambda_teacher_0']) for _ in range(2)]
  np.testing.assert_allclose(lambdas, [2.0, 1.8])
  learner.total_iterations.assign(4)  # e.g. a resumed run with a larger budget: the schedule follows
  np.testing.assert_allclose(float(learner.run()['kickstart/lambda_teacher_0']), 1.0)
  assert learner.tracing_count() == 1


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
                             teachers=teacher_set_lib.TeacherSet(OBS_SPEC, _network().action_spec))
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


# --- pseudo_reward_advantages='separate': the pseudo-rewards' own GAE, outside the normalisation ---------


def _two_head_network():
  tf.random.set_seed(7)
  net = actor_critic.ActorCriticNetwork(OBS_SPEC, ACTION_SPEC, torso_fn=lambda: torsos.MLPTorso((16,)),
                                        value_heads=('extrinsic', ppo.KICKSTART_HEAD))
  net.create_variables()
  return net


def _gae_numpy(rewards, values, bootstrap, gamma, lam):
  """A_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V(s_{t+1}) − V(s_t), no episode end (all steps MID)."""
  values = np.concatenate([values, bootstrap[None]], axis=0)
  advantages = np.zeros_like(rewards)
  for t in range(rewards.shape[0]):
    for l in range(rewards.shape[0] - t):
      advantages[t] += (gamma * lam) ** l * (rewards[t + l] + gamma * values[t + l + 1] - values[t + l])
  return advantages


@pytest.mark.parametrize('microbatch_size', [None, 2])
def test_separate_pseudo_reward_advantages_match_a_numpy_reference_and_train(microbatch_size):
  net = _two_head_network()
  batch = _batch(net)
  rng = np.random.default_rng(3)
  batch['behaviour_values'] = {name: rng.normal(size=(T + 1, B)).astype(np.float32)
                               for name in ('extrinsic', ppo.KICKSTART_HEAD)}
  learner = _learner(net, batch, num_epochs=2, num_minibatches=2, normalize_advantages=True,
                     discount=0.9, gae_lambda=0.8, microbatch_size=microbatch_size,
                     kickstarter_fn=_kickstarter_fn([_keras_teacher(1)], variant='entropy_regularised'),
                     pseudo_reward_advantages='separate')
  tensors = tf.nest.map_structure(tf.convert_to_tensor, batch)
  pseudo_rewards = learner.kickstarter.prepare(tensors, discount=learner.discount)['pseudo_rewards']
  targets = learner.compute_advantages(tensors, pseudo_rewards)
  values = batch['behaviour_values']
  # The environment's advantages from the extrinsic critic alone; the pseudo-rewards' from their own head.
  np.testing.assert_allclose(
      targets['advantages'].numpy(),
      _gae_numpy(batch['reward'][1:], values['extrinsic'][:-1], values['extrinsic'][-1], 0.9, 0.8), atol=1e-5)
  np.testing.assert_allclose(
      targets['unnormalized_advantages'].numpy(),
      _gae_numpy(pseudo_rewards.numpy(), values['kickstart'][:-1], values['kickstart'][-1], 0.9, 0.8),
      atol=1e-5)
  # The policy's advantage on a minibatch: the environment's part normalised, the pseudo part added after.
  minibatch = {'advantages': targets['advantages'], 'unnormalized_advantages': targets['unnormalized_advantages'],
               'mask': targets['mask']}
  env = targets['advantages'].numpy()
  expected = (env - env.mean()) / (env.std() + 1e-8) + targets['unnormalized_advantages'].numpy()
  np.testing.assert_allclose(learner._policy_advantages(minibatch).numpy(), expected, atol=1e-5)
  before = [v.numpy() for v in net.trainable_variables]
  metrics = learner.run()
  assert np.isfinite(float(metrics['loss']))
  assert 'value_loss_kickstart' in metrics
  assert any(np.abs(b - v.numpy()).max() > 0 for b, v in zip(before, net.trainable_variables))


def test_separate_pseudo_reward_advantages_errors_name_the_fix():
  net = _network()  # no 'kickstart' value head
  with pytest.raises(ValueError, match=r"value_heads = \('extrinsic', 'kickstart'\)"):
    _learner(net, _batch(net), kickstarter_fn=_kickstarter_fn([_keras_teacher(1)]),
             pseudo_reward_advantages='separate')
  with pytest.raises(ValueError, match='kickstarter_fn is None'):
    _learner(net, _batch(net), pseudo_reward_advantages='separate')
  with pytest.raises(ValueError, match="'joint', 'separate'"):
    _learner(net, _batch(net), pseudo_reward_advantages='both')


# --- Kickstarter.loss, the loss the learners call, against hand-computed values -----------------------


def _softmax(z):
  e = np.exp(np.asarray(z, np.float64) - np.max(z))
  return e / e.sum()


def _loss_reference(variant, student, teachers_logits, lambdas, alpha, policy_mask, teacher_masks):
  """Σ_k λ_k·α·Σ_t ℓ_k(t)·m(t)·m_k(t) / Σ_t m(t), one state at a time: ℓ = H×(π_k‖π_S) for the distill
  variants, H×(π_S‖π_k) for expected entropy regularised, 0 for the reward-only variants."""
  total, count = 0.0, policy_mask.sum()
  for logits_k, lambda_k, mask_k in zip(teachers_logits, lambdas, teacher_masks):
    term = 0.0
    for index in np.ndindex(student.shape[:-1]):
      weight = policy_mask[index] * mask_k[index]
      if not weight:
        continue
      p_student, p_teacher = _softmax(student[index]), _softmax(logits_k[index])
      if variant == 'expected_entropy_regularised':
        step = -np.sum(p_student * np.log(p_teacher))
      elif variant in ('entropy_regularised', 'teacher_value_reward'):
        step = 0.0
      else:
        step = -np.sum(p_teacher * np.log(p_student))
      term += weight * step
    total += lambda_k * alpha * term / count
  return total


def _kickstarter_with(num_teachers, variant, lambdas, alpha=1.0):
  """A Kickstarter over `num_teachers` real (Keras) teachers, λ_k and α assigned as PBT would."""
  models = [_keras_teacher(k % 2) for k in range(num_teachers)]
  kickstarter = _kickstarter_fn(models, variant=variant, mode='pbt')(OBS_SPEC, ACTION_SPEC)
  for k, value in enumerate(lambdas):
    kickstarter.weights.assign(f'teacher_{k}', value)
  kickstarter.distillation_coef.assign(alpha)
  return kickstarter


def _loss_inputs(seed, num_teachers, steps=4, batch=3, actions=2):
  rng = np.random.default_rng(seed)
  student = rng.normal(size=(steps, batch, actions)).astype(np.float32)
  teachers_logits = [rng.normal(size=(steps, batch, actions)).astype(np.float32) for _ in range(num_teachers)]
  policy_mask = rng.integers(0, 2, size=(steps, batch)).astype(np.float32)
  policy_mask[0, 0] = 1.0
  # A multi-task batch: each teacher teaches its own columns (and not every step of them).
  teacher_masks = []
  for k in range(num_teachers):
    mask = np.zeros((steps, batch), np.float32)
    mask[:, k % batch] = 1.0
    mask[:, (k + 1) % batch] = rng.integers(0, 2, size=steps)
    teacher_masks.append(mask)
  return student, teachers_logits, policy_mask, teacher_masks


@pytest.mark.parametrize('variant', ['expected_entropy_regularised', 'on_policy_distill',
                                     'on_policy_distill_with_reward', 'n_distill', 'entropy_regularised'])
def test_the_loss_the_learners_call_matches_hand_computed_values(variant):
  lambdas, alpha = [0.5, 2.0, 1.25], 0.7
  kickstarter = _kickstarter_with(3, variant, lambdas, alpha)
  student, teachers_logits, policy_mask, teacher_masks = _loss_inputs(5, 3)
  prepared = {'teacher_logits': tuple(tf.constant(t) for t in teachers_logits),
              'teacher_masks': tuple(tf.constant(m) for m in teacher_masks)}
  loss, metrics = kickstarter.loss(tf.constant(student), prepared, tf.constant(policy_mask))
  expected = _loss_reference(variant, student, teachers_logits, lambdas, alpha, policy_mask, teacher_masks)
  np.testing.assert_allclose(float(loss), expected, rtol=1e-5, atol=1e-7)
  for k, (logits_k, mask_k) in enumerate(zip(teachers_logits, teacher_masks)):
    # The metric: H×(π_k‖π_S), the mean over teacher k's own steps, whatever the variant.
    steps = policy_mask * mask_k
    cross = [-np.sum(_softmax(logits_k[i]) * np.log(_softmax(student[i]))) for i in np.ndindex(steps.shape)]
    np.testing.assert_allclose(float(metrics[f'kickstart/cross_entropy_teacher_{k}']),
                               np.dot(cross, steps.ravel()) / steps.sum(), rtol=1e-5)
    assert float(metrics[f'kickstart/lambda_teacher_{k}']) == lambdas[k]


def test_without_a_mask_every_step_counts_and_one_teacher_is_its_cross_entropy():
  kickstarter = _kickstarter_with(1, 'on_policy_distill', [1.5])
  student, teachers_logits, _, _ = _loss_inputs(6, 1)
  ones = np.ones(student.shape[:-1], np.float32)
  prepared = {'teacher_logits': (tf.constant(teachers_logits[0]),), 'teacher_masks': (tf.constant(ones),)}
  loss, metrics = kickstarter.loss(tf.constant(student), prepared)
  np.testing.assert_allclose(float(loss), _loss_reference('on_policy_distill', student, teachers_logits, [1.5], 1.0,
                                                          ones, [ones]), rtol=1e-5)
  np.testing.assert_allclose(float(loss), 1.5 * float(metrics['kickstart/cross_entropy_teacher_0']), rtol=1e-5)


def test_the_loss_reads_lambda_at_run_time_and_its_gradient_reaches_only_the_student():
  kickstarter = _kickstarter_with(2, 'on_policy_distill', [1.0, 0.0])
  student, teachers_logits, policy_mask, teacher_masks = _loss_inputs(7, 2)
  prepared = {'teacher_logits': tuple(tf.constant(t) for t in teachers_logits),
              'teacher_masks': tuple(tf.constant(m) for m in teacher_masks)}
  student_variable = tf.Variable(student)
  traces = []

  @tf.function
  def loss_and_gradient():
    traces.append(1)
    with tf.GradientTape() as tape:
      loss, _ = kickstarter.loss(student_variable, prepared, tf.constant(policy_mask))
    return loss, tape.gradient(loss, student_variable)

  first, _ = loss_and_gradient()
  kickstarter.weights.assign('teacher_1', 3.0)
  second, gradient = loss_and_gradient()
  assert len(traces) == 1
  for value, lambdas in ((first, [1.0, 0.0]), (second, [1.0, 3.0])):
    np.testing.assert_allclose(float(value), _loss_reference('on_policy_distill', student, teachers_logits, lambdas,
                                                             1.0, policy_mask, teacher_masks), rtol=1e-5)
  # ∂/∂z of Σ_k λ_k Σ_t m m_k H×(π_k‖softmax(z_t)) / Σ m = Σ_k λ_k m m_k (softmax(z_t) − π_k) / Σ m.
  expected = np.zeros_like(student, np.float64)
  for lambda_k, logits_k, mask_k in zip([1.0, 3.0], teachers_logits, teacher_masks):
    for index in np.ndindex(policy_mask.shape):
      expected[index] += (lambda_k * policy_mask[index] * mask_k[index]
                          * (_softmax(student[index]) - _softmax(logits_k[index])))
  np.testing.assert_allclose(gradient.numpy(), expected / policy_mask.sum(), rtol=1e-4, atol=1e-7)
