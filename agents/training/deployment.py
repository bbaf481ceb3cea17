"""The jobs of a distributed run besides the learner: the Reverb server and the actors.

A distributed run is one Reverb server, any number of actor processes and one learner process, all
driven by the same gin file (TF-Agents' distributed examples split the jobs the same way):

    reverb_server_main   the trajectory queue and the variables table (`components.make_tables`),
                         checkpointed to a directory, so a restarted server restores its tables
    actor_main           N environments stepping a copy of the policy; writes trajectories, takes the
                         newest weights from the variables table before each item and records their
                         version (the learner step that produced them) in every step
    learner_main         `trainer.train(local_actor=False)`: reads the queue, trains, publishes weights,
                         checkpoints, evaluates and exports like the single-process run

The server is the one job that listens on a port, on every network interface and without authentication
(Reverb has neither a bind address nor authentication; README, "Security"). A single-process run keeps
its trajectories in the process instead (`replay.local_queue`) and listens on none. Each job imports Reverb
when it starts (`replay.optional_reverb`): this module imports without it, and a job started where dm-reverb
is not installed stops with one line naming the job and the fix.

The learner is the single-process `Trainer` with actors in other processes (`collection.RemoteCollection`),
reading the server's queue where the single-process run reads its in-process one, so a distributed run
writes the same run directory (checkpoints, summaries, policy, summary.json) and counts env steps the same
way: from the items it consumed, `items × sequence_length × num_envs`, stored in its checkpoint with the
learner step. A learner killed and resumed continues from the counter of its last checkpoint; what it
trained on after that checkpoint is neither counted nor kept.

The age of the weights behind each trajectory is its steps' `policy_version`; the learner logs the mean
lag (`learner/policy_lag`, in learner steps) and each actor the wall-clock age of the weights it acts
with (`actor/weights_age_seconds`).
"""

import dataclasses
import os
import threading
import time
from typing import Any, Callable, Dict, List, Optional

import gin
import numpy as np
import tensorflow as tf

from protege.agents.distillation import kickstarting
from protege.agents.training import actor as actor_lib
from protege.agents.training import components
from protege.agents.training import settings as settings_lib
from protege.envs import suite
from protege.replay import optional_reverb
from protege.replay import signatures
from protege.runtime import config as run_config
from protege.runtime import run_directory

# Actor i's environments are seeded `train.seed + ACTOR_SEED_STRIDE * (i + 1)`: apart from the learner's
# own environment (train.seed) and from evaluation (train.seed + 10_000).
ACTOR_SEED_STRIDE = 100_003

# What each job is called in the one line that says dm-reverb is not installed (`optional_reverb.load`).
_SERVER_JOB = 'reverb_server_main (the Reverb server of a distributed run)'
_ACTOR_JOB = 'actor_main (an actor of a distributed run)'
_LEARNER_JOB = 'learner_main (the learner of a distributed run)'



@dataclasses.dataclass(frozen=True)
class LaunchResources:
  """What `protege-launch` asks Ray for, per job (see `launch`)."""
  server_cpus: float
  actor_cpus: float
  learner_cpus: float
  learner_gpus: float
  learner_tpu_chips: float
  max_restarts: int


@gin.configurable('launch')
def launch_resources(server_cpus: float = 1.0, actor_cpus: float = 1.0, learner_cpus: float = 1.0,
                     learner_gpus: float = 1.0, learner_tpu_chips: float = 4.0,
                     max_restarts: int = 3) -> LaunchResources:
  """The resource requests and restart bound of the jobs `protege-launch` places on Ray.

  Ray starts a job on a node that has the resources free and keeps them reserved while it runs; a job
  whose process dies is restarted by Ray, at most `max_restarts` times per job (the run then stops, the
  learner saving first).

  Args:
    server_cpus: CPUs of the Reverb server.
    actor_cpus: CPUs of each actor (its environments and its copy of the policy).
    learner_cpus: CPUs of the learner.
    learner_gpus: GPUs of the learner with `--use_gpu` (none without it).
    learner_tpu_chips: Ray's `TPU` resource (chips) of the learner with `--tpu`; 4 is a v4-8 or v5p-8 host.
    max_restarts: restarts Ray makes of each job whose process died; 0: none.

  Raises:
    ConfigError: a negative count, or a job that asks for no CPU.
  """
  for name, value in (('server_cpus', server_cpus), ('actor_cpus', actor_cpus), ('learner_cpus', learner_cpus)):
    run_config.check_number(f'launch.{name}', value, 0, meaning='CPUs Ray reserves for the job')
  for name, value in (('learner_gpus', learner_gpus), ('learner_tpu_chips', learner_tpu_chips)):
    run_config.check_number(f'launch.{name}', value, 0, inclusive=True)
  run_config.check_number('launch.max_restarts', max_restarts, 0, inclusive=True, integer=True,
                          meaning='restarts of a job whose process died')
  return LaunchResources(server_cpus, actor_cpus, learner_cpus, learner_gpus, learner_tpu_chips, max_restarts)


