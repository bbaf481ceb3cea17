"""End to end: `binaries/train_main.py` as a user runs it, in a subprocess."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from matplotlib import image
from tf_agents.trajectories import time_step as ts

from protege.agents.training import summaries

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_MAIN = os.path.join(REPO, 'binaries', 'train_main.py')

TINY_GIN = os.path.join(REPO, 'tests', 'tiny_cartpole.gin')  # 2 envs x 8 steps, 64 env steps


def _run(args, timeout=300):
  return subprocess.run([sys.executable, TRAIN_MAIN] + args, cwd=REPO, capture_output=True, text=True,
                        timeout=timeout)


def _train(tiny_gin, root, *extra_args):
  """Runs the tiny configuration into `root`; returns its stdout and summary.json."""
  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={root}', *extra_args])
  assert result.returncode == 0, result.stderr[-3000:]
  with open(os.path.join(root, 'summary.json')) as f:
    return result.stdout, json.load(f)


@pytest.fixture(scope='module')
def tiny_gin():
  return TINY_GIN


def test_train_writes_a_self_describing_run_and_resumes(tiny_gin, tmp_path):
  root = str(tmp_path / 'run')
  first = _run([f'--gin_file={tiny_gin}', f'--root_dir={root}'])
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'env steps' in first.stdout and 'ETA' in first.stdout  # progress lines

  summary = json.load(open(os.path.join(root, 'summary.json')))
  assert summary['env_steps'] == 64
  assert summary['learner_iterations'] == 4  # 64 steps / (2 envs x 8 steps)
  assert summary['wall_seconds'] > 0
  assert 0 < summary['eval_return_mean'] <= 500
  operative = open(os.path.join(root, 'operative_config.gin')).read()
  assert 'train.total_env_steps = 64' in operative and 'PPOLearner.num_minibatches = 2' in operative
  assert tf.train.latest_checkpoint(os.path.join(root, 'checkpoints')).endswith('ckpt-4')

  # TensorBoard summaries hold learner, environment and evaluation scalars.
  tags = set()
  for event_file in tf.io.gfile.glob(os.path.join(root, 'summaries', 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(event_file):
      tags.update(value.tag for value in event.summary.value)
  assert {'learner/loss', 'learner/entropy', 'env/episode_return', 'eval/return_mean'} <= tags
  # ... and, from the run's start, the operative config as text and the hyperparameters (HParams plugin).
  assert {'config/operative', '_hparams_/session_start_info'} <= tags

  # curves.png: a PNG of the run's curves, named in summary.json and in the last line.
  assert summary['curves'] == os.path.join(root, 'curves.png')
  assert 'curves.png' in first.stdout.strip().splitlines()[-1]
  with open(summary['curves'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  assert image.imread(summary['curves']).shape[:2] == (400, 1000)  # one panel: 10 x 4 inches at 100 dpi

  # The exported SavedModel is a TF-Agents policy whose info carries logits and values.
  policy = tf.saved_model.load(os.path.join(root, 'policy'))
  observation = tf.constant(np.zeros((3, 4), np.float32))
  step = policy.action(ts.restart(observation, batch_size=3))
  assert step.action.shape == (3,)
  assert step.info['logits'].shape == (3, 2)
  assert set(step.info['values']) == {'extrinsic'}

  # Same root_dir, larger budget: resumes from the checkpoint instead of starting over.
  second = _run([f'--gin_file={tiny_gin}', f'--root_dir={root}', '--gin_bindings=train.total_env_steps = 96'])
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Resumed from' in second.stdout and 'at 64 env steps' in second.stdout
  summary = json.load(open(os.path.join(root, 'summary.json')))
  assert summary['env_steps'] == 96
  assert summary['env_steps_this_run'] == 32
  assert summary['learner_iterations'] == 6
  # The curves are drawn again from both processes' event files: the final evaluations of both are in.
  assert summary['curves'] == os.path.join(root, 'curves.png')
  evaluations = summaries.read_scalars(os.path.join(root, 'summaries'))['eval/return_mean']
  assert evaluations[0].tolist() == [64, 96]


def _first_error_line(result):
  lines = [l for l in result.stderr.splitlines() if l.startswith('train_main: error:')]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def test_unknown_environment_is_one_clear_line(tiny_gin, tmp_path):
  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={tmp_path}',
                 "--gin_bindings=make_environment.env_id = 'CartPol-v1'"])
  line = _first_error_line(result)
  assert "'CartPol-v1'" in line and "'CartPole-v1'" in line


def test_gin_typo_is_one_clear_line(tiny_gin, tmp_path):
  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={tmp_path}',
                 '--gin_bindings=PPOLearner.lerning_rate = 0.1'])
  line = _first_error_line(result)
  assert 'lerning_rate' in line


def test_zero_eval_episodes_is_one_clear_line_before_training(tiny_gin, tmp_path):
  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={tmp_path}', '--gin_bindings=train.eval_episodes = 0'])
  line = _first_error_line(result)
  assert 'train.eval_episodes' in line and 'got 0' in line
  assert not os.path.exists(os.path.join(tmp_path, 'checkpoints'))  # stopped before any training


def test_unwritable_root_dir_is_one_clear_line(tiny_gin):
  result = _run([f'--gin_file={tiny_gin}', '--root_dir=/proc/protege_run'])
  line = _first_error_line(result)
  assert '/proc/protege_run' in line and '--root_dir' in line


@pytest.mark.reverb
def test_unreachable_reverb_is_one_clear_line(tiny_gin, tmp_path):
  with socket.socket() as s:
    s.bind(('localhost', 0))
    port = s.getsockname()[1]
  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={tmp_path}', f'--reverb_address=localhost:{port}'])
  line = _first_error_line(result)
  assert f'localhost:{port}' in line


def test_asynchronous_actor_run_completes_and_a_rerun_of_the_finished_directory_trains_no_more(tiny_gin, tmp_path):
  stdout, summary = _train(tiny_gin, str(tmp_path / 'async'), '--gin_bindings=train.asynchronous_actor = True')
  assert 'asynchronous actor' in stdout
  assert summary['env_steps'] == 64 and summary['learner_iterations'] == 4
  # The budget is spent: the actor thread is never started, and closing the run must not wait for it.
  _, again = _train(tiny_gin, str(tmp_path / 'async'), '--gin_bindings=train.asynchronous_actor = True')
  assert again['env_steps'] == 64 and again['env_steps_this_run'] == 0 and again['learner_iterations'] == 4


def test_two_logical_cpus_run_the_mirrored_learner(tiny_gin, tmp_path):
  stdout, summary = _train(tiny_gin, str(tmp_path / 'mirrored'), '--logical_cpus=2')
  assert '2 replica(s)' in stdout
  # Two replicas read one item each per iteration: 2 x 2 envs x 8 steps = 32 steps per iteration.
  assert summary['env_steps'] == 64 and summary['learner_iterations'] == 2


def test_quickstart_solves_cartpole(tmp_path):
  """The README's promise: gin/quickstart.gin reaches a mean evaluation return >= 475."""
  root = str(tmp_path / 'quickstart')
  result = _run(['--gin_file=gin/quickstart.gin', f'--root_dir={root}'], timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(os.path.join(root, 'summary.json')))
  assert summary['eval_return_mean'] >= 475, summary
  assert summary['eval_episodes'] == 10
  assert summary['stopped_early'] and summary['env_steps'] < 100_000

  # Solved is finished: running the directory again evaluates and exports, but does not train on.
  again = _run(['--gin_file=gin/quickstart.gin', f'--root_dir={root}'], timeout=600)
  assert again.returncode == 0, again.stderr[-3000:]
  rerun = json.load(open(os.path.join(root, 'summary.json')))
  assert rerun['env_steps'] == summary['env_steps'] and rerun['env_steps_this_run'] == 0


