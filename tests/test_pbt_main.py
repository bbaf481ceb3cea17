"""End to end: `binaries/pbt_main.py` runs a population of 2 kickstarted CartPole members on a local Ray
cluster (2 CPUs), each also codistilling from its peer (`TeacherSet.peers = 1`); one member's process is
killed (SIGKILL) mid-run, the other's is sent SIGTERM. One run, several checks: it finishes, members exploit
and explore, an exploit reuses the member's process without retracing, members load each other as teachers,
the killed member resumes from its last checkpoint, and the member stopped by SIGTERM saves and resumes
where it stopped."""

import json
import os
import subprocess
import sys

import pytest
import tensorflow as tf

from protege.pbt import lineage as lineage_lib
from protege.pbt import member as member_lib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PBT_MAIN = os.path.join(REPO, 'binaries', 'pbt_main.py')
# Members run for many ready periods, each long against Ray's start-up and restart latency: on a loaded
# machine a member of 4,096 steps (256 per period) finished before its peer's first report was processed,
# and the population never compared.
TOTAL_ENV_STEPS = 8192
READY_ENV_STEPS = 512
KILL_AT_ENV_STEPS = 2048
SIGTERM_AT_ENV_STEPS = 3072
HYPERPARAMETERS = ('learning_rate', 'entropy_coef', 'lambda_teacher_0', 'lambda_peer_0')

TINY_GIN = """
import protege.pbt.scheduler
include 'pbt_kickstart_cartpole.gin'
make_environment.num_envs = 4
MLPTorso.layer_sizes = (32,)
train.total_env_steps = {total}
train.eval_episodes = 2
PPOLearner.num_epochs = 2
TeacherSet.paths = ['{teacher}']
TeacherSet.peers = 1              # codistillation: the other member teaches too, its λ moved by PBT
PBTScheduler.ready_env_steps = {ready}
PBTScheduler.burn_in_env_steps = 0
PBTScheduler.significance = 1.0   # copy any peer with a higher mean: exploits happen in a short run
PBTScheduler.min_episodes = 2
"""


def _events(path):
  return lineage_lib.read_events(path) if os.path.exists(path) else []


@pytest.fixture(scope='module')
def population(tmp_path_factory):
  """Runs the population; member_1's process SIGKILLs itself once mid-run, member_0's sends itself SIGTERM
  (`PBT_KILL_MEMBER_AT`, at set points, where a signal from outside would race the run); returns what the
  run wrote."""
  directory = tmp_path_factory.mktemp('pbt')
  teacher = tf.keras.Sequential([tf.keras.Input([4]), tf.keras.layers.Dense(2)])
  teacher.save(str(directory / 'teacher.keras'))
  gin_file = directory / 'tiny.gin'
  # The teacher's path is relative, as users write them: members resolve it from pbt_main's directory.
  gin_file.write_text(TINY_GIN.format(total=TOTAL_ENV_STEPS, ready=READY_ENV_STEPS, teacher='teacher.keras'))
  root = str(directory / 'run')
  command = [sys.executable, PBT_MAIN, f'--gin_file={gin_file}', f'--root_dir={root}', '--population=2',
             '--num_cpus=2', '--cpus_per_member=0.5', '--max_failures=2', '--traceback']
  environment = dict(os.environ, **{member_lib.KILL_ENV_VAR: f'member_1:{KILL_AT_ENV_STEPS},'
                                                              f'member_0:{SIGTERM_AT_ENV_STEPS}:SIGTERM'})
  result = subprocess.run(command, cwd=directory, env=environment, capture_output=True, text=True, timeout=600)
  output = result.stdout + result.stderr
  assert result.returncode == 0, output[-4000:]
  with open(os.path.join(root, 'population.json')) as f:
    summary = json.load(f)
  return {'root': root, 'summary': summary, 'output': output,
          'lineage': _events(os.path.join(root, 'lineage.jsonl')),
          'members': {name: _events(os.path.join(root, 'members', name, 'events.jsonl'))
                      for name in ('member_0', 'member_1')}}


def test_the_population_finishes_and_reports(population):
  summary = population['summary']
  assert [m['member'] for m in summary['members']] == ['member_0', 'member_1']
  for member in summary['members']:
    assert member['env_steps'] == TOTAL_ENV_STEPS and member['error'] is None
    assert member['eval_return_mean'] is not None
    assert set(member['hyperparameters']) == set(HYPERPARAMETERS)
    assert os.path.isfile(os.path.join(population['root'], 'members', member['member'], 'summary.json'))
  assert summary['failed'] == []
  assert os.path.getsize(os.path.join(population['root'], 'lineage.png')) > 10_000
  assert f'| member_0 | {TOTAL_ENV_STEPS:,} |' in population['output']


