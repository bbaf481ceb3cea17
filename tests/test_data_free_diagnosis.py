"""The diagnosis measures of generated frames against real ones, on frames whose answers are known by hand."""

import numpy as np
import pytest

from protege.agents.data_free import diagnosis


def _frames():
  """Three 3x3 frames of 2 channels: channel 0 one cell in the bottom row (a paddle), channel 1 varies."""
  frames = np.zeros([3, 3, 3, 2], np.float32)
  frames[:, 2, 1, 0] = 1.0           # the paddle, every frame, bottom row, middle
  frames[0, 0, 0, 1] = 1.0           # frame 0: one cell of channel 1
  frames[1, 0, :, 1] = 1.0           # frame 1: three cells of channel 1
  return frames                      # frame 2: channel 1 empty


def test_count_profile_counts_cells_per_channel():
  profile = diagnosis.count_profile(_frames())
  np.testing.assert_allclose(profile['mean_cells'], [1.0, 4.0 / 3.0])
  np.testing.assert_allclose(profile['share_one'], [1.0, 1.0 / 3.0])
  np.testing.assert_allclose(profile['share_empty'], [0.0, 1.0 / 3.0])
  np.testing.assert_allclose(profile['share_many'], [0.0, 1.0 / 3.0])


def test_binary_share_and_threshold():
  frames = np.array([0.0, 0.05, 0.5, 0.95, 1.0, 0.3], np.float32).reshape(1, 1, 6, 1)
  assert diagnosis.binary_share(frames) == pytest.approx(4 / 6)
  assert diagnosis.count_profile(frames)['mean_cells'][0] == 2  # 0.95 and 1.0 exceed 0.5


def test_co_occurrence_is_the_share_of_frames_with_both_channels():
  matrix = diagnosis.co_occurrence(_frames())
  np.testing.assert_allclose(matrix, [[1.0, 2.0 / 3.0], [2.0 / 3.0, 2.0 / 3.0]])


def test_occupancy_distance_is_total_variation_per_channel():
  real = _frames()
  moved = real.copy()
  moved[:, 2, 1, 0], moved[:, 0, 1, 0] = 0.0, 1.0   # the paddle in the top row instead
  distance = diagnosis.occupancy_distance(moved, real)
  assert distance[0] == pytest.approx(1.0)            # disjoint
  assert distance[1] == pytest.approx(0.0)            # channel 1 unchanged
  half = real.copy()
  half[:2, 2, 1, 0], half[:2, 2, 0, 0] = 0.0, 1.0      # two of three paddles one cell left: 2/3 of the mass moves
  assert diagnosis.occupancy_distance(half, real)[0] == pytest.approx(2.0 / 3.0)
  empty = real.copy()
  empty[..., 1] = 0.0
  assert np.isnan(diagnosis.occupancy_distance(empty, real)[1])


def test_support_off_support_and_projection():
  generated = np.zeros([100, 3, 3, 2], np.float32)
  generated[:, 2, 1, 0] = 1.0                          # the generator always draws the paddle ...
  generated[:1, 0, 0, 1] = 1.0                         # ... and one channel-1 cell in 1% of its frames
  mask = diagnosis.support(generated, min_frequency=0.01)
  assert mask.sum() == 2 and mask[2, 1, 0] and mask[0, 0, 1]
  outside = diagnosis.off_support(_frames(), mask)
  # Real active cells: 3 paddles + 1 + 3 = 7; outside the support: frame 1's cells (0,1) and (0,2) of channel 1.
  assert outside['share_of_active_cells'] == pytest.approx(2 / 7)
  assert outside['share_of_states'] == pytest.approx(1 / 3)
  projected = diagnosis.project(_frames(), mask)
  assert diagnosis.off_support(projected, mask)['share_of_active_cells'] == 0.0
  np.testing.assert_array_equal(projected[0], _frames()[0])  # frame 0 lies inside the support


def test_frames_must_be_images():
  with pytest.raises(ValueError, match=r'\[n, H, W, C\]'):
    diagnosis.count_profile(np.zeros([4, 3]))


