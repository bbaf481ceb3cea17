"""The data-free binaries end to end: distill_data_free_main with a policy teacher (exported as train_main
exports its policies, then evaluated in CartPole), the MNIST study on digits with a tiny budget, and clear
errors for a missing teacher and an unbounded observation without a box, and a run stopped by SIGTERM
that saves and resumes."""

import json
import os
import re
import signal
import subprocess
import sys
import threading

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from protege.agents.data_free import adapters
from protege.agents.data_free import frame_networks
from protege.agents.data_free import play
from protege.agents.data_free import run as data_free_run
from protege.agents.distillation import teacher_loading
from protege.agents.training import policy_export
from protege.networks import actor_critic
from protege.networks import torsos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DISTILL_MAIN = os.path.join(REPO, 'binaries', 'distill_data_free_main.py')
STUDY_MAIN = os.path.join(REPO, 'binaries', 'data_free_mnist_study_main.py')

# CartPole-v1's specs, as train_main's exports record them.
OBSERVATION_SPEC = tensor_spec.BoundedTensorSpec([4], tf.float32, minimum=[-4.8, -3.4e38, -0.42, -3.4e38],
                                                 maximum=[4.8, 3.4e38, 0.42, 3.4e38], name='observation')
ACTION_SPEC = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 1, name='action')


def _rule_teacher(directory: str) -> str:
  """A CartPole policy that pushes towards where the pole falls (right iff θ + θ̇ > 0), exported by
  `agents.training.policy_export.export_policy` as train_main exports its policies."""
  network = actor_critic.ActorCriticNetwork(OBSERVATION_SPEC, ACTION_SPEC,
                                            torso_fn=lambda: torsos.MLPTorso(layer_sizes=()))
  network.create_variables()
  kernel = np.zeros([4, 2], np.float32)
  kernel[2:, 0], kernel[2:, 1] = -10.0, 10.0
  network._policy_head.kernel.assign(kernel)  # pylint: disable=protected-access
  return policy_export.export_policy(network, ts.time_step_spec(OBSERVATION_SPEC), ACTION_SPEC, directory)


def _run(command, timeout=300):
  return subprocess.run([sys.executable] + command, cwd=REPO, capture_output=True, text=True, timeout=timeout,
                        check=False)


def test_policy_teacher_is_distilled_without_the_environment_and_evaluated_in_it(tmp_path):
  teacher_dir = _rule_teacher(str(tmp_path / 'teacher' / 'policy'))
  root = tmp_path / 'student'
  result = _run([DISTILL_MAIN, f'--teacher={teacher_dir}', '--gin_file=data_free_cartpole.gin',
                 f'--root_dir={root}', '--gin_bindings=DataFreeDistiller.num_steps = 120',
                 '--gin_bindings=DataFreeDistiller.reinit_interval = 40',
                 '--gin_bindings=distill_data_free.eval_episodes = 4',
                 '--gin_bindings=distill_data_free.log_every = 40'])
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert 'student return' in result.stdout
  summary = json.loads((root / 'summary.json').read_text())
  assert summary['steps'] == 120 and summary['generations'] == 3
  assert (root / 'operative_config.gin').read_text().count('DataFreeDistiller.adversarial_weight = 1.0') == 1
  exemplars = np.load(root / 'exemplars.npz')
  # The velocities stay in the configured box of +-3; position and angle in the spec's bounds.
  assert np.abs(exemplars['observations']).max(axis=0).tolist() <= [4.8, 3.0, 0.42, 3.0]
  # Both actions are generated (the information-entropy term balances them).
  assert min(summary['teacher_labels_histogram']) > 0.2 * sum(summary['teacher_labels_histogram'])

  # The student is a policy export as train_main writes: it loads as a teacher, and acts as the rule.
  student = teacher_loading.load_teacher(str(root / 'policy'), OBSERVATION_SPEC, ACTION_SPEC)
  rule = teacher_loading.load_teacher(teacher_dir, OBSERVATION_SPEC, ACTION_SPEC)
  probe = np.random.RandomState(0).uniform([-2.4, -2.0, -0.2, -2.0], [2.4, 2.0, 0.2, 2.0], (2000, 4))
  probe = probe.astype(np.float32)
  agreement = np.mean(np.argmax(adapters.teacher_logits(student, probe), -1)
                      == np.argmax(adapters.teacher_logits(rule, probe), -1))
  assert agreement > 0.9, agreement
  # Evaluated in CartPole afterwards, with the teacher for reference.
  assert summary['env_id'] == 'CartPole-v1'
  assert summary['student_eval']['episodes'] == 4 and summary['teacher_eval']['episodes'] == 4
  # 120 steps copy the rule only roughly near its boundary, where CartPole is unforgiving; a uniformly random
  # policy returns ~22.
  assert summary['student_eval']['return_mean'] > 50, summary['student_eval']
  # ... and compared with the teacher on a sample of the states the teacher visited.
  agreement = summary['agreement_on_teacher_states']
  assert 100 <= agreement['states'] <= 4096 and agreement['argmax_agreement'] > 0.6, agreement
  # Those states are kept for the diagnosis, beside the exemplars.
  states = np.load(summary['teacher_states'])['observations']
  assert states.shape == (agreement['states'], 4) and np.isfinite(states).all()
  assert 'the student picks its action' in result.stdout


