"""The IMPALA learner on in-memory batches: learning, off-policy correction, masking, variables read at run
time, two replicas (MirroredStrategy over 2 logical CPUs) against one device, and kickstarting."""

import inspect

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.distillation import kickstarting
from protege.agents.distillation import schedules
from protege.agents.distillation import teacher_set as teacher_set_lib
from protege.agents.distillation import variants
from protege.agents.learners import impala
from protege.networks import actor_critic
from protege.networks import torsos

OBS_SPEC = tensor_spec.TensorSpec([3], tf.float32, 'observation')
ACTION_SPEC = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1, 'action')
T, B = 5, 4


def _network(core=None):
  tf.random.set_seed(7)
  net = actor_critic.ActorCriticNetwork(OBS_SPEC, ACTION_SPEC, torso_fn=lambda: torsos.MLPTorso((16,)),
                                        core=core, core_size=8)
  net.create_variables()
  return net


def _batch(net, seed=0, step_types=None, behaviour_logits=None):
  """A time-major [T+1, B] batch in the actor's step layout: action 0 is always rewarded."""
  rng = np.random.default_rng(seed)
  observation = rng.normal(size=(T + 1, B, 3)).astype(np.float32)
  action = rng.integers(0, 2, size=(T + 1, B)).astype(np.int64)
  reward = np.zeros((T + 1, B), np.float32)
  reward[1:] = (action[:-1] == 0).astype(np.float32)  # reward on arrival for the previous action
  if step_types is None:
    step_types = np.full((T + 1, B), ts.StepType.MID, np.int32)
  batch = {
      'observation': observation,
      'step_type': step_types,
      'reward': reward,
      'discount': np.ones((T + 1, B), np.float32),
      'action': action,
      'behaviour_logits': (np.zeros((T + 1, B, 2), np.float32) if behaviour_logits is None
                           else behaviour_logits.astype(np.float32)),
      'behaviour_values': {'extrinsic': np.zeros((T + 1, B), np.float32)},
      'policy_version': np.zeros((T + 1, B), np.int64),
  }
  if tf.nest.flatten(net.state_spec):
    # A tuple, not a list: tf.data would stack a list of arrays into one tensor.
    batch['core_state'] = tuple(np.zeros([T + 1, B] + s.shape.as_list(), np.float32)
                                for s in tf.nest.flatten(net.state_spec))
  return batch


def _learner(net, batch, strategy=None, **kwargs):
  strategy = strategy or tf.distribute.get_strategy()
  replicas = strategy.num_replicas_in_sync

  def dataset_fn(context):
    # One input pipeline; successive elements go to successive replicas, so replica i gets columns
    # [i*B/r, (i+1)*B/r): together they are the whole batch.
    del context
    columns = B // replicas
    per_replica = [tf.nest.map_structure(lambda x, i=i: x[:, i * columns:(i + 1) * columns], batch)
                   for i in range(replicas)]
    stacked = tf.nest.map_structure(lambda *xs: np.stack(xs), *per_replica)
    return tf.data.Dataset.from_tensor_slices(stacked).repeat()

  defaults = dict(learning_rate=1e-2, learning_rate_schedule='constant', entropy_coef=0.0, max_grad_norm=None)
  defaults.update(kwargs)
  return impala.IMPALALearner(net, dataset_fn, strategy, total_iterations=10, **defaults)


def _probability_of_action(net, observation, action):
  state = net.get_initial_state(observation.shape[0])
  step_type = tf.fill([observation.shape[0]], ts.StepType.FIRST)
  logits = net(observation, step_type=step_type, network_state=state)[0][0]
  return tf.nn.softmax(logits)[:, action].numpy()


def _current_logits(net, batch):
  """The network's own logits on the batch's sequence: behaviour logits of an exactly on-policy actor."""
  swap = lambda x: np.swapaxes(x, 0, 1)
  state = net.get_initial_state(B)
  (logits, _), _ = net(swap(batch['observation']), step_type=swap(batch['step_type']), network_state=state)
  return swap(logits.numpy())


