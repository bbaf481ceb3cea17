"""Kickstarting end to end: the study binary, as a user runs it, on CartPole.

The claim under test: a student kickstarted by a trained teacher (a policy exported by train_main and
loaded back as a teacher) is far ahead of its from-scratch twin at equal env steps. The teacher is the
quick-start PPO (it stops once its evaluation reaches 475); the students are 128x128 ReLU MLPs, evaluated
every 2,048 agent steps over a 6,144-step budget.
"""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_MAIN = os.path.join(REPO, 'binaries', 'kickstart_study_main.py')


def test_the_kickstarted_student_is_far_ahead_of_its_twin(tmp_path):
  root = tmp_path / 'study'
  result = subprocess.run(
      [sys.executable, STUDY_MAIN, f'--root_dir={root}', '--seeds=1', '--teacher_gin_file=quickstart.gin',
       '--student_gin_file=kickstart_cartpole.gin', '--student_gin_bindings=train.total_env_steps = 6144',
       '--reach_fraction=0.9', '--teacher_eval_episodes=8', '--teacher_eval_greedy'],
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
  assert rows['kickstarted']['reached'] == 1, rows
  assert (root / 'curves.png').stat().st_size > 10_000
  assert 'Scratch / kickstarted steps' in (root / 'study.md').read_text()

  # The kickstarted run logged the teacher's weight and the distillation term.
  tags = set()
  for event_file in tf.io.gfile.glob(str(root / 'kickstarted_seed0' / 'summaries' / 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(event_file):
      tags.update(value.tag for value in event.summary.value)
  for tag in ('learner/kickstart/lambda_teacher_0', 'learner/kickstart/cross_entropy_teacher_0',
              'learner/kickstart/loss'):
    assert tag in tags, sorted(tags)
