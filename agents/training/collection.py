"""How a training run collects its trajectories: one object per collection mode, behind one interface.

* `LocalCollection`: the run's own actor collects a learner batch, then the learner trains on it, in turn
  (`train.asynchronous_actor = False`): exactly on-policy and reproducible from the seed.
* `ThreadedCollection`: the run's own actor collects in a background thread while the learner trains
  (`train.asynchronous_actor = True`), at most the trajectory queue's capacity ahead.
* `RemoteCollection`: actors in other processes (`binaries/actor_main.py`) write to a Reverb server's
  table; the learner (`binaries/learner_main.py`) publishes its weights to the server's variables table.

The run's own actor writes to the in-process trajectory queue (`replay.local_queue`: no server, no open
port), or, given a Reverb server's address, to that server's table. Only the modes with a Reverb server
import Reverb (`replay.optional_reverb`), so a single-process run needs no dm-reverb installed.

`make_collection` chooses the mode once, where the `Trainer` is built; the trainer then calls, in order:
`dataset` (the learner's input), `attach` (after the checkpoint is restored), `start` (before the first
iteration), per iteration `collect`, `wait_for_items`, the learner's step (`raise_actor_error` if it
fails) and `after_learner_step`; `stop` when the run closes and `end` once training is finished.
"""

import time
from typing import Callable, Optional, Tuple

import numpy as np
import tensorflow as tf

from protege.agents.training import actor as actor_lib
from protege.agents.training import components
from protege.envs import suite
from protege.replay import local_queue
from protege.replay import optional_reverb
from protege.replay import signatures


def _reverb_replay(reverb_address: str):
  """`replay.reverb_replay`, for the modes that use the Reverb server at `reverb_address`; a one-line
  ConfigError naming the flag when dm-reverb is not installed."""
  return optional_reverb.load(f'--reverb_address={reverb_address}')


def _no_episodes() -> Tuple[np.ndarray, np.ndarray]:
  return np.zeros([0]), np.zeros([0], np.int64)


class Collection:
  """The interface of a collection mode. Arguments named `variables` are the learner network's
  variables, `version` the learner step that produced them."""

  description = ''  # how the run acts, for the line the run prints at its start

  def __init__(self, items_per_iteration: int):
    self._items_per_iteration = items_per_iteration
    self._items_needed = 0  # items the learner has asked of its queue or Reverb table so far

  def dataset(self, items_per_replica: int) -> tf.data.Dataset:
    """The learner replica's input: items of the in-process queue or of the Reverb table."""
    raise NotImplementedError

  def attach(self, env, seed: int, resume_seed: int):
    """Called once the checkpoint is restored: readies the actor, if any, on `env` (made with `seed`)
    seeding it with `resume_seed`; returns the environment the run keeps (to close, and for its info)."""
    del seed, resume_seed
    return env

  def start(self, variables, version: int) -> None:
    """Called before the first iteration."""

  def collect(self, variables, version: int) -> None:
    """Called before each learner step: hands the weights on and collects what the step trains on."""

  def wait_for_items(self, stop_requested: Callable[[], bool]) -> bool:
    """Waits, from Python, until the learner's next step finds its items; False if a stop was requested
    first. The learner's compiled step then never waits inside TensorFlow, where a signal could not
    reach it."""
    consumed = self._items_needed
    self._items_needed += self._items_per_iteration
    while not self._items_ready(consumed):
      if stop_requested():
        self._items_needed = consumed
        return False
    return True

  def _items_ready(self, consumed: int) -> bool:
    """Whether the items of the next step are there, waiting a moment if they are not (`consumed`: the
    items the learner had asked for before)."""
    del consumed
    return True

  def raise_actor_error(self) -> None:
    """Called when the learner's step failed: raises the error of the actor the learner's input ended
    with, if that is the real cause."""

  def after_learner_step(self, variables, version: int) -> Tuple[np.ndarray, np.ndarray]:
    """Called after each learner step; returns the returns and lengths of training episodes finished
    since the last call."""
    del variables, version
    return _no_episodes()

  def stop(self) -> None:
    """Stops the actor and closes the trajectory writer and queue (called once, when the run closes)."""

  def end(self, variables, version: int) -> None:
    """Called once training is finished, with the final weights."""


