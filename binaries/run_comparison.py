"""The learning-curve measure of `binaries/compare_runs_main.py`, as functions (no flags): load train_main
runs and pbt_main populations, put every run's training curve on one grid of env steps, find when a curve
reaches a target, and write the table and the figure. See compare_runs_main's docstring for the measure.
"""

import json
import os

import numpy as np

from protege.runtime import errors
from protege.runtime import plotting


def episode_returns(run_dir: str):
  """`(env_steps, returns)` of every training episode a train_main run logged, in order (across resumes:
  `agents.training.summaries.read_scalars`)."""
  from protege.agents.training import summaries  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  series = summaries.read_scalars(os.path.join(run_dir, 'summaries'), keep=lambda tag: tag == summaries.EPISODE_RETURN)
  return series.get(summaries.EPISODE_RETURN, (np.zeros([0], np.int64), np.zeros([0], np.float64)))


def windowed_curve(steps, returns, grid, window: int):
  """At each grid point: the mean of the last `window` returns logged at or before it (NaN: none yet)."""
  curve = []
  for point in grid:
    seen = returns[steps <= point]
    curve.append(float(np.mean(seen[-window:])) if len(seen) else float('nan'))
  return curve


def _read_json(path: str, what: str):
  if not os.path.exists(path):
    raise errors.ConfigError(f'{path} does not exist: is {what} finished? Compare finished runs only.')
  with open(path) as f:
    return json.load(f)


def load_run(run_dir: str) -> dict:
  """A train_main run: its training episodes `(env_steps, returns)`, each point one episode."""
  summary = _read_json(os.path.join(run_dir, 'summary.json'), f'the train_main run {run_dir}')
  steps, returns = episode_returns(run_dir)
  if not len(steps):
    raise errors.ConfigError(f'{run_dir} has no env/episode_return in summaries/: is it a finished '
                             'train_main run?')
  return {'run': run_dir, 'env_steps': summary.get('env_steps'), 'final_eval': summary.get('eval_return_mean'),
          'points': (steps, returns)}


def load_population(root: str) -> list:
  """A pbt_main run: per member, its ready reports `(env_steps, score)`, each point one report."""
  from protege.pbt import lineage as lineage_lib  # pylint: disable=g-import-not-at-top
  population = _read_json(os.path.join(root, 'population.json'), f'the pbt_main run {root}')
  reports = {}
  for event in lineage_lib.read_events(os.path.join(root, 'lineage.jsonl')):
    if event.get('event') == 'report' and event.get('env_steps') is not None and event.get('score') is not None:
      reports.setdefault(event['member'], []).append((int(event['env_steps']), float(event['score'])))
  records = []
  for member in population['members']:
    points = sorted(reports.get(member['member'], []))
    records.append({'run': f'{root}:{member["member"]}', 'env_steps': member.get('env_steps'),
                    'final_eval': member.get('eval_return_mean'),
                    'hyperparameters': member.get('hyperparameters'),
                    'points': (np.asarray([p[0] for p in points], np.int64),
                               np.asarray([p[1] for p in points], np.float64))})
  return records


def add_curve(record: dict, grid, window: int) -> dict:
  """Replaces the record's points by its curve on `grid`, NaN past the run's end (a shorter run does not
  carry its last value forward). A member's report already is a mean of 20 episodes: its window is 1."""
  steps, values = record.pop('points')
  curve = windowed_curve(steps, values, grid, window)
  end = record['env_steps']
  record['curve'] = [value if end is None or point <= end else float('nan') for point, value in zip(grid, curve)]
  return record


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
  """Per method, every run's curve (faint) and their median (bold) on `grid`; the target, if any."""
  with plotting.figure(path, figsize=(8, 4.5), dpi=120) as (_, ax):
    colors = plotting.pyplot().rcParams['axes.prop_cycle'].by_key()['color']
    for (label, records), color in zip(methods.items(), colors):
      curves = np.asarray([r['curve'] for r in records], np.float64)
      plotting.run_lines(ax, [(grid, curve) for curve in curves], color, alpha=0.3, linewidth=0.8)
      ax.plot(grid, np.nanmedian(curves, axis=0), color=color, linewidth=2.2,
              label=f'{label} (median of {len(records)})')
    if target is not None:
      plotting.target_line(ax, target, label=f'target {target:g}')
    ax.set_xlabel('agent steps (per run)')
    ax.set_ylabel('training return (mean of the last 20 episodes)')
    if title:
      ax.set_title(title)
    ax.legend(loc='lower right', fontsize=8)