def test_impala_solves_cartpole(tmp_path):
  """The IMPALA learner learns on a real environment: gin/impala_cartpole.gin reaches a 10-episode greedy
  evaluation >= 475 well within its budget (98,304 of 327,680 steps). The actor is synchronous here: the
  asynchronous one's policy lag, and so the run, depends on the machine's load (82k-131k steps on a quiet
  machine, not 475 within the budget once beside a busy test process)."""
  root = str(tmp_path / 'impala')
  result = _run(['--gin_file=gin/impala_cartpole.gin', f'--root_dir={root}',
                 '--gin_bindings=train.total_env_steps = 327680',
                 '--gin_bindings=train.asynchronous_actor = False'], timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.load(open(os.path.join(root, 'summary.json')))
  assert summary['eval_return_mean'] >= 475, summary
  assert summary['stopped_early'] and summary['env_steps'] < 327680


def test_same_seed_same_weights(tiny_gin, tmp_path):
  """The synchronous run is reproducible from train.seed: two runs end with identical weights."""
  weights = []
  for name in ('a', 'b'):
    root = str(tmp_path / name)
    result = _run([f'--gin_file={tiny_gin}', f'--root_dir={root}', '--gin_bindings=train.seed = 5'])
    assert result.returncode == 0, result.stderr[-3000:]
    reader = tf.train.load_checkpoint(os.path.join(root, 'checkpoints'))
    weights.append({k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
                    if k.startswith('network/') and k.endswith('VARIABLE_VALUE')})
  assert weights[0].keys() == weights[1].keys() and len(weights[0]) >= 6
  for key in weights[0]:
    np.testing.assert_array_equal(weights[0][key], weights[1][key], err_msg=key)


def test_killed_run_resumes_from_its_last_checkpoint(tiny_gin, tmp_path):
  """kill -9 in the middle of training; the next run resumes instead of starting over. (Signals that save
  first, and kills at random moments: tests/test_run_faults.py.)"""
  signal_name = 'SIGKILL'
  import signal
  import time
  root = str(tmp_path / 'killed')
  process = subprocess.Popen(
      [sys.executable, TRAIN_MAIN, f'--gin_file={tiny_gin}', f'--root_dir={root}',
       '--gin_bindings=train.total_env_steps = 1000000', '--gin_bindings=train.checkpoint_interval_seconds = 0.001',
       '--gin_bindings=train.eval_episodes = 1'],
      cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
  checkpoint_dir = os.path.join(root, 'checkpoints')
  deadline = time.time() + 240
  while time.time() < deadline and int((tf.train.latest_checkpoint(checkpoint_dir) or '-0').rsplit('-', 1)[1]) < 5:
    time.sleep(0.1)
  process.send_signal(getattr(signal, signal_name))
  _, stderr = process.communicate(timeout=120)
  killed_at = tf.train.latest_checkpoint(checkpoint_dir)
  assert killed_at, 'no checkpoint was written before the kill'
  iterations = int(killed_at.rsplit('-', 1)[1])

  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={root}',
                 f'--gin_bindings=train.total_env_steps = {16 * (iterations + 2)}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'at {16 * iterations:,} env steps' in result.stdout  # 2 envs x 8 steps per iteration
  summary = json.load(open(os.path.join(root, 'summary.json')))
  assert summary['learner_iterations'] == iterations + 2
  assert summary['env_steps_this_run'] == 32


def test_corrupt_checkpoint_is_one_clear_line(tiny_gin, tmp_path):
  root = str(tmp_path / 'corrupt')
  assert _run([f'--gin_file={tiny_gin}', f'--root_dir={root}']).returncode == 0
  checkpoint = tf.train.latest_checkpoint(os.path.join(root, 'checkpoints'))
  with open(checkpoint + '.data-00000-of-00001', 'r+b') as f:
    f.truncate(10)
  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={root}', '--gin_bindings=train.total_env_steps = 128'])
  line = _first_error_line(result)
  assert 'cannot be restored' in line and root in line


def test_damaged_latest_checkpoint_falls_back_to_the_previous_one(tiny_gin, tmp_path):
  root = str(tmp_path / 'fallback')
  assert _run([f'--gin_file={tiny_gin}', f'--root_dir={root}',
               '--gin_bindings=train.checkpoint_interval_seconds = 0.001']).returncode == 0
  checkpoint_dir = os.path.join(root, 'checkpoints')
  assert tf.train.latest_checkpoint(checkpoint_dir).endswith('ckpt-4')
  with open(tf.train.latest_checkpoint(checkpoint_dir) + '.data-00000-of-00001', 'r+b') as f:
    f.truncate(10)
  result = _run([f'--gin_file={tiny_gin}', f'--root_dir={root}', '--gin_bindings=train.total_env_steps = 96'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'ckpt-4' in result.stdout and 'trying the previous one' in result.stdout
  assert 'Resumed from' in result.stdout and 'ckpt-3 at 48 env steps' in result.stdout
  summary = json.load(open(os.path.join(root, 'summary.json')))
  assert summary['env_steps'] == 96 and summary['learner_iterations'] == 6


def test_recurrent_network_trains_end_to_end(tiny_gin, tmp_path):
  """An LSTM core: its state travels through Reverb with the trajectories and into the export."""
  root = str(tmp_path / 'lstm')
  _, summary = _train(tiny_gin, root, "--gin_bindings=ActorCriticNetwork.core = 'lstm'",
                      '--gin_bindings=ActorCriticNetwork.core_size = 8')
  assert summary['learner_iterations'] == 4
  policy = tf.saved_model.load(os.path.join(root, 'policy'))
  state = policy.get_initial_state(3)
  assert [s.shape for s in tf.nest.flatten(state)] == [(3, 8), (3, 8)]
  step = policy.action(ts.restart(tf.zeros([3, 4]), batch_size=3), state)
  assert [s.shape for s in tf.nest.flatten(step.state)] == [(3, 8), (3, 8)]


def test_rnd_montezuma_logs_the_rooms_visited(tmp_path):
  root = tmp_path / 'montezuma'
  result = _run(['--gin_file=gin/rnd_montezuma.gin', f'--root_dir={root}',
                 '--gin_bindings=make_environment.num_envs = 2', '--gin_bindings=train.sequence_length = 8',
                 '--gin_bindings=train.total_env_steps = 32', '--gin_bindings=train.eval_episodes = 1',
                 '--gin_bindings=train.progress_interval_seconds = 0.001',
                 '--gin_bindings=atari_options.max_num_frames_per_episode = 200',
                 '--gin_bindings=RNDLearner.observation_normalization_steps = 4'])
  assert result.returncode == 0, result.stderr[-3000:]
  with open(root / 'summary.json') as f:
    summary = json.load(f)
  assert summary['visited'] == {'room': [1]}  # Montezuma's Revenge starts in room 1
  tags = set()
  for event_file in tf.io.gfile.glob(str(root / 'summaries' / 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(event_file):
      tags.update(value.tag for value in event.summary.value)
  assert {'env/visited_rooms', 'learner/rnd/predictor_loss', 'learner/value_loss_intrinsic'} <= tags
  # The rooms are a checkpointed bitmap over RAM values, so a resumed run keeps counting.
  reader = tf.train.load_checkpoint(str(root / 'checkpoints'))
  names = [name for name in reader.get_variable_to_shape_map() if name.startswith('visited_room/')]
  assert len(names) == 1
  bitmap = reader.get_tensor(names[0])
  assert bitmap.shape == (256,) and np.flatnonzero(bitmap).tolist() == [1]
  result = _run(['--gin_file=gin/rnd_montezuma.gin', f'--root_dir={root}',
                 '--gin_bindings=make_environment.num_envs = 2', '--gin_bindings=train.sequence_length = 8',
                 '--gin_bindings=train.total_env_steps = 48', '--gin_bindings=train.eval_episodes = 1',
                 '--gin_bindings=atari_options.max_num_frames_per_episode = 200'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Resumed from' in result.stdout
  with open(root / 'summary.json') as f:
    assert json.load(f)['visited'] == {'room': [1]}


def test_a_two_game_run_records_each_games_evaluation(tiny_gin, tmp_path):
  """Several MinAtar games in one run: each game's evaluation goes to TensorBoard, summary.json and the
  closing line, beside the mean over both."""
  root = str(tmp_path / 'two_games')
  games = ['MinAtar/Breakout-v0', 'MinAtar/SpaceInvaders-v0']
  stdout, summary = _train(tiny_gin, root, f"--gin_bindings=make_environment.env_id = '{'+'.join(games)}'",
                           '--gin_bindings=minatar_options.pad_channels_to = 6', '--gin_bindings=train.eval_episodes = 4')
  tasks = summary['eval_tasks']
  assert sorted(tasks) == games and [tasks[game]['episodes'] for game in games] == [2, 2]
  assert summary['eval_return_mean'] == pytest.approx(np.mean([tasks[game]['return_mean'] for game in games]))
  scalars = summaries.read_scalars(os.path.join(root, 'summaries'))
  for game in games:
    assert scalars[f'eval_tasks/{game}/return_mean'][1][-1] == pytest.approx(tasks[game]['return_mean'])
    assert f'{game} {tasks[game]["return_mean"]:.1f} over 2 episodes' in stdout
  _, cartpole = _train(tiny_gin, str(tmp_path / 'one_game'))
  assert cartpole['eval_tasks'] is None