@pytest.mark.parametrize('core,optimizer', [(None, 'rmsprop'), ('lstm', 'rmsprop'), ('gru', 'adam')])
def test_rewarded_action_becomes_more_likely(core, optimizer):
  net = _network(core)
  batch = _batch(net)
  before = _probability_of_action(net, batch['observation'][0], 0)
  learner = _learner(net, batch, discount=0.0, optimizer=optimizer, learning_rate=3e-2)  # advantage: ρ(r − V)
  for _ in range(4):
    metrics = learner.run()
  after = _probability_of_action(net, batch['observation'][0], 0)
  assert np.all(after > before + 0.02), (before, after)
  assert int(learner.train_step.numpy()) == 4
  for name in ('loss', 'policy_loss', 'value_loss', 'entropy', 'explained_variance', 'rho_mean',
               'rho_clip_fraction', 'approx_kl', 'gradient_norm', 'policy_lag'):
    assert np.isfinite(metrics[name].numpy()), name


def test_hyperparameter_variables_change_without_retracing():
  net = _network()
  learner = _learner(net, _batch(net))
  learner.run()
  traces = learner.tracing_count()
  learner.entropy_coef.assign(0.5)
  learner.clip_rho_threshold.assign(0.5)
  learner.discount.assign(0.5)
  learner.learning_rate.assign(0.0)
  weights = [v.numpy() for v in net.trainable_variables]
  metrics = learner.run()
  assert learner.tracing_count() == traces
  # A zero learning rate read inside the compiled step leaves the weights untouched.
  for before, after in zip(weights, net.trainable_variables):
    np.testing.assert_array_equal(before, after.numpy())
  assert metrics['learning_rate'].numpy() == 0.0
  # Uniform behaviour logits and a nearly uniform policy: every ρ ≈ 1 exceeds the new ρ̄ = 0.5.
  assert metrics['rho_clip_fraction'].numpy() == 1.0


def test_linear_schedule_decays_learning_rate_and_paper_defaults():
  net = _network()
  learner = _learner(net, _batch(net), learning_rate=1.0, learning_rate_schedule='linear', max_grad_norm=1e-6)
  rates = [float(learner.run()['learning_rate'].numpy()) for _ in range(3)]
  np.testing.assert_allclose(rates, [1.0, 0.9, 0.8], rtol=1e-6)
  defaults = inspect.signature(impala.IMPALALearner.__init__).parameters
  assert defaults['learning_rate_schedule'].default == 'linear'
  assert defaults['optimizer'].default == 'rmsprop'


def test_stale_behaviour_logits_are_corrected_and_reported():
  """Behaviour logits that made the taken action unlikely: π/μ > ρ̄ everywhere, so every ρ is clipped; with
  the network's own logits as behaviour (no lag) the ratios are 1. The lag is read from policy_version."""
  net = _network()
  batch = _batch(net)
  on_policy = _learner(net, dict(batch, behaviour_logits=_current_logits(net, batch)))
  on_policy.learning_rate.assign(0.0)  # the weights stay as they are (a configured rate must be > 0)
  metrics = on_policy.run()
  np.testing.assert_allclose(metrics['rho_mean'].numpy(), 1.0, atol=1e-5)
  np.testing.assert_allclose(metrics['approx_kl'].numpy(), 0.0, atol=1e-5)

  # μ(a_t) = sigmoid(−4) ≈ 0.018 for the action taken, π(a_t) ≈ 0.5: ρ ≈ 27.
  stale_logits = np.where(np.eye(2, dtype=bool)[batch['action']], -2.0, 2.0)
  stale = _learner(net, _batch(net, behaviour_logits=stale_logits))
  stale.learning_rate.assign(0.0)
  lags = []
  for _ in range(3):
    metrics = stale.run()
    lags.append(float(metrics['policy_lag'].numpy()))
  assert metrics['rho_clip_fraction'].numpy() == 1.0
  assert metrics['rho_mean'].numpy() > 20.0
  np.testing.assert_allclose(lags, [0.0, 1.0, 2.0])  # the batch's weights are version 0
  assert float(metrics['policy_lag_max'].numpy()) == 2.0
  # The clipped correction: with ρ̄ = c̄ = ρ̄_pg = 1 the targets are the on-policy ones.
  tensors = tf.nest.map_structure(tf.convert_to_tensor, _batch(net, behaviour_logits=stale_logits))
  logits, values = stale._forward(tensors)
  clipped, _, _ = stale.targets(tensors, logits, values)
  tensors['behaviour_logits'] = tf.convert_to_tensor(_current_logits(net, batch))
  exact, _, _ = stale.targets(tensors, logits, values)
  np.testing.assert_allclose(clipped.vs.numpy(), exact.vs.numpy(), rtol=1e-5, atol=1e-5)


