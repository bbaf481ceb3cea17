r"""The random-MDP study of "Distilling Policy Distillation" (Czarnecki et al., AISTATS 2019, 1902.02186):
its parts run one after the other, with console progress; writes the tables, study.json and the figures.

`run_study(config, output_dir)` is the whole study (`binaries/random_mdp_study_main.py` parses the flags into
the `StudyConfig` and calls it). The trainer and the choices it makes: `studies/random_mdp_training.py`; the
tables and figures: `studies/random_mdp_report.py`. Three parts:

1. `sampling`: every variant at its own learning rate, 4 actions, M MDPs; then teacher_distill
   (teacher-driven) against on_policy_distill (student-driven) at common learning rates: the two differ in
   who samples and in nothing else.
2. `actions`: entropy_regularised against expected_entropy_regularised as the action count grows (4, 10,
   100, 1000), on the first `sweep_num_mdps` (100) of the MDPs: at 1,000 actions a student table is
   400 x 1,000 logits per MDP, and 1,000 MDPs of them would not fit the 10-minute budget.
3. `noisy`: a teacher that takes a wrong move in 25% of the states; on_policy_distill (pure cloning)
   against on_policy_distill_with_reward (+R), value_gated (+R, gated) and two other reward-aware variants.

Outputs in `output_dir`: `study.md` (tables), `study.json` (configuration, per-variant summaries and
median/quartile learning curves; a step count of null means never reached), and the plots
`sampling_curves.png`, `common_rates.png`, `action_sweep.png`, `noisy_teacher.png`. The console shows the part, each finished
run, the elapsed time and an ETA.
"""

import dataclasses
import json
import math
import os
import time
from typing import Dict, List, Optional, Tuple

import tensorflow as tf

from protege.envs import random_mdp
from protege.runtime import run_directory
from protege.studies import random_mdp_report as report
from protege.studies import random_mdp_training as training


class Progress:
  """Console progress: part, run, elapsed time and an ETA from the runs' measured cost."""

  def __init__(self, planned_work: float):
    self._start = time.time()
    self._planned = planned_work
    self._done = 0.0

  def report(self, part: str, message: str, work: float):
    self._done += work
    elapsed = time.time() - self._start
    eta = elapsed / max(self._done, 1e-9) * max(self._planned - self._done, 0.0)
    print(f'[{part}] {message} | elapsed {elapsed / 60:.1f} min, ETA {eta / 60:.1f} min', flush=True)


def _cost(num_actions: int) -> float:
  """Relative cost of an MDP-update with `num_actions` actions (measured: ~1 at 4, ~60 at 1000)."""
  return 1.0 + num_actions / 15.0


def _run_work(config: training.StudyConfig) -> Dict[str, float]:
  """Relative cost of each part (MDP-updates, times actions/4 for the sweep), for the ETA."""
  work = {'sampling': len(config.sampling_variants) * config.num_mdps * config.updates,
          'sampling_common_rates': (2 * len(config.common_rates) * config.num_mdps
                                    * config.common_rate_updates),
          'noisy': len(training.NOISY_VARIANTS) * config.num_mdps * config.noisy_updates,
          'actions': sum(len(training.ACTION_SWEEP_VARIANTS) * config.sweep_num_mdps * config.sweep_updates * _cost(a)
                         for a in config.action_counts)}
  if 'sampling' in config.parts:
    config_parts = list(config.parts) + ['sampling_common_rates']
  else:
    config_parts = list(config.parts)
  return {part: work[part] for part in config_parts}


def _json_safe(value):
  """`value` with inf ("never reached") as None and tuples as lists, so study.json is strict JSON."""
  if isinstance(value, dict):
    return {key: _json_safe(item) for key, item in value.items()}
  if isinstance(value, (list, tuple)):
    return [_json_safe(item) for item in value]
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value



