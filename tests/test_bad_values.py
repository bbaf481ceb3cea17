"""Bad values are refused before any work starts, each with one line naming the value and the fix.

The README promises it ("Bad input stops with one line..."); this file keeps the promise. The binaries run
as a user runs them (subprocesses, exit code 2, one `<program>: error:` line on stderr, no checkpoint
written); the gin type checker and `one_line_errors`, which decide what counts as a user's error, are
tested in-process.
"""

import errno
import glob
import os
import re
import subprocess
import sys
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import gin
import pytest

from protege.binaries import common
from protege.replay import signatures
from protege.runtime import config
from protege.runtime import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = os.path.join(REPO, 'binaries')
# CartPole, shrunk: whatever is refused is refused before the budget matters.
TINY = ['--gin_file=gin/quickstart.gin', '--gin_bindings=train.total_env_steps = 64',
        '--gin_bindings=train.sequence_length = 8', '--gin_bindings=make_environment.num_envs = 2']


def _run(binary: str, args: List[str]) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(BINARIES, binary)] + args, cwd=REPO,
                        capture_output=True, text=True, timeout=300)


def _one_error_line(result: subprocess.CompletedProcess, program: str) -> str:
  """The run's single error line; fails unless it exited with 2, one such line and no traceback."""
  lines = [line for line in result.stderr.splitlines() if line.startswith(f'{program}: error:')]
  assert result.returncode == 2, result.stderr[-3000:]
  assert len(lines) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  return lines[0]


# --- the binaries ----------------------------------------------------------------------------------------

TRAIN_CASES = [
    # (id, extra flags, what the line must name)
    ('ppo_learning_rate', ['--gin_bindings=PPOLearner.learning_rate = 0.0'], 'PPOLearner.learning_rate'),
    ('impala_learning_rate',
     ['--gin_file=gin/impala_cartpole.gin', '--gin_bindings=IMPALALearner.learning_rate = -1e-3'],
     'IMPALALearner.learning_rate'),
    ('budget', ['--gin_bindings=train.total_env_steps = 0'], 'train.total_env_steps'),
    ('checkpoint_interval', ['--gin_bindings=train.checkpoint_interval_seconds = 0.0'],
     'train.checkpoint_interval_seconds'),
    ('progress_interval', ['--gin_bindings=train.progress_interval_seconds = -1.0'],
     'train.progress_interval_seconds'),
    ('summary_interval', ['--gin_bindings=train.summary_interval_iterations = 0'],
     'train.summary_interval_iterations'),
    ('eval_interval', ['--gin_bindings=train.eval_interval_env_steps = -1'], 'train.eval_interval_env_steps'),
    ('teacher_q_temperature', ['--gin_bindings=teacher_targets.q_temperature = -1.0'],
     'teacher_targets.q_temperature'),
    ('gin_type', ["--gin_bindings=make_environment.num_envs = 'eight'"],
     "make_environment.num_envs = 'eight' is a str; it must be an int"),
    ('dev_null', ['--gin_file=/dev/null'], "'/dev/null'"),
]


