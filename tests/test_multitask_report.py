"""`binaries/multitask_kickstart_report_main.py`: the paper's measures game by game, from runs' per-game
evaluation summaries (written here as train_main writes them, with values whose answers are known)."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from protege.binaries import multitask_kickstart_report_main as report_main
from protege.runtime import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GAMES = ('MinAtar/Breakout-v0', 'MinAtar/SpaceInvaders-v0')
SCORES = {'MinAtar/Breakout-v0': 20.0, 'MinAtar/SpaceInvaders-v0': 100.0}
STEPS = [100, 200, 300, 400, 500, 600, 700, 800]


def _run(path, curves):
  """A run directory whose summaries hold `curves` ({game: values at STEPS}) under train_main's tags."""
  writer = tf.summary.create_file_writer(os.path.join(path, 'summaries'))
  with writer.as_default():
    for game, values in curves.items():
      for step, value in zip(STEPS, values):
        tf.summary.scalar(f'eval_tasks/{game}/return_mean', value, step=step)
        tf.summary.scalar('eval/return_mean', value, step=step)  # other tags are ignored
  writer.close()
  return str(path)


@pytest.fixture
def runs(tmp_path):
  # Kickstarted: Breakout holds 20 from 300 (a dip at 200 breaks the first run of 3), Space Invaders from 500.
  kick = _run(tmp_path / 'kick', {GAMES[0]: [21, 12, 20, 22, 25, 24, 26, 25],
                                  GAMES[1]: [30, 60, 90, 99, 100, 120, 130, 125]})
  # Scratch: Breakout never reaches 20 (final 6 = mean of 5, 6, 7, held only at the end); Space Invaders
  # reaches 100 at 600 and its final, mean(110, 110, 108) = 109.33, is held only over its last evaluations.
  scratch = _run(tmp_path / 'scratch', {GAMES[0]: [1, 2, 3, 4, 4, 5, 6, 7],
                                        GAMES[1]: [5, 10, 20, 40, 80, 110, 110, 108]})
  return kick, scratch


def test_the_measures_per_game_and_for_the_teacher_normalised_score(runs):
  result = report_main.report([runs[0]], [runs[1]], SCORES, consecutive=3)['results']
  breakout, invaders, mean = (result[name][0] for name in (*GAMES, report_main.NORMALISED))
  assert (breakout['kickstarted_to_teacher'], breakout['scratch_to_teacher']) == (300, None)
  assert breakout['to_teacher'] == {'value': 800 / 300, 'bound': True}  # the scratch run's last step counts
  assert (invaders['kickstarted_to_teacher'], invaders['scratch_to_teacher']) == (500, 600)  # 110, 110, 108
  assert invaders['to_teacher'] == {'value': 1.2, 'bound': False}
  assert breakout['scratch_final'] == pytest.approx(6.0)
  assert breakout['kickstarted_to_scratch_final'] == 100  # its first evaluation: a bound
  assert breakout['scratch_to_scratch_final'] == 800 and breakout['scratch_final_only_at_the_end']
  assert breakout['to_scratch_final'] == {'value': 8.0, 'bound': True}
  assert invaders['scratch_final'] == pytest.approx(328 / 3)
  assert invaders['kickstarted_to_scratch_final'] == 600  # 120, 130, 125
  assert invaders['to_scratch_final'] == {'value': 800 / 600, 'bound': False}
  # The normalised score: mean(Breakout / 20, Space Invaders / 100) at each evaluation.
  assert mean['kickstarted_to_teacher'] == 400  # 1.045, 1.125, 1.2 from 400; 0.95 at 300
  assert mean['scratch_final'] == pytest.approx((6 / 20 + 328 / 300) / 2)
  assert mean['kickstarted_last'] == pytest.approx((25 / 20 + 125 / 100) / 2)
  assert mean['scratch_last'] == pytest.approx((7 / 20 + 108 / 100) / 2)


def test_the_binary_writes_its_report_and_figure(runs, tmp_path):
  out = tmp_path / 'report'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'binaries', 'multitask_kickstart_report_main.py'),
       f'--kickstarted={runs[0]}', f'--scratch={runs[1]}', f'--output_dir={out}',
       '--teacher_scores=MinAtar/Breakout-v0=20,MinAtar/SpaceInvaders-v0=100'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  text = (out / 'report.md').read_text()
  assert '| MinAtar/Breakout-v0 | 300 | never | ≥ 2.7× | ≥ 2.7× |' in text, text
  assert '| MinAtar/SpaceInvaders-v0 | 109.33 | 600 | 800* | 1.3× | 1.3× |' in text, text
  assert text.strip() in result.stdout
  assert json.loads((out / 'report.json').read_text())['teacher_scores'] == SCORES
  assert (out / 'curves.png').stat().st_size > 10_000


@pytest.mark.parametrize('text, message', [
    ('MinAtar/Breakout-v0=abc', "part 'MinAtar/Breakout-v0=abc' is not GAME=SCORE"),
    ('MinAtar/Breakout-v0=-1', 'with a score > 0'),
    ('=3', "part '=3' is not GAME=SCORE"),
    ('', 'is empty'),
])
def test_bad_teacher_scores_are_named(text, message):
  with pytest.raises(errors.ConfigError, match=message):
    report_main.parse_teacher_scores(text)


def test_a_game_the_runs_do_not_log_and_unpaired_runs_are_clear_errors(runs):
  with pytest.raises(errors.ConfigError, match=r"no per-game evaluations of \['MinAtar/Asterix-v0'\]"):
    report_main.report([runs[0]], [runs[1]], {'MinAtar/Asterix-v0': 5.0}, consecutive=3)
  with pytest.raises(errors.ConfigError, match="has no summaries/ folder: give the run directories"):
    report_main.report([runs[0]], [runs[1] + '_typo'], SCORES, consecutive=3)
  with pytest.raises(errors.ConfigError, match='one scratch twin per kickstarted run'):
    report_main.report([runs[0], runs[0]], [runs[1]], SCORES, consecutive=3)
  with pytest.raises(errors.ConfigError, match='fewer than --consecutive=9 evaluations'):
    report_main.report([runs[0]], [runs[1]], SCORES, consecutive=9)


def test_runs_of_unequal_length_are_flagged(runs, tmp_path):
  """A half-written event file (a killed run) reads up to its last whole record: the report says the runs end
  at different steps instead of comparing unequal budgets silently."""
  short = tmp_path / 'short'
  (short / 'summaries').mkdir(parents=True)
  (event_file,) = [name for name in os.listdir(os.path.join(runs[0], 'summaries'))]
  data = open(os.path.join(runs[0], 'summaries', event_file), 'rb').read()
  (short / 'summaries' / event_file).write_bytes(data[:len(data) * 3 // 4])  # Space Invaders half-written
  text = report_main.markdown(report_main.report([str(short)], [runs[1]], SCORES, consecutive=3))
  assert 'Warning: the runs end at different steps' in text
  assert 'scratch 800.' in text
  assert 'Warning' not in report_main.markdown(report_main.report([runs[0]], [runs[1]], SCORES, consecutive=3))