def _reset_step_types(columns=slice(None)):
  step_types = np.full((T + 1, B), ts.StepType.MID, np.int32)
  step_types[2, columns] = ts.StepType.LAST
  step_types[3, columns] = ts.StepType.FIRST
  return step_types


def test_reset_transitions_are_masked():
  """The transition from a LAST step is the environment's reset: masked, and whatever it holds (here NaN
  behaviour logits and reward) changes nothing. (An LSTM over a reset: `test_two_replicas_match_one_device`.)"""
  net = _network()
  step_types = _reset_step_types()
  learner = _learner(net, _batch(net, step_types=step_types))
  tensors = tf.nest.map_structure(tf.convert_to_tensor, _batch(net, step_types=step_types))
  logits, values = learner._forward(tensors)
  returns, _, mask = learner.targets(tensors, logits, values)
  np.testing.assert_array_equal(mask.numpy()[:, 0], [1, 1, 0, 1, 1])
  # v_2 = V(x_2): the reset transition adds nothing, and v_1 bootstraps on V(x_2) (discount 1: truncated).
  np.testing.assert_allclose(returns.vs.numpy()[2], values.numpy()[2], rtol=1e-6)
  np.testing.assert_array_equal(returns.pg_advantages.numpy()[2], np.zeros(B))

  results, initial_weights = [], net.get_weights()
  for garbage in (False, True):
    net.set_weights(initial_weights)
    batch = _batch(net, step_types=step_types)
    if garbage:
      batch['behaviour_logits'][2] = np.nan
      batch['reward'][3] = np.nan  # received on the reset transition 2 → 3
    learner = _learner(net, batch)
    metrics = learner.run()
    assert all(np.isfinite(v.numpy()) for v in metrics.values())
    results.append([v.numpy() for v in net.trainable_variables])
  for clean, dirty in zip(*results):
    np.testing.assert_array_equal(clean, dirty)


def test_two_replicas_match_one_device(mirrored_strategy):
  """MirroredStrategy over 2 logical CPUs gives the one-device update on the whole batch, also when the
  replicas hold different numbers of masked (reset) transitions; an LSTM, gradient clipping, 2 SGD steps and
  a kickstarting teacher."""
  step_types = _reset_step_types(columns=slice(0, 1))  # only the first replica's columns have a reset
  batch, initial_weights = None, None
  results, all_metrics = [], []
  for strategy in (tf.distribute.get_strategy(), mirrored_strategy):
    with strategy.scope():
      net = _network('lstm')
    initial_weights = initial_weights or net.get_weights()
    net.set_weights(initial_weights)
    batch = batch or _batch(net, step_types=step_types,
                            behaviour_logits=np.random.default_rng(3).normal(size=(T + 1, B, 2)))
    learner = _learner(net, batch, strategy=strategy, max_grad_norm=0.05, entropy_coef=0.01, num_sgd_steps=2,
                       kickstarter_fn=_kickstarter_fn(_keras_teacher(1), 'on_policy_distill_with_reward'))
    all_metrics.append(learner.run())
    assert strategy.num_replicas_in_sync in (1, 2)
    results.append([v.numpy() for v in net.trainable_variables])
  for one, two in zip(*results):
    np.testing.assert_allclose(one, two, rtol=1e-5, atol=1e-6)
  for name in ('loss', 'policy_loss', 'value_loss', 'entropy', 'rho_mean', 'gradient_norm', 'kickstart/loss'):
    np.testing.assert_allclose(all_metrics[0][name].numpy(), all_metrics[1][name].numpy(), rtol=1e-5,
                               atol=1e-6, err_msg=name)


