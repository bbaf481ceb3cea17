"""The in-process trajectory queue of a single-process run: the Reverb path's items, FIFO and capacity,
closing, the learner under MirroredStrategy, and a `train_main` run that listens on no socket."""

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec

from protege.agents.learners import ppo
from protege.agents.training import actor as actor_lib
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import torsos
from protege.replay import frame_stacks
from protege.replay import local_queue
from protege.replay import signatures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
T, N = 4, 3
STEP_SPEC = {
    'observation': tf.TensorSpec([2], tf.float32, 'observation'),
    'action': tf.TensorSpec([], tf.int64, 'action'),
    'behaviour_values': {'extrinsic': tf.TensorSpec([], tf.float32, 'behaviour_value_extrinsic')},
    # A list, as an LSTM's state: tf.data would stack it, so both transports yield a tuple.
    'core_state': [tf.TensorSpec([3], tf.float32, 'h'), tf.TensorSpec([3], tf.float32, 'c')],
}
# Atari-like grey frame stacks [H, W, S], stored one frame per step.
STACK_SPEC = {'observation': tf.TensorSpec([6, 5, 4], tf.uint8, 'observation'),
              'step_type': tf.TensorSpec([], tf.int32, 'step_type')}


def _steps(spec, count, seed=0):
  """`count` random batched steps of `N` environments matching `spec`."""
  rng = np.random.default_rng(seed)

  def leaf(s):
    shape = [N] + s.shape.as_list()
    if s.dtype == tf.uint8:
      return rng.integers(0, 256, shape, dtype=np.uint8)
    if s.dtype.is_integer:
      return rng.integers(0, 3, shape).astype(s.dtype.as_numpy_dtype)
    return rng.normal(size=shape).astype(s.dtype.as_numpy_dtype)
  return [tf.nest.map_structure(leaf, spec) for _ in range(count)]


def _action_step(t):
  # The action encodes (time, env), so each item's origin shows in its values.
  return {'observation': np.zeros([N, 2], np.float32), 'action': (100 * t + np.arange(N)).astype(np.int64)}


def _action_queue(capacity):
  spec = {'observation': STEP_SPEC['observation'], 'action': STEP_SPEC['action']}
  queue = local_queue.TrajectoryQueue(signatures.sequence_signature(spec, T, N), capacity)
  return queue, local_queue.SequenceWriter(queue, T)


@pytest.mark.parametrize('spec,stored_frames', [(STEP_SPEC, None), (STACK_SPEC, 'zeros'),
                                                (STACK_SPEC, 'reset')])
