"""The run directory's promises: one holder, atomic replacement, checkpoints that resume, nothing non-finite."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

from protege.runtime import errors
from protege.runtime import run_directory

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _hold_lock(root_dir):
  """A child process that opens `root_dir` and waits; returns it once it holds the lock."""
  code = textwrap.dedent(f"""
      import sys, time
      from protege.runtime import run_directory
      run = run_directory.RunDirectory({root_dir!r}, 'holder_main')
      print('held', flush=True)
      time.sleep(600)
  """)
  child = subprocess.Popen([sys.executable, '-c', code], cwd=REPO, stdout=subprocess.PIPE, text=True)
  assert child.stdout.readline().strip() == 'held'
  return child


def test_a_second_process_is_refused_naming_the_first_and_a_killed_holder_blocks_nothing(tmp_path):
  root = str(tmp_path / 'run')
  child = _hold_lock(root)
  try:
    with pytest.raises(errors.RunDirectoryError, match=rf'in use by holder_main \(PID {child.pid} '):
      run_directory.RunDirectory(root, 'second_main')
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
  # The kernel dropped the dead holder's lock: the next run opens the directory at once.
  with run_directory.RunDirectory(root, 'next_main') as run:
    with open(run.path(run_directory.LOCK_FILE)) as f:
      assert f'next_main (PID {os.getpid()} ' in f.read()


def test_a_file_or_unwritable_path_is_refused(tmp_path):
  a_file = tmp_path / 'file'
  a_file.write_text('x')
  with pytest.raises(errors.RunDirectoryError, match='is a file, not a directory'):
    run_directory.RunDirectory(str(a_file), 'x_main')
  if os.geteuid() != 0:  # root writes anywhere
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    with pytest.raises(errors.RunDirectoryError, match='not writable'):
      run_directory.RunDirectory(str(locked / 'run'), 'x_main')


def test_write_text_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = str(tmp_path / 'summary.json')
  run_directory.write_json(path, {'a': 1})
  run_directory.write_json(path, {'a': 2})
  with open(path) as f:
    assert f.read() == '{\n  "a": 2\n}\n'
  assert os.listdir(tmp_path) == ['summary.json']


def test_replace_directory_swaps_old_for_new(tmp_path):
  final = str(tmp_path / 'policy')
  for version in ('old', 'new'):
    staging = run_directory.staging_directory(final)
    with open(os.path.join(staging, 'version'), 'w') as f:
      f.write(version)
    run_directory.replace_directory(staging, final)
    with open(os.path.join(final, 'version')) as f:
      assert f.read() == version
  assert sorted(os.listdir(tmp_path)) == ['policy']


def test_a_directory_moved_aside_by_a_kill_is_put_back(tmp_path):
  final = str(tmp_path / 'policy')
  os.makedirs(os.path.join(tmp_path, '.policy.retired'))  # a kill fell between the fallback's two renames
  run_directory.recover_directory(final)
  assert os.path.isdir(final) and not os.path.exists(tmp_path / '.policy.retired')


def _checkpointed_variable(directory, values):
  """Saves one checkpoint per value of a variable `w` under `directory`; returns the checkpoint and manager."""
  w = tf.Variable(0.0, name='w')
  checkpoint = tf.train.Checkpoint(w=w)
  manager = run_directory.open_checkpoints(checkpoint, directory, max_to_keep=5)
  for step, value in enumerate(values, start=1):
    w.assign(value)
    manager.save(checkpoint_number=step)
  return w, checkpoint


@pytest.mark.parametrize('damage, reason', [
    ('garbage {{{ not a proto', 'damaged'),
    ('', 'empty'),
    ('model_checkpoint_path: "ckpt-99"\nall_model_checkpoint_paths: "ckpt-99"\n', 'not on disk'),
])
def test_a_damaged_or_empty_index_resumes_from_the_newest_checkpoint_and_says_so(tmp_path, damage, reason):
  directory = str(tmp_path / 'checkpoints')
  _checkpointed_variable(directory, [1.0, 2.0, 3.0])
  with open(os.path.join(directory, 'checkpoint'), 'w') as f:
    f.write(damage)
  w = tf.Variable(0.0, name='w')
  checkpoint = tf.train.Checkpoint(w=w)
  notes = []
  manager = run_directory.open_checkpoints(checkpoint, directory, log=notes.append)
  restored = run_directory.restore_latest_usable(checkpoint, manager, directory, log=notes.append)
  assert restored.endswith('ckpt-3') and w.numpy() == 3.0
  assert len(notes) == 1 and reason in notes[0] and 'rebuilt it from the 3 ckpt-* file(s)' in notes[0]
  if damage:  # the damaged index is kept beside the new one
    kept = [name for name in os.listdir(directory) if name.startswith('checkpoint.damaged-')]
    with open(os.path.join(directory, kept[0])) as f:
      assert f.read() == damage


def test_a_sound_index_is_left_alone(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  _checkpointed_variable(directory, [1.0, 2.0])
  assert run_directory.repair_index(directory) is None


def test_restore_skips_a_checkpoint_holding_a_nan(tmp_path):
  directory = str(tmp_path / 'checkpoints')
  _checkpointed_variable(directory, [1.0, float('nan')])
  w = tf.Variable(0.0, name='w')
  checkpoint = tf.train.Checkpoint(w=w)
  manager = run_directory.open_checkpoints(checkpoint, directory)
  notes = []
  restored = run_directory.restore_latest_usable(checkpoint, manager, directory,
                                                 guard=run_directory.NonFiniteGuard([w]), log=notes.append)
  assert restored.endswith('ckpt-1') and w.numpy() == 1.0
  assert "ckpt-2' cannot be restored (its weight 'w:0' holds a NaN or infinity)" in notes[0]


def test_nothing_non_finite_is_saved(tmp_path):
  w = tf.Variable([1.0, 2.0], name='weights')
  checkpoint = tf.train.Checkpoint(w=w)
  manager = run_directory.open_checkpoints(checkpoint, str(tmp_path))
  guard = run_directory.NonFiniteGuard([w])
  first = run_directory.save_checkpoint(manager, 1, guard)
  w.assign([1.0, np.inf])
  with pytest.raises(errors.DivergenceError, match=r"weight 'weights:0' holds a NaN or infinity; the last good "
                     r'checkpoint, .*ckpt-1, is kept'):
    run_directory.save_checkpoint(manager, 2, guard)
  assert manager.latest_checkpoint == first and run_directory.checkpoints_on_disk(str(tmp_path)) == [first]


def test_the_guard_names_the_iteration_and_the_quantity():
  w = tf.Variable([1.0, 2.0], name='dense/kernel')
  guard = run_directory.NonFiniteGuard([w, tf.Variable(3, name='counter')])
  assert [v.name for v in guard.variables] == ['dense/kernel:0']  # integers cannot be non-finite
  guard.check({'loss': np.float32(0.5), 'gradient_norm': 1.0}, iteration=7)
  with pytest.raises(errors.DivergenceError, match=r"iteration 7 \(1,024 env steps\): the loss term 'policy_loss' "
                     r'is nan; nothing of this iteration was saved and no checkpoint was written yet'):
    guard.check({'policy_loss': np.float32('nan')}, iteration=7, env_steps=1024)
  with pytest.raises(errors.DivergenceError, match=r"the gradient norm 'gradient_norm' is inf"):
    guard.check({'gradient_norm': np.inf}, iteration=8)
  w.assign([np.nan, 1.0])
  with pytest.raises(errors.DivergenceError, match=r"iteration 9: the weight 'dense/kernel:0' holds a NaN.*"
                     r'the last good checkpoint, ckpt-4, is kept'):
    guard.check({'loss': 0.1}, iteration=9, last_checkpoint='ckpt-4')


def _mount_small_tmpfs(path, size):
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', path], capture_output=True,
                          text=True, check=False)
  if result.returncode != 0:
    pytest.skip(f'cannot mount a small tmpfs to fill a disk here ({result.stderr.strip()})')


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(tmp_path):
  mount = str(tmp_path / 'small')
  _mount_small_tmpfs(mount, '512k')
  try:
    w = tf.Variable(tf.zeros([20_000]), name='w')  # 80 kB a checkpoint
    checkpoint = tf.train.Checkpoint(w=w)
    manager = run_directory.open_checkpoints(checkpoint, mount, max_to_keep=100)
    saved = []
    with pytest.raises(errors.RunDirectoryError, match=r"the disk holding '.*' is full .* while writing a "
                       r'checkpoint; the previous checkpoint, .*ckpt-\d+, is intact'):
      for step in range(1, 50):
        w.assign(tf.fill([20_000], float(step)))
        saved.append(run_directory.save_checkpoint(manager, step))
    assert not [name for name in os.listdir(mount) if '_temp' in name]  # the partial files are gone
    with pytest.raises(errors.RunDirectoryError, match='is full'):
      run_directory.write_json(os.path.join(mount, 'summary.json'), {'x': 'y' * 1_000_000})
    restored = tf.Variable(tf.zeros([20_000]), name='w')
    tf.train.Checkpoint(w=restored).restore(tf.train.latest_checkpoint(mount)).assert_consumed()
    assert restored.numpy()[0] == float(len(saved))
  finally:
    subprocess.run(['umount', mount], check=False)


def test_a_holder_that_lets_go_within_the_wait_hands_the_directory_over(tmp_path):
  """A PBT member resuming in another member's old process waits for the process that held its directory
  (`pbt.member.HANDOVER_WAIT_SECONDS`) instead of failing on the lock."""
  root = str(tmp_path / 'run')
  child = _hold_lock(root)
  killer = subprocess.Popen([sys.executable, '-c', f'import os, signal, time; time.sleep(1.5); '
                                                   f'os.kill({child.pid}, signal.SIGKILL)'])
  try:
    with run_directory.RunDirectory(root, 'next_main', wait_seconds=60.0) as run:
      with open(run.path(run_directory.LOCK_FILE)) as f:
        assert f'next_main (PID {os.getpid()} ' in f.read()
  finally:
    killer.wait()
    child.wait()
  # Without a wait, the same holder is refused at once (the first test), and one that never lets go is
  # refused when the wait is over.
  child = _hold_lock(root)
  try:
    with pytest.raises(errors.RunDirectoryError, match='in use by holder_main'):
      run_directory.RunDirectory(root, 'second_main', wait_seconds=0.5)
  finally:
    child.send_signal(signal.SIGKILL)
    child.wait()