def test_members_exploit_and_explore_within_the_search_space(population):
  lineage = population['lineage']
  exploits = [e for e in lineage if e['event'] == 'exploit']
  explores = [e for e in lineage if e['event'] == 'explore']
  assert exploits and len(explores) == len(exploits)
  assert population['summary']['exploits'] == len(exploits)
  for explore in explores:
    assert set(explore['operations']) == set(HYPERPARAMETERS)
    assert 0.0 <= explore['new']['lambda_teacher_0'] <= 4.0
    assert 3e-4 <= explore['new']['learning_rate'] <= 3e-3
  # Every report carries the member's live hyperparameters; λ moves between members only by exploits.
  reports = [e for e in lineage if e['event'] == 'report']
  assert {e['member'] for e in reports} == {'member_0', 'member_1'}


def test_an_exploit_restores_the_donor_in_the_members_own_process_without_retracing(population):
  reused = []
  for name, events in population['members'].items():
    pid = None
    for event in events:
      if event['event'] == 'setup':
        pid = event['pid']
      elif event['event'] == 'restore' and event['source'] != name:
        # The donor's weights, this member's explored values (reset_config came first), the old trace.
        reused.append((name, event['tracing_count'], event['hyperparameters']))
  assert reused, population['members']
  assert any(count == 1 for _, count, _ in reused), reused
  explored = [(e['member'], e['new']['lambda_teacher_0']) for e in population['lineage']
              if e['event'] == 'explore']
  for name, _, hyperparameters in reused:
    # The member reports its λ read back from a float32 variable; the explore logged the float64 it drew.
    assert any(member == name and value == pytest.approx(hyperparameters['lambda_teacher_0'], rel=1e-6)
               for member, value in explored), (name, hyperparameters, explored)


def test_members_load_each_other_as_peer_teachers(population):
  for name, events in population['members'].items():
    other = 'member_1' if name == 'member_0' else 'member_0'
    loads = [e for e in events if e['event'] == 'codistill']
    assert loads, events
    for load in loads:
      assert load['teachers']['peer_0']['peer'] == other
      assert load['teachers']['peer_0']['env_steps'] > 0
  published = os.listdir(os.path.join(population['root'], 'codistillation'))
  assert sorted(published) == ['member_0.npz', 'member_1.npz']


def test_a_killed_member_resumes_from_its_last_checkpoint(population):
  events = population['members']['member_1']
  kills = [i for i, e in enumerate(events) if e['event'] == 'kill']
  assert len(kills) == 1, events
  killed = events[kills[0]]
  assert killed['env_steps'] >= KILL_AT_ENV_STEPS
  # Ray saw the process die and started the member again, in another process, from a checkpoint.
  restarted = [e for e in events[kills[0] + 1:] if e['event'] == 'setup']
  assert restarted and restarted[0]['pid'] != killed['pid']
  restore = next(e for e in events[kills[0] + 1:] if e['event'] == 'restore')
  assert 0 < restore['env_steps'] <= killed['env_steps']  # its last checkpoint, not from scratch
  assert any(e['event'] == 'error' and e['member'] == 'member_1' for e in population['lineage'])
  assert population['summary']['member_failures'] == 2  # this SIGKILL and member_0's SIGTERM
  assert any(e['event'] == 'finish' and e['env_steps'] == TOTAL_ENV_STEPS for e in events[kills[0] + 1:])


def test_a_member_sent_sigterm_saves_and_resumes_where_it_stopped(population):
  events = population['members']['member_0']
  signalled = [i for i, e in enumerate(events) if e['event'] == 'kill' and e['signal'] == 'SIGTERM']
  assert len(signalled) == 1, events
  stopped = next(e for e in events[signalled[0]:] if e['event'] == 'stopped')
  assert stopped['signal'] == 15 and stopped['env_steps'] >= SIGTERM_AT_ENV_STEPS and stopped['error'] is None
  assert stopped['checkpoint'].startswith(os.path.join(population['root'], 'members', 'member_0', 'checkpoints'))
  after = events[events.index(stopped) + 1:]
  setup = next(e for e in after if e['event'] == 'setup')
  assert setup['pid'] != stopped['pid'] and setup['env_steps'] == stopped['env_steps']  # nothing lost
  # Ray restores the trial's checkpoint next: an older one of this member is skipped, its own newer kept.
  restore = next(e for e in after if e['event'] in ('restore', 'restore_skipped'))
  assert restore['env_steps'] == stopped['env_steps'], after
  assert any(e['event'] == 'finish' and e['env_steps'] == TOTAL_ENV_STEPS for e in after)


def test_the_local_ray_cluster_of_the_members_requires_its_token(population):
  """Ray's servers listen on every interface; pbt_main turns on Ray's token authentication for the local
  cluster it starts (the members run under it)."""
  setups = [e for events in population['members'].values() for e in events if e['event'] == 'setup']
  assert setups and all(e['ray_auth_mode'] == 'token' for e in setups), setups


def test_members_run_at_the_priority_of_pbt_main(population):
  """Ray would start the members 15 nice levels below pbt_main; pbt_main keeps them at its own."""
  setups = [e for events in population['members'].values() for e in events if e['event'] == 'setup']
  assert setups and all(e['niceness'] == os.nice(0) for e in setups), setups