@pytest.mark.parametrize('items_per_batch', [1, 2])
@pytest.mark.reverb
def test_items_are_those_of_the_reverb_path(spec, stored_frames, items_per_batch):
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  num_items = 4
  signature = signatures.sequence_signature(spec, T, N, stored_frames=stored_frames)
  steps = _steps(spec, num_items * T + 1)
  server = reverb_replay.start_server([reverb_replay.queue_table(
      signatures.on_policy_table(signature, max_size=num_items))])
  try:
    address = f'localhost:{server.port}'
    reverb_writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), 'trajectories', T)
    reverb_completed = [reverb_writer.append(step) for step in steps]
    reverb_writer.flush()
    queue = local_queue.TrajectoryQueue(signature, num_items)
    writer = local_queue.SequenceWriter(queue, T)
    completed = [writer.append(step) for step in steps]
    writer.flush()
    assert completed == reverb_completed
    assert queue.size() == queue.items_put == num_items

    expected = iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch))
    actual = iter(queue.dataset(items_per_batch))
    assert actual.element_spec == expected.element_spec
    for _ in range(num_items // items_per_batch):
      want, got = next(expected), next(actual)
      tf.nest.assert_same_structure(want, got)
      tf.nest.map_structure(lambda w, g: np.testing.assert_array_equal(g.numpy(), w.numpy()), want, got)
    if stored_frames is not None:
      assert got['observation'].shape == (T + 1, items_per_batch * N, 6, 5)  # one frame per step
      assert got[frame_stacks.frames_before_key(stored_frames)].shape == (items_per_batch * N, 6, 5, 3)
    assert queue.size() == 0
    writer.close()
    queue.close()
  finally:
    server.stop()


def test_fifo_order_capacity_and_waiting_for_items():
  queue, writer = _action_queue(capacity=2)
  completed = [writer.append(_action_step(t)) for t in range(3 * T + 1)]
  assert sum(completed) == 3  # append never waits, even with the queue full
  assert queue.size() == 2 and queue.items_put == 2
  with pytest.raises(TimeoutError):
    writer.flush(timeout_ms=100)  # the third item finds no room
  assert not queue.wait_for_items(3, timeout_seconds=0.1)

  iterator = iter(queue.dataset(1))
  first = next(iterator)['action'].numpy()
  writer.flush(timeout_ms=5_000)  # room again
  assert queue.wait_for_items(3, timeout_seconds=0.1)
  rest = [next(iterator)['action'].numpy() for _ in range(2)]
  for index, item in enumerate([first] + rest):  # oldest first, overlapping by one step
    np.testing.assert_array_equal(item[:, 0], 100 * np.arange(index * T, (index + 1) * T + 1))
  assert queue.size() == 0
  queue.close()
  assert not queue.wait_for_items(4, timeout_seconds=5)  # returns at once once closed


def test_bad_capacity_and_steps_are_one_line_errors():
  with pytest.raises(ValueError, match='on_policy_table.max_size=1 cannot hold one learner step of 2'):
    local_queue.on_policy_capacity(2, max_size=1)
  assert local_queue.on_policy_capacity(2) == 2
  queue, writer = _action_queue(capacity=1)
  with pytest.raises(ValueError, match="'action' is int32"):
    writer.append({'observation': np.zeros([N, 2], np.float32), 'action': np.zeros([N], np.int32)})
  with pytest.raises(ValueError, match='sequence_length'):
    local_queue.SequenceWriter(queue, T + 1)


def _in_thread(call):
  """Runs `call()` in a thread; returns the thread and a dict that gets its 'result' or 'error'."""
  outcome = {}

  def run():
    try:
      outcome['result'] = call()
    except BaseException as error:  # pylint: disable=broad-except
      outcome['error'] = error
  thread = threading.Thread(target=run, daemon=True)
  thread.start()
  return thread, outcome


def test_a_waiting_reader_gets_the_next_item_and_ends_when_closed():
  queue, writer = _action_queue(capacity=1)
  iterator = iter(queue.dataset(1))
  reader, read = _in_thread(lambda: next(iterator))
  time.sleep(0.5)
  assert reader.is_alive()  # the queue is empty: the reader waits
  for t in range(T + 1):
    writer.append(_action_step(t))
  reader.join(10)
  np.testing.assert_array_equal(read['result']['action'].numpy()[:, 0], 100 * np.arange(T + 1))

  reader, read = _in_thread(lambda: next(iterator))
  time.sleep(0.5)
  assert reader.is_alive()
  start = time.time()
  queue.close()
  reader.join(10)
  assert time.time() - start < 2
  # The dataset ended: eager iteration stops; inside a tf.function (the learner) it is an OutOfRangeError.
  assert isinstance(read.get('error'), StopIteration), read


def test_a_full_queue_waits_until_the_stop_flag():
  queue, writer = _action_queue(capacity=1)
  for t in range(2 * T + 1):
    writer.append(_action_step(t))
  stop = threading.Event()
  flusher, flushed = _in_thread(lambda: writer.flush_unless(stop.is_set, poll_ms=100))
  time.sleep(0.3)
  assert flusher.is_alive()
  start = time.time()
  stop.set()
  flusher.join(10)
  assert time.time() - start < 1.0 and flushed['result'] is False
  queue.close()
  with pytest.raises(local_queue.QueueClosedError):
    writer.flush()


def test_closing_ends_a_blocked_flush():
  queue, writer = _action_queue(capacity=1)
  for t in range(2 * T + 1):
    writer.append(_action_step(t))
  flusher, flushed = _in_thread(writer.flush)
  time.sleep(0.3)
  assert flusher.is_alive()
  queue.close()
  flusher.join(10)
  assert isinstance(flushed.get('error'), local_queue.QueueClosedError)


def test_ppo_learner_reads_the_queue_under_mirrored_strategy(mirrored_strategy):
  """An actor fills the queue from CartPole; the learner's two replicas each read their own items."""
  env = suite.make_environment('CartPole-v1', N, seed=1)
  observation_spec = tensor_spec.from_spec(env.observation_spec())
  action_spec = tensor_spec.from_spec(env.action_spec())

  def network():
    net = actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=lambda: torsos.MLPTorso((8,)))
    net.create_variables()
    return net
  with mirrored_strategy.scope():
    learner_network = network()
  replicas = mirrored_strategy.num_replicas_in_sync
  signature = signatures.sequence_signature(
      actor_lib.step_spec(observation_spec, action_spec, learner_network), T, N)
  queue = local_queue.TrajectoryQueue(signature, local_queue.on_policy_capacity(replicas))
  writer = local_queue.SequenceWriter(queue, T)
  learner = ppo.PPOLearner(learner_network, lambda context: queue.dataset(1), mirrored_strategy,
                                   total_iterations=2, num_epochs=1, num_minibatches=1)
  actor = actor_lib.Actor(env, network(), writer, seed=3, numpy_inference_for_mlps=False)
  try:
    before = [v.numpy() for v in learner_network.variables]
    for iteration in range(2):
      actor.pull_weights(learner_network.variables, version=iteration)
      assert actor.run(replicas * T + (1 if iteration == 0 else 0)) == replicas
      writer.flush()
      assert queue.wait_for_items((iteration + 1) * replicas, timeout_seconds=1)
      metrics = learner.run()
      assert np.isfinite(metrics['loss'])
    assert queue.size() == 0  # every item read once
    assert any(not np.array_equal(b, v.numpy()) for b, v in zip(before, learner_network.variables))
    # A learner waiting for items that will not come (the actor thread failed) is ended by closing.
    waiting, outcome = _in_thread(learner.run)
    time.sleep(0.5)
    assert waiting.is_alive()
    queue.close()
    waiting.join(10)
    assert isinstance(outcome.get('error'), tf.errors.OutOfRangeError), outcome
  finally:
    queue.close()
    env.close()


