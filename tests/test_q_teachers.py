"""Teachers of every kind from real exports: TF-Agents DQN agents trained on CartPole and exported with
PolicySaver (greedy `agent.policy`, ε-greedy `agent.collect_policy`, the inner `QPolicy`) teach through
softmax(Q/τ), a recurrent one (QRnnNetwork) with its memory carried across batches; a greedy export without
Q-values teaches through its ε-smoothed actions; Protégé's own exports still teach through their logits."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.agents.dqn import dqn_agent
from tf_agents.drivers import dynamic_step_driver
from tf_agents.environments import tf_py_environment
from tf_agents.networks import q_network
from tf_agents.networks import q_rnn_network
from tf_agents.networks import sequential
from tf_agents.policies import actor_policy
from tf_agents.policies import greedy_policy
from tf_agents.policies import policy_saver
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import common

from protege.agents.data_free import adapters
from protege.agents.distillation import kickstarting
from protege.agents.distillation import teacher_loading
from protege.agents.distillation import teacher_set as teacher_set_lib
from protege.agents.distillation import teachers
from protege.agents.training import policy_export
from protege.envs import suite
from protege.networks import actor_critic
from protege.networks import torsos

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN = 16  # the Q-network's one hidden ReLU layer
RNN_SIZE = 8  # the recurrent Q-network's LSTM


def _train_dqn(seed=0, iterations=200, recurrent=False):
  """A DqnAgent with a QNetwork (4 → 16 ReLU → 2) trained on CartPole for `iterations` updates of 32
  transitions (4 envs × 4 steps collected per update), as TF-Agents' dqn_train_eval does, shrunk. With
  `recurrent`, a QRnnNetwork (4 → 16 ReLU → LSTM 8 → 2) trained on sequences of 8 steps, as TF-Agents'
  DQN-RNN examples do."""
  tf.keras.utils.set_random_seed(seed)
  env = tf_py_environment.TFPyEnvironment(suite.make_environment('CartPole-v1', num_envs=4, seed=seed))
  if recurrent:
    network = q_rnn_network.QRnnNetwork(env.observation_spec(), env.action_spec(), input_fc_layer_params=(HIDDEN,),
                                        lstm_size=(RNN_SIZE,), output_fc_layer_params=())
  else:
    network = q_network.QNetwork(env.observation_spec(), env.action_spec(), fc_layer_params=(HIDDEN,))
  agent = dqn_agent.DqnAgent(env.time_step_spec(), env.action_spec(), q_network=network,
                             optimizer=tf.keras.optimizers.Adam(1e-3), epsilon_greedy=0.1,
                             train_step_counter=tf.Variable(0, dtype=tf.int64))
  agent.initialize()
  replay = tf_uniform_replay_buffer.TFUniformReplayBuffer(agent.collect_data_spec, batch_size=4, max_length=1000)
  collect = common.function(dynamic_step_driver.DynamicStepDriver(env, agent.collect_policy,
                                                                  observers=[replay.add_batch], num_steps=4).run)
  batches = iter(replay.as_dataset(sample_batch_size=32 // (4 if recurrent else 1), num_steps=8 if recurrent else 2))
  train = common.function(agent.train)
  time_step, state = collect()
  for _ in range(50):  # seed the replay with 800 transitions
    time_step, state = collect(time_step, state)
  for _ in range(iterations):
    time_step, state = collect(time_step, state)
    train(next(batches)[0])
  return env, agent, network


def _numpy_q_values(network, observations):
  """The reference: the QNetwork's forward pass in NumPy, relu(x W0 + b0) W1 + b1, from its variables."""
  # In the order the layers were built: the encoder's dense layer, then the Q-value layer (Keras numbers
  # layer names per process, so the names depend on what other tests built first).
  (hidden_kernel, hidden_bias), (q_kernel, q_bias) = (
      [v.numpy() for v in layer.variables] for layer in (network._encoder._postprocessing_layers[-1],  # pylint: disable=protected-access
                                                          network._q_value_layer))  # pylint: disable=protected-access
  assert [v.shape for v in network.variables] == [hidden_kernel.shape, hidden_bias.shape, q_kernel.shape,
                                                  q_bias.shape]
  hidden = np.maximum(observations @ hidden_kernel + hidden_bias, 0.0)
  return hidden @ q_kernel + q_bias


