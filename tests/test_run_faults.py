"""`binaries/train_main.py` itself under faults: kills at random moments, signals, a second process on its
directory, a damaged checkpoint index, divergence. Each keeps a promise of the README ("nothing lost")."""

import json
import os
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from protege.runtime import errors
from protege.runtime import run_directory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN_MAIN = os.path.join(REPO, 'binaries', 'train_main.py')
STEPS_PER_ITERATION = 16  # 2 envs x 8 steps

TINY_GIN = os.path.join(REPO, 'tests', 'tiny_cartpole.gin')


@pytest.fixture(scope='module')
def tiny_gin():
  return TINY_GIN


def _command(tiny_gin, root, *bindings):
  return [sys.executable, TRAIN_MAIN, f'--gin_file={tiny_gin}', f'--root_dir={root}'] + [
      f'--gin_bindings={binding}' for binding in bindings]


def _run(tiny_gin, root, *bindings):
  return subprocess.run(_command(tiny_gin, root, *bindings), cwd=REPO, capture_output=True, text=True,
                        timeout=300)


def _error_line(result):
  lines = [line for line in result.stderr.splitlines() if line.startswith('train_main: error:')]
  assert result.returncode == 2 and len(lines) == 1, result.stderr[-3000:]
  return lines[0]


def _summary(root):
  with open(os.path.join(root, 'summary.json')) as f:
    return json.load(f)


