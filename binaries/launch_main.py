r"""One command for a distributed run: the Reverb server, N actors and the learner as jobs on Ray.

  python binaries/launch_main.py --gin_file=gin/quickstart.gin --root_dir=runs/cartpole --num_actors=2
  python binaries/launch_main.py --gin_file=gin/ppo_atari.gin --root_dir=/shared/breakout --num_actors=16 \
      --ray_address=10.0.0.1:6379 --use_gpu

The same jobs as the hand-started deployment (README, "Deploying"), from the same gin file, each in its
own Ray worker process calling the function its binary calls. Without `--ray_address` a local Ray instance
starts in this process (token authentication on, as `pbt_main`'s). Ray restarts a job whose process dies
(`launch.max_restarts` times each): an actor rejoins, the server restores its newest checkpoint, the
learner resumes from its own. Every job's console lines reach this console, prefixed with the job's name
("(learner pid=...)"); the learner's are `train_main`'s progress lines. The run ends when the learner's
budget is spent and every job has exited. SIGINT/SIGTERM stops every job (the learner saves); the same
command resumes the run. Resource requests per job are gin (`launch.actor_cpus`, ...; docs/configurables.md).
"""

import math
import os
import sys
import time

# Before TensorFlow is imported: keep its C++ start-up chatter (oneDNN notices) off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.replay import optional_reverb
from protege.runtime import config
from protege.runtime import interrupts

common.define_gin_flags()
flags.DEFINE_string('root_dir', None, 'Run directory of the learner (checkpoints, summaries, policy, '
                    'summary.json) and of the server\'s checkpoints (reverb_checkpoints/); a shared or gs:// '
                    'path on a cluster, else a path on the learner\'s node.')
flags.DEFINE_integer('num_actors', None, 'Actor jobs (each steps train\'s environments; actor i seeds them).')
flags.DEFINE_string('ray_address', None, 'Address of a running Ray cluster (e.g. "10.0.0.1:6379", "auto"); '
                    'default: a local Ray instance in this process.')
flags.DEFINE_float('num_cpus', 0, 'CPUs of the local Ray instance (0: the machine\'s, or the jobs\' requests if '
                   'more); ignored with --ray_address.')
flags.DEFINE_string('tpu', None, 'TPU name/address: the learner runs under TPUStrategy (asks Ray for '
                    'launch.learner_tpu_chips).')
flags.DEFINE_bool('use_gpu', False, 'The learner runs under MirroredStrategy over its GPUs (asks Ray for '
                  'launch.learner_gpus).')
flags.DEFINE_enum('mixed_precision', None, ['mixed_bfloat16', 'mixed_float16'],
                  'Keras mixed-precision policy of the learner\'s network (variables stay float32).')
flags.DEFINE_bool('xla', False, 'Compile the learner\'s step with XLA (auto-clustering; TPUs always do).')
flags.DEFINE_integer('reverb_port', 0, 'Port of the Reverb server (0: a free one on its node).')
flags.DEFINE_bool('reverb_behind_firewall', False, 'Allow the Reverb server on a node with a public address: '
                  'you have closed its port there in the firewall (README, "Launching on Ray").')
flags.DEFINE_float('server_checkpoint_interval_seconds', 60.0, 'Seconds between checkpoints of the Reverb '
                   'tables (a restarted server restores the newest).')
flags.DEFINE_float('actor_retry_seconds', 120.0, 'How long an actor waits for a server that stopped answering.')
flags.mark_flag_as_required('root_dir')
flags.mark_flag_as_required('num_actors')
FLAGS = flags.FLAGS


def _local_cpus(resources, num_actors: int) -> int:
  """CPUs of the local Ray instance: --num_cpus, else the machine's, or what the jobs ask for if more (Ray
  counts whole CPUs per node)."""
  requested = resources.server_cpus + resources.learner_cpus + num_actors * resources.actor_cpus
  return math.ceil(FLAGS.num_cpus or max(os.cpu_count() or 1, requested))


