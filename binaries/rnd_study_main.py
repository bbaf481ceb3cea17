r"""Does RND explore where PPO alone does not? N seeds of each on the same budget, one table.

  python binaries/rnd_study_main.py --root_dir=runs/rnd_study            # gin/rnd_deep_sea.gin, 10 seeds
  python binaries/rnd_study_main.py --root_dir=/tmp/s --seeds=2 --gin_bindings='train.total_env_steps = 50000'

Every run is `binaries/train_main.py` in its own process with the study's gin file, `train.seed = <seed>`
and, for plain PPO, the RND learner swapped for the inner PPO learner (one value head, nothing else
changed). A run stops at its first training episode whose return reaches `--success_return` (on Deep
Sea only the treasure gives a positive return). The table reports, per method, the seeds that reached
it within the budget and the median env steps to the first success (over the seeds that succeeded);
it is printed and written to `<root_dir>/study.md` and `<root_dir>/study.json`. Runs already finished
in `root_dir` are read back, not rerun.
"""

import json
import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags
import numpy as np

from protege.binaries import common
from protege.runtime import run_directory

flags.DEFINE_string('root_dir', None, 'Study directory: one run directory per method and seed.')
flags.DEFINE_multi_string('gin_file', ['rnd_deep_sea.gin'], 'Gin file(s) of the RND configuration.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings for every run.')
flags.DEFINE_integer('seeds', 10, 'Seeds per method (0 .. seeds-1).')
flags.DEFINE_list('methods', ['ppo', 'rnd'], 'Methods to run: ppo, rnd.')
flags.DEFINE_float('success_return', 0.5, 'A training episode with at least this return is a success.')
flags.mark_flag_as_required('root_dir')
FLAGS = flags.FLAGS

_METHOD_BINDINGS = {'rnd': [], 'ppo': list(common.PPO_WITHOUT_RND_BINDINGS)}


def run_one(method: str, seed: int, root_dir: str) -> dict:
  """Trains one method and seed (or reads a finished run back); returns its summary.json."""
  bindings = list(FLAGS.gin_bindings) + _METHOD_BINDINGS[method] + [
      f'train.seed = {seed}', f'train.stop_at_episode_return = {FLAGS.success_return}']
  return common.run_train_main(os.path.join(root_dir, f'{method}_seed{seed}'), FLAGS.gin_file, bindings,
                               f'{method} seed {seed}')


def summarize(method: str, summaries: list, success_return: float) -> dict:
  """Seeds that succeeded and the median env steps to the first success."""
  steps = [s['best_episode_env_steps'] for s in summaries
           if s.get('best_episode_return') is not None and s['best_episode_return'] >= success_return]
  return {
      'method': method,
      'seeds': len(summaries),
      'succeeded': len(steps),
      'median_steps_to_first_success': float(np.median(steps)) if steps else None,
      'steps_to_first_success': steps,
      'budget_env_steps': max((s['env_steps'] for s in summaries), default=0),
      'train_seconds': [round(s['train_seconds_this_run'], 1) for s in summaries],
  }


def table(rows: list) -> str:
  lines = ['| method | seeds that reached the reward | median env steps to the first reward | '
           'steps to the first reward, per successful seed |',
           '|---|---|---|---|']
  for row in rows:
    median = ('—' if row['median_steps_to_first_success'] is None
              else f'{row["median_steps_to_first_success"]:,.0f}')
    steps = ', '.join(f'{s:,}' for s in sorted(row['steps_to_first_success'])) or '—'
    lines.append(f'| {row["method"].upper()} | {row["succeeded"]}/{row["seeds"]} | {median} | {steps} |')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  unknown = [m for m in FLAGS.methods if m not in _METHOD_BINDINGS]
  if unknown:
    raise app.UsageError(f'Unknown method(s) {unknown}; choose from {sorted(_METHOD_BINDINGS)}.')
  os.makedirs(FLAGS.root_dir, exist_ok=True)
  rows = []
  start = time.time()
  total = len(FLAGS.methods) * FLAGS.seeds
  done = 0
  for method in FLAGS.methods:
    summaries = []
    for seed in range(FLAGS.seeds):
      summary = run_one(method, seed, FLAGS.root_dir)
      summaries.append(summary)
      done += 1
      elapsed = time.time() - start
      success = (summary.get('best_episode_return') is not None
                 and summary['best_episode_return'] >= FLAGS.success_return)
      outcome = (f'first reward at {summary["best_episode_env_steps"]:,} env steps' if success
                 else f'no reward in {summary["env_steps"]:,} env steps')
      print(f'[{done}/{total}] {method} seed {seed}: {outcome} '
            f'({summary["train_seconds_this_run"]:.0f} s); ETA '
            f'{elapsed / done * (total - done) / 60:.1f} min', flush=True)
    rows.append(summarize(method, summaries, FLAGS.success_return))
  text = table(rows)
  print(text)
  with run_directory.atomic_file(os.path.join(FLAGS.root_dir, 'study.md')) as f:
    f.write(f'Gin: {FLAGS.gin_file}, bindings: {FLAGS.gin_bindings}; success: a training episode with '
            f'return >= {FLAGS.success_return}.\n\n{text}\n')
  with run_directory.atomic_file(os.path.join(FLAGS.root_dir, 'study.json')) as f:
    json.dump(rows, f, indent=2)
  print(f'Wrote {os.path.join(FLAGS.root_dir, "study.md")}')


def run():
  """The `protege-rnd-study` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
