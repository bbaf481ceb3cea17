r"""Compares methods by their runs: train_main runs and pbt_main populations, on one learning-curve measure.

  python binaries/compare_runs_main.py --output_dir=runs/pbt_compare --target=22.09 \
      '--runs=constant λ = 1:runs/kick_constant_seed*' \
      '--runs=hand schedule:runs/kick_minatar/kickstarted_seed*' \
      '--population=PBT:runs/pbt_minatar_breakout'

A method is a label and its runs: `--runs=LABEL:GLOB` (train_main run directories) or
`--population=LABEL:DIR` (a pbt_main directory: each member is a run). Every run is measured the same way:

- the training curve: at every multiple of `--grid_env_steps`, the mean of the last `--window` training
  episode returns finished by then. For a train_main run they are read from its TensorBoard
  `env/episode_return`; for a population member they are the reports it made to the scheduler at each ready
  (`lineage.jsonl`: the same mean of its last 20 episodes, of the weights it had then; a member that copied
  a donor continues from the donor's weights). Set `--grid_env_steps` to the population's ready period.
- the final evaluation every run makes at its end (`summary.json`: `eval_return_mean`).
- with `--target`: the first grid point whose training-curve value reaches it.

Written to `--output_dir`: `comparison.md` (a table per method, per run), `comparison.json`, and
`curves.png` (every run thin, each method's median thick).
"""

import glob
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags
import numpy as np

from binaries import common

flags.DEFINE_multi_string('runs', [], 'LABEL:GLOB of train_main run directories (one method).')
flags.DEFINE_multi_string('population', [], 'LABEL:DIR of a pbt_main run (one method, its members the runs).')
flags.DEFINE_string('output_dir', None, 'Where comparison.md, comparison.json and curves.png go.')
flags.DEFINE_integer('grid_env_steps', 65536, 'Env steps between two points of the training curve (a '
                     'population\'s ready period).')
flags.DEFINE_integer('window', 20, 'Training episodes averaged at each point of a train_main run\'s curve (a '
                     'member reports the mean of its last 20).')
flags.DEFINE_float('target', None, 'A score; the table gives the env steps at which each curve reaches it.')
flags.DEFINE_string('title', None, 'Title of the plot.')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')
flags.mark_flags_as_required(['output_dir'])
FLAGS = flags.FLAGS


def _split(spec: str, flag: str):
  label, sep, path = spec.rpartition(':')
  if not sep or not label or not path:
    raise ValueError(f'--{flag}={spec!r} must be LABEL:PATH, e.g. --{flag}="constant λ:runs/const_seed*".')
  return label, path


def episode_returns(run_dir: str):
  """`(env_steps, returns)` of every training episode a train_main run logged, in order."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  steps, values = [], []
  for path in sorted(glob.glob(os.path.join(run_dir, 'summaries', 'events.out.tfevents.*'))):
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        if value.tag == 'env/episode_return':
          steps.append(event.step)
          values.append(float(tf.make_ndarray(value.tensor)))
  order = np.argsort(np.asarray(steps, np.int64), kind='stable')
  return np.asarray(steps, np.int64)[order], np.asarray(values, np.float64)[order]


def windowed_curve(steps, returns, grid, window: int):
  """At each grid point: the mean of the last `window` returns logged at or before it (NaN: none yet)."""
  curve = []
  for point in grid:
    seen = returns[steps <= point]
    curve.append(float(np.mean(seen[-window:])) if len(seen) else float('nan'))
  return curve


def run_record(run_dir: str, grid, window: int) -> dict:
  steps, returns = episode_returns(run_dir)
  if not len(steps):
    raise ValueError(f'{run_dir} has no env/episode_return in summaries/: is it a finished train_main run?')
  with open(os.path.join(run_dir, 'summary.json')) as f:
    summary = json.load(f)
  curve = windowed_curve(steps, returns, grid, window)
  return {'run': run_dir, 'env_steps': summary.get('env_steps'), 'final_eval': summary.get('eval_return_mean'),
          'curve': _until(curve, grid, summary.get('env_steps'))}


def _until(curve, grid, env_steps):
  """The curve with NaN past the run's end (a shorter run does not carry its last value forward)."""
  return [value if env_steps is None or point <= env_steps else float('nan')
          for point, value in zip(grid, curve)]


def population_records(root: str, grid) -> list:
  """One record per member: its ready reports on the grid (the report at or just before each point)."""
  from pbt import lineage as lineage_lib  # pylint: disable=g-import-not-at-top
  path = os.path.join(root, 'population.json')
  if not os.path.exists(path):
    raise ValueError(f'{root} has no population.json: is it a finished pbt_main run?')
  with open(path) as f:
    population = json.load(f)
  events = lineage_lib.read_events(os.path.join(root, 'lineage.jsonl'))
  reports = {}
  for event in events:
    if event.get('event') == 'report' and event.get('env_steps') is not None and event.get('score') is not None:
      reports.setdefault(event['member'], []).append((int(event['env_steps']), float(event['score'])))
  records = []
  for member in population['members']:
    points = sorted(reports.get(member['member'], []))
    curve = []
    for point in grid:
      before = [score for steps, score in points if steps <= point]
      curve.append(before[-1] if before else float('nan'))
    records.append({'run': f'{root}:{member["member"]}', 'env_steps': member.get('env_steps'),
                    'final_eval': member.get('eval_return_mean'),
                    'curve': _until(curve, grid, member.get('env_steps')),
                    'hyperparameters': member.get('hyperparameters')})
  return records