class LocalCollection(Collection):
  """The run's own actor collects a learner batch before each learner step, in the learner's thread."""

  description = 'synchronous actor'

  def __init__(self, writer, queue: Optional[local_queue.TrajectoryQueue], actor_network, teachers,
               sequence_length: int, items_per_iteration: int,
               reverb_address: Optional[str] = None, table_name: Optional[str] = None):
    """Args:
      writer: the actor's trajectory writer (into `queue`, or the Reverb server's table).
      queue: the in-process trajectory queue, or None: the items go to `table_name` at `reverb_address`.
      actor_network: the actor's own copy of the network.
      teachers: the kickstarter's recurrent teachers the actor steps beside its policy
        (`kickstarting.actor_teachers`).
      sequence_length: T, steps per item.
      items_per_iteration: items the learner consumes per step.
    """
    super().__init__(items_per_iteration)
    self.queue = queue
    self._writer = writer
    self._actor_network = actor_network
    self._teachers = teachers
    self._sequence_length = sequence_length
    self._reverb_address = reverb_address
    self._table_name = table_name
    self._env = self._actor = None
    self._first_collection = True

  def dataset(self, items_per_replica: int) -> tf.data.Dataset:
    if self.queue is not None:
      return self.queue.dataset(items_per_replica)
    return _reverb_replay(self._reverb_address).make_dataset(self._reverb_address, self._table_name,
                                                             items_per_replica)

  def attach(self, env, seed: int, resume_seed: int):
    # Environments restart on resume; a different seed per resume avoids replaying the same episodes.
    if resume_seed != seed:
      env.close()
      env = suite.make_environment(seed=resume_seed)
    self._env = env
    self._actor = actor_lib.Actor(env, self._actor_network, self._writer, seed=resume_seed,
                                  teachers=self._teachers)
    return env

  def collect(self, variables, version: int) -> None:
    self._actor.pull_weights(variables, version)
    # The first item of a writer needs T + 1 steps; later ones T (items overlap by one step).
    self._actor.run(self._items_per_iteration * self._sequence_length + (1 if self._first_collection else 0))
    self._first_collection = False
    self._writer.flush()

  def _items_ready(self, consumed: int) -> bool:
    if self.queue is None:
      return True  # the actor writes to a Reverb server: the items are written before the learner reads
    if self.queue.wait_for_items(self._items_needed, timeout_seconds=0.5):
      return True
    self.raise_actor_error()
    return self.queue.closed  # closed: the learner's read reports why

  def after_learner_step(self, variables, version: int) -> Tuple[np.ndarray, np.ndarray]:
    return self._env.pop_finished_episodes()

  def stop(self) -> None:
    self._writer.close()
    if self.queue is not None:
      self.queue.close()  # ends the learner's readers, which may be waiting for the next item


class ThreadedCollection(LocalCollection):
  """The run's own actor collects in a background thread (`actor.ActorThread`) while the learner trains,
  taking the weights the learner publishes after each step."""

  description = 'asynchronous actor'

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._thread = None

  def attach(self, env, seed: int, resume_seed: int):
    env = super().attach(env, seed, resume_seed)
    self._thread = actor_lib.ActorThread(
        self._actor, env, self._writer, self._sequence_length,
        on_error=self.queue.close if self.queue is not None else None)
    return env

  def start(self, variables, version: int) -> None:
    self._thread.publish(variables, version)
    self._thread.start()

  def collect(self, variables, version: int) -> None:
    pass  # the thread collects

  def raise_actor_error(self) -> None:
    if self._thread.error is not None:
      raise self._thread.error  # the real cause; the learner only saw its input end

  def after_learner_step(self, variables, version: int) -> Tuple[np.ndarray, np.ndarray]:
    self._thread.publish(variables, version)
    return self._thread.pop_finished_episodes()

  def stop(self) -> None:
    if self._thread is not None:
      self._thread.stop()
      if self._thread.ident is not None:  # never started when the run's budget was already spent
        self._thread.join(timeout=60)
    super().stop()