def test_the_study_runs_the_ablation_on_digits(tmp_path):
  root = tmp_path / 'study'
  bindings = ['DataFreeDistiller.num_steps = 12', 'DataFreeDistiller.reinit_interval = 4',
              'DataFreeDistiller.batch_size = 32', 'DataFreeDistiller.pool_samples_per_generator = 64',
              'ImageGenerator.channels = (8, 4)', 'distill_data_free.exemplars_to_save = 256']
  result = _run([STUDY_MAIN, f'--root_dir={root}', '--dataset=digits', '--classifier_epochs=6', '--seed=1',
                 '--diversity_samples=300', '--exemplars_per_class=4']
                + [f'--gin_bindings={binding}' for binding in bindings])
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  study = json.loads((root / 'study.json').read_text())
  # 6 epochs (66 Adam steps) on 1,300 images. At 3 epochs the half-width student measured 0.36-0.77
  # between runs (threaded float reductions): the bounds are well under what 6 epochs give.
  assert study['teacher']['accuracy'] > 0.6
  assert study['student_real']['accuracy'] > 0.4
  variants = {row['variant']: row for row in study['variants']}
  assert list(variants) == ['dafl', 'adversarial', 'adversarial_reinit']
  assert [variants[name]['generations'] for name in variants] == [1, 1, 3]
  assert all(0.0 <= row['accuracy'] <= 1.0 and row['steps'] == 12 for row in variants.values())
  # Each variant switched off what it must: DAFL has no adversarial term, neither ablation re-initialises.
  dafl_config = (root / 'dafl' / 'operative_config.gin').read_text()
  assert 'DataFreeDistiller.adversarial_weight = 0.0' in dafl_config
  assert 'distill_data_free.seed = 1' in dafl_config  # --seed seeds the data-free runs too
  adversarial_config = (root / 'adversarial' / 'operative_config.gin').read_text()
  assert 'DataFreeDistiller.reinit_interval = 0' in adversarial_config
  assert set(study['diversity']) == {'real test digits', 'dafl', 'adversarial', 'adversarial_reinit'}
  for row in study['diversity'].values():
    assert len(row['clusters_per_class']) == 10 and 0.0 <= row['mean_recall'] <= 1.0
  assert (root / 'exemplars.png').stat().st_size > 10_000
  assert (root / 'exemplars_by_generation.png').stat().st_size > 5_000
  assert 'LeNet-5-half on real data (upper bound)' in (root / 'study.md').read_text()
  # --variants: one variant alone; the finished models in root_dir are read back, not retrained.
  result = _run([STUDY_MAIN, f'--root_dir={root}', '--dataset=digits', '--variants=dafl', '--seed=1',
                 '--diversity_samples=300', '--exemplars_per_class=4']
                + [f'--gin_bindings={binding}' for binding in bindings])
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  again = json.loads((root / 'study.json').read_text())
  assert [row['variant'] for row in again['variants']] == ['dafl']
  assert again['variants'][0]['accuracy'] == variants['dafl']['accuracy']
  assert set(again['diversity']) == {'real test digits', 'dafl'}
  assert not (root / 'exemplars_by_generation.png').exists()  # the first study's figure is not left behind


