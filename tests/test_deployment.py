"""A distributed run as separate processes on loopback: Reverb server, two actors and the learner; faults.

The scenario test runs one deployment through every fault of the issue in turn (starting TensorFlow in
a process costs seconds on a shared machine, so the processes are reused across the faults):
an actor killed with SIGKILL and restarted, the server killed with SIGKILL and restarted from its
checkpoint, the learner killed with SIGKILL and resumed; and checks that the learner learned.
"""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.agents.training import actor as actor_lib
from protege.agents.training import components
from protege.agents.training import deployment
from protege.agents.training import numerics
from protege.agents.training import settings as settings_lib
from protege.agents.training import trainer as trainer_lib
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import torsos
from protege.replay import signatures

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BINARIES = os.path.join(REPO, 'binaries')

# rl-zoo's CartPole PPO (gin/quickstart.gin) on 2 actors × 8 envs; 256 env steps per learner iteration.
DEPLOY_GIN = """
make_environment.env_id = 'CartPole-v1'
make_environment.num_envs = 8
ActorCriticNetwork.torso_fn = @MLPTorso
ActorCriticNetwork.separate_value_torso = True
MLPTorso.layer_sizes = (64, 64)
MLPTorso.activation = 'tanh'
train.total_env_steps = {total}
train.sequence_length = 32
train.eval_episodes = 10
train.checkpoint_interval_seconds = 0.001
train.progress_interval_seconds = 5.0
PPOLearner.learning_rate = 1e-3
PPOLearner.num_epochs = 20
PPOLearner.num_minibatches = 1
PPOLearner.discount = 0.98
PPOLearner.gae_lambda = 0.8
PPOLearner.entropy_coef = 0.0
"""
STEPS_PER_ITERATION = 8 * 32
# Enough iterations that the learner is still training when the faults are injected, however fast the
# machine: at ~18 iterations/s an actor's restart and the server's restart together took ~100 iterations.
TOTAL_ITERATIONS = 600
DEPLOY_GIN = DEPLOY_GIN.format(total=TOTAL_ITERATIONS * STEPS_PER_ITERATION)


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


class _Job:
  """A binary in its own process, its output in a log file."""

  def __init__(self, tmp_path, name, binary, args):
    self.log_path = tmp_path / f'{name}.log'
    self._log = open(self.log_path, 'a')
    self.process = subprocess.Popen([sys.executable, os.path.join(BINARIES, binary)] + args, cwd=REPO,
                                    stdout=self._log, stderr=subprocess.STDOUT)

  def log(self) -> str:
    return self.log_path.read_text()

  def kill(self) -> None:
    self.process.send_signal(signal.SIGKILL)
    self.process.wait()

  def wait(self, timeout) -> int:
    return self.process.wait(timeout=timeout)


def _latest_iteration(checkpoint_dir) -> int:
  latest = tf.train.latest_checkpoint(checkpoint_dir)
  return int(latest.rsplit('-', 1)[1]) if latest else 0


def _wait_until(condition, timeout, what, jobs=()):
  deadline = time.time() + timeout
  while time.time() < deadline:
    if condition():
      return
    for job in jobs:
      assert job.process.poll() is None, f'{job.log_path.name} exited while waiting for {what}:\n{job.log()[-3000:]}'
    time.sleep(0.2)
  raise AssertionError(f'timed out after {timeout}s waiting for {what}; logs:\n' +
                       '\n'.join(f'--- {job.log_path.name}\n{job.log()[-2000:]}' for job in jobs))