def _numpy_softmax(x):
  z = np.exp(x - x.max(axis=-1, keepdims=True))
  return z / z.sum(axis=-1, keepdims=True)


def _smoothed_one_hot(actions, num_actions, epsilon):
  return (1.0 - epsilon) * np.eye(num_actions)[actions] + epsilon / num_actions


@pytest.fixture(scope='module')
def dqn(tmp_path_factory):
  """A trained DQN's exports: greedy, ε-greedy and the inner QPolicy, and a greedy ActorPolicy (no Q)."""
  root = tmp_path_factory.mktemp('dqn')
  env, agent, network = _train_dqn()
  paths = {'greedy': str(root / 'greedy'), 'collect': str(root / 'collect'), 'q_policy': str(root / 'q_policy'),
           'greedy_actor': str(root / 'greedy_actor')}
  policy_saver.PolicySaver(agent.policy, batch_size=None).save(paths['greedy'])
  policy_saver.PolicySaver(agent.collect_policy, batch_size=None).save(paths['collect'])
  policy_saver.PolicySaver(agent.policy.wrapped_policy, batch_size=None).save(paths['q_policy'])
  # A stock TF-Agents actor with a Categorical head: ActorDistributionNetwork's projection network fails to
  # build on NumPy 2 (tf-agents 0.19 calls int() on a 1-d array), a Sequential network builds on both stacks.
  actor = sequential.Sequential([tf.keras.layers.Dense(8, activation='relu'), tf.keras.layers.Dense(2),
                                 tf.keras.layers.Lambda(lambda logits: tfp.distributions.Categorical(
                                     logits=logits, dtype=env.action_spec().dtype))],
                                input_spec=env.observation_spec())
  greedy_actor = greedy_policy.GreedyPolicy(actor_policy.ActorPolicy(env.time_step_spec(), env.action_spec(),
                                                                     actor))
  policy_saver.PolicySaver(greedy_actor, batch_size=None).save(paths['greedy_actor'])
  # A spread of CartPole states on which the greedy export takes each action 32 times: fixed random candidates,
  # chosen by the export's own actions (a short DQN run's decision boundary moves with the process's random
  # state, so a fixed set of 64 states could fall on one side of it).
  candidates = np.random.default_rng(1).normal(scale=[1.0, 1.0, 0.2, 2.0], size=(2048, 4)).astype(np.float32)
  actions = _saved_greedy_actions(paths['greedy'], candidates)
  observations = np.concatenate([candidates[actions == a][:32] for a in (0, 1)])
  return {'paths': paths, 'network': network, 'observation_spec': env.observation_spec(),
          'action_spec': env.action_spec(), 'observations': observations}


def _load(dqn, name, **kwargs):
  return teacher_loading.load_teacher(dqn['paths'][name], dqn['observation_spec'], dqn['action_spec'], **kwargs)


def _saved_greedy_actions(path, observations):
  saved = tf.saved_model.load(path)
  batch = len(observations)
  time_step = ts.TimeStep(tf.fill([batch], ts.StepType.MID), tf.zeros([batch]), tf.ones([batch]),
                          tf.constant(observations))
  return saved.action(time_step, ()).action.numpy()