@dataclasses.dataclass
class _Study:
  """What every part shares: the configuration, the drawn MDPs with their optimal move values and the
  clean teacher's moves, the progress and each part's planned work, and where figures go (None: none)."""
  config: training.StudyConfig
  mdps: random_mdp.GridMDPs
  move_q: tf.Tensor
  clean_moves: tf.Tensor
  progress: Progress
  work: Dict[str, float]
  output_dir: Optional[str]

  def select(self, count: int) -> random_mdp.GridMDPs:
    """The first `count` MDPs."""
    return self.mdps if count == self.mdps.num_mdps else random_mdp.select_mdps(self.mdps, tf.range(count))

  def figure(self, name: str) -> Optional[str]:
    return None if self.output_dir is None else os.path.join(self.output_dir, name)


def _common_rate_comparison(study: _Study, part_mdps, teacher: training.Teacher,
                            rows: List[dict]) -> List[dict]:
  """Cloning the teacher with teacher-driven against student-driven sampling (the two variants differ in
  nothing else) at each of `common_rates`; a tuned row of the same rate and budget is reused."""
  config = study.config
  comparison = []
  for learning_rate in config.common_rates:
    pair = {}
    for variant in report.COMMON_RATE_VARIANTS:
      tuned = next((r for r in rows if r['variant'] == variant), None)
      if (tuned and tuned['learning_rate'] == learning_rate
          and config.common_rate_updates == config.updates):
        pair[variant] = tuned
        continue
      curves = training.train_variant(variant, part_mdps, teacher, config, config.common_rate_updates,
                                      config.seed, learning_rate)
      pair[variant] = training.summarize(variant, curves, teacher, config, learning_rate)
    comparison.append({'learning_rate': learning_rate, **{
        variant: {key: row[key] for key in ('steps_to_teacher_quartiles', 'fraction_reached',
                                            'final_return_over_teacher_quartiles', 'budget_steps',
                                            'final_kl_teacher_visits_quartiles',
                                            'final_kl_student_visits_quartiles', 'curve_steps',
                                            'curve_return_over_teacher_quartiles')}
        for variant, row in pair.items()}})
    teacher_steps = comparison[-1]['teacher_distill']['steps_to_teacher_quartiles']
    student_steps = comparison[-1]['on_policy_distill']['steps_to_teacher_quartiles']
    study.progress.report('sampling', f'common rate {learning_rate:g}: steps to teacher, teacher-driven '
                          f'{report.steps_text(teacher_steps)}, student-driven '
                          f'{report.steps_text(student_steps)}',
                          study.work['sampling_common_rates'] / max(len(config.common_rates), 1))
  return comparison


def _student_sees(config: training.StudyConfig) -> str:
  if not config.student_view:
    return 'the cell index (tabular)'
  return f'the {config.student_view} x {config.student_view} square around it'


def _finished(row: dict, seconds: float) -> str:
  """A run's progress line: its median steps to the teacher and final return / teacher."""
  return (f'median steps to teacher {report.steps_text(row["steps_to_teacher_quartiles"])}, final '
          f'return/teacher {row["final_return_over_teacher_quartiles"][1]:.3f} ({seconds:.0f} s)')


