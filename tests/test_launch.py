"""`protege-launch` on a local Ray instance: the quickstart through the launcher with 2 actors, an actor
killed with SIGKILL and restarted by Ray, restarts that run out, bad input, and the Reverb exposure check."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from protege.launch import network
from protege.runtime import errors

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAUNCH_MAIN = os.path.join(REPO, 'binaries', 'launch_main.py')
STEPS_PER_ITERATION = 8 * 32  # gin/quickstart.gin: 8 envs × 32 steps, one item per learner iteration
# Two actors and the server share the test's 2 cores with the learner: half a CPU each in Ray's books.
SMALL_JOBS = ['--gin_bindings=launch.actor_cpus = 0.5', '--gin_bindings=launch.server_cpus = 0.5']


class _Launch:
  """launch_main in its own process (its own session, so a kill reaches all of it), output in a file."""

  def __init__(self, tmp_path, args):
    self.log_path = tmp_path / 'launch.log'
    self._log = open(self.log_path, 'w')
    self.process = subprocess.Popen([sys.executable, LAUNCH_MAIN] + args, cwd=REPO, stdout=self._log,
                                    stderr=subprocess.STDOUT, start_new_session=True)

  def log(self) -> str:
    return self.log_path.read_text()

  def wait_for(self, pattern: str, timeout: float) -> re.Match:
    deadline = time.time() + timeout
    while time.time() < deadline:
      match = re.search(pattern, self.log())
      if match:
        return match
      assert self.process.poll() is None, f'launch_main exited before "{pattern}":\n{self.log()[-4000:]}'
      time.sleep(0.2)
    raise AssertionError(f'timed out waiting for "{pattern}":\n{self.log()[-4000:]}')

  def kill_all(self) -> None:
    if self.process.poll() is None:
      os.killpg(self.process.pid, signal.SIGKILL)
      self.process.wait()


@pytest.fixture
def launch(tmp_path):
  launches = []

  def start(args):
    launches.append(_Launch(tmp_path, args))
    return launches[-1]

  yield start
  for one in launches:
    one.kill_all()


@pytest.mark.reverb
def test_the_quickstart_trains_through_the_launcher_and_ray_restarts_a_killed_actor(tmp_path, launch):
  root = tmp_path / 'run'
  run = launch(['--gin_file=quickstart.gin', f'--root_dir={root}', '--num_actors=2'] + SMALL_JOBS)
  pid = int(run.wait_for(r'actor_0 runs as pid (\d+)', 300).group(1))
  run.wait_for(r'env steps [1-9][\d,]*/100,000', 300)  # the learner trains on the actors' items
  os.kill(pid, signal.SIGKILL)
  assert run.process.wait(timeout=600) == 0, run.log()[-4000:]
  log = run.log()

  # Ray restarted the killed actor in a new process, which rejoined the run.
  assert 'actor_0: restarted by Ray after its process died' in log, log[-4000:]
  assert 'restarted by Ray during the run: actor_0.' in log
  assert len(re.findall(r'Actor 0: CartPole-v1 × 8 envs', log)) == 2, log[-4000:]
  # The learner's progress lines reach the driver's console, under the job's name.
  assert re.search(r'\(learner pid=\d+\).*env steps [\d,]+/100,000 \| ', log)
  # The run ends at the quickstart's stop rule, counted exactly from the items the learner consumed.
  summary = json.loads((root / 'summary.json').read_text())
  assert summary['eval_return_mean'] >= 475, summary
  assert summary['env_steps'] == summary['learner_iterations'] * STEPS_PER_ITERATION, summary
  assert 'launch_main: done in' in log and f'{summary["env_steps"]:,} env steps' in log
  # Every job exited: both actors saw the learner finish, the server checkpointed its tables.
  assert len(re.findall(r'Actor \d done: .*\(the learner finished\)', log)) == 2, log[-4000:]
  assert list((root / 'reverb_checkpoints').glob('*/DONE')), log[-4000:]


@pytest.mark.reverb
def test_a_job_killed_more_often_than_ray_may_restart_it_stops_the_run_with_one_line(tmp_path, launch):
  root = tmp_path / 'run'
  run = launch(['--gin_file=quickstart.gin', f'--root_dir={root}', '--num_actors=1',
                '--gin_bindings=launch.max_restarts = 0', '--gin_bindings=train.stop_at_eval_return = None']
               + SMALL_JOBS)
  pid = int(run.wait_for(r'actor_0 runs as pid (\d+)', 300).group(1))
  run.wait_for(r'env steps [1-9][\d,]*/100,000', 300)
  os.kill(pid, signal.SIGKILL)
  assert run.process.wait(timeout=300) == 2, run.log()[-4000:]
  errors_printed = [line for line in run.log().splitlines() if line.startswith('launch_main: error:')]
  assert len(errors_printed) == 1, run.log()[-4000:]
  assert 'actor_0 died' in errors_printed[0] and 'launch.max_restarts=0' in errors_printed[0]
  # The learner saved before the run stopped, so the same command resumes it.
  assert 'protege-launch learner: stopped at' in run.log(), run.log()[-4000:]
  assert list((root / 'checkpoints').glob('ckpt-*.index'))


@pytest.mark.parametrize('args, expected', [
    (['--num_actors=0'], '--num_actors'),
    (['--num_actors=1', '--gin_bindings=launch.actor_cpus = -1'], 'launch.actor_cpus'),
    (['--num_actors=1', '--gin_bindings=launch.max_restart = 2'], 'max_restart'),
])
def test_bad_input_is_one_line_before_ray_starts(tmp_path, args, expected):
  result = subprocess.run([sys.executable, LAUNCH_MAIN, '--gin_file=quickstart.gin', f'--root_dir={tmp_path}']
                          + args, cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('launch_main: error:')]
  assert len(lines) == 1 and expected in lines[0], result.stderr[-3000:]
  assert 'Started a local Ray instance' not in result.stdout + result.stderr


def test_the_reverb_port_stays_off_public_addresses():
  private = [('lo', '127.0.0.1'), ('eth0', '10.1.2.3'), ('eth0', 'fd00::2'), ('eth0', 'fe80::1')]
  network.check_reverb_exposure('10.1.2.3', 8000, private, behind_firewall=False)  # nothing public
  network.check_reverb_exposure('127.0.0.1', 8000, private, behind_firewall=False)
  with pytest.raises(errors.ConfigError, match=r'public Ray node IP 8\.8\.8\.8.*--node-ip-address'):
    network.check_reverb_exposure('8.8.8.8', 8000, private, behind_firewall=True)
  public = private + [('eth1', '34.1.2.3')]
  with pytest.raises(errors.ConfigError, match=r'34\.1\.2\.3 \(eth1\).*port 8000.*--reverb_behind_firewall'):
    network.check_reverb_exposure('10.1.2.3', 8000, public, behind_firewall=False)
  network.check_reverb_exposure('10.1.2.3', 8000, public, behind_firewall=True)  # the user closed the port
  assert network.is_public('2001:4860::8888') and not network.is_public('fd00::2')


def test_the_server_node_description_lists_this_machines_addresses():
  addresses = network.interface_addresses()
  assert ('lo', '127.0.0.1') in addresses
  assert 0 < network.free_port() < 65536


def test_an_absent_ray_cluster_is_one_line_not_a_hang():
  port = network.free_port()  # nothing listens there
  start = time.time()
  with pytest.raises(errors.UnreachableError, match=rf'no Ray cluster answers at --ray_address=127\.0\.0\.1:{port}'):
    network.check_reachable(f'127.0.0.1:{port}', seconds=1.0)
  assert time.time() - start < 30
  with pytest.raises(errors.ConfigError, match='expected host:port'):
    network.check_reachable('127.0.0.1:head', seconds=1.0)
  with socket.socket() as server:
    server.bind(('127.0.0.1', 0))
    server.listen()
    network.check_reachable(f'127.0.0.1:{server.getsockname()[1]}', seconds=1.0)  # answers: no error
  network.check_reachable('auto')  # Ray finds the cluster of this node itself


@pytest.mark.reverb
def test_a_learner_device_the_machine_lacks_is_one_line_not_a_wait(tmp_path):
  result = subprocess.run([sys.executable, LAUNCH_MAIN, '--gin_file=quickstart.gin', f'--root_dir={tmp_path / "run"}',
                           '--num_actors=1', '--use_gpu'], cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [line for line in result.stderr.splitlines() if line.startswith('launch_main: error:')]
  assert len(lines) == 1 and 'asks Ray for 1 GPU (--use_gpu)' in lines[0], result.stderr[-3000:]
  assert not (tmp_path / 'run').exists()  # nothing was started
