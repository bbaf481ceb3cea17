"""The random-MDP study's report: its markdown tables and its three figures.

The rows are `studies.random_mdp_training.summarize`'s dicts (as written to study.json); step counts of
inf mean "never reached" and are shown as "never". Figures: `plot_sampling` (sampling_curves.png),
`plot_sweep` (action_sweep.png) and `plot_noisy` (noisy_teacher.png), drawn with `runtime.plotting`.
"""

import math
from typing import Sequence

import numpy as np

from protege.runtime import plotting
from protege.studies import random_mdp_training

# ----------------------------------------------------------------------------------------------------------
# Tables.
# ----------------------------------------------------------------------------------------------------------


def steps_text(quartiles: Sequence[float]) -> str:
  """Step-count quartiles as 'median (q1–q3)', inf as 'never'."""
  def one(x):
    return 'never' if math.isinf(x) else f'{x:,.0f}'
  return f'{one(quartiles[1])} ({one(quartiles[0])}–{one(quartiles[2])})'


def quartile_text(quartiles: Sequence[float], digits: int = 3) -> str:
  """Quartiles as 'median (q1–q3)' with `digits` decimals."""
  return f'{quartiles[1]:.{digits}f} ({quartiles[0]:.{digits}f}–{quartiles[2]:.{digits}f})'


def _table(header: str, rows: Sequence[str]) -> str:
  """A markdown table: `header` (its cells between '|'), the separator row, then `rows`."""
  return '\n'.join([header, '|' + '---|' * (header.count('|') - 1), *rows])


# The columns of a variant's progress towards the teacher, and their cells (`_reach_cells`).
_REACH_HEADER = ('env steps per MDP to 95% of the teacher\'s return, median (IQR) | MDPs that reach it | '
                 'final return / teacher, median (IQR) | final KL(π‖π_θ)')


def _reach_cells(row: dict) -> str:
  return (f'{steps_text(row["steps_to_teacher_quartiles"])} | {100 * row["fraction_reached"]:.1f}% | '
          f'{quartile_text(row["final_return_over_teacher_quartiles"])} | '
          f'{quartile_text(row["final_kl_teacher_visits_quartiles"])} |')


def sampling_table(rows: Sequence[dict]) -> str:
  return _table(f'| variant | sampled by | lr | {_REACH_HEADER}, teacher-visit weighted, median (IQR) |',
                [f'| {row["variant"]} | {row["sampled_by"]} | {row["learning_rate"]:g} | {_reach_cells(row)}'
                 for row in rows])


# The common-rate comparison: the same cloning loss, sampled by the teacher and by the student.
COMMON_RATE_VARIANTS = ('teacher_distill', 'on_policy_distill')


def _ratio_text(teacher_steps: float, student_steps: float) -> str:
  """Teacher-driven over student-driven median steps (> 1: student-driven is faster); — if either never."""
  if math.isfinite(teacher_steps) and math.isfinite(student_steps):
    return f'{teacher_steps / student_steps:.2f}'
  return '—'


def common_rate_table(comparison: Sequence[dict]) -> str:
  lines = []
  for entry in comparison:
    teacher, student = (entry[variant] for variant in COMMON_RATE_VARIANTS)
    teacher_steps, student_steps = teacher['steps_to_teacher_quartiles'], student['steps_to_teacher_quartiles']
    lines.append(f'| {entry["learning_rate"]:g} | {steps_text(teacher_steps)}, '
                 f'{100 * teacher["fraction_reached"]:.0f}% | {steps_text(student_steps)}, '
                 f'{100 * student["fraction_reached"]:.0f}% | {_ratio_text(teacher_steps[1], student_steps[1])} | '
                 f'{teacher["final_return_over_teacher_quartiles"][1]:.3f} / '
                 f'{student["final_return_over_teacher_quartiles"][1]:.3f} |')
  return _table('| learning rate | teacher_distill (teacher-driven): steps to the target, median (IQR), MDPs '
                'that reach it | on_policy_distill (student-driven): the same | teacher-driven / '
                'student-driven (medians) | final return / teacher, median, teacher- / student-driven |', lines)


def best_common_rates(comparison: Sequence[dict]) -> dict:
  """Per variant, its entry at the common rate with the fewest median steps to the target (then the most
  MDPs that reach it, then the higher final return): `{variant: {'learning_rate', ...its summary}}`."""
  best = {}
  for variant in COMMON_RATE_VARIANTS:
    def key(entry):
      row = entry[variant]
      return (row['steps_to_teacher_quartiles'][1], -row['fraction_reached'],
              -row['final_return_over_teacher_quartiles'][1])
    if comparison:
      entry = min(comparison, key=key)
      best[variant] = {'learning_rate': entry['learning_rate'], **entry[variant]}
  return best


