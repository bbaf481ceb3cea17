"""Tests for networks/actor_critic.py: shapes, state handling, heads, gradients, compilation."""

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import array_spec
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.networks import actor_critic
from protege.networks import torsos

NUM_ACTIONS = 6
ACTION_SPEC = tensor_spec.BoundedTensorSpec((), tf.int64, minimum=0, maximum=NUM_ACTIONS - 1)
VECTOR_SPEC = tf.TensorSpec((4,), tf.float32)
FRAME_SPEC = tf.TensorSpec((84, 84, 4), tf.uint8)
FIRST, MID = int(ts.StepType.FIRST), int(ts.StepType.MID)


@pytest.fixture(autouse=True)
def _seed():
  """Fixed weights per test. (tests/conftest.py clears gin and makes 2 logical CPUs.)"""
  tf.random.set_seed(0)


def _small_impala():
  return torsos.ImpalaResNetTorso(channels=(8, 8), num_blocks=1, output_size=32)


def _observations(spec, outer_dims, seed=0):
  rng = np.random.RandomState(seed)
  shape = tuple(outer_dims) + tuple(spec.shape)
  if spec.dtype == tf.uint8:
    return tf.constant(rng.randint(0, 256, size=shape, dtype=np.uint8))
  return tf.constant(rng.randn(*shape).astype(np.float32))


def _network(core=None, torso_fn=None, observation_spec=VECTOR_SPEC, **kwargs):
  torso_fn = torso_fn or (lambda: torsos.MLPTorso(layer_sizes=(16,)))
  net = actor_critic.ActorCriticNetwork(
    observation_spec, ACTION_SPEC, torso_fn=torso_fn, core=core, core_size=8, **kwargs
  )
  net.create_variables()
  return net


def _random_state(net, batch_size, seed=3):
  rng = np.random.RandomState(seed)
  return tf.nest.map_structure(
    lambda spec: tf.constant(rng.randn(batch_size, *spec.shape).astype(np.float32)), net.state_spec
  )


def _assert_nested_close(actual, expected, **kwargs):
  tf.nest.map_structure(
    lambda a, e: np.testing.assert_allclose(np.asarray(a), np.asarray(e), **kwargs), actual, expected
  )


CASES = [
  pytest.param(VECTOR_SPEC, None, None, 64, id='mlp'),
  pytest.param(VECTOR_SPEC, None, 'lstm', 8, id='mlp-lstm'),
  pytest.param(VECTOR_SPEC, None, 'gru', 8, id='mlp-gru'),
  pytest.param(FRAME_SPEC, torsos.NatureCNNTorso, None, 512, id='nature-cnn'),
  pytest.param(FRAME_SPEC, torsos.ImpalaResNetTorso, 'lstm', 8, id='impala-lstm'),
]


@pytest.mark.parametrize('observation_spec, torso_fn, core, feature_size', CASES)
def test_output_shapes_for_steps_and_sequences(observation_spec, torso_fn, core, feature_size):
  net = actor_critic.ActorCriticNetwork(
    observation_spec, ACTION_SPEC, torso_fn=torso_fn or torsos.MLPTorso, core=core, core_size=8
  )
  batch, time = 2, 3

  (logits, values), state = net(_observations(observation_spec, [batch]), step_type=tf.fill([batch], FIRST))
  assert logits.shape == (batch, NUM_ACTIONS)
  assert list(values) == ['extrinsic'] and values['extrinsic'].shape == (batch,)
  assert tf.nest.map_structure(lambda s: tuple(s.shape), state) == tf.nest.map_structure(
    lambda spec: (batch,) + tuple(spec.shape), net.state_spec
  )

  (logits, values), state = net(
    _observations(observation_spec, [batch, time]), step_type=tf.fill([batch, time], MID)
  )
  assert logits.shape == (batch, time, NUM_ACTIONS)
  assert values['extrinsic'].shape == (batch, time)
  # The heads read the torso's (or core's) features.
  assert net.trainable_variables[-2].shape == (feature_size, 1)