@pytest.mark.parametrize('name', ['greedy', 'collect', 'q_policy'])
def test_dqn_exports_teach_softmax_of_q_over_tau(dqn, name, capsys):
  teacher = _load(dqn, name)
  assert teacher.kind == teachers.KIND_Q_VALUES
  line = capsys.readouterr().out
  assert f"Teacher '{name}' ({dqn['paths'][name]}): Q-values softmax(Q/τ), τ = 0.01." in line, line
  assert not teacher.has_value and not teacher.is_recurrent
  observations = dqn['observations']
  q_values = _numpy_q_values(dqn['network'], observations)
  assert np.ptp(q_values) > 0.1  # trained values, not an untrained network's near-zero outputs
  for temperature in (0.01, 1.0):
    teacher = _load(dqn, name, q_temperature=temperature)
    for call in (teacher.logits_and_value, tf.function(teacher.logits_and_value)):
      logits, value, _ = call(tf.constant(observations))
      assert value is None
      np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), _numpy_softmax(q_values / temperature),
                                 rtol=1e-4, atol=1e-5)


def test_the_greedy_export_acts_as_the_argmax_of_the_q_values_it_teaches(dqn):
  observations = dqn['observations']
  logits, _, _ = _load(dqn, 'greedy').logits_and_value(tf.constant(observations))
  np.testing.assert_array_equal(np.argmax(logits.numpy(), -1),
                                _saved_greedy_actions(dqn['paths']['greedy'], observations))


@pytest.mark.parametrize('epsilon', [0.01, 0.2, 0.0])
def test_action_only_targets_are_the_smoothed_one_hot_of_the_exported_greedy_action(dqn, epsilon, capsys):
  teacher = _load(dqn, 'greedy', action_only=True, action_smoothing=epsilon)
  assert teacher.kind == teachers.KIND_ACTION_ONLY
  assert f'action-only (ε-smoothed one-hot), ε = {epsilon:g}.' in capsys.readouterr().out
  observations = dqn['observations']
  actions = _saved_greedy_actions(dqn['paths']['greedy'], observations)
  assert 0 < actions.mean() < 1  # both actions occur, so the check covers both rows of the one-hot
  logits, _, _ = teacher.logits_and_value(tf.constant(observations))
  assert np.isfinite(logits.numpy()).all()
  np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), _smoothed_one_hot(actions, 2, epsilon), atol=1e-6)


def test_a_greedy_export_without_q_values_or_logits_teaches_through_its_actions(dqn, capsys):
  path = dqn['paths']['greedy_actor']
  teacher = _load(dqn, 'greedy_actor')
  assert teacher.kind == teachers.KIND_ACTION_ONLY
  out = capsys.readouterr().out
  assert 'gives no logits and no Categorical distribution' in out and 'ε = 0.01.' in out, out
  observations = dqn['observations']
  logits, _, _ = teacher.logits_and_value(tf.constant(observations))
  np.testing.assert_allclose(tf.nn.softmax(logits).numpy(),
                             _smoothed_one_hot(_saved_greedy_actions(path, observations), 2, 0.01), atol=1e-6)


def test_protege_exports_are_still_taken_as_logits(dqn, tmp_path):
  spec = dqn['observation_spec']
  network = actor_critic.ActorCriticNetwork(spec, dqn['action_spec'], torso_fn=lambda: torsos.MLPTorso((8,)))
  network.create_variables()
  observations = tf.constant(dqn['observations'])
  (expected, _), _ = network(observations)
  for greedy in (False, True):
    path = policy_export.export_policy(network, ts.time_step_spec(spec), dqn['action_spec'],
                                       str(tmp_path / f'greedy_{greedy}'), greedy=greedy)
    teacher = teacher_loading.load_teacher(path, spec, dqn['action_spec'])
    assert teacher.kind == teachers.KIND_LOGITS
    np.testing.assert_allclose(teacher.logits_and_value(observations)[0].numpy(), expected.numpy(),
                               rtol=1e-5, atol=1e-6)


def test_the_q_teacher_is_differentiable_in_its_input_for_data_free_distillation(dqn):
  teacher = _load(dqn, 'greedy')
  observations = tf.constant(dqn['observations'][:8])
  with tf.GradientTape(persistent=True) as tape:
    tape.watch(observations)
    logits = adapters.differentiable_teacher_logits(teacher, observations)
    q_values, _ = dqn['network'](observations)
    first_logit, first_q = logits[:, 0], q_values[:, 0] / 0.01
  np.testing.assert_allclose(tape.gradient(first_logit, observations).numpy(),
                             tape.gradient(first_q, observations).numpy(), rtol=1e-4, atol=1e-3)


