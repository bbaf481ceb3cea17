"""The single-process training run: a Reverb server, an actor and a learner wired from gin.

`binaries/train_main.py` parses flags and gin and calls `train()`; everything about the algorithm is
configured here through gin. A run directory is self-describing:

    root_dir/
      operative_config.gin   every gin parameter the run used (written at start and at the end)
      checkpoints/           learner state (network, optimiser, hyperparameter variables, counters)
      summaries/             TensorBoard scalars
      policy/                the final policy, a SavedModel written by TF-Agents' PolicySaver
      summary.json           env_steps, wall_seconds, eval_return_mean, ...

Running again with the same root_dir resumes from the latest checkpoint; a finished run (its budget
spent, or `stop_at_eval_return` reached while that option is still set) only re-evaluates and re-exports.
"""

import collections
import json
import os
import time
from typing import Any, Callable, Dict, Optional

import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts

from agents import actor as actor_lib
from agents import evaluation
from agents import kickstarting  # noqa: F401  (registers Kickstarter, TeacherSet, schedules with gin)
from agents import policies
from agents import ppo_learner
from agents import rnd  # noqa: F401  (registers RNDLearner with gin)
from envs import suite
from networks import actor_critic
from replay import reverb_replay


def check_writable(root_dir: str) -> None:
  """Raises a one-line error if `root_dir` cannot be created or written."""
  probe = os.path.join(root_dir, '.write_probe')
  try:
    tf.io.gfile.makedirs(root_dir)
    with tf.io.gfile.GFile(probe, 'w') as f:
      f.write('ok')
    tf.io.gfile.remove(probe)
  except (OSError, tf.errors.OpError) as error:
    reason = getattr(error, 'strerror', None) or getattr(error, 'message', None) or str(error)
    raise PermissionError(f"root_dir '{root_dir}' is not writable ({reason.strip()}); "
                          f'pass a directory you can write to with --root_dir.') from None


def _format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class _Progress:
  """Prints one line every `interval` seconds: steps, throughput, recent return, ETA."""

  def __init__(self, total_env_steps: int, frames_per_step: float, interval: float):
    self._total = total_env_steps
    self._frames_per_step = frames_per_step
    self._interval = interval
    self._last_print = 0.0
    self._window = collections.deque(maxlen=10)  # (time, env_steps)

  def update(self, env_steps: int, recent_return: Optional[float], eval_return: Optional[float],
             final_rate: Optional[float] = None) -> Optional[float]:
    """Records progress; prints a line if `interval` has passed, or always with `final_rate` (the
    run's average steps/s, for the closing line). Returns the recent steps/s."""
    now = time.time()
    self._window.append((now, env_steps))
    (t0, s0), (t1, s1) = self._window[0], self._window[-1]
    rate = (s1 - s0) / (t1 - t0) if t1 > t0 else float('nan')
    if final_rate is None and now - self._last_print < self._interval:
      return rate
    self._last_print = now
    shown = rate if final_rate is None else final_rate
    eta = (self._total - env_steps) / shown if np.isfinite(shown) and shown > 0 else float('nan')
    if final_rate is not None:
      eta = 0.0  # training is over
    throughput = '- steps/s' if not np.isfinite(shown) else (
        f'{shown:,.0f} steps/s' + (f' ({shown * self._frames_per_step:,.0f} frames/s)'
                                   if self._frames_per_step != 1 else ''))
    parts = [f'[{100.0 * env_steps / self._total:5.1f}%] env steps {env_steps:,}/{self._total:,}',
             throughput + (' on average' if final_rate is not None else ''),
             'return ' + ('-' if recent_return is None else f'{recent_return:.1f}'),
             'eval ' + ('-' if eval_return is None else f'{eval_return:.1f}'),
             f'ETA {_format_duration(eta)}']
    print(' | '.join(parts), flush=True)
    return rate