def _start(tiny_gin, root, *bindings):
  """A long train_main in the background; returns it once it has trained at least two iterations."""
  process = subprocess.Popen(_command(tiny_gin, root, 'train.total_env_steps = 10000000', *bindings), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in process.stdout:
    match = re.search(r'env steps ([\d,]+)/', line)
    if match and int(match.group(1).replace(',', '')) >= 2 * STEPS_PER_ITERATION:
      return process
  raise AssertionError(f'train_main ended before training: {process.communicate()[1][-3000:]}')


@pytest.mark.parametrize('signal_name, exit_code', [('SIGINT', 130), ('SIGTERM', 143)])
def test_a_signal_saves_the_iteration_under_way_and_the_next_run_resumes_there(tiny_gin, tmp_path, signal_name,
                                                                               exit_code):
  root = str(tmp_path / 'run')
  # No periodic checkpoint: whatever is saved, the signal saved.
  process = _start(tiny_gin, root, 'train.checkpoint_interval_seconds = 3600')
  started = time.time()
  process.send_signal(getattr(signal, signal_name))
  stdout, stderr = process.communicate(timeout=60)
  assert time.time() - started < 30, 'the run took too long to save and exit'
  assert process.returncode == exit_code, stderr[-3000:]
  assert f'{signal_name} received: saving and exiting' in stderr
  match = re.search(r'stopped at ([\d,]+) env steps; saved (\S+/ckpt-(\d+))\. Run the same command to resume', stdout)
  assert match, stdout[-3000:]
  env_steps, iterations = int(match.group(1).replace(',', '')), int(match.group(3))
  assert env_steps == iterations * STEPS_PER_ITERATION and iterations >= 2
  assert tf.train.latest_checkpoint(os.path.join(root, 'checkpoints')) == match.group(2)

  result = _run(tiny_gin, root, f'train.total_env_steps = {env_steps + 2 * STEPS_PER_ITERATION}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert f'ckpt-{iterations} at {env_steps:,} env steps' in result.stdout  # nothing lost, nothing redone
  summary = _summary(root)
  assert summary['env_steps_this_run'] == 2 * STEPS_PER_ITERATION
  assert summary['learner_iterations'] == iterations + 2


def test_killed_at_random_moments_it_ends_exactly_at_its_budget(tiny_gin, tmp_path):
  """kill -9 of train_main itself, three times at random moments; then the run completes its budget."""
  root = str(tmp_path / 'run')
  budget = 40 * STEPS_PER_ITERATION
  rng = random.Random(1)
  resumed_from = []
  for _ in range(3):
    process = subprocess.Popen(_command(tiny_gin, root, f'train.total_env_steps = {budget}',
                                        'train.checkpoint_interval_seconds = 0.001'),
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in process.stdout:
      if 'Training CartPole-v1' in line:
        break
      match = re.search(r'Resumed from \S+ at ([\d,]+) env steps', line)
      if match:
        resumed_from.append(int(match.group(1).replace(',', '')))
    time.sleep(rng.uniform(0.0, 1.5))
    process.send_signal(signal.SIGKILL)
    process.wait()
  result = _run(tiny_gin, root, f'train.total_env_steps = {budget}', 'train.checkpoint_interval_seconds = 0.001')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = _summary(root)
  assert summary['env_steps'] == budget and summary['learner_iterations'] == budget // STEPS_PER_ITERATION
  assert resumed_from == sorted(resumed_from)  # every restart resumed, never from an earlier point


def test_a_second_process_on_the_directory_is_refused_naming_the_first(tiny_gin, tmp_path):
  root = str(tmp_path / 'run')
  first = _start(tiny_gin, root)
  try:
    result = _run(tiny_gin, root)
    line = _error_line(result)
    assert f"root_dir '{root}' is in use by train_main (PID {first.pid} " in line
    assert first.poll() is None  # the first run goes on
  finally:
    first.kill()
    first.wait()
  # A lock left by a killed process blocks nothing.
  result = _run(tiny_gin, root, 'train.total_env_steps = 64')
  assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize('damage', ['model_checkpoint_path: "ckpt-4" {{{', ''])
def test_a_damaged_or_empty_index_resumes_from_the_newest_checkpoint_and_says_so(tiny_gin, tmp_path, damage):
  root = str(tmp_path / 'run')
  assert _run(tiny_gin, root, 'train.checkpoint_interval_seconds = 0.001').returncode == 0
  with open(os.path.join(root, 'checkpoints', 'checkpoint'), 'w') as f:
    f.write(damage)
  result = _run(tiny_gin, root, 'train.total_env_steps = 96')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'warning: the checkpoint index' in result.stdout and 'rebuilt it from the' in result.stdout
  assert 'ckpt-4 at 64 env steps' in result.stdout
  summary = _summary(root)
  assert summary['env_steps'] == 96 and summary['env_steps_this_run'] == 32


def test_a_resumed_run_says_which_hyperparameters_its_checkpoint_keeps(tiny_gin, tmp_path):
  root = str(tmp_path / 'run')
  assert _run(tiny_gin, root).returncode == 0
  result = _run(tiny_gin, root, 'train.total_env_steps = 96', 'PPOLearner.learning_rate = 1e-2')
  assert result.returncode == 0, result.stderr[-3000:]
  warning = [line for line in result.stdout.splitlines() if line.startswith('warning: the resumed run keeps')]
  assert len(warning) == 1 and 'learning_rate = 0.0003 (the gin files say 0.01)' in warning[0], result.stdout
  assert 'entropy_coef' not in warning[0]  # unchanged ones are not named


def test_divergence_stops_the_run_in_one_line_and_keeps_the_good_checkpoints(tiny_gin, tmp_path):
  root = str(tmp_path / 'run')
  assert _run(tiny_gin, root, 'train.checkpoint_interval_seconds = 0.001').returncode == 0
  checkpoint_dir = os.path.join(root, 'checkpoints')
  before = sorted(os.listdir(checkpoint_dir))
  # The same run resumed on NaN observations (a broken sensor): the next loss is NaN.
  exploding = tmp_path / 'nan_observations.gin'
  exploding.write_text("import tests.faulty_envs\nmake_environment.env_id = 'Faulty/NaNObservationCartPole-v1'\n")
  result = subprocess.run(
      _command(tiny_gin, root, 'train.total_env_steps = 160', 'train.checkpoint_interval_seconds = 0.001') +
      [f'--gin_file={exploding}'], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, PYTHONPATH=REPO))
  line = _error_line(result)
  assert re.search(r'training diverged at learner iteration 5 \(80 env steps\): the (loss term|metric|'
                   r"gradient norm|weight) '[\w/:]+' (is nan|is inf|holds a NaN)", line), line
  assert 'ckpt-4, is kept' in line
  assert sorted(os.listdir(checkpoint_dir)) == before  # nothing non-finite was saved, nothing was replaced
  reader = tf.train.load_checkpoint(checkpoint_dir)
  for name, dtype in reader.get_variable_to_dtype_map().items():
    if dtype.is_floating and name.startswith('network/'):
      assert np.isfinite(reader.get_tensor(name)).all(), name


def test_a_nan_reward_stops_the_run_in_one_line_naming_the_environment(tiny_gin, tmp_path):
  nan_reward = tmp_path / 'nan_reward.gin'
  nan_reward.write_text("import tests.faulty_envs\nmake_environment.env_id = 'Faulty/NaNRewardCartPole-v1'\n")
  result = subprocess.run(_command(tiny_gin, str(tmp_path / 'run')) + [f'--gin_file={nan_reward}'], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=dict(os.environ, PYTHONPATH=REPO))
  line = _error_line(result)
  assert "'Faulty/NaNRewardCartPole-v1'" in line and 'non-finite reward nan' in line, line
  # The NaN came in the second iteration's collection (the tenth step): the first iteration is kept.
  assert re.search(r'saved \S+/ckpt-1 at 16 env steps before stopping', result.stdout), result.stdout[-2000:]
  assert tf.train.latest_checkpoint(str(tmp_path / 'run' / 'checkpoints')).endswith('ckpt-1')


def test_a_nan_weight_between_iterations_is_caught_before_it_is_saved(tmp_path):
  """The Trainer checks the whole learner state after every iteration, not only the losses."""
  import gin  # pylint: disable=g-import-not-at-top
  from protege.binaries import common  # pylint: disable=g-import-not-at-top
  from protege.agents.training import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
  common.parse_gin([TINY_GIN], [])
  trainer = trainer_lib.Trainer(str(tmp_path / 'run'), checkpoint_interval_seconds=0.001)
  try:
    trainer.run_iteration()
    saved = trainer.latest_checkpoint
    assert saved.endswith('ckpt-1')
    kernel = trainer.network.trainable_variables[0]
    kernel.assign(tf.tensor_scatter_nd_update(kernel, [[0, 0]], [np.inf]))
    with pytest.raises(errors.DivergenceError) as raised:
      trainer.run_iteration()
    assert 'training diverged at learner iteration 2 (32 env steps)' in str(raised.value)
    assert f'the last good checkpoint, {saved}, is kept' in str(raised.value)
    assert trainer.latest_checkpoint == saved
    with pytest.raises(errors.DivergenceError, match='refusing to save a checkpoint'):
      trainer.save()
  finally:
    trainer.close()
    trainer.release()
    gin.clear_config()


def test_a_non_finite_first_checkpoint_is_refused_and_says_none_was_written(tmp_path):
  weight = tf.Variable([1.0, np.nan], name='weight')
  manager = tf.train.CheckpointManager(tf.train.Checkpoint(weight=weight), str(tmp_path), max_to_keep=2)
  with pytest.raises(errors.DivergenceError) as raised:
    run_directory.save_checkpoint(manager, 1, guard=run_directory.NonFiniteGuard([weight]))
  assert "the weight 'weight:0' holds a NaN or infinity; no checkpoint was written before it" in str(raised.value)
  assert manager.latest_checkpoint is None and not os.listdir(tmp_path)
