"""Codistillation: peer teachers (copies of the student's network) and the exchange of policies between
population members through the root directory."""

import os

import gin
import numpy as np
import pytest
import tensorflow as tf
from test_ppo_learner import OBS_SPEC, _batch, _learner, _network

from protege.agents.distillation import kickstarting
from protege.agents.distillation import teacher_set as teacher_set_lib
from protege.pbt import codistillation


def _other_network(seed, core=None):
  """A network of the student's architecture with other weights."""
  net = _network(core)
  rng = np.random.default_rng(seed)
  for variable in net.variables:
    variable.assign(rng.normal(scale=0.5, size=variable.shape).astype(np.float32))
  return net


@pytest.mark.parametrize('core', [None, 'gru'])
def test_a_peer_teacher_is_masked_until_loaded_then_acts_as_the_peer(core):
  student = _network(core)
  teacher_set = teacher_set_lib.TeacherSet(OBS_SPEC, student.action_spec, peers=1, student_network=student)
  assert teacher_set.names == ('peer_0',)
  (peer,) = teacher_set.peer_teachers
  observation = tf.constant(np.random.default_rng(0).normal(size=(6, 4, 3)), tf.float32)  # [T, B, 3]
  (output,) = teacher_set.outputs(observation)
  np.testing.assert_array_equal(output.mask.numpy(), np.zeros((6, 4)))

  source = _other_network(1, core)
  peer.assign_weights([v.numpy() for v in source.variables], peer='member_3')
  (output,) = teacher_set.outputs(observation)
  np.testing.assert_array_equal(output.mask.numpy(), np.ones((6, 4)))
  # The peer's logits over the sequence (its core run over time from zeros), batch-major for the network.
  (expected, _), _ = source(tf.transpose(observation, [1, 0, 2]), step_type=tf.ones([4, 6], tf.int32))
  np.testing.assert_allclose(output.logits.numpy(), tf.transpose(expected, [1, 0, 2]).numpy(), rtol=1e-5,
                             atol=1e-6)
  assert peer.peer == 'member_3'
  # The copy is not the student: its own variables, none trainable through the teacher set, none checkpointed.
  assert not any(a is b for a, b in zip(peer.network.variables, student.variables))
  assert not teacher_set.trainable_variables and not teacher_set.variables


def test_a_peer_of_another_architecture_is_a_clear_error():
  student = _network()
  (peer,) = teacher_set_lib.TeacherSet(OBS_SPEC, student.action_spec, peers=1,
                                       student_network=student).peer_teachers
  wider = _network(core='gru')
  with pytest.raises(ValueError, match=r"peer 'member_1' sent .* every member must build the same network"):
    peer.assign_weights([v.numpy() for v in wider.variables], peer='member_1')
  weights = [v.numpy() for v in student.variables]
  weights[0] = np.zeros(weights[0].shape + (2,), np.float32)
  with pytest.raises(ValueError, match=r'of shape .* the student\'s is'):
    peer.assign_weights(weights, peer='member_1')
  assert float(peer.active.numpy()) == 0.0  # nothing was loaded


def test_peers_need_the_students_network_and_their_own_names():
  with pytest.raises(ValueError, match='needs the student\'s network'):
    teacher_set_lib.TeacherSet(OBS_SPEC, _network().action_spec, peers=1)
  with pytest.raises(ValueError, match='must be a count'):
    teacher_set_lib.TeacherSet(OBS_SPEC, _network().action_spec, peers=-1, student_network=_network())
  keras_teacher = tf.keras.Sequential([tf.keras.Input([3]), tf.keras.layers.Dense(2)])
  with pytest.raises(ValueError, match=r"\['peer_0'\] are the peer teachers' names"):
    teacher_set_lib.TeacherSet(OBS_SPEC, _network().action_spec, paths=[keras_teacher], names=['peer_0'], peers=1,
                               student_network=_network())


def test_the_learner_distils_from_a_peer_only_once_loaded_without_retracing():
  gin.parse_config(['TeacherSet.peers = 1', "DistillationConfig.variant = 'on_policy_distill_with_reward'"])
  net = _network()
  learner = _learner(net, _batch(net), kickstarter_fn=kickstarting.Kickstarter)
  metrics = learner.run()
  assert metrics['kickstart/cross_entropy_peer_0'] == 0.0 and metrics['kickstart/loss'] == 0.0
  tracing = learner.tracing_count()
  (peer,) = learner.kickstarter.peer_teachers
  peer.assign_weights([v.numpy() for v in _other_network(2).variables], peer='member_1')
  metrics = learner.run()
  assert metrics['kickstart/cross_entropy_peer_0'] > 0.0 and metrics['kickstart/loss'] > 0.0
  assert learner.tracing_count() == tracing  # pylint: disable=protected-access


def test_members_publish_atomically_and_read_the_best_others(tmp_path):
  root = str(tmp_path)
  shapes = [(3, 2), (2,)]
  for index, score in enumerate([1.0, 5.0, 3.0, float('nan')]):
    weights = [np.full(shape, index, np.float32) for shape in shapes]
    codistillation.publish(root, f'member_{index}', weights, score, env_steps=100 * index)
  # A damaged file and a staging file left by a writer that died are skipped.
  with open(os.path.join(codistillation.directory(root), 'member_8.npz'), 'wb') as f:
    f.write(b'not an npz')
  with open(os.path.join(codistillation.directory(root), '.member_9.x.npz.partial'), 'wb') as f:
    f.write(b'half')
  best = codistillation.best_peers(root, 'member_2', count=2)
  assert [(p.member, p.score, p.env_steps) for p in best] == [('member_1', 5.0, 100), ('member_0', 1.0, 0)]
  np.testing.assert_array_equal(best[0].weights[0], np.full((3, 2), 1, np.float32))
  assert [p.member for p in codistillation.best_peers(root, 'member_1', count=5)] == ['member_2', 'member_0']
  # Publishing again replaces the member's file whole.
  codistillation.publish(root, 'member_0', [np.zeros(s, np.float32) for s in shapes], 9.0, env_steps=700)
  assert codistillation.best_peers(root, 'member_1', count=1)[0][:3] == ('member_0', 9.0, 700)
  assert sorted(os.listdir(codistillation.directory(root))) == [
      '.member_9.x.npz.partial', 'member_0.npz', 'member_1.npz', 'member_2.npz', 'member_3.npz', 'member_8.npz']


def test_an_exchange_publishes_this_member_and_loads_the_best_peer(tmp_path):
  root = str(tmp_path)
  student = _network()
  (peer,) = teacher_set_lib.TeacherSet(OBS_SPEC, student.action_spec, peers=1,
                                       student_network=student).peer_teachers
  # Alone in the population: it publishes, nothing to load.
  assert codistillation.exchange(root, 'member_0', student, [peer], [1.0, 2.0], env_steps=64) == {}
  assert float(peer.active.numpy()) == 0.0
  better, worse = _other_network(3), _other_network(4)
  codistillation.publish(root, 'member_1', [v.numpy() for v in better.variables], 7.0, env_steps=64)
  codistillation.publish(root, 'member_2', [v.numpy() for v in worse.variables], 0.5, env_steps=64)
  loaded = codistillation.exchange(root, 'member_0', student, [peer], [1.0, 2.0], env_steps=128)
  assert loaded == {'peer_0': {'peer': 'member_1', 'score': 7.0, 'env_steps': 64}}
  for expected, actual in zip(better.variables, peer.network.variables):
    np.testing.assert_array_equal(actual.numpy(), expected.numpy())
  assert codistillation.read(os.path.join(codistillation.directory(root), 'member_0.npz')).score == 1.5
