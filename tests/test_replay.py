"""Replay on a real in-process Reverb server on a free port, and the items' signature."""

import time

import numpy as np
import pytest
import tensorflow as tf

from protege.replay import signatures

T, N = 4, 3
STEP_SPEC = {'observation': tf.TensorSpec([2], tf.float32), 'action': tf.TensorSpec([], tf.int64)}


@pytest.fixture
def server():
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  signature = signatures.sequence_signature(STEP_SPEC, T, N)
  server = reverb_replay.start_server([reverb_replay.queue_table(signatures.on_policy_table(signature, max_size=8))])
  yield server
  server.stop()


def _step(t):
  # Values encode (time, env) so every element's origin can be checked.
  env = np.arange(N)
  return {'observation': np.stack([np.full(N, t), env], axis=1).astype(np.float32),
          'action': (100 * t + env).astype(np.int64)}


def test_signature_prepends_time_and_batch():
  signature = signatures.sequence_signature(STEP_SPEC, T, N)
  assert signature['observation'].shape.as_list() == [T + 1, N, 2]
  assert signature['action'].shape.as_list() == [T + 1, N]
  with pytest.raises(ValueError, match='sequence_length'):
    signatures.sequence_signature(STEP_SPEC, 0, N)


@pytest.mark.reverb
def test_items_overlap_by_one_step_and_merge_batches(server):
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  address = f'localhost:{server.port}'
  client = reverb_replay.connect(address)
  writer = reverb_replay.SequenceWriter(client, 'trajectories', T)
  completed = [writer.append(_step(t)) for t in range(2 * T + 1)]
  writer.flush()
  # The first item needs T + 1 steps, the second T more.
  assert [i for i, c in enumerate(completed) if c] == [T, 2 * T]
  assert client.server_info()['trajectories'].current_size == 2

  batch = next(iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch=2)))
  # Two items of N envs merged into 2N time-major columns.
  assert batch['action'].shape == (T + 1, 2 * N)
  actions = batch['action'].numpy()
  # Item 0 covers steps 0..T, item 1 steps T..2T: the boundary step is shared.
  np.testing.assert_array_equal(actions[:, 0], 100 * np.arange(T + 1))
  np.testing.assert_array_equal(actions[:, N], 100 * np.arange(T, 2 * T + 1))
  np.testing.assert_array_equal(actions[0, :N], np.arange(N))
  np.testing.assert_array_equal(batch['observation'].numpy()[:, N + 1, 0], np.arange(T, 2 * T + 1))
  # Queue semantics: each item is read once.
  assert client.server_info()['trajectories'].current_size == 0


@pytest.mark.reverb
def test_uniform_table_samples_with_replacement():
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  signature = signatures.sequence_signature(STEP_SPEC, T, N)
  server = reverb_replay.start_server([reverb_replay.uniform_table(signature, max_size=10)])
  try:
    address = f'localhost:{server.port}'
    writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), 'trajectories', T)
    for t in range(T + 1):
      writer.append(_step(t))
    writer.flush()
    iterator = iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch=3))
    batch = next(iterator)
    # One item in the table, sampled three times in one batch.
    assert batch['action'].shape == (T + 1, 3 * N)
    np.testing.assert_array_equal(batch['action'].numpy()[:, 0], batch['action'].numpy()[:, N])
    info = reverb_replay.connect(address).server_info()['trajectories']
    assert info.current_size == 1
  finally:
    server.stop()


@pytest.mark.reverb
def test_unreachable_server_fails_fast_with_the_address():
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  # A port nothing listens on (bind and release to find one).
  import socket
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  start = time.time()
  with pytest.raises(reverb_replay.ReverbUnreachableError, match=f'localhost:{port}'):
    reverb_replay.connect(f'localhost:{port}', timeout_seconds=3, attempts=2)
  assert time.time() - start < 30  # bounded retry, never a hang


@pytest.mark.reverb
def test_single_item_batches_keep_the_item_layout(server):
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  address = f'localhost:{server.port}'
  writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), 'trajectories', T)
  for t in range(T + 1):
    writer.append(_step(t))
  writer.flush()
  batch = next(iter(reverb_replay.make_dataset(address, 'trajectories', items_per_batch=1)))
  assert batch['action'].shape == (T + 1, N)
  np.testing.assert_array_equal(batch['action'].numpy(), 100 * np.arange(T + 1)[:, None] + np.arange(N))