# --- the Reverb server ---------------------------------------------------------------------------------


def start_server(port: int, checkpoint_dir: Optional[str], items_per_learner_step: Optional[int] = None):
  """Starts the run's Reverb server on `port` (tables from `settings.train_settings()`); returns it.

  Args:
    port: the port to serve on; clients reconnect to the same address after a restart.
    checkpoint_dir: where the tables are checkpointed; on start the newest complete checkpoint there is
      restored. None: no checkpoints.
    items_per_learner_step: items the learner reads per iteration (its replicas × `train.items_per_replica`),
      the trajectory queue's smallest capacity; None: `train.items_per_replica` (a one-replica learner).
  """
  reverb_replay = optional_reverb.load(_SERVER_JOB)
  settings = settings_lib.train_settings()
  env = suite.make_environment(seed=settings.seed)
  try:
    network = components.make_network(settings.network_fn, env)
    tables = components.make_tables(env, network, settings.sequence_length, settings.table_name,
                                    items_per_learner_step or settings.items_per_replica)
  finally:
    env.close()
  return reverb_replay.start_server(tables, port=port, checkpoint_dir=checkpoint_dir)


def check_server_settings(checkpoint_interval_seconds: float, keep_checkpoints: int) -> None:
  """Raises ConfigError, one line naming the flag and the fix, unless the server's checkpoint interval is
  positive and it keeps at least one checkpoint (the one a restarted server restores)."""
  run_config.check_number('--checkpoint_interval_seconds', checkpoint_interval_seconds, 0,
                          meaning='seconds between checkpoints of the tables')
  run_config.check_number('--keep_checkpoints', keep_checkpoints, 1, inclusive=True, integer=True,
                          meaning='the newest is the one a restarted server restores')


def serve(server, checkpoint_interval_seconds: float, stop: threading.Event,
          checkpoint_dir: Optional[str] = None, keep_checkpoints: int = 2) -> None:
  """Serves until `stop` is set. With `checkpoint_dir` (the server's), checkpoints the tables every
  `checkpoint_interval_seconds` and once more on the way out (a SIGTERM'd server restarts with
  everything it held), keeping the newest `keep_checkpoints`."""
  reverb_replay = optional_reverb.load(_SERVER_JOB)
  client = reverb_replay.connect(f'localhost:{server.port}')
  sizes = {name: info.current_size for name, info in client.server_info().items()}
  print(f'Reverb server on port {server.port}; items per table: {sizes}.', flush=True)
  while not stop.wait(checkpoint_interval_seconds):
    if checkpoint_dir:
      reverb_replay.checkpoint_server(client)
      prune_server_checkpoints(checkpoint_dir, keep_checkpoints)
  if checkpoint_dir:
    path = reverb_replay.checkpoint_server(client)
    prune_server_checkpoints(checkpoint_dir, keep_checkpoints)
    print(f'Checkpointed the tables to {path}.', flush=True)
  server.stop()


def run_server(port: int, stop: threading.Event, checkpoint_dir: Optional[str] = None,
               checkpoint_interval_seconds: float = 60.0, keep_checkpoints: int = 2,
               items_per_learner_step: Optional[int] = None,
               on_started: Optional[Callable[[Any], None]] = None,
               checkpoint_dir_flag: str = '--checkpoint_dir') -> None:
  """The server job (`reverb_server_main`, `protege-launch`): checks its settings, takes `checkpoint_dir`'s
  lock (a second server there would restore, write and prune the same checkpoints; one line naming
  `checkpoint_dir_flag` instead), starts the server (restoring the newest complete checkpoint there), calls
  `on_started(server)` and serves until `stop` is set (see `serve`)."""
  check_server_settings(checkpoint_interval_seconds, keep_checkpoints)
  optional_reverb.load(_SERVER_JOB)  # before the lock is taken
  lock = None
  if checkpoint_dir:
    lock = run_directory.RunDirectory(checkpoint_dir, 'a Reverb server', flag=checkpoint_dir_flag)
  try:
    server = start_server(port, checkpoint_dir, items_per_learner_step)
    if on_started is not None:
      on_started(server)
    serve(server, checkpoint_interval_seconds, stop, checkpoint_dir=checkpoint_dir,
          keep_checkpoints=keep_checkpoints)
  finally:
    if lock is not None:
      lock.release()