def test_bad_teachers_are_one_line_errors(tmp_path):
  import gin  # pylint: disable=g-import-not-at-top
  gin.parse_config(['distill_data_free.student_fn = @ActorCriticNetwork'])
  with pytest.raises(ValueError, match='teacher .*missing.* does not exist; pass a Keras classifier file'):
    data_free_run.distill_data_free(str(tmp_path / 'out'), str(tmp_path / 'missing'))


def test_an_unbounded_observation_without_a_box_is_a_clear_error(tmp_path):
  import gin  # pylint: disable=g-import-not-at-top
  teacher_dir = _rule_teacher(str(tmp_path / 'teacher' / 'policy'))
  gin.parse_config(['distill_data_free.student_fn = @ActorCriticNetwork',
                    'DataFreeDistiller.generator_fn = @VectorGenerator',
                    'DataFreeDistiller.activation_weight = 0.0'])
  with pytest.raises(ValueError, match=r"unbounded in the spec .* set the generator's unbounded_range"):
    data_free_run.distill_data_free(str(tmp_path / 'out'), teacher_dir)


# A small ALE-like frame stack (84x84 would do the same, slower): uint8 frames, 4 actions.
FRAME_SPEC = tensor_spec.BoundedTensorSpec([44, 44, 2], tf.uint8, 0, 255, name='observation')
FRAME_ACTION_SPEC = tensor_spec.BoundedTensorSpec((), tf.int64, 0, 3, name='action')
FRAME_BINDINGS = [
    'distill_data_free.student_fn = @ActorCriticNetwork',
    'ActorCriticNetwork.torso_fn = @NatureCNNTorso',
    'distill_data_free.teacher_network_fn = @teacher/ActorCriticNetwork',
    'teacher/ActorCriticNetwork.torso_fn = @NatureCNNTorso',
    'DataFreeDistiller.activation_weight = 0.0',
    'DataFreeDistiller.num_steps = 3',
    'DataFreeDistiller.batch_size = 8',
    'DataFreeDistiller.pool_capacity = 64',
    'ImageGenerator.channels = (8, 4)',
    'distill_data_free.exemplars_to_save = 16',
    'distill_data_free.log_every = 0',
]


def _nature_cnn_network(observation_spec, action_spec):
  return actor_critic.ActorCriticNetwork(observation_spec, action_spec, torso_fn=torsos.NatureCNNTorso)


class _RawPixelTorso(torsos.NatureCNNTorso):
  """NatureCNN on pixels x 255: the shapes of NatureCNNTorso, a different function of [0, 1] frames."""

  def call(self, observation, training=False):
    return super().call(observation * 255.0, training=training)


class _UnscaledTorso(torsos.NatureCNNTorso):
  """NatureCNN that casts uint8 frames to float without scaling them by 1/255."""

  def call(self, observation, training=False):
    return super().call(tf.cast(observation, tf.float32), training=training)


def _frame_teacher(directory: str) -> str:
  """A NatureCNN policy of uint8 frames (random weights), exported as train_main exports its policies."""
  tf.random.set_seed(7)
  network = actor_critic.ActorCriticNetwork(FRAME_SPEC, FRAME_ACTION_SPEC, torso_fn=torsos.NatureCNNTorso)
  network.create_variables()
  return policy_export.export_policy(network, ts.time_step_spec(FRAME_SPEC), FRAME_ACTION_SPEC, directory)


