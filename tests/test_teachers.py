"""Teachers: PolicySaver and Keras round trips, spec checks, frozen outputs, recurrent state, task routing."""

import warnings

import gin
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.policies import policy_saver
from tf_agents.policies import tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step
from tf_agents.trajectories import time_step as ts

from protege.agents.distillation import teacher_loading
from protege.agents.distillation import teacher_set as teacher_set_lib
from protege.agents.distillation import teachers
from protege.agents.training import policy_export
from protege.networks import actor_critic
from protege.networks import torsos

OBSERVATION_SPEC = tensor_spec.TensorSpec([4], tf.float32, 'observation')
ACTION_SPEC = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 1, 'action')
THREE_ACTIONS = tensor_spec.BoundedTensorSpec([], tf.int64, 0, 2, 'action')


def _network(action_spec=ACTION_SPEC, observation_spec=OBSERVATION_SPEC, core=None, seed=0):
  tf.keras.utils.set_random_seed(seed)
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((8,)),
                                        core=core, core_size=4, value_heads=('extrinsic', 'intrinsic'))
  net.create_variables()
  # The policy head starts at gain 0.01 (near-uniform logits); larger weights make comparisons telling.
  for variable in net.variables:
    variable.assign(tf.random.stateless_normal(variable.shape, seed=[seed, len(variable.name)]) * 0.5)
  return net


def _export(net, directory, observation_spec=OBSERVATION_SPEC, action_spec=ACTION_SPEC, greedy=False):
  return policy_export.export_policy(net, ts.time_step_spec(observation_spec), action_spec, str(directory),
                                     greedy=greedy)


def _observations(batch, seed=0, outer=()):
  return tf.constant(np.random.default_rng(seed).normal(size=outer + (batch, 4)).astype(np.float32))


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """Feed-forward and GRU exports over [4] observations and 2 actions, and mismatching ones."""
  root = tmp_path_factory.mktemp('teachers')
  nets = {'ff': _network(seed=1), 'gru': _network(core='gru', seed=2),
          'three': _network(THREE_ACTIONS, seed=3),
          'wide': _network(observation_spec=tensor_spec.TensorSpec([5], tf.float32, 'observation'), seed=4)}
  paths = {
      'ff': _export(nets['ff'], root / 'ff'),
      'gru': _export(nets['gru'], root / 'gru'),
      'three': _export(nets['three'], root / 'three', action_spec=THREE_ACTIONS),
      'wide': _export(nets['wide'], root / 'wide',
                      observation_spec=tensor_spec.TensorSpec([5], tf.float32, 'observation')),
      'greedy': _export(nets['ff'], root / 'greedy', greedy=True),
  }
  return nets, paths


def test_policy_saver_round_trip_gives_identical_logits_and_value(exported):
  nets, paths = exported
  teacher = teacher_loading.load_teacher(paths['ff'], OBSERVATION_SPEC, ACTION_SPEC)
  assert (teacher.name, teacher.num_actions, teacher.kind) == ('ff', 2, teachers.KIND_LOGITS)
  assert teacher.has_value and not teacher.is_recurrent
  observation = _observations(6)
  (expected_logits, expected_values), _ = nets['ff'](observation)
  for call in (teacher.logits_and_value, tf.function(teacher.logits_and_value)):
    logits, value, state = call(observation)
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value.numpy(), expected_values['extrinsic'].numpy(), rtol=1e-5, atol=1e-6)
    assert state == ()
  _, intrinsic, _ = teacher_loading.load_teacher(paths['ff'], OBSERVATION_SPEC, ACTION_SPEC,
                                                 value_head='intrinsic').logits_and_value(observation)
  np.testing.assert_allclose(intrinsic.numpy(), expected_values['intrinsic'].numpy(), rtol=1e-5, atol=1e-6)


