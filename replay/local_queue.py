"""The trajectory queue of a single-process run, kept in the process: no server and no socket.

A run in one process (`binaries/train_main.py` without `--reverb_address`, a PBT member, the studies)
used to start an in-process Reverb server for its trajectory queue. Reverb's server has no bind-address
option: it listens on `[::]:PORT`, every network interface, without authentication, so each such run
took data and could be fed data from anywhere that reached the machine. This module gives those runs
the same queue without Reverb; Reverb stays the transport between processes (`replay.reverb_replay`,
`agents.training.deployment`, and `train_main --reverb_address=host:port`).

Semantics and layout are those of `signatures.on_policy_table` and `reverb_replay.SequenceWriter`:
a FIFO queue of `capacity` items (`on_policy_capacity`, the table's rule and gin setting), each read once;
the reader waits while it is empty, and a writer's `flush` waits while it is full. An item is `T + 1`
steps of `N` environments, time-major `[T + 1, N, ...]`, consecutive items sharing one step, and Atari
frame stacks are stored one frame per step (`replay.frame_stacks`). The learner's dataset yields what
`reverb_replay.make_dataset` yields: `merge_items` is shared by both.

Mechanism, chosen by measurement: a Python buffer (a deque under one condition variable) that the
learner's `tf.data` pipeline reads with one `tf.numpy_function` call per item. Measured on a 2-core
machine (AMD EPYC, load 1.3-1.9 from other jobs; BENCHMARKS.md, "The single-process run without a
Reverb server"): a writer thread appends steps, a `tf.function` takes one item per call, medians of 3
runs (throughput, and CPU of the whole process per item):

| transport | quickstart items (8 envs × 33 steps) | `ppo_atari.gin` items (8 envs × 129 frames) |
|---|---|---|
| in-process Reverb server (the previous one) | 295 items/s, 3.7 ms CPU | 30.7 items/s, 35.2 ms CPU |
| `tf.queue.FIFOQueue`, dequeued in a `tf.data` map | 565 items/s, 1.8 ms CPU | 64.7 items/s, 16.2 ms CPU |
| Python buffer, `tf.data.Dataset.from_generator` | 684 items/s, 1.7 ms CPU | 78.9 items/s, 13.2 ms CPU |
| Python buffer, `tf.numpy_function` map (this module) | 871 items/s, 1.4 ms CPU | 83.3 items/s, 12.7 ms CPU |

Of the CPU left, for the Atari items most is the writer's copying of frames, which any transport does;
for the quickstart's small items, the per-item calls of tf.data and of the `tf.function`. The buffer is
also the simplest to wait on from Python with a timeout and to close; a `from_generator` iterator
destroyed at interpreter exit logs an error, which a `numpy_function` map has no cause to. A learner
iteration of the quickstart (one item) takes 30-40 ms and one of `ppo_atari.gin` (one item) about 2 s,
so the queue's part is a few percent of the one and under 1% of the other; end to end, both runs are
faster than with the Reverb server (BENCHMARKS.md).
"""

import atexit
import collections
import collections.abc
import threading
import time
import weakref
from typing import Any, Callable, List, Optional

import numpy as np
import tensorflow as tf

from protege.replay import frame_stacks
from protege.runtime import errors


class QueueClosedError(RuntimeError):
  """The queue was closed (the run is stopping) while a writer still had items to put."""


def on_policy_capacity(items_per_learner_step: int, max_size: Optional[int] = None) -> int:
  """The capacity in items of an on-policy queue: `max_size`, or `items_per_learner_step` when None
  (the smallest queue that holds one learner step, hence the least policy lag).

  The rule of `signatures.on_policy_table` (gin: `on_policy_table.max_size`), which calls it too.
  """
  if max_size is None:
    max_size = items_per_learner_step
  if max_size < items_per_learner_step:
    raise errors.ConfigError(f'on_policy_table.max_size={max_size} cannot hold one learner step of '
                             f'{items_per_learner_step} items; set it to at least {items_per_learner_step} or '
                             'leave it unset.')
  return max_size


