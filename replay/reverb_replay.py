"""Reverb tables, server, trajectory writers and the learner's tf.data pipeline.

This is the only module of Protégé that imports `reverb`.

Items are fixed-length trajectory sequences of a *batch* of environments: the actor appends one step of
all its `N` environments at a time, and every `sequence_length` steps it creates an item that spans the
last `sequence_length + 1` steps. Consecutive items overlap by one step, so the learner gets the
bootstrap observation (and its value) of each rollout without storing it twice. An item's tensors are
time-major `[sequence_length + 1, N, ...]`, the layout the learner's returns and losses work in.
Writing a batch of environments per append costs one Reverb call per step instead of `N`; TF-Agents'
`ReverbAddTrajectoryObserver` writes one environment per writer, which is why it is not used here.
"""

import time
from typing import Any, Callable, Optional, Sequence

import gin
import reverb
import tensorflow as tf

# Reverb's `rate_limiter_timeout_ms` / `timeout_ms` use -1 for "wait forever".
_WAIT_FOREVER = -1


class ReverbUnreachableError(ConnectionError):
  """A Reverb server did not answer within the bounded retry."""


def sequence_signature(step_spec: Any, sequence_length: int, batch_size: int) -> Any:
  """The table signature of an item: `step_spec` with `[sequence_length + 1, batch_size]` prepended.

  Args:
    step_spec: nest of `tf.TensorSpec` describing one step of ONE environment.
    sequence_length: number of transitions per item (`T`); items hold `T + 1` steps.
    batch_size: number of environments written together (`N`).
  """
  if sequence_length < 1:
    raise ValueError(f'sequence_length must be >= 1, got {sequence_length}.')
  if batch_size < 1:
    raise ValueError(f'batch_size (number of envs per item) must be >= 1, got {batch_size}.')
  prefix = [sequence_length + 1, batch_size]
  return tf.nest.map_structure(
      lambda s: tf.TensorSpec(prefix + s.shape.as_list(), s.dtype, s.name), step_spec)


@gin.configurable
def on_policy_table(signature: Any, name: str = 'trajectories', max_size: Optional[int] = None,
                    items_per_learner_step: int = 1) -> reverb.Table:
  """A FIFO queue for on-policy learners.

  Reverb's Queue rate limiter blocks an actor's insert while the queue holds `max_size` items and blocks
  the learner's sample while it is empty; each item is sampled exactly once. `max_size` bounds the policy
  lag: an actor can be at most `max_size` items ahead of the learner.

  Args:
    signature: item signature (see `sequence_signature`).
    name: table name.
    max_size: capacity in items; None (default) means `items_per_learner_step`, the smallest queue that
      holds one learner step, hence the least policy lag.
    items_per_learner_step: items the learner reads per step (set by the training run, not by gin).
  """
  if max_size is None:
    max_size = items_per_learner_step
  if max_size < items_per_learner_step:
    raise ValueError(f'on_policy_table.max_size={max_size} cannot hold one learner step of '
                     f'{items_per_learner_step} items; set it to at least {items_per_learner_step} or leave '
                     f'it unset.')
  return reverb.Table.queue(name=name, max_size=max_size, signature=signature)


@gin.configurable
def uniform_table(signature: Any,
                  name: str = 'trajectories',
                  max_size: int = 100_000,
                  min_size_to_sample: int = 1,
                  samples_per_insert: Optional[float] = None,
                  error_buffer: float = 100.0) -> reverb.Table:
  """A uniform-sampling table for off-policy learners; the oldest item is evicted first.

  Args:
    signature: item signature (see `sequence_signature`).
    name: table name.
    max_size: capacity in items.
    min_size_to_sample: sampling blocks until the table holds this many items.
    samples_per_insert: if set, Reverb's SampleToInsertRatio limiter keeps the learner's sampling rate at
      this multiple of the actors' insert rate (within `error_buffer`); if None, only `min_size_to_sample`
      is enforced.
    error_buffer: slack of the ratio limiter, in samples.
  """
  if samples_per_insert is None:
    limiter = reverb.rate_limiters.MinSize(min_size_to_sample)
  else:
    limiter = reverb.rate_limiters.SampleToInsertRatio(
        samples_per_insert=samples_per_insert,
        min_size_to_sample=min_size_to_sample,
        error_buffer=error_buffer)
  return reverb.Table(
      name=name,
      sampler=reverb.selectors.Uniform(),
      remover=reverb.selectors.Fifo(),
      max_size=max_size,
      rate_limiter=limiter,
      signature=signature)