def test_time_major_sequence_folds_into_one_batch(exported):
  nets, paths = exported
  teacher = teacher_loading.load_teacher(paths['ff'], OBSERVATION_SPEC, ACTION_SPEC)
  observation = _observations(3, outer=(5,))  # [T=5, B=3, 4]
  logits, value, _ = teacher.logits_and_value(observation)
  assert logits.shape == (5, 3, 2) and value.shape == (5, 3)
  (expected, _), _ = nets['ff'](tf.reshape(observation, [15, 4]))
  np.testing.assert_allclose(logits.numpy().reshape(15, 2), expected.numpy(), rtol=1e-5, atol=1e-6)


def test_greedy_export_teaches_with_the_network_logits(exported):
  nets, paths = exported
  teacher = teacher_loading.load_teacher(paths['greedy'], OBSERVATION_SPEC, ACTION_SPEC)
  observation = _observations(4, seed=3)
  (expected, _), _ = nets['ff'](observation)
  np.testing.assert_allclose(teacher.logits_and_value(observation)[0].numpy(), expected.numpy(), rtol=1e-5,
                             atol=1e-6)


def test_recurrent_teacher_keeps_its_own_state_and_resets_on_first(exported):
  nets, paths = exported
  net = nets['gru']
  teacher = teacher_loading.load_teacher(paths['gru'], OBSERVATION_SPEC, ACTION_SPEC)
  assert teacher.is_recurrent
  batch, steps = 3, 4
  observation = _observations(batch, seed=5, outer=(steps,))  # [T, B, 4]
  step_type = np.full((steps, batch), ts.StepType.MID, np.int32)
  step_type[0] = ts.StepType.FIRST
  step_type[2, 1] = ts.StepType.FIRST  # Column 1 starts a new episode at t = 2.
  step_type = tf.constant(step_type)

  # The network over the batch-major sequence is the reference.
  (expected, _), expected_state = net(tf.transpose(observation, [1, 0, 2]), step_type=tf.transpose(step_type),
                                      network_state=net.get_initial_state(batch))
  expected = tf.transpose(expected, [1, 0, 2]).numpy()

  logits, value, state = teacher.logits_and_value(observation, step_type, teacher.get_initial_state(batch))
  np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(state.numpy(), expected_state.numpy(), rtol=1e-5, atol=1e-6)
  assert value.shape == (steps, batch)

  # Step by step, threading the state, gives the same logits (also compiled).
  compiled = tf.function(teacher.logits_and_value)
  state = teacher.get_initial_state(batch)
  for t in range(steps):
    step_logits, _, state = compiled(observation[t], step_type[t], state)
    np.testing.assert_allclose(step_logits.numpy(), expected[t], rtol=1e-5, atol=1e-6)


def test_mismatched_action_spec_raises_an_error_naming_both_specs(exported):
  _, paths = exported
  with pytest.raises(ValueError) as error:
    teacher_loading.load_teacher(paths['three'], OBSERVATION_SPEC, ACTION_SPEC)
  message = str(error.value)
  assert '\n' not in message
  assert paths['three'] in message and 'acts over 3 actions' in message and 'the student over 2' in message
  assert repr(ACTION_SPEC) in message and 'maximum=array(2)' in message
  int32_actions = tensor_spec.BoundedTensorSpec([], tf.int32, 0, 1, 'action')
  with pytest.raises(ValueError, match='same dtype'):
    teacher_loading.load_teacher(paths['ff'], OBSERVATION_SPEC, int32_actions)


def test_mismatched_observation_spec_raises_an_error_naming_both_specs(exported):
  _, paths = exported
  with pytest.raises(ValueError) as error:
    teacher_loading.load_teacher(paths['wide'], OBSERVATION_SPEC, ACTION_SPEC)
  message = str(error.value)
  assert '\n' not in message and paths['wide'] in message
  assert 'shape=(5,)' in message and repr(OBSERVATION_SPEC) in message


def test_unknown_source_and_value_head_raise(exported, tmp_path):
  _, paths = exported
  with pytest.raises(ValueError, match='does not exist'):
    teacher_loading.load_teacher(str(tmp_path / 'nothing'), OBSERVATION_SPEC, ACTION_SPEC)
  with pytest.raises(ValueError, match="no value head 'curiosity'.*'extrinsic', 'intrinsic'"):
    teacher_loading.load_teacher(paths['ff'], OBSERVATION_SPEC, ACTION_SPEC, value_head='curiosity')