def _sampling_part(study: _Study) -> Tuple[dict, List[str]]:
  """Every variant at its own learning rate on 4 actions, then the common-rate comparison."""
  config = study.config
  part_mdps = study.select(config.num_mdps)
  teacher = training.make_teacher(part_mdps, study.clean_moves[:config.num_mdps], 4)
  rows = []
  for variant in config.sampling_variants:
    learning_rate = config.learning_rates[variant]
    curves = training.train_variant(variant, part_mdps, teacher, config, config.updates, config.seed,
                                    learning_rate)
    rows.append(training.summarize(variant, curves, teacher, config, learning_rate))
    study.progress.report('sampling', f'{variant}: {_finished(rows[-1], curves.seconds)}',
                          study.work['sampling'] / len(config.sampling_variants))
  comparison = _common_rate_comparison(study, part_mdps, teacher, rows)
  optimal = random_mdp.evaluate_policy(part_mdps, tf.one_hot(tf.argmax(study.move_q[:config.num_mdps], -1), 4))
  results = {'teacher_return_quartiles': training.quartiles(teacher.returns.numpy()),
             'optimal_return_quartiles': training.quartiles(optimal.returns.numpy()),
             'rows': rows,
             'common_rates': comparison,
             'best_common_rates': report.best_common_rates(comparison)}
  markdown = ['## Teacher-driven against student-driven sampling (4 actions)\n',
              f'Teacher\'s return (ε-greedy, exact), median (IQR) over MDPs: '
              f'{report.quartile_text(results["teacher_return_quartiles"], 2)}; the optimal '
              f'policy\'s: {report.quartile_text(results["optimal_return_quartiles"], 2)}. '
              'Each variant at its own learning rate:\n', report.sampling_table(rows), '',
              f'Cloning the teacher at common learning rates ({config.common_rate_updates} updates):\n',
              report.common_rate_table(comparison), '',
              'Each at its best of those rates (fewest median steps, on these same MDPs):\n',
              report.best_rate_text(results['best_common_rates']), '']
  path = study.figure('sampling_curves.png')
  if path:
    report.plot_sampling(rows, path, config.reach_fraction)
  path = study.figure('common_rates.png')
  if path and comparison:
    report.plot_common_rates(comparison, path, config.reach_fraction)
  return results, markdown


def _actions_part(study: _Study) -> Tuple[dict, List[str]]:
  """entropy_regularised against expected_entropy_regularised at each action count."""
  config = study.config
  part_mdps = study.select(config.sweep_num_mdps)
  rows = []
  for count in config.action_counts:
    teacher = training.make_teacher(part_mdps, study.clean_moves[:config.sweep_num_mdps], count)
    for variant in training.ACTION_SWEEP_VARIANTS:
      learning_rate = config.sweep_learning_rates.get(f'{variant}@{count}', config.learning_rates[variant])
      curves = training.train_variant(variant, part_mdps, teacher, config, config.sweep_updates, config.seed,
                                      learning_rate)
      rows.append(dict(training.summarize(variant, curves, teacher, config, learning_rate), num_actions=count))
      study.progress.report('actions', f'{count} actions, {variant}: {_finished(rows[-1], curves.seconds)}',
                            study.work['actions'] * _cost(count)
                            / (len(training.ACTION_SWEEP_VARIANTS) * sum(_cost(a) for a in config.action_counts)))
  markdown = ['## Action-count sweep: entropy regularised against expected entropy regularised\n',
              'Extra actions replicate the four moves (action a moves as a mod 4); the teacher and its '
              'return are the same at every count.\n', report.sweep_table(rows), '']
  path = study.figure('action_sweep.png')
  if path:
    report.plot_sweep(rows, path, config.reach_fraction)
  return {'rows': rows}, markdown


def _noisy_part(study: _Study) -> Tuple[dict, List[str]]:
  """The noisy teacher: each noisy variant against the clean teacher's and the noisy teacher's returns."""
  config = study.config
  part_mdps = study.select(config.num_mdps)
  clean_returns = random_mdp.evaluate_policy(part_mdps, study.clean_moves[:config.num_mdps]).returns.numpy()
  noisy_moves = training.teacher_move_probs(part_mdps, study.move_q[:config.num_mdps], config.teacher_epsilon,
                                            noisy_fraction=config.noisy_fraction, seed=config.seed + 1)
  teacher = training.make_teacher(part_mdps, noisy_moves, 4)
  noisy_teacher = {'return_over_clean_quartiles': training.quartiles(teacher.returns.numpy() / clean_returns)}
  rows = []
  for variant in training.NOISY_VARIANTS:
    learning_rate = config.learning_rates[variant]
    curves = training.train_variant(variant, part_mdps, teacher, config, config.noisy_updates, config.seed,
                                    learning_rate)
    rows.append(training.summarize(variant, curves, teacher, config, learning_rate,
                                   reference_returns=clean_returns))
    final = rows[-1]['final_return_over_clean_teacher_quartiles'][1]
    study.progress.report('noisy', f'{variant}: final return / clean teacher {final:.3f} '
                          f'({curves.seconds:.0f} s)',
                          study.work['noisy'] / len(training.NOISY_VARIANTS))
  markdown = [f'## A teacher that errs in {config.noisy_fraction:.0%} of the states\n',
              f'{config.noisy_updates} updates per variant '
              f'({config.noisy_updates * config.steps_per_update:,} env steps per MDP).\n',
              report.noisy_table(rows, noisy_teacher), '']
  path = study.figure('noisy_teacher.png')
  if path:
    report.plot_noisy(rows, noisy_teacher, path)
  return {'noisy_teacher': noisy_teacher, 'rows': rows}, markdown


