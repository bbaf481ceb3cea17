"""The learning-curve measure of `binaries/compare_runs_main.py`, as functions (no flags): load train_main
runs and pbt_main populations, put every run's training curve (and, for kickstarted runs, each teacher's
weight λ_k) on one grid of env steps, find when a curve reaches a target, and write the table and the figure.
See compare_runs_main's docstring for the measure.
"""

import json
import os

import numpy as np

from protege.runtime import errors
from protege.runtime import plotting


def run_scalars(run_dir: str):
  """`((env_steps, returns), {teacher: (env_steps, λ)})` a train_main run logged, in one read of its event
  files (across resumes: `agents.training.summaries.read_scalars`): every training episode's return, and
  each teacher's weight of a kickstarted learner (`learner/kickstart/lambda_<teacher>`; none without
  teachers)."""
  from protege.agents.training import summaries  # pylint: disable=g-import-not-at-top  (imports TensorFlow)
  series = summaries.read_scalars(
      os.path.join(run_dir, 'summaries'),
      keep=lambda tag: tag == summaries.EPISODE_RETURN or tag.startswith(summaries.LAMBDA_PREFIX))
  returns = series.pop(summaries.EPISODE_RETURN, (np.zeros([0], np.int64), np.zeros([0], np.float64)))
  return returns, {tag[len(summaries.LAMBDA_PREFIX):]: points for tag, points in series.items()}


def member_teacher_weights(points) -> dict:
  """`{teacher: (env_steps, λ)}` along a member's lineage (`pbt.lineage.trajectories`), in event order: the
  λ_k it trained with from each report on, and an explore's values from the donor's step on. A factorised
  search (λ_k = λ · λ̂_k) gives the product."""
  from protege.pbt import scheduler  # pylint: disable=g-import-not-at-top
  weights = {}
  for point in points:
    values = point['hyperparameters']
    scale = values.get(scheduler.LAMBDA_PREFIX + 'scale', 1.0)
    for key, value in values.items():
      if key.startswith(scheduler.LAMBDA_PREFIX) and key != scheduler.LAMBDA_PREFIX + 'scale' and value is not None:
        weights.setdefault(key[len(scheduler.LAMBDA_PREFIX):], []).append((point['env_steps'], value * scale))
  return {name: (np.asarray([p[0] for p in pts], np.int64), np.asarray([p[1] for p in pts], np.float64))
          for name, pts in weights.items()}


def windowed_curve(steps, returns, grid, window: int):
  """At each grid point: the mean of the last `window` values logged at or before it (NaN: none yet), in
  the order given, not sorted (a PBT member that copied a donor continues from the donor's step); with
  window 1, the value in force there (a λ_k)."""
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
  (steps, returns), weights = run_scalars(run_dir)
  if not len(steps):
    raise errors.ConfigError(f'{run_dir} has no env/episode_return in summaries/: is it a finished '
                             'train_main run?')
  return {'run': run_dir, 'env_steps': summary.get('env_steps'), 'final_eval': summary.get('eval_return_mean'),
          'points': (steps, returns), 'weight_points': weights}


def load_population(root: str) -> list:
  """A pbt_main run: per member, its ready reports `(env_steps, score)`, each point one report."""
  from protege.pbt import lineage as lineage_lib  # pylint: disable=g-import-not-at-top
  population = _read_json(os.path.join(root, 'population.json'), f'the pbt_main run {root}')
  reports = {}
  events = lineage_lib.read_events(os.path.join(root, 'lineage.jsonl'))
  paths = lineage_lib.trajectories(events)
  for event in events:
    if event.get('event') == 'report' and event.get('env_steps') is not None and event.get('score') is not None:
      reports.setdefault(event['member'], []).append((int(event['env_steps']), float(event['score'])))
  records = []
  for member in population['members']:
    points = sorted(reports.get(member['member'], []))
    records.append({'run': f'{root}:{member["member"]}', 'env_steps': member.get('env_steps'),
                    'final_eval': member.get('eval_return_mean'),
                    'hyperparameters': member.get('hyperparameters'),
                    'points': (np.asarray([p[0] for p in points], np.int64),
                               np.asarray([p[1] for p in points], np.float64)),
                    'weight_points': member_teacher_weights(paths.get(member['member'], []))})
  return records