def test_teacher_is_frozen(exported, tmp_path):
  _, paths = exported
  teacher = teacher_loading.load_teacher(paths['ff'], OBSERVATION_SPEC, ACTION_SPEC)
  assert teacher.trainable_variables == () and teacher.variables == ()
  observation = _observations(2)
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(observation)
    logits, value, _ = teacher.logits_and_value(observation)
    total = tf.reduce_sum(logits) + tf.reduce_sum(value)
  assert tape.gradient(total, observation) is None
  # A checkpoint of a learner holding the teacher saves none of its weights.
  holder = tf.Module()
  holder.teacher = teacher
  holder.step = tf.Variable(0, trainable=False)
  saved = tf.train.Checkpoint(learner=holder).save(str(tmp_path / 'ckpt'))
  names = [name for name, _ in tf.train.list_variables(saved)
           if not name.startswith(('_CHECKPOINTABLE', 'save_'))]
  assert names == ['learner/step/.ATTRIBUTES/VARIABLE_VALUE'], names
  assert holder.trainable_variables == ()


def test_teacher_runs_in_a_mirrored_replica_context(exported, mirrored_strategy):
  nets, paths = exported
  teacher = teacher_loading.load_teacher(paths['gru'], OBSERVATION_SPEC, ACTION_SPEC)
  observation = _observations(4, seed=7)

  @tf.function
  def replica_fn():
    context = tf.distribute.get_replica_context()
    rows = observation[2 * context.replica_id_in_sync_group:][:2]
    logits, value, _ = teacher.logits_and_value(rows, policy_state=teacher.get_initial_state(2))
    return logits, value

  per_replica = mirrored_strategy.run(replica_fn)
  logits = tf.concat(mirrored_strategy.experimental_local_results(per_replica[0]), axis=0)
  (expected, _), _ = nets['gru'](observation, network_state=nets['gru'].get_initial_state(4))
  np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


class _NoInfoPolicy(tf_policy.TFPolicy):
  """A policy with a Categorical distribution and no info (like most TF-Agents policies)."""

  def __init__(self, net):
    self._net = net
    super().__init__(ts.time_step_spec(OBSERVATION_SPEC), ACTION_SPEC)

  def _variables(self):
    return self._net.variables

  def _distribution(self, time_step, policy_state):
    (logits, _), _ = self._net(time_step.observation)
    distribution = tfp.distributions.Categorical(logits=logits, dtype=tf.int64)
    return policy_step.PolicyStep(distribution, policy_state, ())


def test_policy_without_info_logits_teaches_through_its_distribution(exported, tmp_path):
  nets, _ = exported
  with warnings.catch_warnings():
    warnings.filterwarnings('ignore', message='Encoding a StructuredValue')
    policy_saver.PolicySaver(_NoInfoPolicy(nets['ff']), batch_size=None).save(str(tmp_path / 'no_info'))
  teacher = teacher_loading.load_teacher(str(tmp_path / 'no_info'), OBSERVATION_SPEC, ACTION_SPEC, name='plain')
  assert not teacher.has_value and teacher.name == 'plain'
  assert teacher.kind == teachers.KIND_DISTRIBUTION  # a Categorical policy holding no Q-network
  observation = _observations(5, seed=2)
  logits, value, _ = teacher.logits_and_value(observation)
  (expected, _), _ = nets['ff'](observation)
  assert value is None
  # logits_parameter() of a Categorical built from logits returns them unchanged.
  np.testing.assert_allclose(logits.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)


def _keras_actor_critic(width=2, input_width=4, seed=0):
  tf.keras.utils.set_random_seed(seed)
  inputs = tf.keras.Input([input_width])
  hidden = tf.keras.layers.Dense(8, activation='tanh')(inputs)
  return tf.keras.Model(inputs, [tf.keras.layers.Dense(width)(hidden), tf.keras.layers.Dense(1)(hidden)])