def merge_items(data: Any) -> Any:
  """A batch of items `[items, T + 1, N, ...]` as one time-major batch `[T + 1, items * N, ...]`.

  The older frames of compact stacks (`frame_stacks`), `[items, N, ...]`, become `[items * N, ...]`.
  Used by both transports' datasets (`reverb_replay.make_dataset`, `TrajectoryQueue.dataset`).
  """
  def merge_columns(x):
    return tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))

  def merge(x):
    x = tf.experimental.numpy.swapaxes(x, 0, 1)
    shape = tf.shape(x)
    static = x.shape.as_list()
    merged = None if static[1] is None or static[2] is None else static[1] * static[2]
    x = tf.reshape(x, tf.concat([shape[:1], [-1], shape[3:]], axis=0))
    return tf.ensure_shape(x, [static[0], merged] + static[3:])
  padding = frame_stacks.padding_of(data)
  return {key: (merge_columns(value) if padding and key == frame_stacks.frames_before_key(padding)
                else tf.nest.map_structure(merge, value))
          for key, value in data.items()}


def _lists_as_tuples(structure: Any) -> Any:
  """`structure` with its lists (e.g. an LSTM's state `[h, c]`) as tuples, as a Reverb table's signature
  and dataset have them: tf.data would stack a list of tensors into one tensor."""
  if isinstance(structure, collections.abc.Mapping):
    return {key: _lists_as_tuples(value) for key, value in structure.items()}
  if isinstance(structure, (list, tuple)):
    values = [_lists_as_tuples(value) for value in structure]
    return type(structure)(*values) if hasattr(structure, '_fields') else tuple(values)  # namedtuples stay
  return structure


# Queues not closed by their run are closed when the interpreter exits, before it goes away: a reader
# still waiting in one of tf.data's threads then returns, instead of waking into a finalised interpreter.
_open_queues = weakref.WeakSet()


@atexit.register
def _close_open_queues() -> None:
  for queue in list(_open_queues):
    queue.close()