def _portable_gin_file(path: str) -> str:
  """A shipped configuration by its name in the package's gin/ (each node finds it in its own install); any
  other file by its absolute path (it must exist at that path on every node)."""
  resolved = config.resolve_gin_file(path)
  relative = os.path.relpath(os.path.realpath(resolved), os.path.realpath(config.GIN_DIR))
  return resolved if relative.startswith('..') else relative


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.ray_address:
    common.secure_local_ray()
  os.environ.setdefault('RAY_DEDUP_LOGS', '0')  # every job's progress lines reach this console
  with common.one_line_errors('launch_main', show_traceback=FLAGS.traceback):
    from protege.agents.training import deployment  # pylint: disable=g-import-not-at-top
    from protege.launch import driver  # pylint: disable=g-import-not-at-top
    from protege.launch import network  # pylint: disable=g-import-not-at-top
    config.check_number('--num_actors', FLAGS.num_actors, 1, inclusive=True, integer=True)
    config.check_number('--num_cpus', FLAGS.num_cpus, 0, inclusive=True, meaning='0: the machine\'s')
    config.check_number('--reverb_port', FLAGS.reverb_port, 0, inclusive=True, integer=True)
    gin_files = [_portable_gin_file(path) for path in FLAGS.gin_file]
    common.parse_gin(gin_files, FLAGS.gin_bindings)  # a bad configuration fails here, before Ray starts
    resources = deployment.launch_resources()
    root_dir = FLAGS.root_dir if '://' in FLAGS.root_dir else os.path.abspath(FLAGS.root_dir)
    # SIGINT/SIGTERM: every job is asked to stop (the learner saves), then this process exits.
    stop = interrupts.StopRequest('launch_main', grace_seconds=4 * driver.STOP_SECONDS,
                                  on_deadline=lambda: interrupts.resume_hint(root_dir))
    start = time.time()
    env_vars = {'TF_CPP_MIN_LOG_LEVEL': os.environ['TF_CPP_MIN_LOG_LEVEL']}
    if FLAGS.ray_address:
      network.check_reachable(FLAGS.ray_address)
    optional_reverb.load('protege-launch (a distributed run)')  # without dm-reverb: one line, before Ray starts
    driver.start_ray(FLAGS.ray_address, _local_cpus(resources, FLAGS.num_actors), env_vars)
    devices = {'tpu': FLAGS.tpu, 'use_gpu': FLAGS.use_gpu, 'mixed_precision': FLAGS.mixed_precision,
               'xla': FLAGS.xla}
    launch = driver.Launch(root_dir, gin_files, FLAGS.gin_bindings, FLAGS.num_actors, local=not FLAGS.ray_address,
                           devices=devices, reverb_port=FLAGS.reverb_port,
                           reverb_behind_firewall=FLAGS.reverb_behind_firewall,
                           server_checkpoint_interval_seconds=FLAGS.server_checkpoint_interval_seconds,
                           actor_retry_seconds=FLAGS.actor_retry_seconds)
    try:
      launch.start()
      summary = launch.watch(stop)
      restarted = launch.restarted_jobs()
    finally:
      launch.shutdown()
      driver.shutdown_ray()
    if summary is None:
      print(f'launch_main: stopped. {interrupts.resume_hint(root_dir)}', flush=True)
      sys.exit(stop.exit_code)
    if restarted:
      print(f'launch_main: restarted by Ray during the run: {", ".join(restarted)}.', flush=True)
    print(f'launch_main: done in {(time.time() - start) / 60:.1f} min: {summary["env_steps"]:,} env steps, '
          f'{summary["learner_iterations"]:,} learner iterations, evaluation return '
          f'{summary["eval_return_mean"]:.1f}. Results in {root_dir} (summary.json, policy/, checkpoints/; '
          f'tensorboard --logdir={root_dir}).', flush=True)


def run():
  """The `protege-launch` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
