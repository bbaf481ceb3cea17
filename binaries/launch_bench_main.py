r"""frames/s of a run launched on Ray (`launch_main`) against the same run started by hand, same sitting.

  python binaries/launch_bench_main.py --gin_file=gin/quickstart.gin --num_actors=2 --repeats=3 \
      --gin_bindings='train.total_env_steps = 60000' --output=/tmp/launch_bench.md

Each repeat runs the hand-started deployment (README, "Deploying": `reverb_server_main`, N `actor_main`,
`learner_main`, each its own process) and then the launched one (`launch_main`, a local Ray instance),
from the same gin file with the quickstart's stop rule off, so both train the whole budget. Per run: the
learner's frames/s over its training (`env_steps_this_run / train_seconds_this_run` of summary.json: what
the jobs sustain once running) and the wall time of the whole command (start-up included). The table gives
the medians and the launched/hand ratio. Figures depend on the machine being quiet.
"""

import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app  # noqa: E402
from absl import flags  # noqa: E402

from protege.runtime import run_directory  # noqa: E402

flags.DEFINE_multi_string('gin_file', ['quickstart.gin'], 'Gin file(s) of the run.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings of the run.')
flags.DEFINE_integer('num_actors', 2, 'Actor jobs of both deployments.')
flags.DEFINE_integer('repeats', 3, 'Runs of each deployment (alternating).')
flags.DEFINE_string('output', None, 'Also write the Markdown table to this file.')
FLAGS = flags.FLAGS

BINARIES = os.path.dirname(os.path.abspath(__file__))
# Both deployments train the whole budget (the quickstart would stop at its evaluation target).
COMMON_BINDINGS = ['train.stop_at_eval_return = None', 'launch.actor_cpus = 0.5', 'launch.server_cpus = 0.5']


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _command(binary: str, args) -> list:
  gin = [f'--gin_file={path}' for path in FLAGS.gin_file]
  bindings = [f'--gin_bindings={b}' for b in list(FLAGS.gin_bindings) + COMMON_BINDINGS]
  return [sys.executable, os.path.join(BINARIES, binary)] + gin + bindings + list(args)


def _rate(root_dir: str, wall: float) -> dict:
  with open(os.path.join(root_dir, 'summary.json')) as f:
    summary = json.load(f)
  return {'frames_per_second': summary['env_steps_this_run'] / summary['train_seconds_this_run'],
          'wall_seconds': wall, 'env_steps': summary['env_steps']}


def hand_started(root_dir: str, log) -> dict:
  """The three commands of README "Deploying", on loopback."""
  port = _free_port()
  address = f'localhost:{port}'
  start = time.time()
  server = subprocess.Popen(_command('reverb_server_main.py', [f'--port={port}']), stdout=log, stderr=log)
  actors = [subprocess.Popen(_command('actor_main.py', [f'--reverb_address={address}', f'--actor_id={i}']),
                             stdout=log, stderr=log) for i in range(FLAGS.num_actors)]
  learner = subprocess.run(_command('learner_main.py', [f'--reverb_address={address}', f'--root_dir={root_dir}']),
                           stdout=log, stderr=log, check=False)
  for actor in actors:
    actor.wait(timeout=300)
  wall = time.time() - start
  server.terminate()
  server.wait(timeout=120)
  if learner.returncode != 0:
    raise RuntimeError(f'learner_main failed (exit {learner.returncode}); see {log.name}')
  return _rate(root_dir, wall)


def launched(root_dir: str, log) -> dict:
  start = time.time()
  result = subprocess.run(_command('launch_main.py', [f'--root_dir={root_dir}', f'--num_actors={FLAGS.num_actors}']),
                          stdout=log, stderr=log, check=False)
  if result.returncode != 0:
    raise RuntimeError(f'launch_main failed (exit {result.returncode}); see {log.name}')
  return _rate(root_dir, time.time() - start)


def report(rows) -> str:
  median = lambda mode, key: statistics.median(r[key] for r in rows if r['mode'] == mode)
  lines = ['| deployment | learner frames/s (median) | wall time of the command, s (median) | runs |',
           '|---|---|---|---|']
  for mode in ('hand-started', 'launched'):
    runs = ', '.join(f'{r["frames_per_second"]:,.0f}' for r in rows if r['mode'] == mode)
    lines.append(f'| {mode} | {median(mode, "frames_per_second"):,.0f} | {median(mode, "wall_seconds"):.1f} | '
                 f'{runs} |')
  ratio = median('launched', 'frames_per_second') / median('hand-started', 'frames_per_second')
  wall_ratio = median('launched', 'wall_seconds') / median('hand-started', 'wall_seconds')
  lines.append(f'\nlaunched / hand-started: frames/s × {ratio:.2f}, wall time × {wall_ratio:.2f}.')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  rows = []
  with tempfile.TemporaryDirectory(prefix='launch_bench_') as scratch:
    log_path = os.path.join(scratch, 'jobs.log')
    with open(log_path, 'a') as log:
      for repeat in range(FLAGS.repeats):
        for mode, run in (('hand-started', hand_started), ('launched', launched)):
          row = dict(run(os.path.join(scratch, f'{mode}_{repeat}'), log), mode=mode)
          rows.append(row)
          print(f'[{repeat + 1}/{FLAGS.repeats}] {mode}: {row["frames_per_second"]:,.0f} frames/s, '
                f'{row["wall_seconds"]:.1f} s, {row["env_steps"]:,} env steps', flush=True)
  text = report(rows)
  print(text)
  if FLAGS.output:
    with run_directory.atomic_file(FLAGS.output) as f:
      f.write(text + '\n')


def run():
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
