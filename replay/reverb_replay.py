"""Reverb tables, server, trajectory writers and the learner's tf.data pipeline: the transport between
the processes of a distributed run (`agents.training.deployment`), and of `train_main --reverb_address`.

This is the only module of Protégé that imports `reverb`, and only the Reverb paths import it (through
`replay.optional_reverb`, which names the fix when dm-reverb is not installed). A single-process run does
not use it for its trajectories: Reverb's server listens on every network interface, unauthenticated, so
that run keeps them in `replay.local_queue`, whose items, capacity rule and dataset are these
(`replay.signatures`: `sequence_signature`, `on_policy_table`, `on_policy_capacity`).

Items are fixed-length trajectory sequences of a *batch* of environments: the actor appends one step of
all its `N` environments at a time, and every `sequence_length` steps it creates an item that spans the
last `sequence_length + 1` steps. Consecutive items overlap by one step, so the learner gets the
bootstrap observation (and its value) of each rollout without storing it twice. An item's tensors are
time-major `[sequence_length + 1, N, ...]`, the layout the learner's returns and losses work in.
Writing a batch of environments per append costs one Reverb call per step instead of `N`; TF-Agents'
`ReverbAddTrajectoryObserver` writes one environment per writer, which is why it is not used here.

Atari frame stacks are stored one frame per step (`signatures.frame_storage`, `replay.frame_stacks`): the
table's signature says so, the writer follows it, and the learner rebuilds the stacks.
"""

import time
from typing import Any, Callable, List, NamedTuple, Optional, Sequence

import numpy as np
import reverb
import tensorflow as tf

from protege.replay import frame_stacks
from protege.replay import local_queue
from protege.replay import signatures
from protege.runtime import errors

# Reverb's `rate_limiter_timeout_ms` / `timeout_ms` use -1 for "wait forever".
_WAIT_FOREVER = -1


class ReverbUnreachableError(errors.UnreachableError):  # a ConnectionError too
  """A Reverb server did not answer within the bounded retry."""


def queue_table(table: signatures.QueueTable) -> reverb.Table:
  """The Reverb table of an on-policy queue (`signatures.on_policy_table`, gin `on_policy_table`): Reverb's
  Queue rate limiter blocks an actor's insert while it holds `table.capacity` items and the learner's
  sample while it is empty; each item is sampled exactly once."""
  return reverb.Table.queue(name=table.name, max_size=table.capacity, signature=table.signature)


