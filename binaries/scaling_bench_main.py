r"""Scaling benchmarks of the distributed run: actor processes, Reverb rates, learner batch size, table memory.

  python binaries/scaling_bench_main.py --gin_file=gin/ppo_atari.gin --output=/tmp/scaling.md

Four measurements, each printed as a Markdown table (and written to `--output`):
  1. frames/s with 1 and 2 actor processes (`actor_main.py`) feeding a Reverb server whose queue is
     drained by a reader that does nothing else, so the learner is not the bottleneck;
  2. Reverb insert and sample rates of the run's trajectory items (in-process server, one writer, one
     dataset reader);
  3. learner iterations/s and env steps/s against `train.items_per_replica` (batch size), on an in-memory
     dataset of the run's item signature (no Reverb);
  4. resident memory of the server process against the number of items in its table.
Figures depend on the machine being quiet: on a shared machine they mean little.
"""

import os
import socket
import subprocess
import sys
import threading
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from protege.binaries import common  # noqa: E402
from protege.replay import optional_reverb  # noqa: E402
from protege.runtime import run_directory  # noqa: E402

common.define_gin_flags()
flags.DEFINE_float('seconds', 30.0, 'Measuring window of each throughput figure, after a warm-up.')
flags.DEFINE_multi_integer('batch_items', [1, 2, 4, 8], 'items_per_replica values of the learner benchmark.')
flags.DEFINE_multi_integer('table_sizes', [10, 50, 100, 300], 'Table sizes (items) of the memory benchmark.')
flags.DEFINE_string('output', None, 'Also write the Markdown tables to this file.')
FLAGS = flags.FLAGS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _layout():
  """The run's environment, a network, its tables (with a queue large enough not to block) and settings."""
  import gin  # pylint: disable=g-import-not-at-top
  from protege.agents.training import components  # pylint: disable=g-import-not-at-top
  from protege.agents.training import settings as settings_lib  # pylint: disable=g-import-not-at-top
  from protege.envs import suite  # pylint: disable=g-import-not-at-top
  settings = settings_lib.train_settings()
  env = suite.make_environment(seed=0)
  network = components.make_network(settings.network_fn, env)
  with gin.unlock_config():
    gin.bind_parameter('on_policy_table.max_size', 100_000)
  tables = components.make_tables(env, network, settings.sequence_length, settings.table_name)
  return env, network, tables, settings


def actor_scaling(num_actors: int) -> float:
  """Frames/s that `num_actors` actor processes write, with the queue drained as fast as it fills."""
  from protege.replay import signatures  # pylint: disable=g-import-not-at-top
  reverb_replay = optional_reverb.load('scaling_bench_main')
  env, network, tables, settings = _layout()
  frames_per_item = settings.sequence_length * env.batch_size * env.frames_per_step
  env.close()
  port = _free_port()
  server = reverb_replay.start_server(tables, port=port)
  address = f'localhost:{port}'
  client = reverb_replay.connect(address)
  reverb_replay.VariableContainer(client, signatures.variables_signature(network.variables)).push(
      [v.numpy() for v in network.variables], version=0)
  command = [sys.executable, os.path.join(REPO, 'binaries', 'actor_main.py'), f'--reverb_address={address}']
  command += [f'--gin_file={f}' for f in FLAGS.gin_file] + [f'--gin_bindings={b}' for b in FLAGS.gin_bindings]
  actors = [subprocess.Popen(command + [f'--actor_id={i}'], cwd=REPO, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL) for i in range(num_actors)]
  consumed = [0]
  stop = threading.Event()

  def drain():
    dataset = reverb_replay.make_dataset(address, settings.table_name, 1)
    for _ in dataset:
      consumed[0] += 1
      if stop.is_set():
        return

  reader = threading.Thread(target=drain, daemon=True)
  reader.start()
  try:
    while consumed[0] < 2 * num_actors:  # warm-up: every actor has started writing
      time.sleep(0.5)
    start_items, start = consumed[0], time.time()
    time.sleep(FLAGS.seconds)
    rate = (consumed[0] - start_items) * frames_per_item / (time.time() - start)
  finally:
    stop.set()
    for actor in actors:
      actor.kill()
      actor.wait()
    server.stop()
  return rate


