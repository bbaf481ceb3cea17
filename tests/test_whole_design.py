"""The whole design in one run, at tiny size: PPO + RND, two kickstarting teachers routed per task (two
MinAtar games), and a PBT population of 2 whose exploits move each λ_k and RND's intrinsic coefficient.

`gin/whole_design_minatar.gin` shrunk: 4 environments (2 per game), 4,096 agent steps per member, a decision
every 256 (at 1,024 steps one member once finished after its peer's first report, and no exploit happened);
the teachers are two fixed Keras models (their skill is not the point: the wiring is).
"""

import json
import os
import subprocess
import sys

import tensorflow as tf

from protege.pbt import lineage as lineage_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PBT_MAIN = os.path.join(REPO, 'binaries', 'pbt_main.py')
TOTAL_ENV_STEPS = 4096
MOVED = ('lambda_breakout', 'lambda_space_invaders', 'intrinsic_advantage_coef')

TINY_GIN = """
import protege.pbt.scheduler
include 'whole_design_minatar.gin'
make_environment.num_envs = 4
MLPTorso.layer_sizes = (32,)
train.sequence_length = 16
train.total_env_steps = {total}
train.eval_episodes = 2
PPOLearner.num_epochs = 1
PPOLearner.num_minibatches = 2
RNDLearner.observation_normalization_steps = 8
RNDLearner.output_size = 16
TeacherSet.paths = ['{breakout}', '{space_invaders}']
PBTScheduler.ready_env_steps = 256
PBTScheduler.burn_in_env_steps = 0
PBTScheduler.significance = 1.0   # copy any peer with a higher mean: exploits happen in a short run
PBTScheduler.min_episodes = 2
"""


def _teacher(path, preferred_action):
  inputs = tf.keras.Input([10, 10, 10])
  logits = tf.keras.layers.Dense(6, bias_initializer=tf.keras.initializers.Constant(
      [2.0 if a == preferred_action else 0.0 for a in range(6)]))(tf.keras.layers.Flatten()(inputs))
  tf.keras.Model(inputs, logits).save(path)
  return path


def test_rnd_two_teachers_and_pbt_in_one_population(tmp_path):
  gin_file = tmp_path / 'tiny.gin'
  gin_file.write_text(TINY_GIN.format(total=TOTAL_ENV_STEPS,
                                      breakout=_teacher(str(tmp_path / 'breakout.keras'), 1),
                                      space_invaders=_teacher(str(tmp_path / 'space_invaders.keras'), 3)))
  root = tmp_path / 'run'
  result = subprocess.run([sys.executable, PBT_MAIN, f'--gin_file={gin_file}', f'--root_dir={root}',
                           '--population=2', '--num_cpus=2', '--cpus_per_member=0.5', '--traceback'],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
  summary = json.loads((root / 'population.json').read_text())
  for member in summary['members']:
    assert member['env_steps'] == TOTAL_ENV_STEPS and member['error'] is None
    assert set(MOVED) <= set(member['hyperparameters'])
  explores = [e for e in lineage_lib.read_events(str(root / 'lineage.jsonl')) if e['event'] == 'explore']
  assert explores, 'no exploit happened'
  for explore in explores:
    assert set(MOVED) <= set(explore['operations'])
    # Explore moves every hyperparameter away from the donor's value (x0.8, x1.2 or a resample), unless
    # the move left its range and was clipped back to a bound the donor already sat on.
    assert all(explore['new'][name] != explore['old'][name] or name in explore['clipped']
               for name in MOVED), explore

  # A member trained with RND and both teachers: their metrics are in its summaries.
  tags = set()
  for event_file in tf.io.gfile.glob(str(root / 'members' / 'member_0' / 'summaries' / 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(event_file):
      tags.update(value.tag for value in event.summary.value)
  for tag in ('learner/rnd/predictor_loss', 'learner/kickstart/cross_entropy_breakout',
              'learner/kickstart/cross_entropy_space_invaders', 'learner/value_loss_intrinsic'):
    assert tag in tags, sorted(tags)