def uniform_table(signature: Any,
                  name: str = 'trajectories',
                  max_size: int = 100_000,
                  min_size_to_sample: int = 1,
                  samples_per_insert: Optional[float] = None,
                  error_buffer: float = 100.0) -> reverb.Table:
  """A uniform-sampling table for off-policy learners; the oldest item is evicted first.

  A library function, not a gin configurable: no run of Protégé makes this table (its learners are
  on-policy and read `queue_table`s), so a gin binding of it would configure nothing.

  Args:
    signature: item signature (see `signatures.sequence_signature`).
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


# The table through which the learner publishes its weights to actors in other processes.
VARIABLES_TABLE = 'variables'


def variables_table(signature: dict, name: str = VARIABLES_TABLE) -> reverb.Table:
  """A table of one item (`signatures.variables_signature`), the newest published weights: each insert
  evicts the previous one, sampling never removes it and blocks only until the first insert (the layout
  TF-Agents' `ReverbVariableContainer` expects)."""
  return reverb.Table(name=name, sampler=reverb.selectors.Uniform(), remover=reverb.selectors.Fifo(),
                      max_size=1, rate_limiter=reverb.rate_limiters.MinSize(1), signature=signature)


class PublishedWeights(NamedTuple):
  weights: List[np.ndarray]
  version: int
  published_at: float  # seconds since the epoch, on the learner's clock
  finished: bool


class ItemsAvailable:
  """How many items of `table` its one reader (the learner's dataset) can take without waiting.

  The items still in the table plus those its dataset has already sampled but the learner has not yet
  consumed (Reverb's sample counter since this object was made, less `consumed`). Made before the
  reader's dataset starts, so its count covers every sample that reader takes. The learner of a
  distributed run waits for its items here, in Python, where a stop request reaches it, rather than inside
  its compiled step (`agents.training.trainer.Trainer`).
  """

  def __init__(self, client: reverb.Client, table: str):
    self._client = client
    self._table = table
    self._samples_at_start = self._info().rate_limiter_info.sample_stats.completed

  def _info(self):
    return self._client.server_info(timeout=10)[self._table]

  def count(self, consumed: int) -> int:
    """Items available to the reader that has consumed `consumed` items since this object was made."""
    info = self._info()
    in_flight = info.rate_limiter_info.sample_stats.completed - self._samples_at_start - consumed
    return int(info.current_size) + max(int(in_flight), 0)


class VariableContainer:
  """Publishes and fetches policy weights through a `variables_table` on a Reverb server.

  The role of TF-Agents' `ReverbVariableContainer` (tf_agents.experimental.distributed), with plain
  numpy in and out and a non-blocking `pull`, so an actor can wait for the learner's first weights
  without hanging in a sample call.
  """

  def __init__(self, client: reverb.Client, signature: dict, table: str = VARIABLES_TABLE,
               address: str = '?', retry_seconds: float = 120.0):
    self._client = client
    self._signature = signature
    self._table = table
    self._address = address
    self._retry_seconds = retry_seconds

  def push(self, weights: Sequence[Any], version: int, finished: bool = False) -> None:
    """Publishes `weights` as `version`; retries while the server is away (e.g. restarting)."""
    item = {'weights': [np.asarray(w) for w in weights], 'version': np.int64(version),
            'published_at': np.float64(time.time()), 'finished': np.bool_(finished)}
    flat = tf.nest.flatten(item)
    self._retry(lambda: self._client.insert(flat, {self._table: 1.0}))

  def pull(self) -> Optional[PublishedWeights]:
    """The newest published weights, or None if nothing has been published yet."""

    def sample():
      if self._client.server_info(timeout=10)[self._table].current_size < 1:
        return None
      return list(next(iter(self._client.sample(self._table, num_samples=1)))[0].data)

    data = self._retry(sample)
    if data is None:
      return None
    item = tf.nest.pack_sequence_as(self._signature, data)
    return PublishedWeights(list(item['weights']), int(item['version']), float(item['published_at']),
                            bool(item['finished']))

  def _retry(self, call: Callable[[], Any]) -> Any:
    return retry_while_unavailable(call, self._address, self._retry_seconds)


def retry_while_unavailable(call: Callable[[], Any], address: str, retry_seconds: float) -> Any:
  """Calls `call()`, retrying with exponential backoff (0.5 s doubling to 8 s) while it fails, e.g. while
  the server restarts from its checkpoint; after `retry_seconds` raises `ReverbUnreachableError`."""
  deadline = time.time() + retry_seconds
  delay = 0.5
  while True:
    try:
      return call()
    except Exception as error:  # pylint: disable=broad-except  (Reverb raises RuntimeError/OpErrors)
      if time.time() + delay > deadline:
        raise ReverbUnreachableError(
            f"Reverb server at '{address}' did not answer for {retry_seconds:.0f}s "
            f'({type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ""}); '
            'restart reverb_server_main there (it restores its checkpoint) or fix the address.') from None
      time.sleep(delay)
      delay = min(2 * delay, 8.0)


def check_tables(client: reverb.Client, address: str, names: Sequence[str]) -> None:
  """Raises a one-line error if the server at `address` lacks one of the tables `names`."""
  tables = client.server_info(timeout=10)
  missing = [name for name in names if name not in tables]
  if missing:
    raise errors.ConfigError(f"Reverb server at '{address}' has no table(s) {missing} (it has {sorted(tables)}); "
                             'start it with reverb_server_main and the same gin file as this job.')


def checkpoint_server(client: reverb.Client) -> str:
  """Asks the server to write a checkpoint of its tables (to the server's checkpoint directory); returns
  its path. Reverb writes checkpoints to a new directory and marks them complete last, so a kill mid-way
  leaves the previous one usable."""
  return client.checkpoint()


def start_server(tables: Sequence[reverb.Table], port: Optional[int] = None,
                 checkpoint_dir: Optional[str] = None) -> reverb.Server:
  """Starts a Reverb server in this process (on a free port when `port` is None), listening on all
  network interfaces without authentication (Reverb has no bind address): the server of a distributed
  run (`binaries/reverb_server_main.py`), and of tests.

  With `checkpoint_dir`, the server restores the newest checkpoint there on start (tables and their
  items) and `checkpoint_server` writes new ones into it.
  """
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
  table signature without its time dimension. When the table stores frames once (its signature has
  `frame_stacks`' older-frames key), the writer keeps only the newest frame of each step's stack, and
  the older frames of the stack at each item's first row.
  """

  def __init__(self, client: reverb.Client, table: str, sequence_length: int,
               priority: float = 1.0):
    self._writer = client.trajectory_writer(num_keep_alive_refs=sequence_length + 1)
    self._table = table
    self._sequence_length = sequence_length
    self._priority = priority
    self._steps = 0
    signature = client.server_info(timeout=10)[table].signature
    self._padding = frame_stacks.padding_of(signature) if isinstance(signature, dict) else None
    self._frames_before_key = None if self._padding is None else frame_stacks.frames_before_key(self._padding)

  def append(self, step: Any) -> bool:
    """Appends one batched step; returns True if it completed an item."""
    if self._padding is not None:
      # Items start every T steps; only their first rows keep the older frames.
      starts_item = self._steps % self._sequence_length == 0
      step = frame_stacks.compact_step(step, self._padding, starts_item)
    self._writer.append(step)
    self._steps += 1
    if self._steps > self._sequence_length and (self._steps - 1) % self._sequence_length == 0:
      first = -(self._sequence_length + 1)
      history = self._writer.history
      if self._frames_before_key is None:
        trajectory = tf.nest.map_structure(lambda column: column[first:], history)
      else:
        # The older frames' column holds only the items' first rows: one reference, not a slice.
        trajectory = {key: (column[first] if key == self._frames_before_key
                            else tf.nest.map_structure(lambda c: c[first:], column))
                      for key, column in history.items()}
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
    try:
      self._writer.close()
    except Exception:  # pylint: disable=broad-except  (the server may be gone; nothing is left to send)
      pass


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

  if items_per_batch == 1:
    return dataset.map(lambda sample: sample.data)  # already [T + 1, N, ...]: no copy needed
  return dataset.batch(items_per_batch, drop_remainder=True).map(
      lambda sample: local_queue.merge_items(sample.data))