def test_a_uint8_frame_teacher_is_distilled_on_frames_scaled_to_unit_range(tmp_path):
  import gin  # pylint: disable=g-import-not-at-top
  teacher_dir = _frame_teacher(str(tmp_path / 'teacher' / 'policy'))
  gin.parse_config(FRAME_BINDINGS)
  frames = np.random.default_rng(3).integers(0, 256, size=(16,) + tuple(FRAME_SPEC.shape), dtype=np.uint8)

  # The rebuilt teacher computes on frames / 255 what the export computes on the frames, with a gradient.
  teacher, exported = frame_networks.frame_teacher(teacher_dir, _nature_cnn_network, FRAME_ACTION_SPEC)
  assert exported.observation_spec.dtype == tf.uint8 and teacher.observation_spec.dtype == tf.float32
  scaled = tf.constant(frames, tf.float32) / 255.0
  np.testing.assert_allclose(teacher.logits_and_value(scaled)[0].numpy(),
                             exported.logits_and_value(tf.constant(frames))[0].numpy(), atol=1e-4)
  with tf.GradientTape() as tape:
    tape.watch(scaled)
    first_logit = tf.reduce_sum(adapters.differentiable_teacher_logits(teacher, scaled)[:, 0])
  gradient = tape.gradient(first_logit, scaled)
  assert gradient is not None and float(tf.reduce_max(tf.abs(gradient))) > 0.0

  summary = data_free_run.distill_data_free(str(tmp_path / 'out'), teacher_dir)
  assert summary['steps'] == 3
  # The student is exported for the environment's uint8 frames, and plays them as it was trained on /255.
  time_step_spec, _ = adapters.policy_specs(summary['policy'])
  assert time_step_spec.observation.dtype == tf.uint8
  exemplars = np.load(str(tmp_path / 'out' / 'exemplars.npz'))['observations']
  assert exemplars.dtype == np.float32 and exemplars.min() >= 0.0 and exemplars.max() <= 1.0
  student = teacher_loading.load_teacher(summary['policy'], FRAME_SPEC, FRAME_ACTION_SPEC)
  assert np.all(np.isfinite(student.logits_and_value(tf.constant(frames))[0].numpy()))


def test_the_student_learnt_on_scaled_frames_is_exported_for_uint8_frames():
  student = _nature_cnn_network(frame_networks.frame_view_spec(FRAME_SPEC), FRAME_ACTION_SPEC)
  student.create_variables()
  frames = np.random.default_rng(4).integers(0, 256, size=(8,) + tuple(FRAME_SPEC.shape), dtype=np.uint8)
  exported = frame_networks.frame_student_for_export(student, _nature_cnn_network, FRAME_SPEC, FRAME_ACTION_SPEC)
  np.testing.assert_allclose(adapters.student_logits(exported, tf.constant(frames)).numpy(),
                             adapters.student_logits(student, tf.constant(frames, tf.float32) / 255.0).numpy(),
                             atol=1e-5)
  # A torso that does not scale uint8 frames would play other actions than the student learnt: refused.
  unscaled = lambda spec, actions: actor_critic.ActorCriticNetwork(spec, actions, torso_fn=_UnscaledTorso)  # noqa: E731
  with pytest.raises(ValueError, match='the student rebuilt for uint8 frames differs from the trained one'):
    frame_networks.frame_student_for_export(student, unscaled, FRAME_SPEC, FRAME_ACTION_SPEC)


def test_a_frame_teacher_needs_a_network_that_reproduces_it(tmp_path):
  import gin  # pylint: disable=g-import-not-at-top
  teacher_dir = _frame_teacher(str(tmp_path / 'teacher' / 'policy'))
  gin.parse_config([b for b in FRAME_BINDINGS if not b.startswith('distill_data_free.teacher_network_fn')])
  with pytest.raises(ValueError, match=r'uint8 frames .* set distill_data_free.teacher_network_fn'):
    data_free_run.distill_data_free(str(tmp_path / 'out'), teacher_dir)
  gin.parse_config(['distill_data_free.teacher_network_fn = @teacher/ActorCriticNetwork',
                    'teacher/ActorCriticNetwork.torso_fn = @ImpalaResNetTorso'])
  with pytest.raises(ValueError, match=r'rebuilt by distill_data_free.teacher_network_fn: its weights differ from '
                                       r'the network built for them \(12 against 36 variables\); the weights have '
                                       r'NatureCNNTorso/conv_0/bias \(32,\)'):
    data_free_run.distill_data_free(str(tmp_path / 'out'), teacher_dir)
  # The same shapes computing something else (a torso that expects raw 0-255 pixels): the logits differ.
  raw_pixels = lambda spec, actions: actor_critic.ActorCriticNetwork(spec, actions, torso_fn=_RawPixelTorso)  # noqa: E731
  with pytest.raises(ValueError, match='does not reproduce the export: its logits differ by up to'):
    frame_networks.frame_teacher(teacher_dir, raw_pixels, FRAME_ACTION_SPEC)