def test_the_binary_reports_a_run_and_how_far_the_teacher_looks_outside_the_generators_support(tmp_path):
  """A real policy export of 5x5x2 frames whose action is 1 iff channel 1 has a cell in the right two columns;
  a run directory whose generator only ever drew the left three columns."""
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tf_agents.specs import tensor_spec  # pylint: disable=g-import-not-at-top
  from tf_agents.trajectories import time_step as ts  # pylint: disable=g-import-not-at-top
  from protege.agents.training import policy_export  # pylint: disable=g-import-not-at-top
  from protege.networks import actor_critic  # pylint: disable=g-import-not-at-top
  from protege.networks import torsos  # pylint: disable=g-import-not-at-top

  observation_spec = tensor_spec.BoundedTensorSpec([5, 5, 2], tf.float32, 0.0, 1.0, name='observation')
  action_spec = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1, name='action')
  network = actor_critic.ActorCriticNetwork(observation_spec, action_spec,
                                            torso_fn=lambda: torsos.MLPTorso(layer_sizes=()))
  network.create_variables()
  weights = np.zeros([5, 5, 2, 2], np.float32)
  weights[:, 3:, 1, 1] = 10.0                        # action 1's logit: channel-1 cells in columns 3-4
  network._policy_head.kernel.assign(weights.reshape(50, 2))  # pylint: disable=protected-access
  network._policy_head.bias.assign([1.0, 0.0])  # pylint: disable=protected-access  (action 0 when nothing is there)
  value_head = network._value_heads[0]  # pylint: disable=protected-access
  value_head.kernel.assign(np.zeros([50, 1], np.float32))
  value_head.bias.assign([3.0])                       # the critic says 3 everywhere
  teacher = policy_export.export_policy(network, ts.time_step_spec(observation_spec), action_spec,
                                        str(tmp_path / 'teacher'))

  rng = np.random.default_rng(0)
  generated = np.zeros([200, 5, 5, 2], np.float32)
  generated[np.arange(200), 4, rng.integers(0, 3, 200), 0] = 1.0   # one paddle cell, left three columns
  generated[np.arange(200), 1, rng.integers(0, 3, 200), 1] = 1.0   # one ball cell, left three columns
  states = np.zeros([100, 5, 5, 2], np.float32)
  states[np.arange(100), 4, rng.integers(0, 5, 100), 0] = 1.0
  ball_columns = np.r_[np.zeros(60, int), np.full(40, 4)]          # 40 states with the ball on the right
  states[np.arange(100), 1, ball_columns, 1] = 1.0
  run_dir = tmp_path / 'run'
  run_dir.mkdir()
  np.savez_compressed(run_dir / 'exemplars.npz', observations=generated)
  np.savez_compressed(run_dir / 'teacher_states.npz', observations=states)
  (run_dir / 'summary.json').write_text(json.dumps({'teacher': teacher,
                                                    'agreement_on_teacher_states': {'argmax_agreement': 0.5}}))

  binary = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'binaries',
                        'data_free_diagnosis_main.py')
  result = subprocess.run([sys.executable, binary, f'--run_dir={run_dir}', '--channel_names=paddle,ball'],
                          capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((run_dir / 'diagnosis.json').read_text())
  # The 40 states with the ball on the right are the ones the teacher answers 1; cleared, it answers 0.
  assert report['teacher_agreement_on_projected_states'] == pytest.approx(0.6)
  assert report['off_support']['share_of_states'] == pytest.approx(1 - np.mean(
      (states[:, 4, :3, 0].sum(-1) > 0) & (ball_columns < 3)))
  paddle, ball = report['channels']
  assert paddle['channel'] == 'paddle' and paddle['generated_share_one'] == 1.0
  g = generated[:, 1, :, 1].mean(0)                 # where the generator puts the ball, by column
  assert ball['occupancy_distance'] == pytest.approx(0.5 * (abs(g[0] - 0.6) + g[1] + g[2] + 0.4), rel=1e-5)
  assert 'picks the same action as on the states 60%' in (run_dir / 'diagnosis.md').read_text()
  assert report['teacher_value']['teacher_states'] == {'mean': pytest.approx(3.0), 'std': pytest.approx(0.0)}
  assert report['teacher_value']['generated']['mean'] == pytest.approx(3.0)

  missing = subprocess.run([sys.executable, binary, f'--run_dir={tmp_path}'], capture_output=True, text=True,
                           timeout=300, check=False)
  assert missing.returncode == 2 and 'has no summary.json, exemplars.npz, teacher_states.npz' in missing.stderr


def test_dead_channels_and_transplant():
  states = _frames()
  dead = diagnosis.dead_channels(states)
  np.testing.assert_array_equal(dead, [False, False])
  states[..., 1] = 0.0
  dead = diagnosis.dead_channels(states)
  np.testing.assert_array_equal(dead, [False, True])
  generated = np.ones([4, 3, 3, 2], np.float32)
  moved = diagnosis.transplant(states, generated, dead)
  np.testing.assert_array_equal(moved[..., 1], 1.0)          # the dead channel now carries the generator's cells
  np.testing.assert_array_equal(moved[..., 0], states[..., 0])  # the live one is untouched