@pytest.mark.reverb
def test_deployment_learns_and_survives_faults(tmp_path):
  gin_path = tmp_path / 'deploy.gin'
  gin_path.write_text(DEPLOY_GIN)
  port = _free_port()
  address = f'localhost:{port}'
  root = tmp_path / 'run'
  checkpoint_dir = str(root / 'checkpoints')
  common = [f'--gin_file={gin_path}']
  server_args = common + [f'--port={port}', f'--checkpoint_dir={root / "reverb"}',
                          '--checkpoint_interval_seconds=1']
  actor_args = lambda i: common + [f'--reverb_address={address}', f'--actor_id={i}', f'--root_dir={root}']
  learner_args = common + [f'--reverb_address={address}', f'--root_dir={root}']

  server = _Job(tmp_path, 'server', 'reverb_server_main.py', server_args)
  actors = [_Job(tmp_path, f'actor{i}', 'actor_main.py', actor_args(i)) for i in range(2)]
  learner = _Job(tmp_path, 'learner', 'learner_main.py', learner_args)
  jobs = [server, learner] + actors
  try:
    iteration = lambda: _latest_iteration(checkpoint_dir)
    _wait_until(lambda: iteration() >= 10, 300, 'the learner to train 10 iterations', jobs)

    # kill -9 an actor: the learner carries on with the other; a restarted actor rejoins.
    actors[0].kill()
    reached = iteration()
    _wait_until(lambda: iteration() >= reached + 5, 120, 'the learner to carry on with one actor',
                [server, learner, actors[1]])
    actors[0] = _Job(tmp_path, 'actor0', 'actor_main.py', actor_args(0))
    jobs = [server, learner] + actors
    # Connected (it gives up on a server that stays away ~10 s at start-up, by design).
    _wait_until(lambda: actors[0].log().count('Actor 0: CartPole-v1') == 2, 120, 'the restarted actor', jobs)

    # kill -9 the server (its periodic checkpoints run every second) and restart it from its checkpoint:
    # the actors and the learner reconnect.
    time.sleep(2.0)
    server.kill()
    reached = iteration()
    server = _Job(tmp_path, 'server', 'reverb_server_main.py', server_args)
    jobs = [server, learner] + actors
    _wait_until(lambda: iteration() >= reached + 5, 180, 'the learner to carry on after the server restart',
                jobs)
    restored = re.findall(r"items per table: \{.*'variables': (\d+)", server.log())
    assert restored[-1] == '1', server.log()[-2000:]  # the published weights came back

    # kill -9 the learner; it resumes from its checkpoint with exact env-step accounting.
    assert learner.process.poll() is None, 'the learner finished before it could be killed'
    learner.kill()
    killed_at = iteration()
    assert killed_at < TOTAL_ITERATIONS
    learner = _Job(tmp_path, 'learner', 'learner_main.py', learner_args)
    jobs = [server, learner] + actors
    assert learner.wait(timeout=600) == 0, learner.log()[-3000:]
    assert f'ckpt-{killed_at} at {killed_at * STEPS_PER_ITERATION:,} env steps' in learner.log()

    summary = json.loads((root / 'summary.json').read_text())
    total = TOTAL_ITERATIONS * STEPS_PER_ITERATION
    assert summary['env_steps'] == total and summary['learner_iterations'] == TOTAL_ITERATIONS
    assert summary['env_steps_this_run'] == total - killed_at * STEPS_PER_ITERATION
    # Random play averages ~22 on CartPole.
    assert summary['eval_return_mean'] >= 100, summary

    # The learner published that it finished: both actors exit by themselves; the restarted one wrote.
    for actor in actors:
      assert actor.wait(timeout=120) == 0, actor.log()[-3000:]
      assert '(the learner finished)' in actor.log()
    items = int(re.findall(r'Actor 0 done: [\d,]+ env steps, (\d+) items', actors[0].log())[-1])
    assert items > 0
  finally:
    for job in jobs:
      if job.process.poll() is None:
        job.kill()