def test_a_state_sample_is_uniform_over_the_stream_and_bounded():
  sample = play.StateSample(capacity=100, seed=0)
  for start in range(0, 10_000, 50):
    sample(np.arange(start, start + 50)[:, None])
  rows = sample.array()[:, 0]
  assert rows.shape == (100,) and sample.seen == 10_000 and len(set(rows.tolist())) == 100
  assert 3_500 < rows.mean() < 6_500  # a uniform sample of 0..9,999, not the first or last 100 rows


def test_a_stopped_run_resumes_from_its_checkpoint_where_it_stopped(tmp_path, capsys):
  import gin  # pylint: disable=g-import-not-at-top
  from protege.binaries import common  # pylint: disable=g-import-not-at-top
  teacher_dir = _rule_teacher(str(tmp_path / 'teacher' / 'policy'))

  def distill(root, num_steps):
    gin.clear_config()
    common.parse_gin(['data_free_cartpole.gin'], [
        f'DataFreeDistiller.num_steps = {num_steps}', 'DataFreeDistiller.reinit_interval = 4',
        "DataFreeDistiller.student_learning_rate_schedule = 'constant'", 'distill_data_free.log_every = 2',
        'distill_data_free.eval_episodes = 0'])
    return data_free_run.distill_data_free(str(root), teacher_dir)

  whole = distill(tmp_path / 'whole', 8)
  first = distill(tmp_path / 'stopped', 4)  # as if killed after step 4: its checkpoint is the last state
  assert first['steps'] == 4 and first['resumed_at_step'] is None
  capsys.readouterr()
  resumed = distill(tmp_path / 'stopped', 8)
  assert 'Resumed from' in capsys.readouterr().out
  assert resumed['resumed_at_step'] == 4 and resumed['steps'] == 8
  assert resumed['generations'] == whole['generations'] == 2 and resumed['pool_size'] == whole['pool_size']
  assert [entry['step'] for entry in resumed['history']] == [2, 4, 6, 8]
  assert resumed['train_seconds'] > first['train_seconds']
  # The resumed student is the one an uninterrupted run trains: same generators, pool, optimiser moments.
  probe = np.random.RandomState(1).uniform(-0.2, 0.2, (256, 4)).astype(np.float32)
  resumed_teacher = teacher_loading.load_teacher(resumed['policy'], OBSERVATION_SPEC, ACTION_SPEC)
  whole_teacher = teacher_loading.load_teacher(whole['policy'], OBSERVATION_SPEC, ACTION_SPEC)
  np.testing.assert_allclose(adapters.teacher_logits(resumed_teacher, probe),
                             adapters.teacher_logits(whole_teacher, probe), atol=1e-4)


def test_sigterm_saves_a_checkpoint_and_the_same_command_resumes_from_it(tmp_path):
  teacher_dir = _rule_teacher(str(tmp_path / 'teacher' / 'policy'))
  root = tmp_path / 'student'
  command = [sys.executable, DISTILL_MAIN, f'--teacher={teacher_dir}', '--gin_file=data_free_cartpole.gin',
             f'--root_dir={root}', '--gin_bindings=distill_data_free.log_every = 10']
  process = subprocess.Popen(command + ['--gin_bindings=DataFreeDistiller.num_steps = 1000000'], cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  watchdog = threading.Timer(300, process.kill)  # a run that never logs fails the test instead of hanging it
  watchdog.start()
  try:
    seen = []
    for line in process.stdout:
      seen.append(line)
      if ' step ' in line and line.startswith('['):  # a progress line: the run is training
        process.send_signal(signal.SIGTERM)
        break
    output = ''.join(seen) + process.stdout.read()
    process.wait()
  finally:
    watchdog.cancel()
  assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
  stopped = re.search(r'Stopped at step ([\d,]+)/1,000,000', output)
  assert stopped, output[-3000:]
  stopped_step = int(stopped.group(1).replace(',', ''))
  assert stopped_step >= 10 and not (root / 'summary.json').exists()
  # The same command resumes from the checkpoint it saved (a budget it has already spent: it finishes there).
  result = _run(command[1:] + ['--gin_bindings=DataFreeDistiller.num_steps = 1'])
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert 'Resumed from' in result.stdout and f'at step {stopped_step:,}' in result.stdout, result.stdout[-2000:]
  assert json.loads((root / 'summary.json').read_text())['steps'] == stopped_step
