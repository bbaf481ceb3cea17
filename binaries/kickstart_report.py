"""The kickstart study's measure and verdict, as functions (no flags): when a student reaches the teacher,
its final return, and the report that puts the final returns of both students and of the teacher beside the
speed-up. `binaries/kickstart_study_main.py` runs the study and calls these.

Two rules keep the report from reading noise as success:

* A student reaches the teacher at the first of `consecutive` evaluations in a row whose mean returns are
  all at least the target. One evaluation is a handful of episodes: a from-scratch CartPole seed read 500
  once at 2,048 steps and 144 at the next evaluation.
* The speed-up is a success (printed in bold) only when the kickstarted students also end where kickstarting
  should leave them: their mean final return at least the scratch students' and at least the target. A
  student that reaches the teacher quickly and then collapses is faster, not better.
"""

import math
from typing import List, Optional, Sequence

import numpy as np


def steps_to_reach(evaluations: Sequence[dict], target: float, consecutive: int = 3) -> Optional[int]:
  """Env steps of the first of `consecutive` evaluations in a row with `return_mean >= target`; None if none.

  A run whose last evaluations reach the target but are fewer than `consecutive` has not reached it.

  Args:
    evaluations: a train_main summary's 'evaluations', in order, each with 'env_steps' and 'return_mean'.
    target: the return to reach.
    consecutive: evaluations in a row that must reach it, >= 1.
  """
  if consecutive < 1:
    raise ValueError(f'consecutive must be >= 1, got {consecutive}.')
  run = 0
  for index, evaluation in enumerate(evaluations):
    run = run + 1 if evaluation['return_mean'] >= target else 0
    if run == consecutive:
      return evaluations[index - consecutive + 1]['env_steps']
  return None


def final_return(summary: dict):
  """(mean return, its standard error) of a run's final evaluation (std / √episodes; NaN for 1 episode)."""
  episodes = summary.get('eval_episodes') or 0
  std = summary.get('eval_return_std')
  standard_error = (std / math.sqrt(episodes)) if std is not None and episodes > 1 else float('nan')
  return float(summary['eval_return_mean']), float(standard_error)


def _spread(values: Sequence[float]) -> float:
  """The standard deviation over seeds (ddof 1; 0 for a single seed)."""
  return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def summarize(method: str, summaries: List[dict], target: float, consecutive: int = 3) -> dict:
  """One row of the report: a method's steps to reach `target` and final returns over its seeds."""
  reached = [steps_to_reach(s['evaluations'], target, consecutive) for s in summaries]
  finals = [final_return(s) for s in summaries]
  final_returns = [mean for mean, _ in finals]
  return {
      'method': method,
      'seeds': len(summaries),
      'reached': sum(r is not None for r in reached),
      'steps_to_reach': reached,
      # Seeds that never reach count as "beyond the budget" (infinite) in the median.
      'median_steps_to_reach': float(np.median([np.inf if r is None else r for r in reached])),
      'final_returns': final_returns,
      'final_standard_errors': [se for _, se in finals],
      'final_mean': float(np.mean(final_returns)),
      'final_std': _spread(final_returns),
      'median_final_return': float(np.median(final_returns)),
      'budget_env_steps': max(s['env_steps'] for s in summaries),
      'train_seconds': [round(s.get('train_seconds_this_run', 0.0), 1) for s in summaries],
  }