def test_a_keras_model_marked_as_q_values_teaches_softmax_of_q_over_tau(dqn):
  inputs = tf.keras.Input([4])
  q_values = tf.keras.layers.Dense(2)(inputs)
  model = tf.keras.Model(inputs, {'q_values': q_values})
  teacher = teacher_loading.load_teacher(model, dqn['observation_spec'], dqn['action_spec'], q_temperature=0.5)
  assert teacher.kind == teachers.KIND_Q_VALUES
  observations = dqn['observations']
  kernel, bias = (w.numpy() for w in model.weights)
  np.testing.assert_allclose(tf.nn.softmax(teacher.logits_and_value(tf.constant(observations))[0]).numpy(),
                             _numpy_softmax((observations @ kernel + bias) / 0.5), rtol=1e-5, atol=1e-6)


def test_distill_data_free_main_takes_a_dqn_teacher_and_says_so(dqn, tmp_path):
  root = tmp_path / 'student'
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'binaries', 'distill_data_free_main.py'),
       f'--teacher={dqn["paths"]["collect"]}', '--gin_file=data_free_cartpole.gin', f'--root_dir={root}',
       '--gin_bindings=DataFreeDistiller.num_steps = 20', '--gin_bindings=DataFreeDistiller.batch_size = 32',
       '--gin_bindings=distill_data_free.eval_episodes = 0', '--gin_bindings=teacher_targets.q_temperature = 0.1'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert 'Q-values softmax(Q/τ), τ = 0.1.' in result.stdout, result.stdout[-2000:]
  summary = json.loads((root / 'summary.json').read_text())
  assert summary['teacher_kind'] == 'Q-values softmax(Q/τ), τ = 0.1' and summary['steps'] == 20
  # The labels of the generated observations are the Q-network's argmax.
  exemplars = np.load(root / 'exemplars.npz')
  np.testing.assert_array_equal(
      exemplars['teacher_labels'],
      np.argmax(_numpy_q_values(dqn['network'], exemplars['observations']), axis=-1))


def test_train_main_kickstarts_from_a_dqn_export_and_says_it_is_a_q_values_teacher(dqn, tmp_path):
  # The greedy agent.policy, as TF-Agents' dqn_train_eval exports it, named in TeacherSet.paths as a user
  # would; the CartPole measure of a real DQN teacher is in BENCHMARKS.md (binaries/train_dqn_teacher_main.py).
  root = tmp_path / 'student'
  stdout = _kickstart_cartpole(dqn['paths']['greedy'], root)
  assert f"Teacher 'teacher_0' ({dqn['paths']['greedy']}): Q-values softmax(Q/τ), τ = 0.01." in stdout, stdout[-2000:]
  assert (root / 'policy').is_dir()


def _kickstart_cartpole(teacher_path, root):
  """`train_main --gin_file=kickstart_cartpole.gin` for 512 steps with the teacher at `teacher_path`, as a user
  runs it; returns its stdout after checking that it trained."""
  result = subprocess.run(
      [sys.executable, os.path.join(REPO, 'binaries', 'train_main.py'), '--gin_file=kickstart_cartpole.gin',
       f'--root_dir={root}', f"--gin_bindings=TeacherSet.paths = ['{teacher_path}']",
       '--gin_bindings=train.total_env_steps = 512', '--gin_bindings=train.eval_episodes = 2'],
      cwd=REPO, capture_output=True, text=True, timeout=300, check=False)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
  assert json.loads((root / 'summary.json').read_text())['env_steps'] == 512
  return result.stdout


@pytest.fixture(scope='module')
def recurrent_dqn(tmp_path_factory):
  """A DqnAgent over a QRnnNetwork, trained and exported greedy (`agent.policy`) as dqn_train_eval does."""
  env, agent, network = _train_dqn(iterations=100, recurrent=True)
  path = str(tmp_path_factory.mktemp('dqn_rnn') / 'greedy')
  policy_saver.PolicySaver(agent.policy, batch_size=None).save(path)
  return {'path': path, 'network': network, 'observation_spec': env.observation_spec(),
          'action_spec': env.action_spec()}


