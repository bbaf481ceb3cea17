"""RND end to end: the study binary, as a user runs it, on Deep Sea of size 20.

The claim under test is the science: with one fixed seed and the same budget, PPO + RND finds Deep Sea's
treasure and PPO alone does not. A random agent finds it once in 2^20 ≈ 10^6 episodes; the budget here is
4,000 episodes, and RND with seed 0 needs ~2,000 (`runs/rnd_study` and BENCHMARKS.md hold the 10-seed study).
"""

import json
import os
import subprocess
import sys

import tensorflow as tf

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_MAIN = os.path.join(REPO, 'binaries', 'rnd_study_main.py')
BUDGET = 80_000  # agent steps: 4,000 episodes of 20 steps


def test_rnd_finds_the_deep_sea_treasure_and_ppo_does_not(tmp_path):
  root = tmp_path / 'study'
  result = subprocess.run(
      [sys.executable, STUDY_MAIN, f'--root_dir={root}', '--seeds=1',
       f'--gin_bindings=train.total_env_steps = {BUDGET}'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  rows = {row['method']: row for row in json.loads((root / 'study.json').read_text())}
  assert rows['rnd']['succeeded'] == 1, rows
  assert rows['ppo']['succeeded'] == 0, rows
  assert '| RND | 1/1 |' in result.stdout and '| PPO | 0/1 |' in result.stdout
  assert os.path.exists(root / 'study.md')

  # The RND run wrote RND's metrics next to PPO's, for both value heads.
  tags = set()
  for event_file in tf.io.gfile.glob(str(root / 'rnd_seed0' / 'summaries' / 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(event_file):
      tags.update(value.tag for value in event.summary.value)
  for tag in ('learner/rnd/predictor_loss', 'learner/rnd/intrinsic_reward_mean',
              'learner/rnd/intrinsic_reward_std', 'learner/rnd/intrinsic_return_std',
              'learner/value_loss_extrinsic', 'learner/value_loss_intrinsic',
              'learner/explained_variance_extrinsic', 'learner/explained_variance_intrinsic',
              'env/episode_return'):
    assert tag in tags, (tag, sorted(tags))
  summary = json.loads((root / 'rnd_seed0' / 'summary.json').read_text())
  assert summary['best_episode_return'] > 0.9 and summary['best_episode_env_steps'] <= BUDGET