def start_server(tables: Sequence[reverb.Table], port: Optional[int] = None,
                 checkpoint_dir: Optional[str] = None) -> reverb.Server:
  """Starts an in-process Reverb server (on a free port when `port` is None)."""
  checkpointer = None
  if checkpoint_dir is not None:
    checkpointer = reverb.checkpointers.DefaultCheckpointer(path=checkpoint_dir)
  return reverb.Server(tables=list(tables), port=port, checkpointer=checkpointer)


def connect(address: str, timeout_seconds: float = 10.0, attempts: int = 3) -> reverb.Client:
  """A client of the Reverb server at `address`, checked with bounded retries and backoff.

  Raises:
    ReverbUnreachableError: one line naming the address and the fix, instead of hanging.
  """
  client = reverb.Client(address)
  delay = 0.5
  for attempt in range(attempts):
    try:
      client.server_info(timeout=max(1, int(timeout_seconds / attempts)))
      return client
    except Exception as error:  # Reverb raises DeadlineExceeded / Unavailable as RuntimeError or tf errors.
      last_error = error
      if attempt + 1 < attempts:
        time.sleep(delay)
        delay *= 2
  raise ReverbUnreachableError(
      f"Reverb server at '{address}' did not answer after {attempts} attempts in about "
      f'{timeout_seconds:.0f}s ({type(last_error).__name__}); start reverb_server_main there or fix '
      f'the address (host:port).')


class SequenceWriter:
  """Writes batched steps and creates an item every `sequence_length` steps (overlap of one step).

  `append` takes one step of all `N` environments (a nest of arrays with leading dim `N`) matching the
  table signature without its time dimension.
  """

  def __init__(self, client: reverb.Client, table: str, sequence_length: int,
               priority: float = 1.0):
    self._writer = client.trajectory_writer(num_keep_alive_refs=sequence_length + 1)
    self._table = table
    self._sequence_length = sequence_length
    self._priority = priority
    self._steps = 0

  def append(self, step: Any) -> bool:
    """Appends one batched step; returns True if it completed an item."""
    self._writer.append(step)
    self._steps += 1
    if self._steps > self._sequence_length and (self._steps - 1) % self._sequence_length == 0:
      trajectory = tf.nest.map_structure(
          lambda column: column[-(self._sequence_length + 1):], self._writer.history)
      self._writer.create_item(self._table, self._priority, trajectory)
      return True
    return False

  def flush(self, timeout_ms: Optional[int] = None) -> None:
    """Blocks until every created item has reached the server (or the timeout, in ms, passes).

    Items are sent in the background and `append` never blocks; a full queue (rate limiter) makes
    `flush` wait until the learner has taken items.
    """
    self._writer.flush(timeout_ms=timeout_ms)

  def flush_unless(self, stop: Callable[[], bool], poll_ms: int = 200) -> bool:
    """Flushes, giving up when `stop()` turns True; returns whether the flush completed."""
    while not stop():
      try:
        self._writer.flush(timeout_ms=poll_ms)
        return True
      except reverb.DeadlineExceededError:
        continue
    return False

  def close(self) -> None:
    self._writer.close()


def make_dataset(server_address: str, table: str, items_per_batch: int,
                 max_in_flight_samples_per_worker: Optional[int] = None) -> tf.data.Dataset:
  """The learner's input: batches of `items_per_batch` items, time-major `[T + 1, items_per_batch * N, ...]`.

  The items' batch-of-environments axis and the batch of items are merged, so a learner step sees one
  time-major batch of `items_per_batch * N` environment columns.
  """
  if items_per_batch < 1:
    raise ValueError(f'items_per_batch must be >= 1, got {items_per_batch}.')
  in_flight = max_in_flight_samples_per_worker or items_per_batch
  dataset = reverb.TrajectoryDataset.from_table_signature(
      server_address=server_address,
      table=table,
      max_in_flight_samples_per_worker=in_flight,
      rate_limiter_timeout_ms=_WAIT_FOREVER)

  def merge_items(sample):
    # [items, T+1, N, ...] -> [T+1, items * N, ...]
    def merge(x):
      x = tf.experimental.numpy.swapaxes(x, 0, 1)
      shape = tf.shape(x)
      static = x.shape.as_list()
      merged = None if static[1] is None or static[2] is None else static[1] * static[2]
      x = tf.reshape(x, tf.concat([shape[:1], [-1], shape[3:]], axis=0))
      return tf.ensure_shape(x, [static[0], merged] + static[3:])
    return tf.nest.map_structure(merge, sample.data)

  if items_per_batch == 1:
    return dataset.map(lambda sample: sample.data)  # already [T + 1, N, ...]: no copy needed
  return dataset.batch(items_per_batch, drop_remainder=True).map(merge_items)
