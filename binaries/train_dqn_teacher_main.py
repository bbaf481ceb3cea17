r"""Trains a TF-Agents DqnAgent on CartPole-v1 and exports its greedy policy: a Q-value teacher for kickstarting.

  python binaries/train_dqn_teacher_main.py --root_dir=runs/dqn_cartpole
  python binaries/train_main.py --gin_file=kickstart_cartpole.gin --root_dir=runs/kick_from_dqn \
      --gin_bindings="TeacherSet.paths = ['runs/dqn_cartpole/policy']"
  python binaries/kickstart_study_main.py --root_dir=runs/kick_dqn --teacher_policy=runs/dqn_cartpole/policy \
      --student_gin_file=kickstart_cartpole.gin

Only TF-Agents' own components: a `QNetwork`, a `DqnAgent` (Huber TD loss, hard target updates), a
`TFUniformReplayBuffer` filled by a `DynamicStepDriver` running the agent's ε-greedy `collect_policy` on
Protégé's batched gymnasium environments (`envs/suite.py`). Training stops once a greedy evaluation reaches
`stop_at_eval_return` (or at `total_env_steps`); `agent.policy`, the greedy policy, is then exported with
`policy_saver.PolicySaver` as TF-Agents' `dqn_train_eval` exports it. Loaded as a teacher it is a Q-values
teacher, softmax(Q/τ) (`agents/distillation/`).

Written to `--root_dir`: `policy/` (the SavedModel), `operative_config.gin`, and `summary.json` with the
evaluations and the final score: `final_eval_episodes` fresh greedy episodes played by the exported policy
read back as a teacher, the score `kickstart_study_main.py --teacher_policy=<root_dir>/policy` measures
its students against. Flags carry run mechanics only; the algorithm is `train_dqn_teacher`'s gin parameters.
"""

import os
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags
import gin
import tensorflow as tf
from tf_agents.agents.dqn import dqn_agent
from tf_agents.drivers import dynamic_step_driver
from tf_agents.environments import tf_py_environment
from tf_agents.networks import q_network
from tf_agents.policies import policy_saver
from tf_agents.replay_buffers import tf_uniform_replay_buffer
from tf_agents.utils import common as tf_agents_common

from protege.agents.data_free import play
from protege.agents.distillation import teacher_loading
from protege.agents.training import evaluation
from protege.binaries import common
from protege.envs import suite
from protege.runtime import run_directory

common.define_gin_flags()
flags.DEFINE_string('root_dir', None, 'Run directory: policy/, operative_config.gin, summary.json.')
flags.mark_flag_as_required('root_dir')
FLAGS = flags.FLAGS


class _QValuesAsLogits:
  """A QNetwork behind the network interface `agents.training.evaluation.evaluate` calls: its argmax is the greedy
  policy's action (the Q-values stand in for logits only to be argmaxed here)."""

  def __init__(self, q_network):
    self._q_network = q_network

  def __call__(self, observation, step_type=None, network_state=()):
    q_values, network_state = self._q_network(observation, step_type=step_type, network_state=network_state)
    return (q_values, {}), network_state

  def get_initial_state(self, batch_size):
    del batch_size
    return ()


@gin.configurable
def _linear_epsilon(env_steps: tf.Variable, initial: float, final: float, decay_env_steps: int):
  """The collect policy's ε as a function of `env_steps`: linear from `initial` to `final`, then held."""
  def epsilon():
    fraction = tf.minimum(tf.cast(env_steps, tf.float32) / float(max(decay_env_steps, 1)), 1.0)
    return initial + fraction * (final - initial)
  return epsilon


def _gradient_burst(train_step, batches, network, gradient_steps: int):
  """`gradient_steps` DQN updates on sampled pairs; returns (the last loss, the mean max Q of its batch)."""
  for _ in range(gradient_steps):
    experience = next(batches)[0]
    loss = float(train_step(experience).loss)
  q_values, _ = network(experience.observation[:, 0])
  return loss, float(tf.reduce_mean(tf.reduce_max(q_values, axis=-1)))