@pytest.mark.parametrize(
  'core, expected_state_shapes, core_variables',
  [
    (None, (), 0),
    ('lstm', [(8,), (8,)], 3),  # kernel, recurrent kernel, bias
    ('gru', (8,), 3),
  ],
)
def test_state_spec_and_variable_counts(core, expected_state_shapes, core_variables):
  net = _network(core=core)
  assert tf.nest.map_structure(lambda s: tuple(s.shape), net.state_spec) == (expected_state_shapes)
  initial_state = net.get_initial_state(batch_size=5)
  tf.nest.map_structure(lambda s: np.testing.assert_array_equal(s, np.zeros((5, 8))), initial_state)
  # MLP torso (2) + core + policy head (2) + one value head (2).
  assert len(net.trainable_variables) == 2 + core_variables + 2 + 2
  output_spec = net.create_variables()
  assert output_spec[0].shape == (NUM_ACTIONS,) and output_spec[1]['extrinsic'].shape == ()
  assert net.num_actions == NUM_ACTIONS and net.value_head_names == ('extrinsic',)


def test_head_initialisation_follows_the_ppo_baselines():
  net = _network(value_heads=('extrinsic', 'intrinsic'))
  variables = {
    v.name.split('/')[-2] + '/' + v.name.split('/')[-1][:-2]: v.numpy() for v in net.trainable_variables
  }
  policy_kernel = variables['policy_head/kernel']  # [16, A]: orthonormal columns x 0.01
  np.testing.assert_allclose(policy_kernel.T @ policy_kernel, 1e-4 * np.eye(NUM_ACTIONS), atol=1e-8)
  for head in ('value_head_extrinsic', 'value_head_intrinsic'):
    np.testing.assert_allclose(np.sum(variables[f'{head}/kernel'] ** 2), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(variables[f'{head}/bias'], 0.0)
  np.testing.assert_array_equal(variables['policy_head/bias'], 0.0)


def test_two_named_value_heads_give_two_different_values():
  net = _network(value_heads=('extrinsic', 'intrinsic'))
  (_, values), _ = net(_observations(VECTOR_SPEC, [4, 5]))
  assert set(values) == {'extrinsic', 'intrinsic'}
  assert values['extrinsic'].shape == values['intrinsic'].shape == (4, 5)
  assert not np.allclose(values['extrinsic'], values['intrinsic'])
  assert net.value_head_names == ('extrinsic', 'intrinsic')


@pytest.mark.parametrize('core', [None, 'lstm', 'gru'])
def test_sequence_call_equals_unrolling_step_by_step(core):
  net = _network(core=core)
  batch, time = 3, 5
  observations = _observations(VECTOR_SPEC, [batch, time])
  step_types = np.full([batch, time], MID, dtype=np.int32)
  step_types[:, 0] = FIRST
  step_types[1, 2] = FIRST  # an episode boundary inside one sequence
  initial_state = _random_state(net, batch) if core else ()

  (seq_logits, seq_values), seq_state = net(observations, step_type=step_types, network_state=initial_state)

  state = initial_state
  step_logits, step_values = [], []
  for t in range(time):
    (logits, values), state = net(observations[:, t], step_type=step_types[:, t], network_state=state)
    step_logits.append(logits)
    step_values.append(values['extrinsic'])
  np.testing.assert_allclose(seq_logits, tf.stack(step_logits, axis=1), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(seq_values['extrinsic'], tf.stack(step_values, axis=1), rtol=1e-5, atol=1e-6)
  _assert_nested_close(seq_state, state, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('core', ['lstm', 'gru'])
def test_core_state_is_reset_at_first_steps(core):
  net = _network(core=core)
  batch, time, boundary = 2, 6, 3
  observations = _observations(VECTOR_SPEC, [batch, time])
  step_types = np.full([batch, time], MID, dtype=np.int32)
  step_types[:, boundary] = FIRST
  stale_state = _random_state(net, batch)

  (logits, values), _ = net(observations, step_type=step_types, network_state=stale_state)
  (fresh_logits, fresh_values), _ = net(observations[:, boundary:], step_type=step_types[:, boundary:])
  # After the FIRST step nothing of the stale state remains.
  np.testing.assert_allclose(logits[:, boundary:], fresh_logits, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(
    values['extrinsic'][:, boundary:], fresh_values['extrinsic'], rtol=1e-5, atol=1e-6
  )
  # Before it the state does matter (so the equality above is not trivially true).
  (zero_state_logits, _), _ = net(observations, step_type=step_types)
  assert not np.allclose(logits[:, :boundary], zero_state_logits[:, :boundary])

  # Single steps: FIRST ignores the incoming state, MID uses it.
  step = observations[:, 0]
  (first_logits, _), _ = net(step, step_type=tf.fill([batch], FIRST), network_state=stale_state)
  (zero_logits, _), _ = net(step, step_type=tf.fill([batch], FIRST))
  (mid_logits, _), _ = net(step, step_type=tf.fill([batch], MID), network_state=stale_state)
  np.testing.assert_allclose(first_logits, zero_logits, rtol=1e-6)
  assert not np.allclose(mid_logits, zero_logits)


@pytest.mark.parametrize(
  'observation_spec, torso_fn, core',
  [
    (VECTOR_SPEC, None, None),
    (VECTOR_SPEC, None, 'lstm'),
    (VECTOR_SPEC, None, 'gru'),
    (FRAME_SPEC, torsos.NatureCNNTorso, None),
    (FRAME_SPEC, _small_impala, 'lstm'),
  ],
)
def test_gradients_reach_every_trainable_variable(observation_spec, torso_fn, core):
  net = _network(
    core=core, torso_fn=torso_fn, observation_spec=observation_spec, value_heads=('extrinsic', 'intrinsic')
  )
  observations = _observations(observation_spec, [2, 3])
  step_types = tf.constant([[FIRST, MID, MID]] * 2)
  with tf.GradientTape() as tape:
    (logits, values), _ = net(observations, step_type=step_types, training=True)
    loss = (
      tf.reduce_sum(tf.nn.log_softmax(logits)[..., 0])
      + tf.reduce_sum(values['extrinsic'] ** 2)
      + tf.reduce_sum(values['intrinsic'])
    )
  gradients = tape.gradient(loss, net.trainable_variables)
  for variable, gradient in zip(net.trainable_variables, gradients):
    assert gradient is not None, variable.name
    assert np.any(gradient.numpy() != 0), variable.name


@pytest.mark.parametrize(
  'observation_spec, torso_fn, core',
  [
    (VECTOR_SPEC, None, None),
    (FRAME_SPEC, torsos.NatureCNNTorso, None),
    (VECTOR_SPEC, None, 'lstm'),  # XLA also compiles the unroll's while loop on CPU.
  ],
)
def test_jit_compiled_call_matches_eager(observation_spec, torso_fn, core):
  net = _network(core=core, torso_fn=torso_fn, observation_spec=observation_spec)
  observations = _observations(observation_spec, [2, 3])
  step_types = tf.constant([[FIRST, MID, MID]] * 2)

  @tf.function(jit_compile=True)
  def compiled(observations, step_types):
    return net(observations, step_type=step_types)[0]

  _assert_nested_close(
    compiled(observations, step_types), net(observations, step_type=step_types)[0], rtol=1e-4, atol=1e-5
  )
  single_step, single_step_type = observations[:, 0], step_types[:, 0]
  _assert_nested_close(
    compiled(single_step, single_step_type),
    net(single_step, step_type=single_step_type)[0],
    rtol=1e-4,
    atol=1e-5,
  )


def test_recurrent_call_works_inside_tf_function():
  net = _network(core='lstm')
  observations = _observations(VECTOR_SPEC, [2, 4])
  step_types = tf.constant([[FIRST, MID, FIRST, MID]] * 2)
  state = _random_state(net, 2)
  compiled = tf.function(lambda o, s, st: net(o, step_type=s, network_state=st))
  _assert_nested_close(
    compiled(observations, step_types, state),
    net(observations, step_type=step_types, network_state=state),
    rtol=1e-5,
    atol=1e-6,
  )


@pytest.mark.parametrize('core', [None, 'lstm'])
def test_runs_under_mirrored_strategy(core, mirrored_strategy):
  strategy = mirrored_strategy
  assert strategy.num_replicas_in_sync == 2
  with strategy.scope():
    net = _network(core=core)
  observations = _observations(VECTOR_SPEC, [2, 3])
  step_types = tf.constant([[FIRST, MID, MID]] * 2)

  @tf.function
  def replica_step(observations, step_types):
    with tf.GradientTape() as tape:
      (logits, values), _ = net(observations, step_type=step_types, training=True)
      loss = tf.reduce_mean(logits**2) + tf.reduce_mean(values['extrinsic'] ** 2)
    gradients = tape.gradient(loss, net.trainable_variables)
    return logits, tf.add_n([tf.reduce_sum(g**2) for g in gradients])

  per_replica_logits, per_replica_norm = strategy.run(replica_step, args=(observations, step_types))
  expected_logits = net(observations, step_type=step_types)[0][0]
  for logits in strategy.experimental_local_results(per_replica_logits):
    np.testing.assert_allclose(logits, expected_logits, rtol=1e-5, atol=1e-6)
  for norm in strategy.experimental_local_results(per_replica_norm):
    assert norm.numpy() > 0


def test_copies_build_their_own_layers():
  net = _network(torso_fn=torsos.MLPTorso)
  copy = net.copy(name='LearnerCopy')
  copy.create_variables()
  assert len(copy.trainable_variables) == len(net.trainable_variables)
  original_ids = {id(v) for v in net.trainable_variables}
  assert not original_ids & {id(v) for v in copy.trainable_variables}


def test_torso_and_core_come_from_gin():
  gin.parse_config("""
        ActorCriticNetwork.torso_fn = @NatureCNNTorso
        ActorCriticNetwork.core = 'gru'
        ActorCriticNetwork.core_size = 16
        ActorCriticNetwork.value_heads = ('extrinsic', 'intrinsic')
    """)
  net = actor_critic.ActorCriticNetwork(FRAME_SPEC, ACTION_SPEC)
  (logits, values), state = net(_observations(FRAME_SPEC, [1, 2]), step_type=tf.constant([[FIRST, MID]]))
  assert isinstance(net._torso, torsos.NatureCNNTorso)  # pylint: disable=protected-access
  assert logits.shape == (1, 2, NUM_ACTIONS) and set(values) == {'extrinsic', 'intrinsic'}
  assert state.shape == (1, 16)


@pytest.mark.parametrize(
  'action_spec',
  [
    tensor_spec.BoundedTensorSpec((), tf.float32, minimum=-1.0, maximum=1.0),  # continuous
    tensor_spec.BoundedTensorSpec((2,), tf.int32, minimum=0, maximum=3),  # multi-discrete
    tensor_spec.BoundedTensorSpec((), tf.int32, minimum=1, maximum=4),  # not 0-based
    tf.TensorSpec((), tf.int32),  # unbounded
    (ACTION_SPEC, ACTION_SPEC),  # nested
  ],
)
def test_non_discrete_action_spec_raises_naming_the_spec(action_spec):
  with pytest.raises(ValueError, match='discrete') as error:
    actor_critic.ActorCriticNetwork(VECTOR_SPEC, action_spec)
  assert repr(action_spec) in str(error.value)


def test_array_specs_are_accepted():
  net = actor_critic.ActorCriticNetwork(
    array_spec.ArraySpec((4,), np.float32), array_spec.BoundedArraySpec((), np.int64, minimum=0, maximum=2)
  )
  assert net.num_actions == 3
  (logits, _), _ = net(_observations(VECTOR_SPEC, [2]))
  assert logits.shape == (2, 3)


@pytest.mark.parametrize(
  'kwargs, message',
  [
    (dict(value_heads='extrinsic'), r"write \('extrinsic',\)"),
    (dict(value_heads=('a', 'a')), 'unique'),
    (dict(value_heads=()), 'one or more'),
    (dict(core='transformer'), "'transformer'"),
    (dict(core='lstm', core_size=0), 'core_size'),
  ],
)
def test_invalid_arguments_raise_clear_errors(kwargs, message):
  with pytest.raises(ValueError, match=message):
    actor_critic.ActorCriticNetwork(VECTOR_SPEC, ACTION_SPEC, **kwargs)


def test_observations_without_batch_dimension_raise():
  net = _network()
  with pytest.raises(ValueError):
    net(tf.zeros((4,)))
  with pytest.raises(ValueError, match='B, T'):
    net(tf.zeros((2, 3, 5, 4)))


def test_separate_value_torso_keeps_value_gradients_out_of_the_policy_torso():
  observation_spec = tf.TensorSpec([4], tf.float32)
  action_spec = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1)
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, separate_value_torso=True)
  net.create_variables()
  shared = actor_critic.ActorCriticNetwork(observation_spec, action_spec)
  shared.create_variables()
  # A second MLP torso (64x64): 4*64+64 + 64*64+64 more parameters.
  assert net.count_params() - shared.count_params() == 4 * 64 + 64 + 64 * 64 + 64
  observation = tf.random.normal([5, 4])
  with tf.GradientTape() as tape:
    (_, values), _ = net(observation)
    loss = tf.reduce_sum(values['extrinsic'])
  grads = tape.gradient(loss, net._torso.trainable_variables)
  assert all(g is None for g in grads)
  with pytest.raises(ValueError, match='separate_value_torso'):
    actor_critic.ActorCriticNetwork(observation_spec, action_spec, separate_value_torso=True, core='lstm')
