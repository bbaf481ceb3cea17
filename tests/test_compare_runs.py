"""`binaries/compare_runs_main.py`: the training-curve measure by hand, and a run of the binary on two
train_main-shaped runs and a pbt_main-shaped population (their files written here, with known returns)."""

import json
import os
import subprocess
import sys

import numpy as np
import tensorflow as tf

from protege.binaries import run_comparison
from protege.pbt import lineage as lineage_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_windowed_curve_and_first_reaching_by_hand():
  steps = np.array([10, 20, 30, 40, 50])
  returns = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
  curve = run_comparison.windowed_curve(steps, returns, [5, 20, 45, 100], window=2)
  assert np.isnan(curve[0])                 # no episode finished yet
  assert curve[1:] == [1.5, 3.5, 4.5]       # (1+2)/2, (3+4)/2, (4+5)/2
  assert run_comparison.first_reaching(curve, [5, 20, 45, 100], 3.5) == 45
  assert run_comparison.first_reaching(curve, [5, 20, 45, 100], 9.0) is None


def test_a_members_teacher_weight_follows_its_lineage_through_an_exploit():
  # member_1 reports λ = 2 at 100 and 200 steps, copies a donor at 150 steps and goes on with λ = 0.5.
  events = [
      {'event': 'report', 'member': 'member_1', 'env_steps': 100, 'score': 1.0,
       'hyperparameters': {'learning_rate': 1e-3, 'lambda_teacher_0': 2.0}},
      {'event': 'report', 'member': 'member_1', 'env_steps': 200, 'score': 1.0,
       'hyperparameters': {'learning_rate': 1e-3, 'lambda_teacher_0': 2.0}},
      {'event': 'exploit', 'member': 'member_1', 'donor': 'member_0', 'donor_score': 5.0},
      {'event': 'explore', 'member': 'member_1', 'donor': 'member_0', 'env_steps': 150,
       'new': {'learning_rate': 1e-3, 'lambda_teacher_0': 0.5}},
      {'event': 'report', 'member': 'member_1', 'env_steps': 250, 'score': 5.0,
       'hyperparameters': {'learning_rate': 1e-3, 'lambda_teacher_0': 0.5}},
  ]
  weights = run_comparison.member_teacher_weights(lineage_lib.trajectories(events)['member_1'])
  assert list(weights) == ['teacher_0']
  steps, values = weights['teacher_0']
  curve = run_comparison.windowed_curve(steps, values, [50, 100, 200, 300], window=1)
  assert np.isnan(curve[0]) and curve[1:] == [2.0, 0.5, 0.5]  # from the exploit on: the explored value
  # A factorised search gives λ_k = λ · λ̂_k.
  factorised = run_comparison.member_teacher_weights(
      [{'env_steps': 10, 'hyperparameters': {'lambda_scale': 0.5, 'lambda_a': 2.0, 'lambda_b': 0.2}}])
  assert {name: list(v) for name, (_, v) in factorised.items()} == {'a': [1.0], 'b': [0.1]}


def _train_run(directory, episodes, env_steps, final_eval, lambdas=()):
  """A directory shaped like a finished train_main run: TensorBoard episode returns (and a kickstarted
  learner's λ of 'teacher_0') and summary.json."""
  os.makedirs(os.path.join(directory, 'summaries'))
  writer = tf.summary.create_file_writer(os.path.join(directory, 'summaries'))
  with writer.as_default():
    for step, value in episodes:
      tf.summary.scalar('env/episode_return', value, step=step)
    for step, value in lambdas:
      tf.summary.scalar('learner/kickstart/lambda_teacher_0', value, step=step)
  writer.close()
  with open(os.path.join(directory, 'summary.json'), 'w') as f:
    json.dump({'env_steps': env_steps, 'eval_return_mean': final_eval}, f)


def test_the_binary_compares_runs_and_a_population(tmp_path):
  # Method A: two runs of 400 steps; one return of 10 per 50 steps, the second run 20.
  # Method A's runs are kickstarted: λ falls from 1 by 0.25 every 100 steps.
  schedule = [(s, 1.0 - 0.25 * (s // 100)) for s in range(0, 401, 50)]
  _train_run(str(tmp_path / 'a_0'), [(s, 10.0) for s in range(50, 401, 50)], 400, 11.0, schedule)
  _train_run(str(tmp_path / 'a_1'), [(s, 20.0) for s in range(50, 401, 50)], 400, 21.0, schedule)
  # Method B: a population of 2, ready every 100 steps; member_1 reports 30 from step 200 on.
  population = tmp_path / 'pbt'
  population.mkdir()
  log = lineage_lib.LineageLog(str(population / 'lineage.jsonl'))
  for steps in (100, 200, 300, 400):
    log.record('report', member='member_0', env_steps=steps, score=5.0,
               hyperparameters={'lambda_teacher_0': 1.5})
    log.record('report', member='member_1', env_steps=steps, score=30.0 if steps >= 200 else 0.0,
               hyperparameters={'lambda_teacher_0': 0.2})
  # member_2 failed after its first report: no final evaluation.
  log.record('report', member='member_2', env_steps=100, score=1.0, hyperparameters={'lambda_teacher_0': 1.0})
  with open(population / 'population.json', 'w') as f:
    json.dump({'members': [{'member': 'member_0', 'env_steps': 400, 'eval_return_mean': 6.0},
                           {'member': 'member_1', 'env_steps': 300, 'eval_return_mean': 31.0},
                           {'member': 'member_2', 'env_steps': 100, 'eval_return_mean': None}]}, f)
  out = tmp_path / 'out'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'binaries', 'compare_runs_main.py'), f'--output_dir={out}',
       '--grid_env_steps=100', '--window=4', '--target=15', f'--runs=A:{tmp_path}/a_*',
       f'--population=B:{population}'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / 'comparison.json') as f:
    comparison = json.load(f)
  assert comparison['grid_env_steps'] == [100, 200, 300, 400]
  a, b = comparison['methods']['A'], comparison['methods']['B']
  assert [r['curve'] for r in a] == [[10.0] * 4, [20.0] * 4]
  assert [r['reached'] for r in a] == [None, 100]
  assert b[0]['curve'] == [5.0] * 4
  # member_1 ended at 300 steps: no value carried past its end.
  assert b[1]['curve'][:3] == [0.0, 30.0, 30.0]
  assert np.isnan(b[1]['curve'][3])
  assert [r['reached'] for r in b] == [None, 200, None]
  assert b[2]['curve'][0] == 1.0 and all(np.isnan(b[2]['curve'][1:]))
  assert [r['teacher_weights'] for r in a] == [{'teacher_0': [0.75, 0.5, 0.25, 0.0]}] * 2
  assert b[0]['teacher_weights'] == {'teacher_0': [1.5] * 4}
  assert b[1]['teacher_weights']['teacher_0'][:3] == [0.2] * 3 and np.isnan(b[1]['teacher_weights']['teacher_0'][3])
  table = (out / 'comparison.md').read_text()
  assert '| A | 11.0, 21.0 | 16.0 |' in table and '| B | 6.0, 31.0, — | 18.5 |' in table
  assert '| 0.00, 0.00 |' in table and '| 1.50, 0.20, 1.00 |' in table  # each run's last λ
  assert (out / 'curves.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'


def test_the_binary_names_a_missing_run(tmp_path):
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'binaries', 'compare_runs_main.py'), f'--output_dir={tmp_path}',
       f'--runs=A:{tmp_path}/nothing_*'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode != 0
  assert "no directory matches" in result.stderr + result.stdout
