r"""Multi-teacher kickstarting against learning from scratch, game by game: the Kickstarting paper's measures
read from finished runs of a several-game environment (`gin/kickstart_minatar_multitask.gin`,
`gin/kickstart_impala_minatar_multitask.gin` and their from-scratch twins).

  python binaries/multitask_kickstart_report_main.py --output_dir=runs/multitask_report \
      --kickstarted=runs/kick_s0,runs/kick_s1,runs/kick_s2 --scratch=runs/scratch_s0,runs/scratch_s1,runs/scratch_s2 \
      --teacher_scores='MinAtar/Breakout-v0=19.1,MinAtar/SpaceInvaders-v0=109.7'

The runs' evaluations are read from their TensorBoard summaries (`eval_tasks/<game>/return_mean`: each game's
episodes of every evaluation, resumes included), so a run must come from a version of train_main that logs
them. The i-th kickstarted run is compared with the i-th scratch run (the same seed). For each game, and for
the teacher-normalised score (the mean over the games of return / teacher's score: the paper's multi-task
score is a mean of normalised scores, and raw returns would let the game with the largest returns decide):

* **to the teacher's score**: the env steps at which each student first holds it (`--consecutive`
  evaluations in a row at or above it; `binaries/kickstart_report.py`'s rule), and scratch / kickstarted;
* **to the scratch agent's final score** (the paper's ~10×): the scratch twin's final (the mean of its last
  `--consecutive` evaluations), the steps at which the kickstarted student first holds it, and those at which
  the twin itself does (a twin that holds it only over its last evaluations counts its last one, marked *);
* **finals**: each student's last evaluation, and kickstarted / scratch.

A student that never holds a target within its run reads 'never'; a ratio is a lower bound ('≥') when the scratch
student never gets there (its last evaluation counts) or the kickstarted one is there at its first evaluation.
Written to `<output_dir>/report.md`, `report.json` and `curves.png` (each game's curves, kickstarted and
scratch per seed, with the teacher's score).
"""

import json
import os
from typing import Dict, List, Optional, Sequence

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags
import numpy as np

from protege.agents.training import summaries
from protege.binaries import common
from protege.binaries import kickstart_report
from protege.runtime import errors
from protege.runtime import plotting

flags.DEFINE_list('kickstarted', None, 'Run directories of the kickstarted students, one per seed.')
flags.DEFINE_list('scratch', None, 'Run directories of their from-scratch twins, in the same seed order.')
flags.DEFINE_string('teacher_scores', None, "Each game's teacher's score: 'GAME=SCORE,GAME=SCORE' with the games "
                    "as the runs name them (e.g. 'MinAtar/Breakout-v0=19.1,MinAtar/SpaceInvaders-v0=109.7').")
flags.DEFINE_integer('consecutive', 3, 'Evaluations in a row that must all reach a target for a student to hold it.')
flags.DEFINE_string('output_dir', None, 'Where report.md, report.json and curves.png are written.')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')
flags.mark_flags_as_required(['kickstarted', 'scratch', 'teacher_scores', 'output_dir'])
FLAGS = flags.FLAGS

NORMALISED = 'teacher-normalised mean'
_TAG = 'eval_tasks/{}/return_mean'
PAPER = ('The Kickstarting paper (Schmitt et al. 2018, IMPALA on DMLab-30, multi-teacher): the kickstarted agent '
         "reaches the from-scratch agent's final score in ~10x fewer steps and ends 42% above it.")


def parse_teacher_scores(text: str) -> Dict[str, float]:
  """`{game: score}` from 'GAME=SCORE,GAME=SCORE'; raises ConfigError naming a malformed part."""
  scores = {}
  for part in filter(None, (p.strip() for p in text.split(','))):
    game, _, score = part.rpartition('=')
    try:
      value = float(score)
    except ValueError:
      value = float('nan')
    if not game or not np.isfinite(value) or value <= 0:
      raise errors.ConfigError(f"--teacher_scores part {part!r} is not GAME=SCORE with a score > 0 (e.g. "
                               "'MinAtar/Breakout-v0=19.1').")
    scores[game] = value
  if not scores:
    raise errors.ConfigError('--teacher_scores is empty; give each game\'s teacher score as GAME=SCORE,GAME=SCORE.')
  return scores


def read_curves(run_dir: str, games: Sequence[str]) -> Dict[str, List[dict]]:
  """`{game: [{'env_steps', 'return_mean'}, ...]}`: the run's evaluations of each of `games`, in step order."""
  if not os.path.isdir(os.path.join(run_dir, 'summaries')):
    raise errors.ConfigError(f'run {run_dir!r} has no summaries/ folder: give the run directories train_main '
                             'wrote (its --root_dir).')
  scalars = summaries.read_scalars(os.path.join(run_dir, 'summaries'),
                                   keep=lambda tag: tag.startswith('eval_tasks/'))
  missing = [game for game in games if _TAG.format(game) not in scalars]
  if missing:
    found = sorted({tag.split('/', 1)[1].rsplit('/', 1)[0] for tag in scalars})
    raise errors.ConfigError(
        f'run {run_dir!r} has no per-game evaluations of {missing} (it logs {found or "none"}); the games of '
        '--teacher_scores must be those of the run, and the run must come from a train_main that logs '
        'eval_tasks/<game>/return_mean.')
  curves = {}
  for game in games:
    steps, values = scalars[_TAG.format(game)]
    curves[game] = [{'env_steps': int(s), 'return_mean': float(v)} for s, v in zip(steps, values)]
  return curves