@gin.configurable
def train(root_dir: str,
          strategy: Optional[tf.distribute.Strategy] = None,
          reverb_address: Optional[str] = None,
          table_name: str = 'trajectories',
          total_env_steps: int = 100_000,
          sequence_length: int = 128,
          items_per_replica: int = 1,
          seed: int = 0,
          network_fn: Callable[..., Any] = actor_critic.ActorCriticNetwork,
          learner_fn: Callable[..., Any] = ppo_learner.PPOLearner,
          eval_interval_env_steps: int = 0,
          eval_episodes: int = 10,
          eval_greedy: bool = True,
          stop_at_eval_return: Optional[float] = None,
          stop_at_episode_return: Optional[float] = None,
          checkpoint_interval_seconds: float = 300.0,
          progress_interval_seconds: float = 5.0,
          summary_interval_iterations: int = 1,
          asynchronous_actor: bool = False) -> Dict[str, Any]:
  """Trains an agent and returns the summary that is also written to `root_dir/summary.json`.

  Args:
    root_dir: the run directory (see the module docstring).
    strategy: the learner's `tf.distribute` strategy (from flags); default one device.
    reverb_address: 'host:port' of a running Reverb server holding the table; None starts one in-process.
    table_name: the Reverb table the actor writes and the learner reads.
    total_env_steps: training budget in agent steps summed over environments (frames = steps × frameskip).
    sequence_length: T, transitions per trajectory item (the rollout length).
    items_per_replica: items each learner replica consumes per iteration; a learner iteration uses
      `num_replicas × items_per_replica × num_envs × sequence_length` transitions.
    seed: seeds TensorFlow, the environments and the action sampling.
    network_fn: builds the network from `(observation_spec, action_spec)`.
    learner_fn: builds the learner from `(network, dataset_fn, strategy, total_iterations)`.
    eval_interval_env_steps: evaluate every this many env steps (0: only at the end).
    eval_episodes: episodes per evaluation (each on its own environment).
    eval_greedy: evaluate the argmax action (True) or sample the policy.
    stop_at_eval_return: stop training early once an evaluation reaches this mean return (None: never). The
      run is then finished: running the directory again does not train on unless this is unset.
    stop_at_episode_return: stop training once a training episode reaches this return (None: never), e.g.
      at the first success of a hard-exploration task; summary.json records when it happened.
    checkpoint_interval_seconds: seconds between checkpoints (one is always written at the end).
    progress_interval_seconds: seconds between progress lines.
    summary_interval_iterations: learner iterations between TensorBoard writes.
    asynchronous_actor: False (default): collect, then learn, in turn — exactly on-policy and
      reproducible from the seed. True: the actor collects in a background thread while the learner
      trains, with a policy lag of up to the queue's size (PPO's ratio uses the recorded behaviour
      logits); faster when the learner and the environments can share the cores.
  """
  start_time = time.time()
  check_writable(root_dir)
  strategy = strategy or tf.distribute.get_strategy()
  # Seeds Python's `random` too: unseeded Keras initializers draw their seeds from it, so
  # `tf.random.set_seed` alone leaves the initial weights different on every run.
  tf.keras.utils.set_random_seed(seed)

  env = suite.make_environment(seed=seed)
  env_id = env.env_id
  num_envs = env.batch_size
  observation_spec = tensor_spec.from_spec(env.observation_spec())
  action_spec = tensor_spec.from_spec(env.action_spec())

  with strategy.scope():
    learner_network = network_fn(observation_spec, action_spec)
    learner_network.create_variables()
  # The actor's and the evaluator's own copies, outside the strategy: they act on the host.
  actor_network = network_fn(observation_spec, action_spec)
  actor_network.create_variables()
  eval_network = network_fn(observation_spec, action_spec)
  eval_network.create_variables()

  num_replicas = strategy.num_replicas_in_sync
  items_per_iteration = num_replicas * items_per_replica
  step_spec = actor_lib.step_spec(observation_spec, action_spec, learner_network)
  signature = reverb_replay.sequence_signature(step_spec, sequence_length, num_envs)
  server = None
  if reverb_address is None:
    server = reverb_replay.start_server([reverb_replay.on_policy_table(
        signature, name=table_name, items_per_learner_step=items_per_iteration)])
    reverb_address = f'localhost:{server.port}'
  client = reverb_replay.connect(reverb_address)
  writer = reverb_replay.SequenceWriter(client, table_name, sequence_length)

  env_steps_per_iteration = items_per_iteration * sequence_length * num_envs
  total_iterations = max(1, int(np.ceil(total_env_steps / env_steps_per_iteration)))

  def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
    del context  # every replica reads its own items from the same table
    return reverb_replay.make_dataset(reverb_address, table_name, items_per_replica)

  learner = learner_fn(network=learner_network, dataset_fn=dataset_fn, strategy=strategy,
                       total_iterations=total_iterations)
  env_steps_variable = tf.Variable(0, dtype=tf.int64, trainable=False, name='env_steps')
  # Set when an evaluation reached stop_at_eval_return: rerunning the directory then does not train on.
  reached_stop_return = tf.Variable(False, trainable=False, name='reached_stop_return')
  # The best training episode so far and the env steps after the iteration that first reached it.
  best_episode_return = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name='best_episode_return')
  best_episode_env_steps = tf.Variable(-1, dtype=tf.int64, trainable=False, name='best_episode_env_steps')
  # Distinct values (RAM bytes, 0..255) of the environment's tracked info entries over the whole run,
  # e.g. Montezuma's rooms visited; checkpointed, so a resumed run keeps counting.
  visited = {key: tf.Variable(tf.zeros([256], tf.bool), trainable=False, name=f'visited_{key}')
             for key in env.tracked_info_keys}
  checkpoint = tf.train.Checkpoint(env_steps=env_steps_variable, reached_stop_return=reached_stop_return,
                                   best_episode_return=best_episode_return,
                                   best_episode_env_steps=best_episode_env_steps,
                                   **{f'visited_{key}': variable for key, variable in visited.items()},
                                   **learner.checkpoint_items())

  def update_visited():
    for key, values in env.visited_info_values().items():
      bitmap = visited[key].numpy()
      bitmap[[v for v in values if 0 <= v < 256]] = True
      visited[key].assign(bitmap)
  checkpoint_dir = os.path.join(root_dir, 'checkpoints')
  manager = tf.train.CheckpointManager(checkpoint, checkpoint_dir, max_to_keep=3)
  restored = _restore_latest_usable(checkpoint, manager, checkpoint_dir)
  if restored:
    print(f'Resumed from {restored} at {int(env_steps_variable.numpy()):,} env steps.', flush=True)
  elif hasattr(learner, 'initialize_from_environment'):
    # E.g. RND seeds its observation statistics with a random agent; these steps are not counted in
    # env_steps and nothing reaches replay. The actor below resets the environments.
    learner.initialize_from_environment(env, seed=seed)

  _write_operative_config(root_dir)
  summary_writer = tf.summary.create_file_writer(os.path.join(root_dir, 'summaries'))

  # Environments restart on resume; a different seed per resume avoids replaying the same episodes.
  resume_seed = seed + int(learner.train_step.numpy())
  if resume_seed != seed:
    env.close()
    env = suite.make_environment(seed=resume_seed)
  actor = actor_lib.Actor(env, actor_network, writer, seed=resume_seed)
  actor_thread = None
  if asynchronous_actor:
    actor_thread = actor_lib.ActorThread(actor, env, writer, sequence_length,
                                         on_error=server.stop if server is not None else None)
  frames_per_step = env.frames_per_step
  progress = _Progress(total_env_steps, frames_per_step, progress_interval_seconds)
  recent_returns = collections.deque(maxlen=20)
  pending_episodes = []  # (returns, lengths) not yet written to TensorBoard
  evals = []
  eval_return = None
  next_eval = (int(env_steps_variable.numpy()) // eval_interval_env_steps + 1) * eval_interval_env_steps \
      if eval_interval_env_steps else None
  last_checkpoint = time.time()
  train_seconds = actor_seconds = learner_seconds = 0.0
  steps_at_start = int(env_steps_variable.numpy())
  first_collection = True
  stopped_early = False
  print(f'Training {env_id} ({num_envs} envs × {sequence_length} steps, {num_replicas} replica(s), '
        f'{"asynchronous" if asynchronous_actor else "synchronous"} actor) for {total_env_steps:,} env '
        f'steps; run directory {root_dir}', flush=True)

  def run_evaluation(env_steps: int) -> Dict[str, float]:
    actor_lib.copy_weights(learner_network.variables, eval_network)
    result = evaluation.evaluate(eval_network, env_id, eval_episodes, seed=seed + 10_000,
                                 greedy=eval_greedy)
    result['env_steps'] = env_steps
    with summary_writer.as_default(step=env_steps):
      tf.summary.scalar('eval/return_mean', result['return_mean'])
      tf.summary.scalar('eval/return_std', result['return_std'])
    return result

  try:
    if actor_thread is not None:
      actor_thread.publish(learner_network.variables, learner.train_step.numpy())
      actor_thread.start()
    stopped_early = bool(reached_stop_return.numpy()) and (
        stop_at_eval_return is not None or stop_at_episode_return is not None)
    while not stopped_early and int(env_steps_variable.numpy()) < total_env_steps:
      iteration_start = time.time()
      if actor_thread is None:
        actor.pull_weights(learner_network.variables, learner.train_step.numpy())
        # The first item of a writer needs T + 1 steps; later ones T (items overlap by one step).
        actor.run(items_per_iteration * sequence_length + (1 if first_collection else 0))
        first_collection = False
        writer.flush()
      actor_done = time.time()
      try:
        metrics = learner.run()
      except (tf.errors.OpError, RuntimeError):
        if actor_thread is not None and actor_thread.error is not None:
          raise actor_thread.error  # the real cause; the learner only saw the server stop
        raise
      if actor_thread is not None:
        actor_thread.publish(learner_network.variables, learner.train_step.numpy())
        episode_returns, episode_lengths = actor_thread.pop_finished_episodes()
      else:
        episode_returns, episode_lengths = env.pop_finished_episodes()
      env_steps = int(env_steps_variable.assign_add(env_steps_per_iteration).numpy())
      now = time.time()
      train_seconds += now - iteration_start
      actor_seconds += actor_done - iteration_start
      learner_seconds += now - actor_done

      recent_returns.extend(episode_returns.tolist())
      if episode_returns.size and episode_returns.max() > best_episode_return.numpy():
        best_episode_return.assign(float(episode_returns.max()))
        best_episode_env_steps.assign(env_steps)
      pending_episodes.append((episode_returns, episode_lengths))
      iteration = int(learner.train_step.numpy())
      if iteration % summary_interval_iterations == 0:
        with summary_writer.as_default(step=env_steps):
          for name, value in metrics.items():
            tf.summary.scalar(f'learner/{name}', value)
          tf.summary.scalar('timing/actor_fraction', actor_seconds / max(train_seconds, 1e-9))
          # Distinct values of tracked info entries so far, e.g. Montezuma's rooms visited (RAM byte 3).
          update_visited()
          for key, bitmap in visited.items():
            tf.summary.scalar(f'env/visited_{key}s', int(tf.reduce_sum(tf.cast(bitmap, tf.int32))))
          # Every finished episode, also those of iterations between two writes.
          for returns, lengths in pending_episodes:
            for value in returns:
              tf.summary.scalar('env/episode_return', value)
            for value in lengths:
              tf.summary.scalar('env/episode_length', value)
        pending_episodes.clear()
      recent = float(np.mean(recent_returns)) if recent_returns else None
      rate = progress.update(env_steps, recent, eval_return)
      if iteration % summary_interval_iterations == 0 and rate is not None and np.isfinite(rate):
        with summary_writer.as_default(step=env_steps):
          tf.summary.scalar('env/steps_per_second', rate)
          tf.summary.scalar('env/frames_per_second', rate * frames_per_step)

      if next_eval is not None and env_steps >= next_eval:
        result = run_evaluation(env_steps)
        result['train_seconds'] = train_seconds
        evals.append(result)
        eval_return = result['return_mean']
        next_eval += eval_interval_env_steps
        if stop_at_eval_return is not None and eval_return >= stop_at_eval_return:
          print(f'Evaluation return {eval_return:.1f} >= stop_at_eval_return={stop_at_eval_return}: '
                f'stopping at {env_steps:,} env steps.', flush=True)
          stopped_early = True
          reached_stop_return.assign(True)
          break
      if stop_at_episode_return is not None and best_episode_return.numpy() >= stop_at_episode_return:
        print(f'A training episode returned {best_episode_return.numpy():.2f} >= stop_at_episode_return='
              f'{stop_at_episode_return}: stopping at {env_steps:,} env steps.', flush=True)
        stopped_early = True
        reached_stop_return.assign(True)
        break
      if time.time() - last_checkpoint >= checkpoint_interval_seconds:
        manager.save(checkpoint_number=learner.train_step)
        last_checkpoint = time.time()
  finally:
    if actor_thread is not None:
      actor_thread.stop()
      actor_thread.join(timeout=60)
    writer.close()
    env.close()

  env_steps = int(env_steps_variable.numpy())
  update_visited()
  progress.update(env_steps, float(np.mean(recent_returns)) if recent_returns else None, eval_return,
                  final_rate=(env_steps - steps_at_start) / train_seconds if train_seconds else float('nan'))
  manager.save(checkpoint_number=learner.train_step)
  final = evals[-1] if evals and evals[-1]['env_steps'] == env_steps else run_evaluation(env_steps)
  policy_dir = policies.export_policy(eval_network, ts.time_step_spec(observation_spec), action_spec,
                                      os.path.join(root_dir, 'policy'), train_step=learner.train_step)
  _write_operative_config(root_dir)
  summary_writer.flush()
  if server is not None:
    server.stop()

  summary = {
      'env_id': env_id,
      'env_steps': env_steps,
      'frames': int(env_steps * frames_per_step),
      'learner_iterations': int(learner.train_step.numpy()),
      'wall_seconds': time.time() - start_time,
      'train_seconds_this_run': train_seconds,
      'actor_seconds_this_run': actor_seconds,  # stepping envs, acting, writing to Reverb
      'learner_seconds_this_run': learner_seconds,  # reading from Reverb and training
      'env_steps_this_run': env_steps - steps_at_start,
      'visited': {key: np.flatnonzero(bitmap.numpy()).tolist() for key, bitmap in visited.items()},
      'best_episode_return': (float(best_episode_return.numpy())
                              if int(best_episode_env_steps.numpy()) >= 0 else None),
      'best_episode_env_steps': (int(best_episode_env_steps.numpy())
                                 if int(best_episode_env_steps.numpy()) >= 0 else None),
      'eval_return_mean': final['return_mean'],
      'eval_return_std': final['return_std'],
      'eval_episodes': final['episodes'],
      'stopped_early': stopped_early,
      'evaluations': evals,
      'policy_dir': policy_dir,
      'checkpoint': manager.latest_checkpoint,
  }
  summary_path = os.path.join(root_dir, 'summary.json')
  tmp = summary_path + '.tmp'
  with tf.io.gfile.GFile(tmp, 'w') as f:
    json.dump(summary, f, indent=2)
  tf.io.gfile.rename(tmp, summary_path, overwrite=True)
  print(f'Done: eval return {final["return_mean"]:.1f} ± {final["return_std"]:.1f} over '
        f'{final["episodes"]} episodes after {env_steps:,} env steps. Results in {root_dir} '
        f'(summary.json, policy/, summaries/ for TensorBoard).', flush=True)
  return summary


def _write_operative_config(root_dir: str) -> None:
  path = os.path.join(root_dir, 'operative_config.gin')
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    f.write(gin.operative_config_str())
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)



def _restore_latest_usable(checkpoint, manager, checkpoint_dir: str) -> Optional[str]:
  """Restores the newest checkpoint that reads back whole (older ones are the fallback); returns its path.

  A checkpoint damaged on disk (a truncated file, say) is reported and skipped, and the one before it
  is used. If none can be restored, one line names the directory and the fix.
  """
  candidates = list(reversed(manager.checkpoints))
  for index, path in enumerate(candidates):
    try:
      checkpoint.restore(path).assert_existing_objects_matched()
    except Exception as error:  # pylint: disable=broad-except  (readers raise IndexError, OpError, ...)
      reason = f'{type(error).__name__}: {str(error).strip().splitlines()[0] if str(error).strip() else ""}'
      if index + 1 < len(candidates):
        print(f"warning: checkpoint '{path}' cannot be restored ({reason}); trying the previous one.",
              flush=True)
        continue
      raise RuntimeError(
          f"checkpoint '{path}' cannot be restored ({reason}) and no older one can; it is corrupt or from a "
          f'different configuration: use a new --root_dir or move {checkpoint_dir} away.') from None
    # The damaged newer files stay where they are (nothing is deleted); the next saves, numbered by
    # the restored learner step, write over them.
    return path
  return None