def prune_server_checkpoints(checkpoint_dir: str, keep: int) -> List[str]:
  """Deletes all but the newest `keep` complete Reverb checkpoints in `checkpoint_dir`; returns the deleted.

  Reverb names each checkpoint directory by its UTC time (ISO 8601, so names sort by age) and writes a
  DONE file into it last; incomplete ones (a kill mid-write) are never restored and are left alone.
  """
  complete = sorted(name.rstrip('/') for name in tf.io.gfile.listdir(checkpoint_dir)
                    if tf.io.gfile.exists(os.path.join(checkpoint_dir, name, 'DONE')))
  deleted = complete[:-keep] if keep > 0 else complete
  for name in deleted:
    tf.io.gfile.rmtree(os.path.join(checkpoint_dir, name))
  return deleted


# --- the learner ---------------------------------------------------------------------------------------


def run_learner(root_dir: str, reverb_address: str, tpu: Optional[str] = None, use_gpu: bool = False,
                logical_cpus: int = 0, mixed_precision: Optional[str] = None, xla: bool = False,
                stop_request: Optional[Callable[[], bool]] = None,
                program: str = 'learner_main') -> Optional[Dict[str, Any]]:
  """The learner job (`learner_main`, `protege-launch`): `trainer.train(local_actor=False)` on the devices the
  flags name; returns its summary, or None when `stop_request` stopped it (after a checkpoint).

  Args:
    root_dir: the run directory; a learner run again on it resumes from its latest checkpoint.
    reverb_address: 'host:port' of the run's Reverb server.
    tpu, use_gpu, logical_cpus: the learner's strategy (`strategy.get_strategy`).
    mixed_precision, xla: numerics options (`numerics.configure_numerics`).
    stop_request: polled between iterations and while waiting for items.
    program: the job's name, recorded in the run directory's lock.
  """
  optional_reverb.load(_LEARNER_JOB)  # before anything is written to `root_dir`
  # pylint: disable=g-import-not-at-top  (the learner's modules; actors and the server do without them)
  from protege.agents.training import numerics as numerics_lib
  from protege.agents.training import strategy as strategy_lib
  from protege.agents.training import trainer
  strategy = strategy_lib.get_strategy(tpu, use_gpu, logical_cpus)
  numerics_lib.configure_numerics(mixed_precision, xla)
  overrides = {}
  if mixed_precision:
    overrides['network_fn'] = numerics_lib.float32_outputs(settings_lib.train_settings().network_fn)
  return trainer.train(root_dir=root_dir, strategy=strategy, reverb_address=reverb_address, local_actor=False,
                       program=program, stop_request=stop_request, **overrides)


# --- an actor ------------------------------------------------------------------------------------------