def normalised(curves: Dict[str, List[dict]], scores: Dict[str, float]) -> List[dict]:
  """The mean over the games of return / teacher's score, at the evaluations every game has."""
  by_step = [{e['env_steps']: e['return_mean'] / scores[game] for e in curves[game]} for game in scores]
  steps = sorted(set.intersection(*(set(points) for points in by_step)))
  return [{'env_steps': s, 'return_mean': float(np.mean([points[s] for points in by_step]))} for s in steps]


def final_value(curve: List[dict], consecutive: int) -> float:
  """The mean of the last `consecutive` evaluations."""
  return float(np.mean([e['return_mean'] for e in curve[-consecutive:]]))


def _ratio(numerator: Optional[int], denominator: Optional[int], budget: int, first_evaluation: int) -> dict:
  """scratch / kickstarted steps; a lower bound when the scratch student never gets there (its budget counts)
  or the kickstarted one is there at its first evaluation (it may have been sooner)."""
  if denominator is None:
    return {'value': None, 'bound': False}
  return {'value': (budget if numerator is None else numerator) / denominator,
          'bound': numerator is None or denominator == first_evaluation}


def measure(kick: List[dict], scratch: List[dict], target: float, consecutive: int) -> dict:
  """One seed, one score: steps to the teacher's score (`target`) and to the twin's final, and the finals."""
  twin_final = final_value(scratch, consecutive)
  twin_holds = kickstart_report.steps_to_reach(scratch, twin_final, consecutive)
  budget = scratch[-1]['env_steps']
  twin_steps = budget if twin_holds is None else twin_holds  # held only over its last evaluations: its last one
  kick_teacher = kickstart_report.steps_to_reach(kick, target, consecutive)
  scratch_teacher = kickstart_report.steps_to_reach(scratch, target, consecutive)
  kick_twin = kickstart_report.steps_to_reach(kick, twin_final, consecutive)
  return {
      'kickstarted_to_teacher': kick_teacher, 'scratch_to_teacher': scratch_teacher,
      'to_teacher': _ratio(scratch_teacher, kick_teacher, budget, kick[0]['env_steps']),
      'scratch_final': twin_final, 'kickstarted_to_scratch_final': kick_twin,
      'scratch_to_scratch_final': twin_steps, 'scratch_final_only_at_the_end': twin_holds is None,
      'to_scratch_final': _ratio(twin_steps, kick_twin, budget, kick[0]['env_steps']),
      'kickstarted_last': kick[-1]['return_mean'], 'scratch_last': scratch[-1]['return_mean'],
  }


def report(kick_dirs: Sequence[str], scratch_dirs: Sequence[str], scores: Dict[str, float],
           consecutive: int) -> dict:
  """Every measure, per score (each game, then NORMALISED) and seed, with the curves they were read from."""
  if len(kick_dirs) != len(scratch_dirs) or not kick_dirs:
    raise errors.ConfigError(f'--kickstarted has {len(kick_dirs)} runs and --scratch {len(scratch_dirs)}; give '
                             'one scratch twin per kickstarted run, in the same seed order.')
  if consecutive < 1:
    raise errors.ConfigError(f'--consecutive={consecutive} must be >= 1.')
  curves = {}
  for method, dirs in (('kickstarted', kick_dirs), ('scratch', scratch_dirs)):
    curves[method] = []
    for run_dir in dirs:
      run = read_curves(run_dir, list(scores))
      run[NORMALISED] = normalised(run, scores)
      if min(len(points) for points in run.values()) < consecutive:
        raise errors.ConfigError(f'run {run_dir!r} has fewer than --consecutive={consecutive} evaluations.')
      curves[method].append(run)
  targets = dict(scores, **{NORMALISED: 1.0})
  results = {score: [measure(k[score], s[score], target, consecutive)
                     for k, s in zip(curves['kickstarted'], curves['scratch'])]
             for score, target in targets.items()}
  return {'teacher_scores': scores, 'consecutive': consecutive, 'kickstarted': list(kick_dirs),
          'scratch': list(scratch_dirs), 'results': results, 'curves': curves}


def _steps(value: Optional[int], star: bool = False) -> str:
  return 'never' if value is None else f'{value:,}' + ('*' if star else '')


def _times(ratio: dict) -> str:
  return '—' if ratio['value'] is None else ('≥ ' if ratio['bound'] else '') + f'{ratio["value"]:.1f}×'


def _median(ratios: List[dict]) -> str:
  values = [r['value'] for r in ratios]
  if any(v is None for v in values):
    return '—'
  return ('≥ ' if any(r['bound'] for r in ratios) else '') + f'{np.median(values):.1f}×'