def first_reaching(curve, grid, target):
  for point, value in zip(grid, curve):
    if value == value and value >= target:
      return int(point)
  return None


def _fmt(value, digits=1):
  return '—' if value is None or value != value else f'{value:,.{digits}f}'


def report(methods: dict, grid, target) -> str:
  lines = ['| method | final evaluation, per run | median | mean of the training curve, per run | median | '
           + ('env steps to a training return ≥ target, per run | median |' if target is not None else ''),
           '|---|---|---|---|---|' + ('---|---|' if target is not None else '')]
  for label, records in methods.items():
    finals = [r['final_eval'] for r in records]
    means = [float(np.nanmean(r['curve'])) for r in records]
    row = (f'| {label} | {", ".join(_fmt(v) for v in finals)} | {_fmt(float(np.median(finals)))} | '
           f'{", ".join(_fmt(v) for v in means)} | {_fmt(float(np.median(means)))} |')
    if target is not None:
      reached = [r['reached'] for r in records]
      never = [v for v in reached if v is None]
      median = None if len(never) * 2 >= len(reached) else int(np.median(
          [v if v is not None else np.inf for v in reached]))
      row += f' {", ".join("never" if v is None else f"{v:,}" for v in reached)} | {_fmt(median, 0)} |'
    lines.append(row)
  return '\n'.join(lines)


def plot(path: str, methods: dict, grid, target, title) -> None:
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  fig, ax = plt.subplots(figsize=(8, 4.5))
  colors = plt.rcParams['axes.prop_cycle'].by_key()['color']
  for (label, records), color in zip(methods.items(), colors):
    curves = np.asarray([r['curve'] for r in records], np.float64)
    for curve in curves:
      ax.plot(grid, curve, color=color, alpha=0.3, linewidth=0.8)
    ax.plot(grid, np.nanmedian(curves, axis=0), color=color, linewidth=2.2, label=f'{label} (median of {len(records)})')
  if target is not None:
    ax.axhline(target, color='black', linestyle='--', linewidth=1, label=f'target {target:g}')
  ax.set_xlabel('agent steps (per run)')
  ax.set_ylabel('training return (mean of the last 20 episodes)')
  if title:
    ax.set_title(title)
  ax.grid(alpha=0.3)
  ax.legend(loc='lower right', fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with common.one_line_errors('compare_runs_main', show_traceback=FLAGS.traceback):
    if not FLAGS.runs and not FLAGS.population:
      raise ValueError('nothing to compare: pass --runs=LABEL:GLOB and/or --population=LABEL:DIR.')
    if FLAGS.grid_env_steps <= 0 or FLAGS.window <= 0:
      raise ValueError(f'--grid_env_steps={FLAGS.grid_env_steps} and --window={FLAGS.window} must be > 0.')
    specs = []
    for spec in FLAGS.runs:
      label, pattern = _split(spec, 'runs')
      directories = sorted(d for d in glob.glob(pattern) if os.path.isdir(d))
      if not directories:
        raise ValueError(f'--runs={spec!r}: no directory matches {pattern!r}.')
      specs.append((label, 'runs', directories))
    for spec in FLAGS.population:
      label, root = _split(spec, 'population')
      specs.append((label, 'population', root))
    budgets = []
    for _, kind, where in specs:
      paths = ([os.path.join(d, 'summary.json') for d in where] if kind == 'runs'
               else [os.path.join(where, 'population.json')])
      for path in paths:
        if not os.path.exists(path):
          raise ValueError(f'{path} does not exist: compare finished runs only.')
      if kind == 'runs':
        budgets += [json.load(open(p)).get('env_steps') or 0 for p in paths]
      else:
        budgets += [m.get('env_steps') or 0 for m in json.load(open(paths[0]))['members']]
    grid = list(range(FLAGS.grid_env_steps, max(budgets) + 1, FLAGS.grid_env_steps))
    methods = {}
    for label, kind, where in specs:
      records = ([run_record(d, grid, FLAGS.window) for d in where] if kind == 'runs'
                 else population_records(where, grid))
      if FLAGS.target is not None:
        for record in records:
          record['reached'] = first_reaching(record['curve'], grid, FLAGS.target)
      methods[label] = records
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    table = report(methods, grid, FLAGS.target)
    with open(os.path.join(FLAGS.output_dir, 'comparison.md'), 'w') as f:
      f.write(table + '\n')
    with open(os.path.join(FLAGS.output_dir, 'comparison.json'), 'w') as f:
      json.dump({'grid_env_steps': grid, 'target': FLAGS.target, 'methods': methods}, f, indent=1)
    plot(os.path.join(FLAGS.output_dir, 'curves.png'), methods, grid, FLAGS.target, FLAGS.title)
    print(table)
    print(f'Written to {FLAGS.output_dir}: comparison.md, comparison.json, curves.png.', flush=True)


if __name__ == '__main__':
  sys.exit(app.run(main))