class RemoteCollection(Collection):
  """Actors in other processes fill the table of the Reverb server at `reverb_address`; the learner
  publishes its weights to that server's variables table before every step, and the actors report the
  training episodes."""

  description = 'actors in other processes'

  def __init__(self, reverb_address: str, table_name: str, network, items_per_iteration: int):
    super().__init__(items_per_iteration)
    self._reverb_address = reverb_address
    self._table_name = table_name
    self._reverb_replay = reverb_replay = _reverb_replay(reverb_address)
    client = reverb_replay.connect(reverb_address)
    reverb_replay.check_tables(client, reverb_address, [table_name, reverb_replay.VARIABLES_TABLE])
    self._variables = reverb_replay.VariableContainer(
        client, signatures.variables_signature(network.variables), address=reverb_address)
    self._reverb_items = reverb_replay.ItemsAvailable(client, table_name)

  def dataset(self, items_per_replica: int) -> tf.data.Dataset:
    return self._reverb_replay.make_dataset(self._reverb_address, self._table_name, items_per_replica)

  def collect(self, variables, version: int) -> None:
    # Actors in other processes take these weights (and their version) before their next item.
    self._variables.push([v.numpy() for v in variables], version)

  def _items_ready(self, consumed: int) -> bool:
    try:
      if self._reverb_items.count(consumed) >= self._items_per_iteration:
        return True
    except (tf.errors.OpError, RuntimeError, ConnectionError):
      return True  # the server stopped answering: the learner's read waits for it and reports
    time.sleep(0.25)
    return False

  def end(self, variables, version: int) -> None:
    # Tells the actors that training is over: they exit.
    self._variables.push([v.numpy() for v in variables], version, finished=True)


def make_collection(env, network, actor_network, teachers, reverb_address: Optional[str], local_actor: bool,
                    asynchronous_actor: bool, table_name: str, sequence_length: int,
                    items_per_iteration: int) -> Collection:
  """The run's collection mode, from `train()`'s arguments and the `train.*` settings.

  Args:
    env: the learner's batched environment (its specs and layout shape the trajectory items).
    network: the learner's network.
    actor_network: the actor's own copy of the network (None without a local actor).
    teachers: the kickstarter's recurrent teachers the actor steps beside its policy.
    reverb_address: a Reverb server's 'host:port', or None: the in-process queue.
    local_actor: False: actors in other processes (`RemoteCollection`).
    asynchronous_actor: `train.asynchronous_actor`.
    table_name, sequence_length: `train.table_name`, `train.sequence_length`.
    items_per_iteration: items the learner consumes per step (all replicas).
  """
  if not local_actor:
    return RemoteCollection(reverb_address, table_name, network, items_per_iteration)
  queue = None
  if reverb_address is None:
    # One process: the trajectories stay in it (`replay.local_queue`), and it listens on no socket; an
    # in-process Reverb server would listen on every interface, unauthenticated.
    step_spec = actor_lib.step_spec(*components.environment_specs(env), network,
                                    multi_task=actor_lib.is_multi_task(env), teachers=teachers)
    queue = local_queue.TrajectoryQueue(
        signatures.sequence_signature(step_spec, sequence_length, env.batch_size,
                                      stored_frames=signatures.frame_storage(env)),
        signatures.on_policy_capacity(items_per_iteration))
    writer = local_queue.SequenceWriter(queue, sequence_length)
  else:
    reverb_replay = _reverb_replay(reverb_address)
    writer = reverb_replay.SequenceWriter(reverb_replay.connect(reverb_address), table_name, sequence_length)
  mode = ThreadedCollection if asynchronous_actor else LocalCollection
  return mode(writer, queue, actor_network, teachers, sequence_length, items_per_iteration,
              reverb_address=reverb_address, table_name=table_name)
