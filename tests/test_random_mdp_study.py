"""The random-MDP study end to end: `binaries/random_mdp_study_main.py --tiny`, as a user runs it.

`--tiny` is 60 MDPs of 8 x 8 with short runs and action counts 4 and 100 (about half a minute). The
assertions are the orderings that hold at that size with wide margins, seed after seed:

* distillation works: cloning the teacher (teacher- or student-driven) reaches 95% of the teacher's return
  in nearly every MDP, and within a small part of the budget;
* at 100 actions, expected entropy-regularised distillation ends far above the sampled entropy-regularised
  one (the paper's action-count finding);
* with a teacher that errs in 25% of the states, pure on-policy cloning ends at the noisy teacher's return
  (it copies the errors) while value-gated distillation with the reward ends above it.

Not asserted: that student-driven sampling reaches the teacher in fewer steps than teacher-driven sampling.
With a tabular student and each variant at its tuned learning rate the teacher-driven student is as fast
or faster (BENCHMARKS.md, "Distilling Policy Distillation: the random-MDP study", discusses why).

Then the options for the paper's setting (issue 20), in seconds each: the partially observable student's
views and shared parameters, who samples in teacher- and student-driven runs, the greedy teacher, and the
binary with those flags.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from protege.envs import random_mdp
from protege.runtime import errors
from protege.studies import random_mdp_training as training

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY_MAIN = os.path.join(REPO, 'binaries', 'random_mdp_study_main.py')


def _rows(part):
  return {(row['variant'], row.get('num_actions')): row for row in part['rows']}


def test_tiny_study_writes_its_outputs_and_reproduces_the_robust_orderings(tmp_path):
  result = subprocess.run([sys.executable, STUDY_MAIN, f'--output_dir={tmp_path}', '--tiny'],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  for name in ('study.md', 'study.json', 'sampling_curves.png', 'action_sweep.png', 'noisy_teacher.png'):
    assert (tmp_path / name).stat().st_size > 0, name
  assert '[sampling]' in result.stdout and 'ETA' in result.stdout
  study = json.loads((tmp_path / 'study.json').read_text())
  assert set(study['parts']) == {'sampling', 'actions', 'noisy'}

  sampling = _rows(study['parts']['sampling'])
  assert len(sampling) == 8
  for variant in ('teacher_distill', 'on_policy_distill'):
    row = sampling[(variant, None)]
    assert row['fraction_reached'] >= 0.9, row
    assert row['steps_to_teacher_quartiles'][1] <= 0.25 * row['budget_steps'], row
    assert row['final_return_over_teacher_quartiles'][1] >= 0.97, row

  sweep = _rows(study['parts']['actions'])
  expected = sweep[('expected_entropy_regularised', 100)]
  sampled = sweep[('entropy_regularised', 100)]
  assert (expected['final_return_over_teacher_quartiles'][1]
          >= sampled['final_return_over_teacher_quartiles'][1] + 0.2), (expected, sampled)
  assert expected['fraction_reached'] >= sampled['fraction_reached'] + 0.3, (expected, sampled)

  noisy = study['parts']['noisy']
  noisy_teacher = noisy['noisy_teacher']['return_over_clean_quartiles'][1]
  rows = _rows(noisy)
  assert noisy_teacher < 0.97  # the noise costs the teacher return, so copying it is visible
  cloned = rows[('on_policy_distill', None)]['final_return_over_clean_teacher_quartiles'][1]
  gated = rows[('value_gated', None)]['final_return_over_clean_teacher_quartiles'][1]
  assert abs(cloned - noisy_teacher) < 0.05, (cloned, noisy_teacher)
  assert gated > noisy_teacher + 0.03, (gated, noisy_teacher)


# ----------------------------------------------------------------------------------------------------------
# The options for the paper's setting (issue 20): a partially observable student, a greedy teacher.
# ----------------------------------------------------------------------------------------------------------

# A 3 x 5 grid: a wall in the top-right corner, a reward in the bottom-right one; the start is (1, 2).
_WALLS = [[0, 0, 0, 0, 1], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]
_REWARDS = [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 1]]
# A 3 x 7 corridor: reward cells in the right-hand column, so moving right ends every episode.
_CORRIDOR_WALLS = np.zeros([3, 7], bool)
_CORRIDOR_REWARDS = np.zeros([3, 7], bool)
_CORRIDOR_REWARDS[:, 6] = True
_RIGHT, _LEFT = random_mdp.MOVES.index('right'), random_mdp.MOVES.index('left')


def _layout(walls, rewards, copies=1, **kwargs):
  walls = np.repeat(np.asarray(walls, bool)[None], copies, axis=0)
  rewards = np.repeat(np.asarray(rewards, bool)[None], copies, axis=0)
  return random_mdp.grid_mdps_from_layout(walls, rewards, **kwargs)


def test_local_views_show_the_square_around_each_cell_with_the_border_as_wall():
  views = random_mdp.local_views(_layout(_WALLS, _REWARDS), 3).numpy()[0]
  empty, wall, reward = random_mdp.VIEW_EMPTY, random_mdp.VIEW_WALL, random_mdp.VIEW_REWARD
  cell = lambda row, column: row * 5 + column  # noqa: E731
  np.testing.assert_array_equal(views[cell(1, 2)], [empty] * 9)
  np.testing.assert_array_equal(views[cell(0, 2)], [wall] * 3 + [empty] * 6)
  np.testing.assert_array_equal(views[cell(0, 3)], [wall] * 3 + [empty, empty, wall] + [empty] * 3)
  np.testing.assert_array_equal(views[cell(1, 3)], [empty, empty, wall] + [empty] * 5 + [reward])
  assert random_mdp.local_views(_layout(_WALLS, _REWARDS), 1).numpy()[0, cell(1, 2)].tolist() == [empty]
  with pytest.raises(errors.ConfigError, match='odd'):
    random_mdp.local_views(_layout(_WALLS, _REWARDS), 4)


def test_student_rows_are_shared_exactly_by_the_cells_with_the_same_view():
  mdps = random_mdp.generate_grid_mdps(3, height=8, width=8, wall_probability=0.2, reward_probability=0.05,
                                       seed=5)
  num_states = mdps.num_states
  views = random_mdp.local_views(mdps, 3).numpy()
  rows = training.student_rows(mdps, 3).numpy().reshape(3, num_states)
  for mdp in range(3):
    assert np.all((rows[mdp] >= mdp * num_states) & (rows[mdp] < (mdp + 1) * num_states))  # its own block
    same_view = (views[mdp][:, None, :] == views[mdp][None, :, :]).all(-1)
    np.testing.assert_array_equal(rows[mdp][:, None] == rows[mdp][None, :], same_view)
    assert len(set(rows[mdp])) < num_states  # a 3 x 3 view does alias some cells of these grids
  # No view: the cell index (tabular). A view of the whole grid from anywhere on it: every cell its own row.
  np.testing.assert_array_equal(training.student_rows(mdps, 0).numpy(), np.arange(3 * num_states))
  whole = training.student_rows(mdps, 2 * 8 - 1).numpy()
  assert len(set(whole)) == 3 * num_states


def _corridor_students(variant, student_view=0, learning_rate=0.0, unroll_length=2):
  """Students on the corridor (no slips, no absorption) taught by a teacher that always moves right."""
  mdps = _layout(_CORRIDOR_WALLS, _CORRIDOR_REWARDS, noise=0.0, absorb_probability=0.0)
  right = tf.one_hot(tf.fill([1, mdps.num_states], _RIGHT), random_mdp.NUM_MOVES)
  teacher = training.make_teacher(mdps, right, 4)
  config = training.StudyConfig(parts=('sampling',), sampling_variants=('teacher_distill', 'on_policy_distill'),
                                teacher_epsilon=0.0, unroll_length=unroll_length, envs_per_mdp=2,
                                student_view=student_view)
  return training._TabularStudents(variant, mdps, teacher, config, learning_rate), mdps


@pytest.mark.parametrize('variant, expected_column', [('teacher_distill', 5), ('on_policy_distill', 1)])
def test_teacher_driven_runs_follow_the_teacher_and_student_driven_runs_the_student(variant, expected_column):
  students, mdps = _corridor_students(variant)
  # The student always moves left; the teacher always right. Neither can slip or be absorbed.
  students.logits.assign(tf.one_hot(tf.fill([mdps.num_states], _LEFT), 4) * 50.0)
  students.update(tf.constant([0, 1]))
  start_row, _ = divmod(mdps.initial_state, 7)
  np.testing.assert_array_equal(students.env_states.numpy(), [[start_row * 7 + expected_column] * 2])


def test_a_partially_observable_student_learns_in_cells_it_never_visited_that_look_the_same():
  cell = lambda row, column: row * 7 + column  # noqa: E731
  for view, generalises in ((0, False), (3, True)):
    students, _ = _corridor_students('teacher_distill', student_view=view, learning_rate=1.0)
    students.update(tf.constant([0, 1]))  # the teacher walks (1, 3) -> (1, 4) -> (1, 5)
    logits = students.policy_logits().numpy()
    assert logits[cell(1, 3), _RIGHT] > 0.5
    # (1, 1) and (1, 2) are never visited; with a 3 x 3 view they look like (1, 3) (empty all around).
    for unvisited in (cell(1, 1), cell(1, 2)):
      if generalises:
        np.testing.assert_allclose(logits[unvisited], logits[cell(1, 3)])
      else:
        np.testing.assert_array_equal(logits[unvisited], 0.0)
    # (0, 3) sees the top border: its own row under either observation, and never visited.
    np.testing.assert_array_equal(logits[cell(0, 3)], 0.0)


def test_a_greedy_teacher_gives_a_finite_kl_and_is_refused_to_the_variants_that_need_log_pi():
  students, _ = _corridor_students('on_policy_distill')
  _, kl_teacher_visits, kl_student_visits, _ = students.evaluate()
  assert np.isfinite(kl_teacher_visits.numpy()).all() and np.isfinite(kl_student_visits.numpy()).all()
  np.testing.assert_allclose(kl_teacher_visits.numpy(), [np.log(4.0)], rtol=1e-5)  # uniform against one-hot
  with pytest.raises(errors.ConfigError, match='greedy'):
    training.StudyConfig(teacher_epsilon=0.0)  # every part: entropy-regularised variants included
  with pytest.raises(errors.ConfigError, match='odd'):
    training.StudyConfig(student_view=4)
  with pytest.raises(errors.ConfigError, match='sampling_variants'):
    training.StudyConfig(sampling_variants=('teacher_distil',))


def test_the_binary_runs_the_paper_setting_options_and_reports_each_at_its_best_rate(tmp_path):
  result = subprocess.run(
      [sys.executable, STUDY_MAIN, f'--output_dir={tmp_path}', '--parts=sampling', '--num_mdps=20',
       '--grid_size=8', '--updates=6', '--common_rates=1,10', '--common_rate_updates=6', '--student_view=3',
       '--teacher_epsilon=0', '--sampling_variants=teacher_distill,on_policy_distill'],
      cwd=REPO, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  study = json.loads((tmp_path / 'study.json').read_text())
  assert study['config']['student_view'] == 3 and study['config']['teacher_epsilon'] == 0.0
  sampling = study['parts']['sampling']
  assert [row['variant'] for row in sampling['rows']] == ['teacher_distill', 'on_policy_distill']
  assert [entry['learning_rate'] for entry in sampling['common_rates']] == [1.0, 10.0]
  for variant, best in sampling['best_common_rates'].items():
    chosen = next(e for e in sampling['common_rates'] if e['learning_rate'] == best['learning_rate'])
    steps = [e[variant]['steps_to_teacher_quartiles'][1] for e in sampling['common_rates']]
    assert chosen[variant]['steps_to_teacher_quartiles'][1] == min(s for s in steps if s is not None)
  assert (tmp_path / 'common_rates.png').stat().st_size > 0
  assert 'the 3 x 3 square around it' in (tmp_path / 'study.md').read_text()