def best_rate_text(best: dict) -> str:
  """One line: each variant's best common rate and steps, and their ratio."""
  if len(best) < len(COMMON_RATE_VARIANTS):
    return '(no common rates run)'
  teacher, student = (best[variant] for variant in COMMON_RATE_VARIANTS)
  ratio = _ratio_text(teacher['steps_to_teacher_quartiles'][1], student['steps_to_teacher_quartiles'][1])
  return (f'teacher_distill at lr {teacher["learning_rate"]:g}: {steps_text(teacher["steps_to_teacher_quartiles"])}'
          f'; on_policy_distill at lr {student["learning_rate"]:g}: '
          f'{steps_text(student["steps_to_teacher_quartiles"])}; teacher-driven / student-driven: {ratio}.')


def sweep_table(rows: Sequence[dict]) -> str:
  return _table(f'| actions | variant | lr | {_REACH_HEADER}, median (IQR) |',
                [f'| {row["num_actions"]} | {row["variant"]} | {row["learning_rate"]:g} | {_reach_cells(row)}'
                 for row in rows])


def noisy_table(rows: Sequence[dict], noisy_teacher: dict) -> str:
  lines = ['| (the noisy teacher itself) | — | '
           f'{quartile_text(noisy_teacher["return_over_clean_quartiles"])} | 1 | 0 |']
  for row in rows:
    lines.append(f'| {row["variant"]} | {row["learning_rate"]:g} | '
                 f'{quartile_text(row["final_return_over_clean_teacher_quartiles"])} | '
                 f'{quartile_text(row["final_return_over_teacher_quartiles"])} | '
                 f'{quartile_text(row["final_kl_teacher_visits_quartiles"])} |')
  return _table('| variant | lr | final return / clean teacher, median (IQR) | final return / noisy teacher, '
                'median (IQR) | final KL(noisy π‖π_θ), median (IQR) |', lines)


# ----------------------------------------------------------------------------------------------------------
# Figures.
# ----------------------------------------------------------------------------------------------------------


def _steps_axis(axis):
  """Env steps on a symmetric-log axis: the fast variants finish within the first few updates."""
  axis.set_xscale('symlog', linthresh=80)
  axis.set_xlim(left=0)
  axis.set_xlabel('env steps per MDP (linear to 80 = one update, then log)')


def _band(axis, row, key, label, style='-'):
  """The median and IQR of the learning curve `row[key]` against the row's env steps."""
  plotting.quartile_band(axis, np.array(row['curve_steps']), row[key], label, style)


def _teacher_levels(axis, reach_fraction):
  """The teacher's return (1) and the target (`reach_fraction` of it), on a return / teacher axis."""
  axis.axhline(1.0, color='k', lw=0.8)
  axis.axhline(reach_fraction, color='k', lw=0.8, ls=':')


# The small multiples of `plot_sampling`: panels per row, and the quantities drawn (one block of rows each).
_SAMPLING_COLUMNS = 4
_SAMPLING_QUANTITIES = (
    ('curve_return_over_teacher_quartiles', 'return / teacher', 'linear'),
    ('curve_kl_teacher_visits_quartiles', 'KL(π‖π_θ), teacher-visit\nweighted', 'log'),
)


