"""Kickstarting end to end: the study binary, as a user runs it, on CartPole, and the report it writes.

The claim under test: a student kickstarted by a trained teacher (a policy exported by train_main and
loaded back as a teacher) is far ahead of its from-scratch twin at equal env steps. The teacher is the
quick-start PPO (it stops once its evaluation reaches 475); the students are 128x128 ReLU MLPs, evaluated
every 2,048 agent steps over a 6,144-step budget. The report's rules (`binaries/kickstart_report.py`: a
student reaches the teacher only with several evaluations in a row; a speed-up is a success only when the
kickstarted students also end at or above the target and their scratch twins) are checked on hand-made
summaries, among them the finals of the study that printed "> 15.0×" while every kickstarted student ended
below its scratch twin.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from protege.binaries import kickstart_report

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_MAIN = os.path.join(REPO, 'binaries', 'kickstart_study_main.py')


def test_the_kickstarted_student_is_far_ahead_of_its_twin(tmp_path):
  root = tmp_path / 'study'
  result = subprocess.run(
      [sys.executable, STUDY_MAIN, f'--root_dir={root}', '--seeds=1', '--teacher_gin_file=quickstart.gin',
       '--student_gin_file=kickstart_cartpole.gin', '--student_gin_bindings=train.total_env_steps = 6144',
       '--reach_fraction=0.9', '--reach_evaluations=2', '--teacher_eval_episodes=8', '--teacher_eval_greedy',
       '--parallel_runs=2'],  # the kickstarted and the scratch student at once
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  study = json.loads((root / 'study.json').read_text())
  assert json.loads((root / 'teacher' / 'summary.json').read_text())['eval_return_mean'] >= 475
  # The target is the teacher's score on 8 fresh episodes (eval_main), not its run's last evaluation.
  assert study['teacher_eval']['episodes'] == 8, study['teacher_eval']
  assert study['teacher_score'] == study['teacher_eval']['return_mean'] > 400, study['teacher_eval']
  assert study['target'] == 0.9 * study['teacher_score']
  curves = {}
  for method in ('kickstarted', 'scratch'):
    summary = json.loads((root / f'{method}_seed0' / 'summary.json').read_text())
    curves[method] = [e['return_mean'] for e in summary['evaluations']]
    assert len(curves[method]) == 3, curves
  # Equal steps, wide margin: the scratch twin's early CartPole returns are ~20-200.
  assert np.mean(curves['kickstarted']) > np.mean(curves['scratch']) + 150, curves
  rows = {row['method']: row for row in study['students']}
  assert study['reach_evaluations'] == 2
  assert rows['kickstarted']['reached'] == 1, rows
  # Reached at the first of two evaluations in a row at or above the target.
  assert rows['kickstarted']['steps_to_reach'][0] == kickstart_report.steps_to_reach(
      json.loads((root / 'kickstarted_seed0' / 'summary.json').read_text())['evaluations'], study['target'], 2)
  # Final returns beside the speed-up: each seed's with its standard error, mean ± std over seeds.
  for method in ('kickstarted', 'scratch'):
    summary = json.loads((root / f'{method}_seed0' / 'summary.json').read_text())
    assert rows[method]['final_returns'] == [summary['eval_return_mean']]
    assert rows[method]['final_standard_errors'][0] == pytest.approx(
        summary['eval_return_std'] / np.sqrt(summary['eval_episodes']))
  assert study['verdict']['success'] == (rows['kickstarted']['final_mean'] >= rows['scratch']['final_mean']
                                         and rows['kickstarted']['final_mean'] >= study['target']), study
  assert (root / 'curves.png').stat().st_size > 10_000
  report = (root / 'study.md').read_text()
  assert 'Scratch / kickstarted steps' in report
  assert (f'Final returns (last evaluation, mean ± std over 1 seeds): kickstarted '
          f'{rows["kickstarted"]["final_mean"]:.1f} ± 0.0, scratch {rows["scratch"]["final_mean"]:.1f} ± 0.0, '
          f'teacher {study["teacher_score"]:.2f} ± ') in report, report

  # The kickstarted run logged the teacher's weight and the distillation term.
  tags = set()
  for event_file in tf.io.gfile.glob(str(root / 'kickstarted_seed0' / 'summaries' / 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(event_file):
      tags.update(value.tag for value in event.summary.value)
  for tag in ('learner/kickstart/lambda_teacher_0', 'learner/kickstart/cross_entropy_teacher_0',
              'learner/kickstart/loss'):
    assert tag in tags, sorted(tags)


def _summary(returns, final_std=0.0, episodes=10, interval=2048):
  """A train_main summary.json with these evaluation means, the last one the final evaluation."""
  return {'evaluations': [{'env_steps': interval * (i + 1), 'return_mean': r} for i, r in enumerate(returns)],
          'eval_return_mean': returns[-1], 'eval_return_std': final_std, 'eval_episodes': episodes,
          'env_steps': interval * len(returns), 'train_seconds_this_run': 1.0}


def test_reaching_the_teacher_takes_consecutive_evaluations():
  # A from-scratch seed's single lucky evaluation at 2,048 steps (seen on CartPole) is not reaching it.
  evaluations = _summary([500, 144, 221, 500, 500, 499, 500, 500])['evaluations']
  assert kickstart_report.steps_to_reach(evaluations, 500, consecutive=1) == 2048
  assert kickstart_report.steps_to_reach(evaluations, 500, consecutive=2) == 4 * 2048
  assert kickstart_report.steps_to_reach(evaluations, 500, consecutive=3) is None  # 499 breaks the run
  assert kickstart_report.steps_to_reach(evaluations, 499, consecutive=3) == 4 * 2048
  # Two at the end of the run are fewer than three: not reached.
  assert kickstart_report.steps_to_reach(_summary([10, 500, 500])['evaluations'], 500, consecutive=3) is None
  with pytest.raises(ValueError):
    kickstart_report.steps_to_reach(evaluations, 500, consecutive=0)


def test_final_returns_carry_their_standard_error_and_spread_over_seeds():
  row = kickstart_report.summarize('scratch', [_summary([100, 409.4], final_std=20.0, episodes=16),
                                               _summary([100, 488.2]), _summary([100, 500.0])], 450, 1)
  assert row['final_returns'] == [409.4, 488.2, 500.0]
  assert row['final_standard_errors'] == pytest.approx([5.0, 0.0, 0.0])  # 20 / sqrt(16)
  assert row['final_mean'] == pytest.approx(465.8667, abs=1e-3)
  assert row['final_std'] == pytest.approx(np.std([409.4, 488.2, 500.0], ddof=1))
  assert row['steps_to_reach'] == [None, 4096, 4096] and row['reached'] == 2
  assert row['median_steps_to_reach'] == 4096


def test_a_speedup_is_no_success_when_the_kickstarted_students_end_below_scratch():
  # The CartPole study of issue 17: kickstarted students held 500 early, then collapsed once lambda reached 0;
  # the scratch students reached 500 late and stayed. Faster, and worse at the end.
  kick = [_summary([500, 500, 500, 500, 154.8]), _summary([500, 500, 500, 500, 274.6]),
          _summary([500, 500, 500, 500, 270.4])]
  scratch = [_summary([20, 100, 200, 300, 409.4]), _summary([20, 100, 200, 300, 488.2]),
             _summary([20, 100, 200, 300, 500.0])]
  rows = [kickstart_report.summarize('kickstarted', kick, 500, 3),
          kickstart_report.summarize('scratch', scratch, 500, 3)]
  result = kickstart_report.verdict(rows, 500)
  assert result['speedup'] == pytest.approx(5 * 2048 / 2048) and result['speedup_is_bound']
  assert not result['success']
  assert any('below their scratch twins (233.3 against 465.9)' in r for r in result['reasons']), result
  assert any('below the target' in r for r in result['reasons']), result
  text = kickstart_report.table(rows, 500.0, 500.0, 3, teacher_standard_error=0.0)
  assert '**' not in text, text
  assert 'Not a success: ' in text
  assert 'kickstarted 233.3 ± 68.0, scratch 465.9 ± 49.3, teacher 500.00 ± 0.00 (standard error)' in text, text

  # The same speed-up with students that hold the teacher's score to the end is one, in bold.
  kick = [_summary([500, 500, 500, 500, 500.0]) for _ in range(3)]
  rows[0] = kickstart_report.summarize('kickstarted', kick, 500, 3)
  result = kickstart_report.verdict(rows, 500)
  assert result['success'] and result['reasons'] == []
  text = kickstart_report.table(rows, 500.0, 500.0, 3)
  assert '**> 5.0×** (the scratch median did not reach it within 10,240 env steps)' in text, text


def test_no_speedup_when_the_kickstarted_students_never_hold_the_teacher():
  kick = [_summary([500, 120, 500, 130, 500])]
  scratch = [_summary([20, 100, 200, 300, 400])]
  rows = [kickstart_report.summarize('kickstarted', kick, 500, 2),
          kickstart_report.summarize('scratch', scratch, 500, 2)]
  result = kickstart_report.verdict(rows, 500)
  assert result['speedup'] is None and not result['success']
  assert 'none (the kickstarted median never reaches the teacher)' in kickstart_report.table(rows, 500, 500, 2)


def test_a_student_that_cannot_start_stops_the_study_with_one_line(tmp_path):
  teacher = tmp_path / 'teacher' / 'policy'
  teacher.mkdir(parents=True)
  (teacher.parent / 'summary.json').write_text(json.dumps(_summary([500.0])))
  result = subprocess.run(
      [sys.executable, STUDY_MAIN, f'--root_dir={tmp_path / "study"}', f'--teacher_policy={teacher}',
       '--student_gin_file=kickstart_cartpole.gin', '--student_gin_bindings=PPOLearner.bogus = 1', '--seeds=2',
       '--parallel_runs=2'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stdout + result.stderr
  errors = [line for line in result.stderr.splitlines() if line.startswith('kickstart_study_main: error:')]
  assert len(errors) == 1 and "parameter named 'bogus'" in errors[0], result.stderr[-2000:]
  assert errors[0].count('--traceback') == 1 and 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert not (tmp_path / 'study' / 'study.json').exists()
  # --parallel_runs below 1 is refused before anything is written.
  result = subprocess.run([sys.executable, STUDY_MAIN, f'--root_dir={tmp_path / "other"}', '--parallel_runs=0'],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0 and '--parallel_runs=0' in result.stderr
  assert not (tmp_path / 'other').exists()