def _listening_sockets(pid):
  """The TCP sockets (IPv4 and IPv6) process `pid` listens on, and its bound UDP sockets: the inodes of
  /proc/net/{tcp,tcp6} in state LISTEN (0A) and of /proc/net/{udp,udp6} that are its open files."""
  listening = set()
  for table in ('tcp', 'tcp6', 'udp', 'udp6'):
    with open(f'/proc/{pid}/net/{table}') as f:
      for line in f.readlines()[1:]:
        fields = line.split()
        if table.startswith('udp') or fields[3] == '0A':
          listening.add(fields[9])
  owned = set()
  for fd in os.listdir(f'/proc/{pid}/fd'):
    try:
      target = os.readlink(f'/proc/{pid}/fd/{fd}')
    except OSError:
      continue  # closed meanwhile
    if target.startswith('socket:['):
      owned.add(target[len('socket:['):-1])
  return owned & listening


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='reads /proc (Linux)')
def test_the_detector_sees_a_listening_and_a_bound_socket():
  # Without Reverb too (the test below needs it): a TCP socket listening on loopback, then a bound UDP one.
  before = _listening_sockets(os.getpid())
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
    tcp.bind(('127.0.0.1', 0))
    assert _listening_sockets(os.getpid()) == before  # bound, not yet listening
    tcp.listen()
    assert len(_listening_sockets(os.getpid()) - before) == 1
  with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
    udp.bind(('127.0.0.1', 0))
    assert len(_listening_sockets(os.getpid()) - before) == 1
  assert _listening_sockets(os.getpid()) == before


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='reads /proc (Linux)')
@pytest.mark.reverb
def test_the_detector_sees_a_reverb_server():
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  server = reverb_replay.start_server([reverb_replay.queue_table(signatures.on_policy_table(
      signatures.sequence_signature(STACK_SPEC, T, N)))])
  try:
    assert _listening_sockets(os.getpid())
  finally:
    server.stop()


@pytest.mark.skipif(not os.path.isdir('/proc/self/fd'), reason='reads /proc (Linux)')
def test_a_single_process_run_listens_on_no_socket(tmp_path):
  command = [sys.executable, os.path.join(REPO, 'binaries', 'train_main.py'), '--gin_file=gin/quickstart.gin',
             f'--root_dir={tmp_path / "run"}', '--gin_bindings=train.total_env_steps = 5120',
             '--gin_bindings=train.eval_interval_env_steps = 0', '--gin_bindings=train.eval_episodes = 1',
             '--gin_bindings=train.asynchronous_actor = True']
  process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  lines, training = [], threading.Event()

  def read_output():
    for line in process.stdout:
      lines.append(line)
      if line.startswith('Training '):
        training.set()
  reader = threading.Thread(target=read_output, daemon=True)
  reader.start()
  samples_while_training, found = 0, set()
  try:
    while process.poll() is None:
      try:
        found |= _listening_sockets(process.pid)
        samples_while_training += training.is_set() and process.poll() is None
      except (FileNotFoundError, ProcessLookupError):
        break  # it exited between the poll and the read
      time.sleep(0.05)
    process.wait(timeout=600)
  finally:
    if process.poll() is None:
      process.kill()
  reader.join(10)
  assert process.returncode == 0, ''.join(lines[-20:])
  assert samples_while_training >= 5, ''.join(lines[-20:])
  assert not found, f'train_main listens on sockets (inodes {sorted(found)})'
