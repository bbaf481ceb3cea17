"""Protégé without dm-reverb (e.g. Python 3.13, where it has no wheel): every module a single-process run
uses imports, `train_main` trains, and the Reverb paths stop with one line naming the fix.

Each test runs a subprocess in which `reverb` cannot be imported, as on a Python without dm-reverb; on this
stack it is installed, so the tests block it with a meta-path finder placed before any other import.
"""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Makes `import reverb` fail as it does where dm-reverb is not installed, then runs the rest of the program.
_NO_REVERB = '''
import sys
class _NoReverb:
  def find_spec(self, name, path=None, target=None):
    if name == 'reverb' or name.startswith('reverb.'):
      raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    return None
sys.meta_path.insert(0, _NoReverb())
'''

# Prints, as the process exits, the Reverb modules it holds: reverb's own and Protégé's Reverb transport.
_REPORT_REVERB_MODULES = '''
import atexit, json
atexit.register(lambda: print('REVERB_MODULES=' + json.dumps(sorted(
    name for name in sys.modules if name.split('.')[0] == 'reverb' or name.endswith('reverb_replay')))))
'''

TRAIN_MAIN = os.path.join(REPO, 'binaries', 'train_main.py')


def _python(code: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
  """Runs `code` after the reverb blocker in a fresh interpreter, from the checkout."""
  return subprocess.run([sys.executable, '-c', _NO_REVERB + _REPORT_REVERB_MODULES + code, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def _run_binary(path: str, *args: str) -> subprocess.CompletedProcess:
  code = f'import runpy\nsys.argv = [{path!r}] + sys.argv[1:]\nrunpy.run_path({path!r}, run_name="__main__")'
  return _python(code, *args)


def _run_train_main(*args: str) -> subprocess.CompletedProcess:
  return _run_binary(TRAIN_MAIN, *args)


def _reverb_modules(result: subprocess.CompletedProcess) -> list:
  lines = [line for line in result.stdout.splitlines() if line.startswith('REVERB_MODULES=')]
  assert lines, result.stdout[-2000:] + result.stderr[-2000:]
  return json.loads(lines[-1].split('=', 1)[1])


def test_the_blocker_makes_reverb_unimportable():
  # The tests below mean something only if reverb really cannot be imported under the blocker.
  result = _python('import reverb')
  assert result.returncode == 1
  assert "ModuleNotFoundError: No module named 'reverb'" in result.stderr


def test_every_module_but_the_reverb_transport_imports_without_reverb():
  # Every module of the package, the binaries included (each defines its flags on import: they are removed
  # before the next binary), but replay/reverb_replay.py, the one module that imports reverb.
  code = '''
import importlib, pkgutil
from absl import flags
import protege
imported = []
for module in pkgutil.walk_packages(protege.__path__, 'protege.'):
  if module.name == 'protege.replay.reverb_replay':
    continue
  before = set(flags.FLAGS)
  importlib.import_module(module.name)
  for name in set(flags.FLAGS) - before:
    delattr(flags.FLAGS, name)
  imported.append(module.name)
print('IMPORTED=' + json.dumps(imported))
'''
  result = _python(code)
  assert result.returncode == 0, result.stderr[-3000:]
  imported = json.loads(next(line for line in result.stdout.splitlines() if line.startswith('IMPORTED='))[9:])
  for name in ('protege.binaries.train_main', 'protege.binaries.pbt_main', 'protege.binaries.eval_main',
               'protege.agents.training.trainer', 'protege.agents.training.collection',
               'protege.agents.training.saved_network', 'protege.agents.training.deployment',
               'protege.replay.signatures', 'protege.replay.local_queue'):
    assert name in imported
  assert _reverb_modules(result) == []


def test_train_main_trains_the_quickstart_without_reverb(tmp_path):
  root = tmp_path / 'run'
  result = _run_train_main('--gin_file=gin/quickstart.gin', f'--root_dir={root}',
                           '--gin_bindings=train.total_env_steps = 2048',  # 8 iterations of 8 envs x 32 steps
                           '--gin_bindings=train.eval_interval_env_steps = 0',  # one evaluation, at the end
                           '--gin_bindings=train.eval_episodes = 1',
                           '--gin_bindings=PPOLearner.num_epochs = 2',
                           '--gin_bindings=on_policy_table.max_size = 2')  # a Reverb-free setting too
  assert result.returncode == 0, result.stderr[-3000:]
  with open(root / 'summary.json') as f:
    summary = json.load(f)
  assert summary['env_steps'] == 2048
  assert _reverb_modules(result) == []


def test_reverb_address_without_reverb_is_one_line_naming_the_fix(tmp_path):
  root = tmp_path / 'run'
  result = _run_train_main('--gin_file=tests/tiny_cartpole.gin', f'--root_dir={root}',
                           '--reverb_address=localhost:1')
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('train_main: error: ')]
  assert len(errors) == 1 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  line = errors[0]
  assert '--reverb_address=localhost:1 needs Reverb' in line
  assert 'dm-reverb is not installed' in line and "pip install dm-reverb==0.14.0" in line
  assert 'Python <= 3.11' in line
  # The run stopped where an unreachable server stops it, and left what that leaves: the released lock
  # (test_train_main.py's unreachable address), no checkpoint, summary or policy.
  assert os.listdir(root) == ['.run.lock']
  assert _reverb_modules(result) == []


def test_the_configurables_reference_is_checked_without_reverb(tmp_path):
  # The generator skips the Reverb transport (it registers no configurable), so the check holds without it;
  # and it can still fail there: a stale copy is named.
  program = os.path.join(REPO, 'binaries', 'configurables_doc_main.py')
  code = f'import runpy\nsys.argv = [{program!r}] + sys.argv[1:]\nrunpy.run_path({program!r}, run_name="__main__")'
  result = _python(code, '--check')
  assert result.returncode == 0, result.stderr[-3000:]
  assert _reverb_modules(result) == []
  stale = tmp_path / 'configurables.md'
  with open(os.path.join(REPO, 'docs', 'configurables.md')) as f:
    stale.write_text(f.read().replace('PPOLearner', 'PPO', 1))
  result = _python(code, '--check', f'--output={stale}')
  assert result.returncode == 1 and f'{stale} is not current' in result.stderr, result.stderr[-3000:]


@pytest.mark.parametrize('binary, args', [
    ('reverb_server_main', ['--port=1']),
    ('actor_main', ['--reverb_address=localhost:1', '--actor_id=0']),
    ('learner_main', ['--reverb_address=localhost:1', '--root_dir={root}'])])
def test_each_job_of_a_distributed_run_is_one_line_naming_the_fix(binary, args, tmp_path):
  root = tmp_path / 'run'
  result = _run_binary(os.path.join(REPO, 'binaries', f'{binary}.py'), '--gin_file=tests/tiny_cartpole.gin',
                       *[arg.format(root=root) for arg in args])
  assert result.returncode == 2, result.stderr[-3000:]
  assert 'Traceback' not in result.stderr
  lines = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith(f'{binary}: ')]
  # The server says it listens on every interface only where it can: here it listens on nothing.
  assert len(lines) == 1 and lines[0].startswith(f'{binary}: error: {binary} ('), lines
  assert 'needs Reverb, but dm-reverb is not installed' in lines[0] and 'pip install dm-reverb==0.14.0' in lines[0]
  assert not root.exists()  # the learner wrote nothing
  assert _reverb_modules(result) == []