@pytest.mark.reverb
def test_signals_stop_the_actor_and_the_starved_learner_within_seconds_and_the_learner_saves(tmp_path):
  """SIGTERM to an actor while the learner trains; then SIGINT to the learner, which waits for items no
  actor writes (inside its Reverb wait): it saves the iteration it reached and exits, and resumes there.
  Periodic checkpoints are off (an hour apart), so the checkpoint after the start is the stop's own."""
  gin_path = tmp_path / 'deploy.gin'
  gin_path.write_text(DEPLOY_GIN)
  port = _free_port()
  address = f'localhost:{port}'
  root = tmp_path / 'run'
  common = [f'--gin_file={gin_path}', '--gin_bindings=train.checkpoint_interval_seconds = 3600.0',
            '--gin_bindings=train.progress_interval_seconds = 0.001']
  server = _Job(tmp_path, 'server', 'reverb_server_main.py', common + [f'--port={port}'])
  actor = _Job(tmp_path, 'actor', 'actor_main.py', common + [f'--reverb_address={address}', f'--root_dir={root}'])
  learner_args = common + [f'--reverb_address={address}', f'--root_dir={root}']
  learner = _Job(tmp_path, 'learner', 'learner_main.py', learner_args)
  jobs = [server, actor, learner]
  try:
    trained = lambda: [int(n.replace(',', '')) for n in re.findall(r'env steps ([\d,]+)/', learner.log())]
    _wait_until(lambda: max(trained() or [0]) >= 3 * STEPS_PER_ITERATION, 300, 'the learner to train', jobs)
    start = time.time()
    actor.process.send_signal(signal.SIGTERM)
    assert actor.wait(timeout=60) == 143, actor.log()[-3000:]
    actor_seconds = time.time() - start
    time.sleep(3.0)  # the learner now waits for items that no actor writes
    start = time.time()
    learner.process.send_signal(signal.SIGINT)
    assert learner.wait(timeout=60) == 130, learner.log()[-3000:]
    learner_seconds = time.time() - start
    assert actor_seconds < 15 and learner_seconds < 15, (actor_seconds, learner_seconds)
    stopped = re.findall(r'learner_main: stopped at ([\d,]+) env steps; saved (\S+)\.', learner.log())
    assert stopped, learner.log()[-3000:]
    env_steps, path = int(stopped[0][0].replace(',', '')), stopped[0][1]
    assert env_steps >= 3 * STEPS_PER_ITERATION and tf.train.latest_checkpoint(str(root / 'checkpoints')) == path
    learner = _Job(tmp_path, 'learner', 'learner_main.py', learner_args)
    jobs = [server, learner]
    _wait_until(lambda: f'at {env_steps:,} env steps' in learner.log(), 120, 'the learner to resume', jobs)
  finally:
    for job in jobs:
      if job.process.poll() is None:
        job.kill()