class TrajectoryQueue:
  """A bounded FIFO queue of trajectory items, shared by the writers and the learner's dataset(s).

  Thread-safe: the actor (or its thread) puts through a `SequenceWriter`, tf.data's threads take through
  `dataset`, and the training loop may wait for items with `wait_for_items`.
  """

  def __init__(self, signature: Any, capacity: int):
    """Args:
      signature: the item signature, as `signatures.sequence_signature` makes it (its leaves
        `[T + 1, N, ...]`, and `[N, ...]` for the older frames of compact frame stacks).
      capacity: the most items the queue holds (`on_policy_capacity`).
    """
    if capacity < 1:
      raise ValueError(f'TrajectoryQueue capacity must be >= 1 item, got {capacity}.')
    self.signature = _lists_as_tuples(signature)
    self.capacity = capacity
    self._items = collections.deque()
    self._condition = threading.Condition()
    self._closed = False
    self._items_put = 0
    _open_queues.add(self)

  @property
  def closed(self) -> bool:
    return self._closed

  def size(self) -> int:
    """Items waiting in the queue now."""
    with self._condition:
      return len(self._items)

  @property
  def items_put(self) -> int:
    """Items put into the queue since it was made."""
    with self._condition:
      return self._items_put

  def wait_for_items(self, count: int, timeout_seconds: float) -> bool:
    """Waits until `count` items in all have been put since the queue was made; returns True once they
    have, False when `timeout_seconds` passed or the queue was closed first.

    Counting items put, not items waiting, is what tells the training loop that its next learner step
    will not block: a distributed input pipeline prefetches, taking items out of the queue before the
    step that reads them. The step after `k` learner steps of `m` items needs `(k + 1) * m` in all.
    Waits in Python, so a caller that polls with short timeouts notices its own stop flag in time.
    """
    deadline = time.monotonic() + timeout_seconds
    with self._condition:
      while self._items_put < count and not self._closed:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
          return False
        self._condition.wait(remaining)
      return self._items_put >= count

  def try_put(self, item: List[np.ndarray]) -> bool:
    """Puts `item` (the flat leaves of the signature) if there is room; returns whether it did.

    Raises:
      QueueClosedError: the queue is closed.
    """
    with self._condition:
      if self._closed:
        raise QueueClosedError('the trajectory queue is closed (the run is stopping); nothing more can be '
                               'written to it.')
      if len(self._items) >= self.capacity:
        return False
      self._items.append(item)
      self._items_put += 1
      self._condition.notify_all()
      return True

  def wait_for_room(self, timeout_seconds: Optional[float]) -> bool:
    """Waits until the queue has room for an item or is closed; False if `timeout_seconds` passed first
    (None: waits as long as it takes)."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    with self._condition:
      while len(self._items) >= self.capacity and not self._closed:
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
          return False
        self._condition.wait(remaining)
      return True

  def take(self) -> Optional[List[np.ndarray]]:
    """The oldest item (its flat leaves), waiting while the queue is empty; None once it is closed."""
    with self._condition:
      while not self._items and not self._closed:
        self._condition.wait()
      if self._closed:
        return None
      item = self._items.popleft()
      self._condition.notify_all()
      return item

  def close(self) -> None:
    """Closes the queue (idempotent): waiting readers end their datasets (end of sequence), writers'
    `flush` raises `QueueClosedError`, and the items still waiting are dropped — a stopped Reverb
    server does the same to its clients."""
    with self._condition:
      self._closed = True
      self._items.clear()
      self._condition.notify_all()

  def dataset(self, items_per_batch: int) -> tf.data.Dataset:
    """The learner's input, as `reverb_replay.make_dataset`: batches of `items_per_batch` items,
    time-major `[T + 1, items_per_batch * N, ...]`; it ends when the queue is closed.

    Each call makes a reader of its own (e.g. one per input pipeline of a `tf.distribute` strategy); the
    readers share the queue, and each item goes to one of them.
    """
    if items_per_batch < 1:
      raise ValueError(f'items_per_batch must be >= 1, got {items_per_batch}.')
    signature = self.signature
    specs = tf.nest.flatten(signature)
    dtypes = [spec.dtype for spec in specs]
    # Returned once the queue is closed, with the flag False that ends the dataset.
    nothing = [np.zeros([0], dtype.as_numpy_dtype) for dtype in dtypes]

    def take():
      item = self.take()
      return [np.array(item is not None)] + (nothing if item is None else item)

    def read(_):
      # One Python call per item; its own thread of tf.data waits in it while the queue is empty.
      alive, *leaves = tf.numpy_function(take, [], [tf.bool] + dtypes, stateful=True, name='take_item')
      return alive, tuple(leaves)

    def unpack(alive, leaves):
      del alive
      return tf.nest.pack_sequence_as(signature, [tf.ensure_shape(leaf, spec.shape)
                                                  for leaf, spec in zip(leaves, specs)])

    # Plain graph code: AutoGraph's conversion of these functions only slows the dataset's making.
    plain = tf.autograph.experimental.do_not_convert
    dataset = (tf.data.Dataset.from_tensors(0).repeat().map(plain(read))
               .take_while(plain(lambda alive, leaves: alive)).map(plain(unpack)))
    if items_per_batch == 1:
      return dataset  # already [T + 1, N, ...]
    return dataset.batch(items_per_batch, drop_remainder=True).map(plain(merge_items))


class SequenceWriter:
  """Writes batched steps into a `TrajectoryQueue`, an item every `sequence_length` steps (overlap of one
  step): the interface and items of `reverb_replay.SequenceWriter`.

  `append` takes one step of all `N` environments (a nest of arrays with leading dim `N`) matching the
  signature without its time dimension, and copies it into the item being filled, so the environment may
  reuse its arrays. When the signature stores frames once, the writer keeps only the newest frame of each
  step's stack, and the older frames of the stack at each item's first row (`frame_stacks.compact_step`).
  """

  def __init__(self, queue: TrajectoryQueue, sequence_length: int):
    if sequence_length < 1:
      raise ValueError(f'sequence_length must be >= 1, got {sequence_length}.')
    signature = queue.signature
    padding = frame_stacks.padding_of(signature) if isinstance(signature, dict) else None
    before_key = None if padding is None else frame_stacks.frames_before_key(padding)
    self._queue = queue
    self._signature = signature
    self._sequence_length = sequence_length
    self._padding = padding
    self._specs = tf.nest.flatten(signature)
    # Per leaf: whether it is the older frames' column, which only an item's first row writes.
    self._is_before = [False] * len(self._specs)
    if before_key is not None:
      self._is_before = tf.nest.flatten({key: tf.nest.map_structure(lambda _: key == before_key, value)
                                         for key, value in signature.items()})
    for spec, is_before in zip(self._specs, self._is_before):
      if not is_before and spec.shape[0] != sequence_length + 1:
        raise ValueError(f'The queue holds items of {spec.shape[0]} steps, the writer makes items of '
                         f'sequence_length + 1 = {sequence_length + 1}; use the same sequence_length.')
    self._steps = 0
    self._item: Optional[List[np.ndarray]] = None
    self._pending = collections.deque()  # completed items not yet in the queue, oldest first
    self._closed = False

  def _new_item(self) -> List[np.ndarray]:
    return [np.empty(spec.shape, spec.dtype.as_numpy_dtype) for spec in self._specs]

  def _check_first_step(self, step: Any, leaves: List[Any]) -> None:
    try:
      tf.nest.assert_same_structure(self._signature, step, check_types=False)
    except (TypeError, ValueError) as error:
      raise ValueError(f"A step's structure is not the queue's signature's ({str(error).splitlines()[0]}); "
                       'write steps of the spec the queue was made with.') from None
    for index, (value, spec, is_before) in enumerate(zip(leaves, self._specs, self._is_before)):
      expected = spec.shape.as_list() if is_before else spec.shape.as_list()[1:]
      value = np.asarray(value)
      if list(value.shape) != expected or value.dtype != spec.dtype.as_numpy_dtype:
        raise ValueError(f"Step entry '{spec.name or index}' is {value.dtype}{list(value.shape)}, the "
                         f"queue's signature wants {spec.dtype.name}{expected}; write steps of the spec the "
                         'queue was made with.')

  def append(self, step: Any) -> bool:
    """Appends one batched step; returns True if it completed an item. Never waits: completed items
    go into the queue when it has room (`flush` waits for that)."""
    if self._closed:
      raise QueueClosedError('append on a closed SequenceWriter.')
    row = self._steps % self._sequence_length
    if self._padding is not None:
      step = frame_stacks.compact_step(step, self._padding, starts_item=row == 0)
    leaves = tf.nest.flatten(step)
    if self._steps == 0:
      self._check_first_step(step, leaves)
    completed = False
    if row == 0 and self._item is not None:
      # This step ends the current item (its row T) and starts the next one (its row 0).
      self._write(self._item, self._sequence_length, leaves, first_row=False)
      self._pending.append(self._item)
      completed = True
    if row == 0:
      self._item = self._new_item()
    self._write(self._item, row, leaves, first_row=row == 0)
    self._steps += 1
    if completed:
      self._put_pending(timeout_seconds=0.0)
    return completed

  def _write(self, item: List[np.ndarray], row: int, leaves: List[Any], first_row: bool) -> None:
    for column, value, is_before in zip(item, leaves, self._is_before):
      if not is_before:
        column[row] = value
      elif first_row:
        column[...] = value

  def _put_pending(self, timeout_seconds: Optional[float]) -> bool:
    """Puts pending items while there is room, waiting for room up to `timeout_seconds` in all (None: as
    long as it takes); returns whether none is left."""
    deadline = None if timeout_seconds is None else time.monotonic() + timeout_seconds
    while self._pending:
      if self._queue.try_put(self._pending[0]):
        self._pending.popleft()
        continue
      remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
      if remaining == 0.0 or not self._queue.wait_for_room(remaining):
        return False
    return True

  def flush(self, timeout_ms: Optional[int] = None) -> None:
    """Blocks until every completed item is in the queue (or the timeout, in ms, passes).

    A full queue makes `flush` wait until the learner has taken items.

    Raises:
      TimeoutError: `timeout_ms` passed with items still outside the queue.
      QueueClosedError: the queue was closed with items still to put.
    """
    if not self._put_pending(None if timeout_ms is None else timeout_ms / 1000.0):
      raise TimeoutError(f'{len(self._pending)} trajectory item(s) found no room in the queue within '
                         f'{timeout_ms} ms.')

  def flush_unless(self, stop: Callable[[], bool], poll_ms: int = 200) -> bool:
    """Flushes, giving up when `stop()` turns True; returns whether the flush completed."""
    while not stop():
      if self._put_pending(poll_ms / 1000.0):
        return True
    return False

  def close(self) -> None:
    """Drops the item being filled and the items not yet in the queue; the queue stays open."""
    self._closed = True
    self._item = None
    self._pending.clear()