def test_keras_model_and_file_round_trip(tmp_path):
  model = _keras_actor_critic()
  observation = _observations(5, seed=4)
  expected_logits, expected_value = model(observation)
  path = str(tmp_path / 'teacher.keras')
  model.save(path)
  for source in (model, path):
    teacher = teacher_loading.load_teacher(source, OBSERVATION_SPEC, ACTION_SPEC)
    assert teacher.has_value and teacher.trainable_variables == ()
    logits, value, _ = tf.function(teacher.logits_and_value)(observation)
    np.testing.assert_allclose(logits.numpy(), expected_logits.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(value.numpy(), expected_value.numpy()[:, 0], rtol=1e-5, atol=1e-6)
  assert teacher_loading.load_teacher(path, OBSERVATION_SPEC, ACTION_SPEC).name == 'teacher'
  logits_only = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(2)])
  assert not teacher_loading.load_teacher(logits_only, OBSERVATION_SPEC, ACTION_SPEC).has_value


def test_mismatched_keras_models_raise():
  with pytest.raises(ValueError, match=r'outputs logits of shape \(3,\).*over 2 actions'):
    teacher_loading.load_teacher(_keras_actor_critic(width=3), OBSERVATION_SPEC, ACTION_SPEC)
  with pytest.raises(ValueError, match=r'takes observations of shape \(6,\)'):
    teacher_loading.load_teacher(_keras_actor_critic(input_width=6), OBSERVATION_SPEC, ACTION_SPEC)


# ----------------------------------------------------------------------------------------------------------
# Routing.
# ----------------------------------------------------------------------------------------------------------


class _RecordingTeacher(teachers.Teacher):
  """Logits = (k·x_0, k·x_1): each row's logits identify the row; records the batch sizes it saw."""

  def __init__(self, factor, recurrent=False):
    state_spec = tf.TensorSpec([1], tf.float32) if recurrent else ()
    super().__init__(OBSERVATION_SPEC, ACTION_SPEC, num_actions=2, state_spec=state_spec, has_value=True,
                     name=f'times_{factor}')
    self.factor = float(factor)
    self.batch_sizes = []

  def _step(self, observation, step_type, policy_state):
    self.batch_sizes.append(observation.shape[0])  # None in a traced loop.
    logits = self.factor * observation[:, :2]
    next_state = policy_state + self.factor if self.is_recurrent else ()
    return logits, self.factor * observation[:, 2], next_state


TASK_IDS = tf.constant([0, 1, 1, 2, 0, 1, 2, 0])  # Tasks interleaved over the batch.


@pytest.mark.parametrize('gather_rows', [True, False])
def test_routing_sends_each_task_rows_to_its_teacher(gather_rows):
  by_task = {0: _RecordingTeacher(1), 1: [_RecordingTeacher(10), _RecordingTeacher(100)]}  # Task 2: none.
  observation = _observations(8, seed=9)
  outputs = teacher_set_lib.route_by_task(TASK_IDS, by_task, observation, gather_rows=gather_rows)
  assert len(outputs) == 3
  x = observation.numpy()
  for output, task, factor in zip(outputs, (0, 1, 1), (1, 10, 100)):
    rows = TASK_IDS.numpy() == task
    np.testing.assert_array_equal(output.mask.numpy(), rows.astype(np.float32))
    np.testing.assert_allclose(output.logits.numpy(), np.where(rows[:, None], factor * x[:, :2], 0.0),
                               rtol=1e-6)
    np.testing.assert_allclose(output.value.numpy(), np.where(rows, factor * x[:, 2], 0.0), rtol=1e-6)
  expected_sizes = ([3], [3], [3]) if gather_rows else ([8], [8], [8])
  assert (by_task[0].batch_sizes, by_task[1][0].batch_sizes, by_task[1][1].batch_sizes) == expected_sizes