@pytest.mark.parametrize('extra, named', [case[1:] for case in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_main_refuses_a_bad_value_in_one_line_before_training(extra, named, tmp_path):
  root = tmp_path / 'run'
  line = _one_error_line(_run('train_main.py', [f'--root_dir={root}'] + TINY + extra), 'train_main')
  assert named in line, line
  assert not (root / 'checkpoints').exists()  # stopped before any training


def test_a_teacher_path_without_a_policy_is_one_line(tmp_path):
  not_a_policy = tmp_path / 'runs' / 'teacher'  # a run directory, not its policy/
  not_a_policy.mkdir(parents=True)
  root = tmp_path / 'student'
  line = _one_error_line(_run('train_main.py', [
      f'--root_dir={root}', '--gin_file=gin/kickstart_cartpole.gin',
      '--gin_bindings=train.total_env_steps = 64', f"--gin_bindings=TeacherSet.paths = ['{not_a_policy}']"]),
      'train_main')
  assert f"teacher '{not_a_policy}' holds no policy" in line and 'saved_model.pb' in line, line
  assert not (root / 'checkpoints').exists()


DATA_FREE_CASES = [
    ('student_learning_rate', ['--gin_bindings=DataFreeDistiller.student_learning_rate = 0.0'],
     'DataFreeDistiller.student_learning_rate'),
    ('generator_learning_rate', ['--gin_bindings=DataFreeDistiller.generator_learning_rate = -0.2'],
     'DataFreeDistiller.generator_learning_rate'),
    ('num_steps', ['--gin_bindings=DataFreeDistiller.num_steps = 0'], 'DataFreeDistiller.num_steps'),
    ('checkpoint_interval', ['--gin_bindings=distill_data_free.checkpoint_interval_seconds = -5.0'],
     'distill_data_free.checkpoint_interval_seconds'),
    ('q_temperature', ['--gin_bindings=teacher_targets.q_temperature = 0.0'], 'teacher_targets.q_temperature'),
    ('action_smoothing', ['--gin_bindings=teacher_targets.action_smoothing = 1.0'],
     'teacher_targets.action_smoothing'),
    ('teacher_without_policy', [], 'holds no policy'),
]


@pytest.mark.parametrize('extra, named', [case[1:] for case in DATA_FREE_CASES],
                         ids=[c[0] for c in DATA_FREE_CASES])
def test_distill_data_free_main_refuses_a_bad_value_in_one_line_before_training(extra, named, tmp_path):
  # An empty folder as the teacher: the settings are checked before it, and it is refused itself.
  (tmp_path / 'teacher').mkdir()
  root = tmp_path / 'student'
  args = [f'--teacher={tmp_path / "teacher"}', f'--root_dir={root}', '--gin_file=gin/data_free_cartpole.gin']
  line = _one_error_line(_run('distill_data_free_main.py', args + extra), 'distill_data_free_main')
  assert named in line, line
  assert not (root / 'checkpoints').exists()


def test_pbt_main_refuses_a_members_budget_in_one_line_before_ray_starts(tmp_path):
  root = tmp_path / 'population'
  result = _run('pbt_main.py', [f'--root_dir={root}', '--gin_file=gin/pbt_kickstart_cartpole.gin',
                                '--gin_bindings=train.total_env_steps = 0'])
  line = _one_error_line(result, 'pbt_main')
  assert 'train.total_env_steps' in line, line
  assert 'Started a local Ray instance' not in result.stdout + result.stderr


@pytest.mark.parametrize('flag', ['--checkpoint_interval_seconds=0', '--keep_checkpoints=0'])
def test_reverb_server_main_refuses_a_bad_flag_in_one_line_before_serving(flag, tmp_path):
  checkpoints = tmp_path / 'reverb_checkpoints'
  args = ['--gin_file=gin/quickstart.gin', '--port=1', f'--checkpoint_dir={checkpoints}', flag]
  line = _one_error_line(_run('reverb_server_main.py', args), 'reverb_server_main')
  assert flag.split('=')[0] in line and 'got 0' in line, line
  assert not checkpoints.exists()


@pytest.mark.reverb
def test_an_actor_given_a_server_without_its_table_is_one_line(tmp_path):
  """A real Reverb server (localhost, a free port) that serves another table than the gin file's."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  signature = {'x': tf.TensorSpec([1], tf.float32)}
  server = reverb_replay.start_server([reverb_replay.queue_table(
      signatures.on_policy_table(signature, name='other', max_size=2))])
  try:
    result = _run('actor_main.py', ['--gin_file=gin/quickstart.gin', f'--reverb_address=localhost:{server.port}',
                                    '--retry_seconds=5'])
  finally:
    server.stop()
  line = _one_error_line(result, 'actor_main')
  assert "has no table(s) ['trajectories', 'variables']" in line and "(it has ['other'])" in line, line


# --- the gin files -----------------------------------------------------------------------------------------


@gin.configurable('bad_values_probe')
def _probe(count: int = 1, rate: float = 0.5, flag: bool = False, name: str = 'a',
           maybe: Optional[int] = None, either: Union[int, str] = 0, sizes: Sequence[int] = (1,),
           pair: Tuple[int, str] = (1, 'a'), rates: Tuple[float, ...] = (), names: List[str] = (),
           table: Dict[str, float] = None, mapping: Mapping[str, int] = None,
           fn: Callable[..., Any] = print, anything: Any = None, untyped=None):
  del count, rate, flag, name, maybe, either, sizes, pair, rates, names, table, mapping, fn, anything, untyped


@gin.configurable('bad_values_probe_class')
class _ProbeClass:

  def __init__(self, count: int = 1):
    self.count = count


@gin.configurable('bad_values_consumer')
def _consumer(probe: Optional[_ProbeClass] = None, factory: Callable[..., Any] = _ProbeClass):
  del probe, factory


def _parse(*bindings: str) -> None:
  config.parse_gin([], list(bindings))


@pytest.mark.parametrize('binding', [
    'bad_values_probe.count = 3', 'bad_values_probe.rate = 2', 'bad_values_probe.rate = 2.5',
    'bad_values_probe.flag = True', "bad_values_probe.name = 'b'", 'bad_values_probe.maybe = None',
    'bad_values_probe.maybe = 4', "bad_values_probe.either = 'x'", 'bad_values_probe.sizes = [1, 2]',
    'bad_values_probe.sizes = (1, 2)', "bad_values_probe.pair = (2, 'b')",
    'bad_values_probe.rates = (1, 2.5)', "bad_values_probe.names = ['a', 'b']",
    "bad_values_probe.table = {'a': 1, 'b': 0.5}", "bad_values_probe.mapping = {'a': 1}",
    'bad_values_probe.table = None', 'bad_values_probe.fn = @bad_values_probe',
    "bad_values_probe.anything = {'x': [1, 'y']}", "bad_values_probe.untyped = 'anything'",
    'bad_values_consumer.probe = @bad_values_probe_class()',
    'bad_values_consumer.factory = @bad_values_probe_class',
    'bad_values_consumer.factory = @bad_values_probe',
    'N = 5\nbad_values_probe.count = %N', 'N = 5\nM = %N\nbad_values_probe.count = %M',
    'bad_values_probe.sizes = [%N]\nN = 2',
], ids=lambda binding: binding.replace('\n', ' | '))
def test_values_of_the_annotated_type_pass(binding):
  _parse(*binding.split('\n'))


@pytest.mark.parametrize('binding, message', [
    ("bad_values_probe.count = 'eight'", "bad_values_probe.count = 'eight' is a str; it must be an int"),
    ('bad_values_probe.count = True', 'is a bool; it must be an int'),
    ('bad_values_probe.count = 2.0', 'is a float; it must be an int'),
    ("bad_values_probe.rate = 'fast'", 'is a str; it must be a float'),
    ('bad_values_probe.rate = False', 'is a bool; it must be a float'),
    ('bad_values_probe.flag = 1', 'is an int; it must be a bool'),
    ('bad_values_probe.name = 3', 'it must be a str'),
    ('bad_values_probe.count = None', 'bad_values_probe.count = None; it must be an int'),
    ("bad_values_probe.maybe = 'x'", 'it must be an int or None'),
    ('bad_values_probe.either = 1.5', 'it must be an int or a str'),
    ("bad_values_probe.sizes = [1, 'two']", 'it must be a list or tuple of int'),
    ('bad_values_probe.sizes = 3', 'it must be a list or tuple of int'),
    ("bad_values_probe.sizes = 'abc'", 'it must be a list or tuple of int'),
    ("bad_values_probe.pair = ('a', 1)", 'it must be a tuple of 2 (int, str)'),
    ("bad_values_probe.pair = (1, 'a', 2)", 'it must be a tuple of 2'),
    ("bad_values_probe.rates = (1.0, 'x')", 'it must be a list or tuple of float'),
    ("bad_values_probe.names = 'a'", 'it must be a list or tuple of str'),
    ("bad_values_probe.table = {'a': 'b'}", 'it must be a dict of str to float'),
    ("bad_values_probe.mapping = {1: 1}", 'it must be a dict of str to int'),
    ('bad_values_probe.table = [1]', 'is a list; it must be a dict'),
    ('bad_values_probe.fn = 3', 'it must be a callable'),
    ('bad_values_probe.count = @bad_values_probe',
     'is a reference to bad_values_probe (a callable); it must be an int'),
    ('bad_values_consumer.probe = @bad_values_probe_class',
     'it must be a _ProbeClass (a reference such as @bad_values_probe_class()) or None'),
    ('bad_values_probe.count = @bad_values_probe_class()', 'is a _ProbeClass; it must be an int'),
    ("N = 'x'\nbad_values_probe.count = %N", "bad_values_probe.count = %N ('x') is a str"),
    ("N = 'x'\nM = %N\nbad_values_probe.count = %M", "%M ('x') is a str"),
    ("bad_values_probe_class.count = 'many'", "bad_values_probe_class.count = 'many' is a str"),
    ("scope/bad_values_probe.count = 'x'", "scope/bad_values_probe.count = 'x'"),
], ids=lambda value: value.replace('\n', ' | ') if isinstance(value, str) else value)
def test_a_value_of_another_type_is_one_line_naming_it(binding, message):
  with pytest.raises(errors.ConfigError) as error:
    _parse(*binding.split('\n'))
  text = str(error.value)
  assert message in text and '\n' not in text, text
  assert 'Fix the gin file or --gin_bindings' in text


def test_an_unbound_macro_is_gins_one_line_error_not_a_crash():
  with pytest.raises(errors.ConfigError, match='NOWHERE'):
    _parse('bad_values_probe.count = %NOWHERE')


def test_every_shipped_gin_file_passes_the_type_check():
  paths = sorted(glob.glob(os.path.join(config.GIN_DIR, '*.gin')) + glob.glob(
      os.path.join(config.GIN_DIR, 'parts', '*.gin')))   # the runs and the parts they include
  assert len(paths) > 20, paths
  for path in paths:
    gin.clear_config()
    common.parse_gin([path], [])  # parse_gin runs the check


def _write(path, text: str) -> str:
  path.write_text(text)
  return str(path)


@pytest.mark.parametrize('name, text', [('blank', ''), ('comments', '# nothing but a comment\n\n   \n')])
def test_an_empty_gin_file_is_refused(tmp_path, name, text):
  path = _write(tmp_path / f'{name}.gin', text)
  with pytest.raises(errors.ConfigError, match=re.escape(f"gin file '{path}' is empty")):
    _parse_file(path)


def _parse_file(*paths: str) -> None:
  config.parse_gin(list(paths), [])


def test_missing_directory_device_and_unreadable_files_are_refused(tmp_path, monkeypatch):
  with pytest.raises(errors.ConfigError, match='does not exist'):
    _parse_file(str(tmp_path / 'missing.gin'))
  with pytest.raises(errors.ConfigError, match='is a directory'):
    _parse_file(str(tmp_path))
  with pytest.raises(errors.ConfigError, match="'/dev/null' is not a regular file"):
    _parse_file('/dev/null')
  path = _write(tmp_path / 'locked.gin', 'bad_values_probe.count = 2\n')

  def denied(_):
    raise PermissionError(errno.EACCES, 'Permission denied', path)

  monkeypatch.setattr(config, '_read_text', denied)  # root reads any file, so chmod cannot show it
  message = f"gin file '{path}' cannot be read (permission denied)"
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    _parse_file(path)


def test_included_files_are_checked_too(tmp_path):
  _write(tmp_path / 'empty.gin', '# only a comment\n')
  outer = _write(tmp_path / 'outer.gin', f"include '{tmp_path / 'empty.gin'}'\nbad_values_probe.count = 2\n")
  message = f"'{tmp_path / 'empty.gin'}' (included by '{outer}') is empty"
  with pytest.raises(errors.ConfigError, match=re.escape(message)):
    _parse_file(outer)
  missing = _write(tmp_path / 'missing.gin', "include 'no_such_file.gin'\n")
  with pytest.raises(errors.ConfigError, match=r"'no_such_file.gin' \(included by .*\) does not exist"):
    _parse_file(missing)
  with pytest.raises(errors.ConfigError, match='included by --gin_bindings'):
    _parse('include "/dev/null"')
  # A file whose only statement is an include names a configuration: it is not empty.
  alias = _write(tmp_path / 'alias.gin', "include 'quickstart.gin'\n")
  common.parse_gin([alias], [])


# --- which errors become one line ---------------------------------------------------------------------------


def _exit_line(error: BaseException, capsys) -> str:
  with pytest.raises(SystemExit) as exit_info:
    with common.one_line_errors('probe'):
      raise error
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1, lines
  return lines[0]


def test_a_users_error_is_one_line(capsys):
  line = _exit_line(errors.ConfigError('train.seed = -1 is bad; fix it.\nmore detail'), capsys)
  assert line == 'probe: error: train.seed = -1 is bad; fix it.  (--traceback shows details)'
  assert 'cannot be restored' in _exit_line(errors.CheckpointError('checkpoint x cannot be restored'), capsys)
  assert 'did not answer' in _exit_line(errors.UnreachableError('server did not answer'), capsys)


def test_a_full_disk_or_a_denied_path_is_one_line(capsys):
  line = _exit_line(OSError(errno.ENOSPC, 'No space left on device', '/runs/x/ckpt'), capsys)
  assert 'the disk is full' in line and '/runs/x/ckpt' in line
  denied = PermissionError(errno.EACCES, 'Permission denied', '/root/x')
  assert 'Permission denied' in _exit_line(denied, capsys)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  full = tf.errors.ResourceExhaustedError(None, None, 'write failed: No space left on device')
  line = _exit_line(full, capsys)
  assert 'the disk is full' in line


@pytest.mark.parametrize('error', [
    ValueError('a bug'), KeyError('key'), RuntimeError('a bug'), ConnectionError('a bug'),
    FileNotFoundError(errno.ENOENT, 'No such file', '/x'), PermissionError('no errno')],
    ids=lambda e: type(e).__name__)
def test_anything_else_keeps_its_traceback(error):
  with pytest.raises(type(error)):
    with common.one_line_errors('probe'):
      raise error


def test_traceback_flag_shows_a_users_error_whole():
  with pytest.raises(errors.ConfigError):
    with common.one_line_errors('probe', show_traceback=True):
      raise errors.ConfigError('bad')


def test_pbt_refuses_a_learning_rate_range_that_reaches_zero_and_a_negative_burn_in():
  from protege.pbt import scheduler  # pylint: disable=g-import-not-at-top
  with pytest.raises(errors.ConfigError, match='a learning rate must be > 0'):
    scheduler.hyperparameter('learning_rate', (0.0, 1e-3, 'linear'))
  with pytest.raises(errors.ConfigError, match='PBTScheduler.burn_in_env_steps=-1 must be an int >= 0'):
    scheduler.PBTScheduler(space={'learning_rate': (1e-4, 1e-3, 'log')}, ready_env_steps=64, burn_in_env_steps=-1)


@pytest.mark.parametrize('setting, value', [('q_temperature', 0.0), ('q_temperature', -0.5),
                                            ('q_temperature', float('inf')), ('action_smoothing', -0.1),
                                            ('action_smoothing', 1.0), ('action_only', 'yes')])
def test_a_teachers_target_setting_out_of_range_is_one_line_before_anything_is_loaded(setting, value, tmp_path):
  from protege.agents.distillation import teacher_loading  # pylint: disable=g-import-not-at-top
  from tf_agents.specs import tensor_spec  # pylint: disable=g-import-not-at-top
  # The path does not exist: a ConfigError, not a PolicyLoadError, shows the setting is checked first.
  with pytest.raises(errors.ConfigError) as error:
    teacher_loading.load_teacher(str(tmp_path / 'nothing'), tensor_spec.TensorSpec([4]),
                                 tensor_spec.BoundedTensorSpec([], 'int64', 0, 1), **{setting: value})
  message = str(error.value)
  assert f'teacher_targets.{setting}' in message and repr(value) in message and '\n' not in message, message


def test_check_number_names_the_setting_its_value_and_the_fix():
  config.check_number('train.total_env_steps', 10, 0, integer=True)
  config.check_number('--keep_checkpoints', 1, 1, inclusive=True, integer=True)
  for value in (0, -3, 2.5, True, float('nan'), 'ten'):
    with pytest.raises(errors.ConfigError, match='train.total_env_steps must be an int > 0'):
      config.check_number('train.total_env_steps', value, 0, integer=True)
  with pytest.raises(errors.ConfigError, match=r'--keep_checkpoints must be an int >= 1 \(kept\), got 0; '
                                               'pass another --keep_checkpoints'):
    config.check_number('--keep_checkpoints', 0, 1, inclusive=True, integer=True, meaning='kept')