def _row(*cells) -> str:
  return '| ' + ' | '.join(cells) + ' |'


def markdown(result: dict) -> str:
  """The report's tables, one row per score, seeds side by side."""
  scores, consecutive = result['teacher_scores'], result['consecutive']
  teachers = ', '.join(f'{game} {score:g}' for game, score in scores.items())
  lines = [f"Teachers' scores: {teachers}; the {NORMALISED} is the mean over the games of return / teacher's score "
           f'(1.0 = the teachers). A student holds a score at the first of {consecutive} evaluations in a row at '
           'or above it.', '',
           "| score | kickstarted, steps to the teacher's score | scratch | scratch / kickstarted | median |",
           '|---|---|---|---|---|']
  for score, seeds in result['results'].items():
    lines.append(_row(score, ', '.join(_steps(m['kickstarted_to_teacher']) for m in seeds),
                      ', '.join(_steps(m['scratch_to_teacher']) for m in seeds),
                      ', '.join(_times(m['to_teacher']) for m in seeds), _median([m['to_teacher'] for m in seeds])))
  lines += ['', '| score | scratch final (last evaluations) | kickstarted, steps to it | scratch, steps to it | '
                'scratch / kickstarted (the paper: ~10×) | median |', '|---|---|---|---|---|---|']
  for score, seeds in result['results'].items():
    lines.append(_row(score, ', '.join(f"{m['scratch_final']:.2f}" for m in seeds),
                      ', '.join(_steps(m['kickstarted_to_scratch_final']) for m in seeds),
                      ', '.join(_steps(m['scratch_to_scratch_final'], m['scratch_final_only_at_the_end'])
                                for m in seeds),
                      ', '.join(_times(m['to_scratch_final']) for m in seeds),
                      _median([m['to_scratch_final'] for m in seeds])))
  lines += ['', '| score | kickstarted, last evaluation | scratch, last evaluation | kickstarted / scratch (the '
                'paper: 1.42) |', '|---|---|---|---|']
  for score, seeds in result['results'].items():
    ratios = [m['kickstarted_last'] / m['scratch_last'] if m['scratch_last'] > 0 else float('nan') for m in seeds]
    lines.append(_row(score, ', '.join(f"{m['kickstarted_last']:.2f}" for m in seeds),
                      ', '.join(f"{m['scratch_last']:.2f}" for m in seeds), ', '.join(f'{r:.2f}' for r in ratios)))
  ends = {method: [run[NORMALISED][-1]['env_steps'] for run in result['curves'][method]]
          for method in ('kickstarted', 'scratch')}
  lines += ['', f'Last evaluations at (env steps): kickstarted {", ".join(f"{e:,}" for e in ends["kickstarted"])}; '
                f'scratch {", ".join(f"{e:,}" for e in ends["scratch"])}.']
  if len(set(ends['kickstarted'] + ends['scratch'])) > 1:
    lines.append('**Warning: the runs end at different steps** (a run stopped early, or a damaged event file read '
                 'up to its last whole record); the measures compare unequal budgets.')
  lines += ['', '(* the scratch twin holds its own final only over its last evaluations: its last one is counted.)',
            '', PAPER]
  return '\n'.join(lines)


def plot(path: str, result: dict) -> None:
  """Each score's evaluation curves: kickstarted (red) and scratch (blue) per seed, the teacher's score."""
  names = list(result['results'])
  with plotting.figure(path, 1, len(names), figsize=(4.5 * len(names), 4), dpi=100) as (_, axes):
    for axis, name in zip(np.atleast_1d(axes), names):
      for method, color in (('kickstarted', 'tab:red'), ('scratch', 'tab:blue')):
        plotting.run_lines(axis, [([e['env_steps'] for e in run[name]], [e['return_mean'] for e in run[name]])
                                  for run in result['curves'][method]], color, label=method, alpha=0.8,
                           linewidth=1.0)
      plotting.target_line(axis, result['teacher_scores'].get(name, 1.0), label='teacher')
      axis.set_title(name, fontsize=9)
      axis.set_xlabel('env steps')
      axis.legend(fontsize=7)
    np.atleast_1d(axes)[0].set_ylabel('evaluation return (mean)')


def main(argv):
  with common.one_line_errors('multitask_kickstart_report_main', show_traceback=FLAGS.traceback):
    if len(argv) > 1:
      raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
    result = report(FLAGS.kickstarted, FLAGS.scratch, parse_teacher_scores(FLAGS.teacher_scores), FLAGS.consecutive)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    text = markdown(result)
    with open(os.path.join(FLAGS.output_dir, 'report.md'), 'w') as f:
      f.write(text + '\n')
    with open(os.path.join(FLAGS.output_dir, 'report.json'), 'w') as f:
      json.dump(result, f, indent=1)
    plot(os.path.join(FLAGS.output_dir, 'curves.png'), result)
    print(text)
    print(f'\nWritten to {FLAGS.output_dir} (report.md, report.json, curves.png).', flush=True)


if __name__ == '__main__':
  app.run(main)