def test_routing_a_time_major_sequence_and_recurrent_states():
  teacher_0, teacher_2 = _RecordingTeacher(1, recurrent=True), _RecordingTeacher(3, recurrent=True)
  observation = _observations(8, seed=10, outer=(3,))  # [T=3, B=8, 4]
  states = [tf.fill([8, 1], 0.5), tf.fill([8, 1], 0.5)]
  outputs = tf.function(teacher_set_lib.route_by_task)(TASK_IDS, [teacher_0, None, teacher_2], observation,
                                                       policy_states=states)
  x = observation.numpy()
  for output, task, factor in zip(outputs, (0, 2), (1.0, 3.0)):
    rows = TASK_IDS.numpy() == task
    assert output.logits.shape == (3, 8, 2) and output.mask.shape == (3, 8)
    np.testing.assert_array_equal(output.mask.numpy(), np.broadcast_to(rows, (3, 8)).astype(np.float32))
    np.testing.assert_allclose(output.logits.numpy(), np.where(rows[None, :, None], factor * x[..., :2], 0.0),
                               rtol=1e-6)
    # Rows of the task advanced three steps; the other rows kept the state they had.
    np.testing.assert_allclose(output.state.numpy()[:, 0], np.where(rows, 0.5 + 3 * factor, 0.5))


@pytest.mark.parametrize('gather_rows', [True, False])
def test_routing_under_a_compiled_step_with_the_saved_policies(exported, gather_rows):
  nets, paths = exported
  # Task 5 has no rows in the batch: its teacher sees an empty batch (or is masked out everywhere).
  teacher_set = teacher_set_lib.TeacherSet(OBSERVATION_SPEC, ACTION_SPEC,
                                           paths=[paths['ff'], paths['gru'], paths['ff']],
                                           names=['ff', 'gru', 'absent'], tasks=[1, 0, 5], gather_rows=gather_rows)
  observation = _observations(8, seed=11)
  # Gathering rows gives dynamic shapes; without it the step also compiles with XLA (as on a TPU).
  outputs = tf.function(teacher_set.outputs, jit_compile=not gather_rows)(observation, TASK_IDS)
  (ff_logits, _), _ = nets['ff'](observation)
  (gru_logits, _), _ = nets['gru'](observation, network_state=nets['gru'].get_initial_state(8))
  for output, task, expected in zip(outputs, (1, 0, 5), (ff_logits, gru_logits, ff_logits)):
    rows = TASK_IDS.numpy() == task
    np.testing.assert_allclose(output.logits.numpy()[rows], expected.numpy()[rows], rtol=1e-5, atol=1e-6)
    assert not output.logits.numpy()[~rows].any() and not output.value.numpy()[~rows].any()
    np.testing.assert_array_equal(output.mask.numpy(), rows.astype(np.float32))


def test_teacher_set_from_gin(exported):
  _, paths = exported
  gin.parse_config([f"TeacherSet.paths = ['{paths['ff']}', '{paths['greedy']}']",
                    "TeacherSet.names = ['a', 'b']"])
  teacher_set = teacher_set_lib.TeacherSet(OBSERVATION_SPEC, ACTION_SPEC)
  assert teacher_set.names == ('a', 'b') and teacher_set.tasks == (None, None) and len(teacher_set) == 2
  logits = teacher_set.logits(_observations(3))
  assert [each.shape for each in logits] == [(3, 2), (3, 2)]
  np.testing.assert_allclose(logits[0].numpy(), logits[1].numpy(), rtol=1e-6)  # Same network.


def test_routing_errors(exported):
  _, paths = exported
  teacher = _RecordingTeacher(1)
  with pytest.raises(ValueError, match='pass task_ids'):
    teacher_set_lib.evaluate_on_task(teacher, 0, _observations(2))
  with pytest.raises(ValueError, match='task_ids must be an integer vector'):
    teacher_set_lib.evaluate_on_task(teacher, 0, _observations(2), task_ids=tf.constant([0.0, 1.0]))
  with pytest.raises(ValueError, match=r'got shapes \(2, 5\)'):
    teacher.logits_and_value(tf.zeros([2, 5]))
  with pytest.raises(ValueError, match='one task id'):
    teacher_set_lib.TeacherSet(OBSERVATION_SPEC, ACTION_SPEC, paths=[paths['ff']], tasks=[0, 1])
  with pytest.raises(ValueError, match='unique name'):
    teacher_set_lib.TeacherSet(OBSERVATION_SPEC, ACTION_SPEC, paths=[paths['ff'], paths['ff']], names=['a', 'a'])