def run_actor(reverb_address: str, actor_id: int = 0, root_dir: Optional[str] = None,
              retry_seconds: float = 120.0, max_env_steps: Optional[int] = None,
              progress_interval_seconds: float = 10.0,
              stop_request: Optional[Callable[[], bool]] = None) -> Dict[str, Any]:
  """Acts until the learner publishes that training finished (or `max_env_steps`); returns counts.

  Each item: take the newest published weights (if their version changed), step the environments
  `sequence_length` times, write, flush. A full queue makes the flush wait for the learner; a server that
  is away (restarting) is waited for, with backoff, up to `retry_seconds`, then a one-line error.

  Args:
    reverb_address: 'host:port' of the run's Reverb server.
    actor_id: this actor's index; seeds its environments and names its summaries.
    root_dir: if set, TensorBoard summaries go to `root_dir/actors/actor_<id>` (episode returns and
      lengths, weights' age and version).
    retry_seconds: how long a server that stopped answering is waited for.
    max_env_steps: stop after this many agent steps (None: until the learner finishes).
    progress_interval_seconds: seconds between progress lines.
    stop_request: polled while acting and waiting (e.g. `runtime.interrupts.StopRequest`); once True, the
      actor finishes the item under way, closes its writer and returns (`stopped` in the counts).
  """
  stopping = stop_request or (lambda: False)
  reverb_replay = optional_reverb.load(_ACTOR_JOB)
  settings = settings_lib.train_settings()
  table, sequence_length = settings.table_name, settings.sequence_length
  seed = settings.seed + ACTOR_SEED_STRIDE * (actor_id + 1)
  tf.keras.utils.set_random_seed(seed)
  client = reverb_replay.connect(reverb_address)
  reverb_replay.check_tables(client, reverb_address, [table, reverb_replay.VARIABLES_TABLE])
  env = suite.make_environment(seed=seed)
  network = components.make_network(settings.network_fn, env)
  variables = reverb_replay.VariableContainer(client, signatures.variables_signature(network.variables),
                                              address=reverb_address, retry_seconds=retry_seconds)
  summary_writer = None
  if root_dir:
    summary_writer = tf.summary.create_file_writer(os.path.join(root_dir, 'actors', f'actor_{actor_id}'))
  print(f'Actor {actor_id}: {env.env_id} × {env.batch_size} envs, writing to {reverb_address}.', flush=True)

  published = _wait_for_weights(variables, actor_id, stopping)
  if published is None:  # stopped before the learner published anything
    env.close()
    return {'env_steps': 0, 'items': 0, 'episodes': 0, 'learner_finished': False, 'stopped': True}
  if published.version:
    # Joining a run under way (e.g. restarted after a crash): new episodes, not the first run's again.
    env.close()
    seed += published.version
    env = suite.make_environment(seed=seed)
  writer = reverb_replay.SequenceWriter(client, table, sequence_length)
  actor = actor_lib.Actor(env, network, writer, seed=seed,
                          teachers=kickstarting.actor_teachers(*components.environment_specs(env)))
  version, steps, items, episodes = None, sequence_length + 1, 0, 0
  recent: List[float] = []
  last_print = time.time()
  finished = published.finished
  while not finished and not stopping():
    if published.version != version:
      actor.pull_weights(published.weights, published.version)
      version = published.version
    weights_age = time.time() - published.published_at
    items += actor.run(steps)
    steps = sequence_length  # the first item needs T + 1 steps, later ones T
    # Polls the variables table while the queue is full, so a finished learner releases its actors.
    flushed = writer.flush_unless(lambda: stopping() or variables.pull().finished, poll_ms=1000)
    finished = not flushed and not stopping()
    returns, lengths = env.pop_finished_episodes()
    episodes += returns.size
    recent = (recent + returns.tolist())[-20:]
    if summary_writer is not None:
      with summary_writer.as_default(step=actor.env_steps):
        for value, length in zip(returns, lengths):
          tf.summary.scalar('env/episode_return', value)
          tf.summary.scalar('env/episode_length', length)
        tf.summary.scalar('actor/weights_age_seconds', weights_age)
        tf.summary.scalar('actor/policy_version', version)
    if time.time() - last_print >= progress_interval_seconds:
      last_print = time.time()
      print(f'Actor {actor_id}: {actor.env_steps:,} env steps, {items} items, weights version {version}, '
            f'return {np.mean(recent) if recent else float("nan"):.1f}', flush=True)
    if max_env_steps is not None and actor.env_steps >= max_env_steps:
      break
    if not finished and not stopping():
      published = variables.pull()
      finished = published.finished
  writer.close()
  env.close()
  if summary_writer is not None:
    summary_writer.flush()
  stopped = stopping() and not finished
  why = ' (the learner finished)' if finished else ' (stopped by a signal)' if stopped else ''
  print(f'Actor {actor_id} done: {actor.env_steps:,} env steps, {items} items, {episodes} episodes{why}.',
        flush=True)
  return {'env_steps': actor.env_steps, 'items': items, 'episodes': episodes, 'learner_finished': finished,
          'stopped': stopped}


def _wait_for_weights(variables, actor_id: int, stopping: Callable[[], bool],
                      report_every_seconds: float = 30.0):
  """Blocks until the learner has published weights (it may start after the actors); None if `stopping()`."""
  start, last_report = time.time(), -np.inf
  while not stopping():
    published = variables.pull()
    if published is not None:
      return published
    if time.time() - last_report >= report_every_seconds:
      last_report = time.time()
      print(f'Actor {actor_id}: waiting for the learner to publish weights '
            f'({last_report - start:.0f}s so far).', flush=True)
    time.sleep(0.5)