def _collection(agent, env, num_envs: int, replay_capacity: int, steps_per_collect: int, batch_size: int):
  """(collect, batches): a compiled driver filling a uniform replay with the collect policy, and an iterator
  of sampled pairs of consecutive steps (DqnAgent masks the pairs that cross an episode boundary)."""
  replay = tf_uniform_replay_buffer.TFUniformReplayBuffer(agent.collect_data_spec, batch_size=num_envs,
                                                          max_length=max(replay_capacity // num_envs, 1))
  collect = tf_agents_common.function(dynamic_step_driver.DynamicStepDriver(
      env, agent.collect_policy, observers=[replay.add_batch], num_steps=steps_per_collect * num_envs).run)
  batches = iter(replay.as_dataset(sample_batch_size=batch_size, num_steps=2,
                                   num_parallel_calls=2).prefetch(2))
  return collect, batches


def _export_and_score(agent, env, root_dir: str, episodes: int, summary: dict, start: float) -> dict:
  """Exports `agent.policy` with PolicySaver to `root_dir/policy`, scores the export, writes `summary` with
  the score to `root_dir/summary.json` and returns it. The score is the export's, read back as the students
  will read it (its Q-values' argmax)."""
  policy_dir = os.path.join(root_dir, 'policy')
  policy_saver.PolicySaver(agent.policy, batch_size=None).save(policy_dir)
  teacher = teacher_loading.load_teacher(policy_dir, env.observation_spec(), env.action_spec())
  final = evaluation.evaluate(play.teacher_as_network(teacher), summary['env_id'], episodes)
  print(f'Exported {policy_dir}: {episodes} greedy episodes {final["return_mean"]:.1f} ± '
        f'{final["return_std"]:.1f} (min {final["return_min"]:.1f}) after {summary["env_steps"]:,} env steps, '
        f'{time.time() - start:.0f} s.', flush=True)
  summary = dict(summary, eval_return_mean=final['return_mean'], eval_return_std=final['return_std'],
                 eval_return_min=final['return_min'], eval_episodes=episodes, teacher_kind=teacher.kind,
                 wall_seconds=time.time() - start)
  run_directory.write_json(os.path.join(root_dir, 'summary.json'), summary)
  return summary


def train_dqn_teacher(root_dir: str,
                      env_id: str = 'CartPole-v1',
                      seed: int = 0,
                      num_envs: int = 4,
                      fc_layer_params=(256, 256),
                      learning_rate: float = 2.3e-3,
                      discount: float = 0.99,
                      batch_size: int = 64,
                      replay_capacity: int = 100_000,
                      learning_starts: int = 1_000,
                      collect_env_steps: int = 256,
                      gradient_steps: int = 128,
                      target_update_period: int = 128,
                      epsilon_initial: float = 1.0,
                      epsilon_final: float = 0.04,
                      epsilon_decay_env_steps: int = 8_000,
                      gradient_clipping: float = 10.0,
                      total_env_steps: int = 100_000,
                      eval_interval_env_steps: int = 4_096,
                      eval_episodes: int = 10,
                      stop_at_eval_return: float = 475.0,
                      final_eval_episodes: int = 100) -> dict:
  """Trains the DqnAgent, exports `agent.policy` to `root_dir/policy` and returns the summary it writes.

  The defaults are rl-baselines3-zoo's CartPole-v1 DQN (a 256x256 ReLU MLP, Adam 2.3e-3, batch 64, 128
  gradient steps after every 256 env steps, ε from 1 to 0.04 over the first 8,000 env steps), which reaches
  500 within 50,000 env steps. The zoo's `target_update_interval = 10` counts env steps, and Stable-Baselines3
  copies the target only while collecting, so its target stays fixed through each burst of 128 gradient
  steps: here `target_update_period = 128` gradient steps. Copied every 10 gradient steps instead, the
  Q-values diverged within 500 gradient steps (mean max Q 170,000 where γ = 0.99 bounds it by 100).

  Args:
    root_dir: where to write policy/, operative_config.gin and summary.json.
    env_id: a `suite.make_environment` id with discrete actions.
    seed: seeds TensorFlow, NumPy, Python and the training environments (environment i gets seed + i).
    num_envs: environments stepped together while collecting.
    fc_layer_params: the QNetwork's hidden ReLU layers.
    learning_rate: Adam's.
    discount: γ of the TD target.
    batch_size: transitions per gradient step.
    replay_capacity: transitions the replay holds (split evenly over the environments).
    learning_starts: env steps collected before the first gradient step.
    collect_env_steps: env steps collected (over all environments) between bursts of gradient steps.
    gradient_steps: gradient steps per burst.
    target_update_period: gradient steps between copies of the Q-network into the target network (one burst).
    epsilon_initial, epsilon_final, epsilon_decay_env_steps: the collect policy's ε, decayed linearly over
      the first `epsilon_decay_env_steps` env steps, then held.
    gradient_clipping: bound on each gradient's norm (TF-Agents' `clip_gradient_norms`).
    total_env_steps: the budget of env steps (agent steps, summed over the environments).
    eval_interval_env_steps: env steps between greedy evaluations.
    eval_episodes: greedy episodes per evaluation (one per parallel environment, fresh resets).
    stop_at_eval_return: stop once an evaluation's mean return reaches this; None to use the whole budget.
    final_eval_episodes: greedy episodes the exported policy plays for the score written to summary.json.
  """
  os.makedirs(root_dir, exist_ok=True)
  run_directory.write_text(os.path.join(root_dir, 'operative_config.gin'), gin.operative_config_str())
  start = time.time()
  tf.keras.utils.set_random_seed(seed)
  env = tf_py_environment.TFPyEnvironment(suite.make_environment(env_id=env_id, num_envs=num_envs, seed=seed))
  network = q_network.QNetwork(env.observation_spec(), env.action_spec(), fc_layer_params=tuple(fc_layer_params))
  env_steps = tf.Variable(0, dtype=tf.int64, trainable=False)
  epsilon = _linear_epsilon(env_steps, epsilon_initial, epsilon_final, epsilon_decay_env_steps)
  agent = dqn_agent.DqnAgent(env.time_step_spec(), env.action_spec(), q_network=network,
                             optimizer=tf.keras.optimizers.Adam(learning_rate), epsilon_greedy=epsilon,
                             target_update_period=target_update_period, gamma=discount,
                             gradient_clipping=gradient_clipping,
                             train_step_counter=tf.Variable(0, dtype=tf.int64))
  agent.initialize()
  steps_per_collect = max(collect_env_steps // num_envs, 1)
  collect, batches = _collection(agent, env, num_envs, replay_capacity, steps_per_collect, batch_size)
  train_step = tf_agents_common.function(agent.train)
  greedy_network = _QValuesAsLogits(network)

  evaluations, time_step, next_eval = [], None, eval_interval_env_steps
  loss = max_q = float('nan')
  steps = 0
  print(f'DQN on {env_id}: {num_envs} envs, QNetwork {tuple(fc_layer_params)}, budget {total_env_steps:,} env '
        f'steps, stops at a {eval_episodes}-episode greedy evaluation >= {stop_at_eval_return}.', flush=True)
  while int(env_steps.numpy()) < total_env_steps:
    time_step, _ = collect(time_step) if time_step is not None else collect()
    env_steps.assign_add(steps_per_collect * num_envs)
    steps = int(env_steps.numpy())
    if steps >= learning_starts:
      loss, max_q = _gradient_burst(train_step, batches, network, gradient_steps)
    if steps >= next_eval or steps >= total_env_steps:
      next_eval += eval_interval_env_steps
      result = evaluation.evaluate(greedy_network, env_id, eval_episodes)
      evaluations.append({'env_steps': steps, 'return_mean': result['return_mean'],
                          'return_std': result['return_std']})
      print(f'{steps:>8,} env steps  ε {float(epsilon()):.3f}  loss {loss:.4f}  '
            f'mean max Q {max_q:.1f}  greedy return {result["return_mean"]:.1f} ± {result["return_std"]:.1f}  '
            f'({time.time() - start:.0f} s)', flush=True)
      if stop_at_eval_return is not None and result['return_mean'] >= stop_at_eval_return:
        break
  env.close()

  summary = {'agent': 'tf_agents DqnAgent', 'env_id': env_id, 'seed': seed, 'env_steps': steps,
             'gradient_steps': int(agent.train_step_counter.numpy()), 'evaluations': evaluations}
  return _export_and_score(agent, env, root_dir, final_eval_episodes, summary, start)


def main(argv):
  with common.job('train_dqn_teacher_main', argv):
    train_dqn_teacher(FLAGS.root_dir)


def run():
  """The `protege-train-dqn-teacher` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