@pytest.mark.parametrize('binary', ['actor_main.py', 'learner_main.py'])
@pytest.mark.reverb
def test_unreachable_server_is_one_clear_line(binary, tmp_path):
  gin_path = tmp_path / 'deploy.gin'
  gin_path.write_text(DEPLOY_GIN)
  address = f'localhost:{_free_port()}'
  start = time.time()
  result = subprocess.run([sys.executable, os.path.join(BINARIES, binary), f'--gin_file={gin_path}',
                           f'--reverb_address={address}', f'--root_dir={tmp_path / "run"}'],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr[-3000:]
  lines = [l for l in result.stderr.splitlines() if ': error:' in l]
  assert len(lines) == 1 and address in lines[0] and 'did not answer' in lines[0], result.stderr[-3000:]
  assert time.time() - start < 90  # bounded retry, not a hang




def _tiny_network(observation_spec, action_spec):
  return actor_critic.ActorCriticNetwork(observation_spec, action_spec,
                                         torso_fn=lambda: torsos.MLPTorso(layer_sizes=(8,)))


@pytest.mark.reverb
def test_variable_container_round_trip():
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  env = suite.make_environment(env_id='CartPole-v1', num_envs=2)
  network = components.make_network(_tiny_network, env)
  server = reverb_replay.start_server(components.make_tables(env, network, sequence_length=4))
  try:
    client = reverb_replay.connect(f'localhost:{server.port}')
    container = reverb_replay.VariableContainer(client, signatures.variables_signature(network.variables))
    assert container.pull() is None  # nothing published yet, and no blocking
    weights = [np.full(v.shape, i, v.dtype.as_numpy_dtype) for i, v in enumerate(network.variables)]
    container.push(weights, version=7)
    container.push(weights, version=8, finished=True)  # replaces the previous item
    published = container.pull()
    assert published.version == 8 and published.finished and time.time() - published.published_at < 60
    for expected, value in zip(weights, published.weights):
      np.testing.assert_array_equal(expected, value)
    assert client.server_info()[reverb_replay.VARIABLES_TABLE].current_size == 1
  finally:
    server.stop()
    env.close()


@pytest.mark.reverb
def test_remote_learner_under_mirrored_strategy(tmp_path, mirrored_strategy):
  """`Trainer(local_actor=False)` on 2 logical CPUs: per-replica items from a server, weights published.

  The same code runs under TPUStrategy (`learner_main --tpu`): the dataset is built per input worker on the
  host by `distribute_datasets_from_function`, and its shapes are the table signature's, all static.
  """
  import gin  # pylint: disable=g-import-not-at-top
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  gin.parse_config(["make_environment.env_id = 'CartPole-v1'", 'make_environment.num_envs = 2',
                    'PPOLearner.num_epochs = 1', 'PPOLearner.num_minibatches = 2'])
  env = suite.make_environment(seed=3)
  network = components.make_network(_tiny_network, env)
  server = reverb_replay.start_server(components.make_tables(env, network, sequence_length=8,
                                                             items_per_learner_step=2))
  address = f'localhost:{server.port}'
  dataset = reverb_replay.make_dataset(address, 'trajectories', 1)
  assert all(spec.shape.is_fully_defined() for spec in tf.nest.flatten(dataset.element_spec))
  trainer = trainer_lib.Trainer(str(tmp_path / 'run'), strategy=mirrored_strategy, reverb_address=address,
                                total_env_steps=64, sequence_length=8, network_fn=_tiny_network,
                                eval_episodes=1, local_actor=False)
  client = reverb_replay.connect(address)
  writer = reverb_replay.SequenceWriter(client, 'trajectories', 8)
  actor = actor_lib.Actor(env, components.make_network(_tiny_network, env), writer)
  actor.run(2 * 8 + 1)  # two items: one iteration of two replicas × one item
  writer.flush()
  trainer.run_iteration()
  assert trainer.env_steps == 2 * 8 * 2 and int(trainer.learner.train_step.numpy()) == 1
  container = reverb_replay.VariableContainer(client, signatures.variables_signature(network.variables))
  assert container.pull().version == 0  # published before the iteration that trained on it
  actor.run(2 * 8)
  writer.flush()
  trainer.run_iteration()
  summary = trainer.finish()
  assert summary['env_steps'] == 64 and summary['learner_iterations'] == 2
  published = container.pull()
  assert published.finished and published.version == 2
  for variable, value in zip(trainer.network.variables, published.weights):
    np.testing.assert_array_equal(variable.numpy(), value)
  writer.close()
  env.close()
  server.stop()


def test_train_settings_read_the_gin_file():
  import gin  # pylint: disable=g-import-not-at-top
  gin.parse_config(['train.sequence_length = 16', 'train.network_fn = @ActorCriticNetwork'])
  settings = settings_lib.train_settings()
  assert settings.sequence_length == 16 and settings.table_name == 'trajectories'
  assert settings.seed == 0 and callable(settings.network_fn)


def test_prune_server_checkpoints_keeps_the_newest_complete_ones(tmp_path):
  names = ['2026-11-22T08:10:14.369609901+00:00', '2026-11-22T08:10:15.37369697+00:00',
           '2026-11-22T08:10:15.4+00:00', '2026-11-22T08:10:16.1+00:00']
  for name in names:
    (tmp_path / name).mkdir()
    (tmp_path / name / 'items.tfrecord').write_text('x')
  for name in names[:3]:
    (tmp_path / name / 'DONE').write_text('')
  deleted = deployment.prune_server_checkpoints(str(tmp_path), keep=2)
  assert deleted == names[:1]
  assert sorted(os.listdir(tmp_path)) == names[1:]  # the incomplete newest one is left alone


@pytest.mark.reverb
def test_remote_learner_with_bf16_mixed_precision_and_xla(tmp_path):
  """`learner_main --mixed_precision=mixed_bfloat16 --xla`: layers compute in bfloat16 (float32 variables),
  the outputs the losses and the export see are float32, and the step runs with XLA auto-clustering."""
  import gin  # pylint: disable=g-import-not-at-top
  from protege.replay import reverb_replay  # pylint: disable=g-import-not-at-top
  gin.parse_config(["make_environment.env_id = 'CartPole-v1'", 'make_environment.num_envs = 2',
                    'PPOLearner.num_epochs = 1', 'PPOLearner.num_minibatches = 2'])
  env = suite.make_environment(seed=3)
  actor_network = components.make_network(_tiny_network, env)
  server = reverb_replay.start_server(components.make_tables(env, actor_network, sequence_length=8))
  address = f'localhost:{server.port}'
  writer = reverb_replay.SequenceWriter(reverb_replay.connect(address), 'trajectories', 8)
  actor = actor_lib.Actor(env, actor_network, writer)
  try:
    numerics.configure_numerics('mixed_bfloat16', xla=True)
    trainer = trainer_lib.Trainer(str(tmp_path / 'run'), reverb_address=address, total_env_steps=32,
                               sequence_length=8, network_fn=numerics.float32_outputs(_tiny_network),
                                  eval_episodes=1, local_actor=False)
    assert trainer.network.variables[0].dtype == tf.float32
    (logits, values), _ = trainer.network(tf.zeros([3, 4]), step_type=tf.zeros([3], tf.int32))
    assert logits.dtype == tf.float32 and values['extrinsic'].dtype == tf.float32
    assert any(layer.compute_dtype == 'bfloat16' for layer in trainer.network.submodules
               if isinstance(layer, tf.keras.layers.Dense))
    for first in (True, False):
      actor.run(8 + first)
      writer.flush()
      metrics = trainer.run_iteration()
      assert np.isfinite(float(metrics['loss']))
    summary = trainer.finish()
    assert summary['env_steps'] == 32
  finally:
    tf.keras.mixed_precision.set_global_policy('float32')
    tf.config.optimizer.set_jit(False)
    writer.close()
    env.close()
    server.stop()
  policy = tf.saved_model.load(summary['policy_dir'])
  step = policy.action(ts.restart(tf.zeros([2, 4]), batch_size=2))
  assert step.info['logits'].dtype == tf.float32


@pytest.mark.reverb  # run_server looks for dm-reverb before it takes the lock
def test_a_second_server_on_the_same_checkpoint_dir_is_refused(tmp_path):
  """A second server there would restore, write and prune the first one's checkpoints."""
  from protege.runtime import errors  # pylint: disable=g-import-not-at-top
  from protege.runtime import run_directory  # pylint: disable=g-import-not-at-top
  first = run_directory.RunDirectory(str(tmp_path), 'a Reverb server')  # what the first server holds
  try:
    with pytest.raises(errors.RunDirectoryError, match=r"checkpoint_dir '.*' is in use by a Reverb server "
                       r'\(PID \d+.*pass another --checkpoint_dir'):
      deployment.run_server(_free_port(), threading.Event(), checkpoint_dir=str(tmp_path))
  finally:
    first.release()