def reverb_rates() -> dict:
  """Items/s one writer inserts and one dataset reader samples, for the run's item signature."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from protege.agents.training import actor as actor_lib  # pylint: disable=g-import-not-at-top
  reverb_replay = optional_reverb.load('scaling_bench_main')
  env, network, tables, settings = _layout()
  sequence_length = settings.sequence_length
  step_spec = actor_lib.step_spec(network.input_tensor_spec, network.action_spec, network)
  batch = env.batch_size
  env.close()
  step = tf.nest.map_structure(
      lambda s: np.zeros([batch] + s.shape.as_list(), s.dtype.as_numpy_dtype), step_spec)
  server = reverb_replay.start_server(tables)
  address = f'localhost:{server.port}'
  writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), settings.table_name, sequence_length)
  items = 0
  start = time.time()
  while time.time() - start < FLAGS.seconds:
    for _ in range(sequence_length):
      items += writer.append(step)
    writer.flush()
  insert_rate = items / (time.time() - start)
  dataset = iter(reverb_replay.make_dataset(address, settings.table_name, 1))
  start, sampled = time.time(), 0
  while sampled < items and time.time() - start < FLAGS.seconds:
    next(dataset)
    sampled += 1
  sample_rate = sampled / (time.time() - start)
  writer.close()
  server.stop()
  return {'insert_items_per_second': insert_rate, 'sample_items_per_second': sample_rate,
          'steps_per_item': sequence_length * batch}


def learner_rate(items_per_replica: int) -> dict:
  """Learner iterations/s on an in-memory dataset of `items_per_replica` items per iteration."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from protege.agents.training import actor as actor_lib  # pylint: disable=g-import-not-at-top
  from protege.replay import signatures  # pylint: disable=g-import-not-at-top
  env, network, _, settings = _layout()
  step_spec = actor_lib.step_spec(network.input_tensor_spec, network.action_spec, network)
  signature = signatures.sequence_signature(step_spec, settings.sequence_length,
                                            env.batch_size * items_per_replica)
  env.close()
  batch = tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), signature)
  batch['discount'] = tf.ones_like(batch['discount'])
  dataset_fn = lambda context: tf.data.Dataset.from_tensors(batch).repeat()
  learner = settings.learner_fn(network=network, dataset_fn=dataset_fn,
                                   strategy=tf.distribute.get_strategy(), total_iterations=10**6)
  learner.run()  # traces
  iterations, start = 0, time.time()
  while time.time() - start < FLAGS.seconds:
    learner.run()
    iterations += 1
  rate = iterations / (time.time() - start)
  steps = settings.sequence_length * signature['step_type'].shape[1]
  return {'iterations_per_second': rate, 'env_steps_per_second': rate * steps, 'batch_env_steps': steps}


def table_memory(sizes) -> list:
  """Resident memory of a process holding a Reverb server, against the items in its table (MiB)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import psutil  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from protege.agents.training import actor as actor_lib  # pylint: disable=g-import-not-at-top
  reverb_replay = optional_reverb.load('scaling_bench_main')
  env, network, tables, settings = _layout()
  step_spec = actor_lib.step_spec(network.input_tensor_spec, network.action_spec, network)
  batch = env.batch_size
  env.close()
  rng = np.random.default_rng(0)
  # Random observations: Reverb compresses chunks, and zeros would compress to nothing.
  make = lambda s: (rng.integers(0, 255, [batch] + s.shape.as_list()).astype(s.dtype.as_numpy_dtype)
                    if s.dtype.is_integer else rng.standard_normal([batch] + s.shape.as_list()).astype(
                        s.dtype.as_numpy_dtype))
  server = reverb_replay.start_server(tables)
  writer = reverb_replay.SequenceWriter(reverb_replay.connect(f'localhost:{server.port}'),
                                        settings.table_name, settings.sequence_length)
  process = psutil.Process()
  baseline = process.memory_info().rss
  # Uncompressed bytes of one item (Reverb compresses chunks, but random frames barely compress): a table
  # size that would not fit in half of the free memory is skipped, not measured into an out-of-memory kill.
  item_bytes = settings.sequence_length * sum(
      batch * s.shape.num_elements() * s.dtype.size for s in tf.nest.flatten(step_spec))
  budget = psutil.virtual_memory().available / 2
  results, items = [], 0
  for size in sorted(sizes):
    if size * item_bytes > budget:
      print(f'table memory: {size:,} items would take ~{size * item_bytes / 2**30:.1f} GiB, more than half '
            f'of the free memory ({2 * budget / 2**30:.1f} GiB); skipped.', flush=True)
      results.append((size, None))
      continue
    while items < size:
      for _ in range(settings.sequence_length):
        items += writer.append(tf.nest.map_structure(make, step_spec))
      writer.flush()
    results.append((size, (process.memory_info().rss - baseline) / 2**20))
  writer.close()
  server.stop()
  return results


def main(argv):
  with common.job('scaling_bench_main', argv):
    report = scaling_report()
  if FLAGS.output:
    with run_directory.atomic_file(FLAGS.output) as f:
      f.write(report)


def scaling_report() -> str:
  """Runs the four benchmarks of the module docstring; prints each table as soon as it is measured and
  returns them all as Markdown."""
  lines = []

  def emit(*new_lines):
    print('\n'.join(new_lines), flush=True)
    lines.extend(new_lines)

  one = actor_scaling(1)
  two = actor_scaling(2)
  emit('| actor processes | frames/s | speed-up |', '|---|---|---|', f'| 1 | {one:,.0f} | 1.00× |',
       f'| 2 | {two:,.0f} | {two / one:.2f}× |', '')
  rates = reverb_rates()
  emit('| Reverb, items of | insert items/s | sample items/s |', '|---|---|---|',
       f'| {rates["steps_per_item"]} steps | {rates["insert_items_per_second"]:,.1f} | '
       f'{rates["sample_items_per_second"]:,.1f} |', '')
  emit('| items per iteration | env steps per iteration | learner iterations/s | env steps/s |',
       '|---|---|---|---|')
  for items in FLAGS.batch_items:
    rate = learner_rate(items)
    emit(f'| {items} | {rate["batch_env_steps"]:,} | {rate["iterations_per_second"]:.2f} | '
         f'{rate["env_steps_per_second"]:,.0f} |')
  emit('', '| items in the table | server RSS growth (MiB) |', '|---|---|')
  emit(*[f'| {size:,} | {"skipped (see above)" if mib is None else f"{mib:,.0f}"} |'
         for size, mib in table_memory(FLAGS.table_sizes)])
  return '\n'.join(lines) + '\n'


if __name__ == '__main__':
  sys.exit(app.run(main))