def plot_sampling(rows, path, reach_fraction):
  """Small multiples, one panel per variant and quantity (return / teacher; KL to the teacher): the
  variant's median and IQR band in colour over the other variants' medians in faint grey, on axes shared
  by every panel of a quantity."""
  columns = min(_SAMPLING_COLUMNS, len(rows))
  grid_rows = math.ceil(len(rows) / columns)
  blocks = len(_SAMPLING_QUANTITIES)
  with plotting.figure(path, blocks * grid_rows, columns, figsize=(3.6 * columns, 2.7 * blocks * grid_rows),
                       dpi=100, sharex=True, squeeze=False) as (drawing, axes):
    for block, (key, ylabel, yscale) in enumerate(_SAMPLING_QUANTITIES):
      panels = axes[block * grid_rows:(block + 1) * grid_rows].ravel()
      for index, (axis, row) in enumerate(zip(panels, rows)):
        if index:
          axis.sharey(panels[0])
        for other in rows:
          if other is not row:
            axis.plot(other['curve_steps'], np.asarray(other[key])[:, 1], color='0.8', lw=0.8)
        _band(axis, row, key, None, '--' if row['sampled_by'] == 'teacher' else '-')
        if block == 0:
          _teacher_levels(axis, reach_fraction)
        axis.set(title=f'{row["variant"]} ({row["sampled_by"]}-driven)', yscale=yscale)
        axis.title.set_fontsize(9)
        if index % columns == 0:
          axis.set_ylabel(ylabel)
      for axis in panels[len(rows):]:
        axis.set_visible(False)
    for axis in axes.ravel():
      _steps_axis(axis)
      if axis is not axes[-1, 0]:
        axis.set_xlabel('')
    drawing.suptitle('Median and IQR over MDPs of each variant (grey: the other variants\' medians; '
                     'black: the teacher, dotted: the target)', fontsize=10)


def plot_common_rates(comparison, path, reach_fraction):
  """One panel per common learning rate: return / teacher of teacher- (dashed) and student-driven (solid)
  cloning, median and IQR over MDPs."""
  columns = len(comparison)
  with plotting.figure(path, 1, columns, figsize=(3.8 * columns, 3.6), dpi=100, sharey=True,
                       squeeze=False) as (drawing, axes):
    for axis, entry in zip(axes[0], comparison):
      for variant, style in zip(COMMON_RATE_VARIANTS, ('--', '-')):
        _band(axis, entry[variant], 'curve_return_over_teacher_quartiles', variant, style)
      _teacher_levels(axis, reach_fraction)
      axis.set(title=f'lr {entry["learning_rate"]:g}')
      _steps_axis(axis)
      if axis is not axes[0, 0]:
        axis.set_xlabel('')
    axes[0, 0].set_ylabel('return / teacher (median, IQR)')
    axes[0, 0].legend(fontsize=7)
    drawing.suptitle('The same cloning loss, sampled by the teacher (dashed) and by the student (solid)',
                     fontsize=10)


def plot_sweep(rows, path, reach_fraction):
  """One panel of learning curves per action count, and the final returns against the count."""
  counts = sorted({row['num_actions'] for row in rows})
  with plotting.figure(path, 1, len(counts) + 1, figsize=(4.5 * (len(counts) + 1), 4.5), dpi=100) as (_, axes):
    for axis, count in zip(axes, counts):
      for row in rows:
        if row['num_actions'] == count:
          label = f'{row["variant"]} (lr {row["learning_rate"]:g})'
          _band(axis, row, 'curve_return_over_teacher_quartiles', label)
      _teacher_levels(axis, reach_fraction)
      axis.set(title=f'{count} actions', ylabel='return / teacher (median, IQR)')
      _steps_axis(axis)
      axis.legend(fontsize=7)
    summary = axes[-1]
    for variant in random_mdp_training.ACTION_SWEEP_VARIANTS:
      mine = sorted((r for r in rows if r['variant'] == variant), key=lambda r: r['num_actions'])
      summary.plot([r['num_actions'] for r in mine],
                   [r['final_return_over_teacher_quartiles'][1] for r in mine], 'o-', label=variant)
    summary.set(xscale='log', xlabel='number of actions', ylabel='final return / teacher (median)',
                title='Final return against action count')
    summary.legend(fontsize=7)


def plot_noisy(rows, noisy_teacher, path):
  """Return / clean teacher and KL to the noisy teacher against env steps, with the noisy teacher's level."""
  with plotting.figure(path, 1, 2, figsize=(14, 5.5), dpi=100) as (_, (left, right)):
    for row in rows:
      _band(left, row, 'curve_return_over_clean_teacher_quartiles', row['variant'])
      _band(right, row, 'curve_kl_teacher_visits_quartiles', row['variant'])
    left.axhline(noisy_teacher['return_over_clean_quartiles'][1], color='r', lw=1, ls='--',
                 label='the noisy teacher (median)')
    left.axhline(1.0, color='k', lw=0.8, label='the clean teacher')
    left.set(ylabel='student return / clean teacher return (median, IQR)',
             title='Distilling a teacher that errs in 25% of the states')
    right.set(ylabel='KL(noisy π‖π_θ), teacher-visit weighted', yscale='log', title='KL to the noisy teacher')
    for axis in (left, right):
      _steps_axis(axis)
    left.legend(fontsize=8)
