"""docs/configurables.md is the reference `binaries/configurables_doc_main.py` generates from the code: current."""

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROGRAM = os.path.join(REPO, 'binaries', 'configurables_doc_main.py')


def test_the_configurables_reference_is_current(tmp_path):
  check = subprocess.run([sys.executable, PROGRAM, '--check'], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
  assert check.returncode == 0, (check.stdout + check.stderr)[-2000:]
  # And the check can fail: a stale copy is named, with the command that renews it.
  stale = tmp_path / 'configurables.md'
  stale.write_text(open(os.path.join(REPO, 'docs', 'configurables.md')).read().replace('PPOLearner', 'PPO', 1))
  result = subprocess.run([sys.executable, PROGRAM, '--check', f'--output={stale}'], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 1
  assert f'{stale} is not current: run python binaries/configurables_doc_main.py' in result.stderr


def test_every_parameter_of_the_learners_is_documented():
  text = open(os.path.join(REPO, 'docs', 'configurables.md')).read()
  assert '(undocumented)' not in text
  for name in ('PPOLearner', 'IMPALALearner', 'RNDLearner', 'Kickstarter', 'TeacherSet', 'train', 'PBTScheduler'):
    assert f'### `{name}`' in text
  assert '| `learning_rate` | `0.0003` |' in text  # PPOLearner's default, read from its signature


@pytest.mark.reverb
def test_the_reverb_transport_registers_no_configurable():
  # So the reference is the same where dm-reverb is not installed and the generator cannot import it.
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  from gin import config as gin_config  # pylint: disable=g-import-not-at-top
  registered = {c.name: c.module for _, c in gin_config._REGISTRY.items()}  # pylint: disable=protected-access
  assert 'queue_table' not in registered and 'uniform_table' not in registered
  assert reverb_replay.__name__ not in registered.values()
  assert registered['on_policy_table'] == 'protege.replay.signatures'  # the reading of the registry works