def _cartpole_episodes(num_envs, num_steps, seed):
  """Time-major observations and step types of random play: episodes start and end inside the window."""
  env = suite.make_environment('CartPole-v1', num_envs=num_envs, seed=seed)
  rng = np.random.default_rng(seed)
  time_step, observations, step_types = env.reset(), [], []
  for _ in range(num_steps):
    observations.append(time_step.observation)
    step_types.append(time_step.step_type)
    time_step = env.step(rng.integers(0, 2, num_envs))
  env.close()
  return np.stack(observations).astype(np.float32), np.stack(step_types).astype(np.int32)


def test_a_recurrent_dqn_export_teaches_the_q_values_of_its_whole_episodes(recurrent_dqn, capsys):
  """A greedy export of a QRnnNetwork is a recurrent Q-value teacher: given the state the previous batch left
  (as the actor records it), its logits over a batch are Q/τ of the network stepped through whole episodes."""
  teacher = teacher_loading.load_teacher(recurrent_dqn['path'], recurrent_dqn['observation_spec'],
                                         recurrent_dqn['action_spec'], q_temperature=0.5)
  assert teacher.kind == teachers.KIND_Q_VALUES and teacher.is_recurrent
  assert 'Q-values softmax(Q/τ), τ = 0.5.' in capsys.readouterr().out
  assert [tuple(spec.shape) for spec in tf.nest.flatten(teacher.state_spec)] == [(RNN_SIZE,), (RNN_SIZE,)]
  observations, step_types = _cartpole_episodes(num_envs=3, num_steps=48, seed=5)
  assert (step_types[1:] == ts.StepType.FIRST).any()  # episodes restart inside the window
  network, state, expected = recurrent_dqn['network'], recurrent_dqn['network'].get_initial_state(3), []
  for observation, step_type in zip(observations, step_types):  # the reference: one step at a time
    q_values, state = network(tf.constant(observation), step_type=tf.constant(step_type), network_state=state)
    expected.append(q_values.numpy())
  expected = np.stack(expected)
  assert np.ptp(expected) > 0.1
  first, _, carried = teacher.logits_and_value(tf.constant(observations[:16]), step_type=tf.constant(step_types[:16]))
  second, _, _ = teacher.logits_and_value(tf.constant(observations[16:]), step_type=tf.constant(step_types[16:]),
                                          policy_state=carried)
  np.testing.assert_allclose(np.concatenate([first.numpy(), second.numpy()]) * 0.5, expected, rtol=1e-4,
                             atol=1e-5)
  # Memory matters here: restarted from its initial state, the second batch's logits differ.
  restarted, _, _ = teacher.logits_and_value(tf.constant(observations[16:]), step_type=tf.constant(step_types[16:]))
  assert np.abs(restarted.numpy() * 0.5 - expected[16:]).max() > 1e-3


def test_train_main_kickstarts_from_a_recurrent_dqn_export_with_its_memory_recorded(recurrent_dqn, tmp_path):
  observation_spec, action_spec = recurrent_dqn['observation_spec'], recurrent_dqn['action_spec']
  teacher_set = teacher_set_lib.TeacherSet(observation_spec, action_spec, paths=[recurrent_dqn['path']])
  kickstarter = kickstarting.Kickstarter(observation_spec, action_spec, teachers=teacher_set)
  recorded = kickstarting.actor_teachers(observation_spec, action_spec, kickstarter=kickstarter).recorded_state_specs()
  assert [tuple(spec.shape) for spec in tf.nest.flatten(recorded['teacher_0'])] == [(RNN_SIZE,), (RNN_SIZE,)]
  stdout = _kickstart_cartpole(recurrent_dqn['path'], tmp_path / 'student')
  assert "Q-values softmax(Q/τ), τ = 0.01." in stdout, stdout[-2000:]