def add_curve(record: dict, grid, window: int) -> dict:
  """Replaces the record's points by its curve on `grid`, NaN past the run's end (a shorter run does not
  carry its last value forward). A member's report already is a mean of 20 episodes: its window is 1.
  Each teacher's λ_k goes on the same grid (`teacher_weights`, {teacher: curve}; empty without teachers)."""
  end = record['env_steps']

  def until_end(curve):
    return [value if end is None or point <= end else float('nan') for point, value in zip(grid, curve)]

  steps, values = record.pop('points')
  record['curve'] = until_end(windowed_curve(steps, values, grid, window))
  record['teacher_weights'] = {name: until_end(windowed_curve(steps_k, values_k, grid, window=1))
                               for name, (steps_k, values_k) in sorted(record.pop('weight_points', {}).items())}
  return record


def last_weights(record: dict) -> str:
  """The run's last λ_k on the grid, per teacher ('—': no teacher)."""
  last = {}
  for name, curve in record.get('teacher_weights', {}).items():
    values = [v for v in curve if v == v]
    last[name] = values[-1] if values else float('nan')
  if len(last) == 1:
    return _fmt(next(iter(last.values())), 2)
  return ' '.join(f'{name}={_fmt(value, 2)}' for name, value in last.items()) or '—'


def first_reaching(curve, grid, target):
  for point, value in zip(grid, curve):
    if value == value and value >= target:
      return int(point)
  return None


def _fmt(value, digits=1):
  return '—' if value is None or value != value else f'{value:,.{digits}f}'


def report(methods: dict, grid, target) -> str:
  weights = any(r.get('teacher_weights') for records in methods.values() for r in records)
  lines = ['| method | final evaluation, per run | median | mean of the training curve, per run | median | '
           + ('env steps to a training return ≥ target, per run | median |' if target is not None else '')
           + ('λ at the end, per run |' if weights else ''),
           '|---|---|---|---|---|' + ('---|---|' if target is not None else '') + ('---|' if weights else '')]
  for label, records in methods.items():
    finals = [r['final_eval'] for r in records]
    evaluated = [v for v in finals if v is not None]  # a member that failed has no final evaluation ('—')
    means = [float(np.nanmean(r['curve'])) for r in records]
    row = (f'| {label} | {", ".join(_fmt(v) for v in finals)} | '
           f'{_fmt(float(np.median(evaluated)) if evaluated else None)} | '
           f'{", ".join(_fmt(v) for v in means)} | {_fmt(float(np.median(means)))} |')
    if target is not None:
      reached = [r['reached'] for r in records]
      never = [v for v in reached if v is None]
      median = None if len(never) * 2 >= len(reached) else int(np.median(
          [v if v is not None else np.inf for v in reached]))
      row += f' {", ".join("never" if v is None else f"{v:,}" for v in reached)} | {_fmt(median, 0)} |'
    if weights:
      row += f' {", ".join(last_weights(r) for r in records)} |'
    lines.append(row)
  return '\n'.join(lines)


def plot(path: str, methods: dict, grid, target, title) -> None:
  """Per method, every run's curve (faint) and their median (bold) on `grid`; the target, if any. When runs
  were kickstarted, a second panel draws each run's λ_k the same way (one line per run and teacher)."""
  weights = any(r.get('teacher_weights') for records in methods.values() for r in records)
  with plotting.figure(path, 2 if weights else 1, 1, figsize=(8, 7.5 if weights else 4.5), dpi=120,
                       sharex=True, squeeze=False) as (_, axes):
    ax = axes[0, 0]
    colors = plotting.pyplot().rcParams['axes.prop_cycle'].by_key()['color']
    for (label, records), color in zip(methods.items(), colors):
      curves = np.asarray([r['curve'] for r in records], np.float64)
      plotting.run_lines(ax, [(grid, curve) for curve in curves], color, alpha=0.3, linewidth=0.8)
      ax.plot(grid, np.nanmedian(curves, axis=0), color=color, linewidth=2.2,
              label=f'{label} (median of {len(records)})')
      if weights:
        lambdas = [curve for r in records for curve in r.get('teacher_weights', {}).values()]
        if lambdas:
          plotting.run_lines(axes[1, 0], [(grid, curve) for curve in lambdas], color, alpha=0.45, linewidth=1.0)
          axes[1, 0].plot(grid, np.nanmedian(np.asarray(lambdas, np.float64), axis=0), color=color,
                          linewidth=2.2, label=label)
    if target is not None:
      plotting.target_line(ax, target, label=f'target {target:g}')
    ax.set_ylabel('training return (mean of the last 20 episodes)')
    if title:
      ax.set_title(title)
    ax.legend(loc='lower right', fontsize=8)
    if weights:
      axes[1, 0].set_ylabel(r'teacher weight $\lambda_k$ (each run; bold: median)')
      axes[1, 0].legend(loc='upper right', fontsize=8)
    axes[-1, 0].set_xlabel('agent steps (per run)')