def verdict(rows: List[dict], target: float) -> dict:
  """The speed-up (scratch / kickstarted median steps to reach the target) and whether it is a success.

  Returns a dict: 'speedup' (None when the kickstarted median never reaches the target), 'speedup_is_bound'
  (True when the scratch median never reaches it: the ratio is a lower bound, the scratch budget over the
  kickstarted median), 'success', and 'reasons' (why it is not one, in words).
  """
  by_method = {row['method']: row for row in rows}
  kick, scratch = by_method['kickstarted'], by_method['scratch']
  speedup, is_bound, reasons = None, False, []
  kick_steps, scratch_steps = kick['median_steps_to_reach'], scratch['median_steps_to_reach']
  if np.isfinite(kick_steps) and kick_steps > 0:
    if np.isfinite(scratch_steps):
      speedup = scratch_steps / kick_steps
    else:
      speedup, is_bound = scratch['budget_env_steps'] / kick_steps, True
  else:
    reasons.append('the kickstarted median never reaches the teacher')
  if kick['final_mean'] < scratch['final_mean']:
    reasons.append(f'the kickstarted students end below their scratch twins ({kick["final_mean"]:.1f} against '
                   f'{scratch["final_mean"]:.1f})')
  if kick['final_mean'] < target:
    reasons.append(f'the kickstarted students end below the target ({kick["final_mean"]:.1f} against '
                   f'{target:.1f})')
  return {'speedup': speedup, 'speedup_is_bound': is_bound, 'success': not reasons, 'reasons': reasons}


def _mean_and_spread(row: dict) -> str:
  return f'{row["final_mean"]:.1f} ± {row["final_std"]:.1f}'


def table(rows: List[dict], teacher_score: float, target: float, consecutive: int,
          teacher_standard_error: Optional[float] = None, score_source: str = 'final evaluation') -> str:
  """The markdown report: the table per method, the final returns beside the teacher's, the verdict."""
  teacher_text = f'{teacher_score:.2f}'
  if teacher_standard_error is not None and np.isfinite(teacher_standard_error):
    teacher_text += f' ± {teacher_standard_error:.2f} (standard error)'
  lines = [f'Teacher score ({score_source}): {teacher_text}; a student reaches it at the first of {consecutive} '
           f'consecutive evaluations whose mean returns are all >= {target:.2f}.', '',
           '| student | budget (env steps) | seeds reaching the teacher | median env steps to reach it | '
           'per seed | final return, mean ± std over seeds | final returns per seed (± standard error) |',
           '|---|---|---|---|---|---|---|']
  for row in rows:
    median = row['median_steps_to_reach']
    median_text = '—' if not np.isfinite(median) else f'{median:,.0f}'
    per_seed = ', '.join('never' if r is None else f'{r:,}' for r in row['steps_to_reach'])
    finals = ', '.join(f'{r:.1f}' + ('' if not np.isfinite(se) else f' ± {se:.1f}')
                       for r, se in zip(row['final_returns'], row['final_standard_errors']))
    lines.append(f'| {row["method"]} | {row["budget_env_steps"]:,} | {row["reached"]}/{row["seeds"]} | '
                 f'{median_text} | {per_seed} | {_mean_and_spread(row)} | {finals} |')
  by_method = {row['method']: row for row in rows}
  seeds = by_method['kickstarted']['seeds']
  lines += ['', f'Final returns (last evaluation, mean ± std over {seeds} seeds): kickstarted '
                f'{_mean_and_spread(by_method["kickstarted"])}, scratch {_mean_and_spread(by_method["scratch"])}, '
                f'teacher {teacher_text}.']
  result = verdict(rows, target)
  speedup, note = result['speedup'], ''
  if speedup is None:
    ratio = 'none (the kickstarted median never reaches the teacher)'
  else:
    ratio = f'> {speedup:.1f}×' if result['speedup_is_bound'] else f'{speedup:.1f}×'
    if result['speedup_is_bound']:
      note = f' (the scratch median did not reach it within {by_method["scratch"]["budget_env_steps"]:,} env steps)'
  heading = 'Scratch / kickstarted steps to reach the teacher (medians): '
  if result['success']:
    lines += ['', f'{heading}**{ratio}**{note}, and the kickstarted students end at or above the target and '
                  'their scratch twins.']
  else:
    lines += ['', f'{heading}{ratio}{note}. Not a success: ' + '; '.join(result['reasons']) + '.']
  return '\n'.join(lines)
