"""A recurrent teacher keeps its memory across batches: the actor records its state, the learner unrolls
from it (`TeacherSet.recorded_state_specs`, `Actor(teachers=...)`, `Kickstarter.prepare`)."""

import gin
import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.distillation import kickstarting
from protege.agents.distillation import teacher_set as teacher_set_lib
from protege.agents.training import actor as actor_lib
from protege.agents.training import components
from protege.agents.training import policy_export
from protege.agents.training import trainer as trainer_lib
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import torsos
from protege.replay import local_queue
from protege.replay import signatures

T, N = 4, 3  # CartPole's random episodes last 8+ steps: every episode spans several items
ITEMS = 12


def _lstm_teacher(path, observation_spec, action_spec):
  """A PolicySaver export of an LSTM actor-critic whose logits depend strongly on its memory."""
  tf.keras.utils.set_random_seed(4)
  net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((8,)),
                                        core='lstm', core_size=8)
  net.create_variables()
  for k, variable in enumerate(net.variables):  # larger weights than the initialiser's: memory matters
    variable.assign(tf.random.stateless_normal(variable.shape, seed=[7, k]) * 0.8)
  return policy_export.export_policy(net, ts.time_step_spec(observation_spec), action_spec, str(path))


@pytest.fixture(scope='module')
def lstm_export(tmp_path_factory):
  env = suite.make_environment('CartPole-v1', 1, seed=0)
  specs = components.environment_specs(env)
  env.close()
  return _lstm_teacher(tmp_path_factory.mktemp('lstm') / 'policy', *specs), specs


def test_an_lstm_teacher_gives_in_training_the_logits_of_its_whole_episodes(lstm_export):
  path, (observation_spec, action_spec) = lstm_export
  teacher_set = teacher_set_lib.TeacherSet(observation_spec, action_spec, paths=[path])
  kickstarter = kickstarting.Kickstarter(observation_spec, action_spec, teachers=teacher_set)
  actor_teachers = kickstarting.actor_teachers(observation_spec, action_spec, kickstarter=kickstarter)
  assert list(actor_teachers.recorded_state_specs()) == ['teacher_0']
  env = suite.make_environment('CartPole-v1', N, seed=3)
  student = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((8,)))
  student.create_variables()
  spec = actor_lib.step_spec(observation_spec, action_spec, student, teachers=actor_teachers)
  queue = local_queue.TrajectoryQueue(signatures.sequence_signature(spec, T, N), capacity=ITEMS)
  writer = local_queue.SequenceWriter(queue, T)
  actor = actor_lib.Actor(env, student, writer, seed=3, teachers=actor_teachers)
  assert actor.run(T + 1) + actor.run((ITEMS - 1) * T) == ITEMS
  writer.flush()
  iterator = iter(queue.dataset(items_per_batch=1))
  batches = [next(iterator) for _ in range(ITEMS)]
  queue.close()  # (releases the reader's prefetch waiting for a 13th item)
  env.close()
  assert len(batches) == ITEMS and 'teacher_state' in batches[0]

  # The reference: the teacher stepped through each column's whole stream of steps from the run's start.
  observation = np.concatenate([b['observation'][:T].numpy() for b in batches])  # [ITEMS·T, N, 4]
  step_type = np.concatenate([b['step_type'][:T].numpy() for b in batches])
  teacher = kickstarter.teacher_set.teachers[0]
  expected, _, _ = teacher.logits_and_value(tf.constant(observation), tf.constant(step_type),
                                            teacher.get_initial_state(N))
  expected = expected.numpy().reshape(ITEMS, T, N, -1)
  # Episodes do span items: some item starts inside an episode begun in an earlier item.
  assert np.any(batches[1]['step_type'][0].numpy() != ts.StepType.FIRST)

  prepare = tf.function(kickstarter.prepare)
  stale = 0.0
  for k, batch in enumerate(batches):
    logits = prepare(batch)['teacher_logits'][0].numpy()
    np.testing.assert_allclose(logits, expected[k], rtol=1e-4, atol=1e-5)
    # Without the recorded state (a teacher restarting at every batch) the logits are those of another memory.
    restarted = {key: value for key, value in batch.items() if key != 'teacher_state'}
    stale = max(stale, float(np.abs(prepare(restarted)['teacher_logits'][0].numpy() - expected[k]).max()))
  assert stale > 1e-2


@pytest.mark.reverb  # components.make_tables builds the Reverb table
def test_a_kickstarted_run_and_its_reverb_table_carry_the_recurrent_teachers_state(lstm_export, tmp_path):
  path, (observation_spec, action_spec) = lstm_export
  gin.clear_config()
  gin.parse_config_files_and_bindings(['tests/tiny_cartpole.gin'], [
      'PPOLearner.kickstarter_fn = @Kickstarter', f"TeacherSet.paths = ['{path}']"])
  try:
    assert kickstarting.kickstarter_configured()
    env = suite.make_environment(seed=0)
    network = components.make_network(actor_critic.ActorCriticNetwork, env)
    table, _ = components.make_tables(env, network, sequence_length=8)
    env.close()
    assert 'teacher_state' in table.info.signature
    trainer = trainer_lib.Trainer(str(tmp_path / 'run'))
    try:
      assert 'teacher_state' in trainer._collection.queue.signature  # pylint: disable=protected-access
      while not trainer.finished:
        metrics = trainer.run_iteration()
    finally:
      trainer.close()
    summary = trainer.finish()
    assert summary['env_steps'] == 64
    assert np.isfinite(metrics['kickstart/cross_entropy_teacher_0'])
  finally:
    gin.clear_config()
  gin.parse_config_files_and_bindings(['tests/tiny_cartpole.gin'], ['PPOLearner.kickstarter_fn = None',
                                                                    f"TeacherSet.paths = ['{path}']"])
  try:  # a scratch twin records nothing
    assert not kickstarting.kickstarter_configured()
    assert kickstarting.actor_teachers(observation_spec, action_spec) is None
  finally:
    gin.clear_config()