@pytest.mark.parametrize('kwargs,message', [
    (dict(optimizer='sgd'), "optimizer='sgd'"),
    (dict(learning_rate_schedule='cosine'), "'cosine'"),
    (dict(num_sgd_steps=0), 'num_sgd_steps=0'),
    (dict(reward_clip=0.0), 'reward_clip=0.0'),
])
def test_bad_arguments_are_rejected(kwargs, message):
  net = _network()
  with pytest.raises(ValueError, match=message):
    _learner(net, _batch(net), **kwargs)


def test_network_without_extrinsic_head_is_rejected():
  net = actor_critic.ActorCriticNetwork(OBS_SPEC, ACTION_SPEC, value_heads=('intrinsic',))
  with pytest.raises(ValueError, match="value head 'extrinsic'"):
    impala.IMPALALearner(net, lambda context: None)


# --- kickstarting ----------------------------------------------------------------------------------------


def _keras_teacher(preferred_action: int, strength: float = 3.0) -> tf.keras.Model:
  """A fixed teacher whose logits favour `preferred_action` whatever the observation."""
  inputs = tf.keras.Input([3])
  bias = [strength if a == preferred_action else 0.0 for a in range(2)]
  layer = tf.keras.layers.Dense(2, kernel_initializer='zeros',
                                bias_initializer=tf.keras.initializers.Constant(bias))
  return tf.keras.Model(inputs, layer(inputs))


def _kickstarter_fn(model, variant):
  def make(observation_spec, action_spec, strategy=None, student_network=None, total_iterations=None):
    del student_network  # no peer teachers here
    teacher_set = teacher_set_lib.TeacherSet(observation_spec, action_spec, paths=[model], names=['teacher'])
    with (strategy or tf.distribute.get_strategy()).scope():
      weights = schedules.TeacherWeights(['teacher'])
    return kickstarting.Kickstarter(observation_spec, action_spec, teachers=teacher_set, weights=weights,
                                    config=variants.DistillationConfig(variant=variant),
                                    strategy=strategy)
  return make


@pytest.mark.parametrize('variant', ['on_policy_distill_with_reward', 'entropy_regularised'])
def test_kickstarting_pulls_the_student_towards_the_teacher_and_not_the_teacher(variant):
  """No environment reward: the teacher's loss term (or, for 'entropy_regularised', its pseudo-rewards
  through V-trace) alone moves the student towards the teacher's action; the teacher gets no gradient."""
  net = _network()
  batch = _batch(net, step_types=_reset_step_types(columns=slice(0, 2)))
  batch['reward'] = np.zeros_like(batch['reward'])
  model = _keras_teacher(preferred_action=1)
  teacher_weights = [w.copy() for w in model.get_weights()]
  before = _probability_of_action(net, batch['observation'][0], 1)
  # γ = 0 for the pseudo-reward variant: each step's advantage is its own r̂_t − V, the clearest signal.
  discount = 0.0 if variant == 'entropy_regularised' else 0.99
  learner = _learner(net, batch, learning_rate=3e-2, discount=discount,
                     kickstarter_fn=_kickstarter_fn(model, variant))
  for _ in range(5):
    metrics = learner.run()
  after = _probability_of_action(net, batch['observation'][0], 1)
  assert np.mean(after) > np.mean(before) + 0.1, (before, after)
  assert float(metrics['kickstart/lambda_teacher']) == 1.0
  assert 'kickstart/loss' in metrics
  for kept, now in zip(teacher_weights, model.get_weights()):
    np.testing.assert_array_equal(kept, now)
  # No gradient path from the learner's loss into the teacher.
  tensors = tf.nest.map_structure(tf.convert_to_tensor, batch)
  with tf.GradientTape() as tape:
    prepared = learner.kickstarter.prepare(tensors, discount=learner.discount)
    loss, _, _ = learner.loss(tensors, prepared)
  assert all(g is None for g in tape.gradient(loss, model.trainable_variables))