_PART_RUNNERS = {'sampling': _sampling_part, 'actions': _actions_part, 'noisy': _noisy_part}


def _draw_mdps(config: training.StudyConfig):
  """`(mdps, move_q, clean_moves)`: the MDPs every part needs, their optimal move values, the clean teacher."""
  start = time.time()
  num_generated = max(config.num_mdps if set(config.parts) & {'sampling', 'noisy'} else 0,
                      config.sweep_num_mdps if 'actions' in config.parts else 0)
  mdps = random_mdp.generate_grid_mdps(
      num_generated, height=config.grid_size, width=config.grid_size,
      wall_probability=config.wall_probability, reward_probability=config.reward_probability,
      noise=config.transition_noise, seed=config.seed)
  _, move_q = random_mdp.value_iteration(mdps)
  clean_moves = training.teacher_move_probs(mdps, move_q, config.teacher_epsilon)
  print(f'{num_generated} MDPs of {config.grid_size} x {config.grid_size} drawn and solved in '
        f'{time.time() - start:.1f} s', flush=True)
  return mdps, move_q, clean_moves


def run_study(config: training.StudyConfig, output_dir: str, plots: bool = True) -> dict:
  """Runs the parts of `config`; writes study.md, study.json and the plots; returns the JSON dict."""
  os.makedirs(output_dir, exist_ok=True)
  start = time.time()
  mdps, move_q, clean_moves = _draw_mdps(config)
  work = _run_work(config)
  study = _Study(config, mdps, move_q, clean_moves, Progress(sum(work.values())), work,
                 output_dir if plots else None)
  results = {'config': dataclasses.asdict(config), 'parts': {}}
  markdown = [f'Random-MDP study of "Distilling Policy Distillation": {config.num_mdps} MDPs '
              f'({config.sweep_num_mdps} in the action sweep) of {config.grid_size} x {config.grid_size}, '
              f'η = {config.transition_noise}, ε-greedy teacher ε = {config.teacher_epsilon}, '
              f'student sees {_student_sees(config)}, '
              f'{config.envs_per_mdp} envs x {config.unroll_length} steps per MDP per update, '
              f'seed {config.seed}. '
              f'"Steps" are environment steps per MDP; the target is {config.reach_fraction:.0%} of the '
              f'teacher\'s exact expected return.\n']
  for part in training.PARTS:
    if part in config.parts:
      results['parts'][part], part_markdown = _PART_RUNNERS[part](study)
      markdown += part_markdown

  results['seconds'] = round(time.time() - start, 1)
  markdown.append(f'Wall time: {results["seconds"] / 60:.1f} min.')
  with run_directory.atomic_file(os.path.join(output_dir, 'study.md')) as f:
    f.write('\n'.join(markdown) + '\n')
  with run_directory.atomic_file(os.path.join(output_dir, 'study.json')) as f:
    json.dump(_json_safe(results), f, indent=1)
  print('\n'.join(markdown), flush=True)
  return results
