"""The training run: `train()` and `Trainer`, a learner wired from gin with its collection of trajectories
(`agents.training.collection`): in the single-process run its own actor, the trajectory queue between
them in the process (`replay.local_queue`: no server, no open port); in the learner of a distributed
run, actors in other processes writing to a Reverb server (`reverb_address`).

`binaries/train_main.py` parses flags and gin and calls `train()`; everything about the algorithm is
configured here through gin. A run directory is self-describing:

    root_dir/
      operative_config.gin   every gin parameter the run used (written at start and at the end)
      checkpoints/           learner state (network, optimiser, hyperparameter variables, counters)
      summaries/             TensorBoard: scalars, the operative config as text, the hyperparameters (HParams)
      policy/                the final policy, a SavedModel written by TF-Agents' PolicySaver
      curves.png             the whole run's return, evaluations (and intrinsic reward, λ_k) against env steps
      summary.json           env_steps, wall_seconds, eval_return_mean (and eval_tasks: each game's), curves, ...

Running again with the same root_dir resumes from the latest checkpoint; a finished run (its budget
spent, or `stop_at_eval_return` reached while that option is still set) only re-evaluates and re-exports.
"""

import collections
import dataclasses
import gc
import os
import time
from typing import Any, Callable, Dict, Optional

import gin
import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.agents.distillation import kickstarting  # noqa: F401  (registers Kickstarter, TeacherSet, schedules with gin)
from protege.agents.distillation import teachers
from protege.agents.learners import base as learner_base
from protege.agents.learners import impala  # noqa: F401  (registers IMPALALearner with gin)
from protege.agents.learners import ppo
from protege.agents.learners import rnd  # noqa: F401  (registers RNDLearner with gin)
from protege.agents.training import actor as actor_lib
from protege.agents.training import collection as collection_lib
from protege.agents.training import components
from protege.agents.training import evaluation
from protege.agents.training import policy_export
from protege.agents.training import progress
from protege.agents.training import settings as settings_lib
from protege.agents.training import summaries
from protege.envs import suite
from protege.runtime import errors
from protege.runtime import run_directory


def train(root_dir: str,
          strategy: Optional[tf.distribute.Strategy] = None,
          reverb_address: Optional[str] = None,
          local_actor: bool = True,
          program: str = 'train_main',
          stop_request: Optional[Callable[[], bool]] = None,
          **overrides) -> Optional[Dict[str, Any]]:
  """Trains an agent and returns the summary that is also written to `root_dir/summary.json`.

  Args:
    root_dir: the run directory (see the module docstring).
    strategy: the learner's `tf.distribute` strategy (from flags); default one device.
    reverb_address: 'host:port' of a running Reverb server holding the table (the user's: this process
      then connects to it); None: the single-process run, fed in-process, listening on no port.
    local_actor: True (default): this process also acts. False: the learner of a distributed run
      (`binaries/learner_main.py`): actors in other processes (`binaries/actor_main.py`) fill the table
      of the Reverb server at `reverb_address` (required), and the learner publishes its weights to that
      server's variables table after every iteration. Env steps are counted from the items the learner
      consumed; training episodes are reported by the actors.
    program: the job's name, recorded in the run directory's lock.
    stop_request: polled between iterations (e.g. `runtime.interrupts.StopRequest`); once it returns True,
      the run saves a checkpoint and returns None (the run is not finished; running it again resumes).
    **overrides: `settings.RunSettings` values that win over the gin configuration (tests, drivers).
  """
  trainer = Trainer(root_dir, strategy=strategy, reverb_address=reverb_address, local_actor=local_actor,
                    program=program, stop_request=stop_request, **overrides)
  try:
    try:
      while not trainer.finished and not trainer.stop_requested():
        trainer.run_iteration()
    except errors.UserError as error:
      if isinstance(error, errors.DivergenceError):
        raise  # nothing non-finite is saved
      # E.g. an environment that returned a NaN reward: the iterations trained so far are kept.
      trainer.close()
      path = trainer.save_if_consistent()
      if path:
        print(f'{program}: saved {path} at {trainer.env_steps:,} env steps before stopping.', flush=True)
      raise
    trainer.close()
    if trainer.stop_requested():
      path = trainer.save()
      print(f'{program}: stopped at {trainer.env_steps:,} env steps; saved {path}. Run the same command to '
            'resume.', flush=True)
      return None
    return trainer.finish()
  finally:
    trainer.close()
    trainer.release()


def _check_learner(learner) -> None:
  """Refuses what `train.learner_fn` built unless it is a `agents.learners.base.Learner`."""
  if not isinstance(learner, learner_base.Learner):
    raise errors.ConfigError(f'train.learner_fn built a {type(learner).__name__}, which is not a learner: it '
                             'must derive from agents.learners.base.Learner (as PPOLearner, IMPALALearner and '
                             'RNDLearner do).')


def _hyperparameter_values(items: Dict[str, Any]) -> Dict[str, float]:
  """The learner's scalar float variables among its checkpoint items (learning rate, entropy cost, ...)."""
  return {name: float(item.numpy()) for name, item in items.items()
          if isinstance(item, tf.Variable) and item.shape.rank == 0 and item.dtype.is_floating}


def _warn_of_restored_hyperparameters(configured: Dict[str, float], restored: Dict[str, float]) -> None:
  """Says which hyperparameters the checkpoint brought back with values other than the gin files'."""
  changed = [f'{name} = {restored[name]:.6g} (the gin files say {value:.6g})'
             for name, value in configured.items() if name in restored and restored[name] != value]
  if changed:
    print('warning: the resumed run keeps its checkpoint\'s hyperparameters, not the gin files\': '
          f'{", ".join(changed)}; to train with the new values, start a new --root_dir.', flush=True)


class Trainer:
  """One training run, an iteration at a time: what `train()` runs, for drivers that act between
  iterations (a PBT member reports to its scheduler and swaps hyperparameters, tests inspect state).

  The constructor builds everything (environments, trajectory queue, networks, learner) and resumes from
  `root_dir`'s latest checkpoint; `run_iteration()` collects one batch and trains on it, with the
  summaries, evaluations, stopping rules and periodic checkpoints of `train()`; `close()` stops the
  actor and environments; `finish()` evaluates, exports the policy and writes summary.json; `release()`
  lets another process open the directory (`finish()` does it last). The arguments are `train()`'s;
  `settings` (default: `RunSettings` from gin, with `overrides`) what the gin file says. A resumed run keeps
  its checkpoint's hyperparameter variables and says which differ from the gin files' (unless
  `hyperparameters_from_gin` is False: a PBT member, which assigns its own). `lock_wait_seconds`: how long
  to wait for another holder of `root_dir` to let go before refusing (0, the default: refuse at once; a PBT
  member waits for the process Ray is handing its directory over from).
  """

  def __init__(self, root_dir: str, strategy=None, reverb_address=None, local_actor=True, program='train',
               stop_request: Optional[Callable[[], bool]] = None,
               settings: Optional[settings_lib.RunSettings] = None,
               hyperparameters_from_gin: bool = True, lock_wait_seconds: float = 0.0, **overrides):
    if settings is None:
      settings = settings_lib.RunSettings(**overrides)  # the gin configuration, `overrides` winning
    elif overrides:
      settings = dataclasses.replace(settings, **overrides)
    settings_lib.check_settings(settings.total_env_steps, settings.sequence_length, settings.items_per_replica,
                                settings.eval_interval_env_steps, settings.eval_episodes,
                                settings.checkpoint_interval_seconds, settings.progress_interval_seconds,
                                settings.summary_interval_iterations, local_actor, reverb_address)
    teachers.check_target_settings(**teachers.teacher_targets())  # a kickstarting teacher's τ and ε
    self.settings = settings
    self.stop_requested = stop_request or (lambda: False)
    (table_name, total_env_steps, sequence_length, items_per_replica, seed, network_fn, learner_fn,
     eval_interval_env_steps, eval_episodes, eval_greedy, stop_at_eval_return, stop_at_episode_return,
     checkpoint_interval_seconds, progress_interval_seconds, summary_interval_iterations,
     asynchronous_actor) = (getattr(settings, field.name)
                            for field in dataclasses.fields(settings_lib.RunSettings))
    self._start_time = time.time()
    # Taken first: a second process on this directory is refused before it builds or restores anything.
    self.run_directory = run_directory.RunDirectory(root_dir, program, wait_seconds=lock_wait_seconds)
    try:
      self.root_dir = root_dir
      self.total_env_steps = total_env_steps
      self._seed = seed
      self._eval_interval = eval_interval_env_steps
      self._eval_episodes = eval_episodes
      self._eval_greedy = eval_greedy
      self._stop_at_eval_return = stop_at_eval_return
      self._stop_at_episode_return = stop_at_episode_return
      self._checkpoint_interval = checkpoint_interval_seconds
      self._summary_interval = summary_interval_iterations
      strategy = strategy or tf.distribute.get_strategy()
      # Seeds Python's `random` too: unseeded Keras initializers draw their seeds from it, so
      # `tf.random.set_seed` alone leaves the initial weights different on every run.
      tf.keras.utils.set_random_seed(seed)

      env = suite.make_environment(seed=seed)
      self.env_id = env.env_id
      num_envs = env.batch_size
      self.observation_spec, self.action_spec = components.environment_specs(env)

      with strategy.scope():
        self.network = components.make_network(network_fn, env)
      # The actor's and the evaluator's own copies, outside the strategy: they act on the host.
      actor_network = components.make_network(network_fn, env) if local_actor else None
      self._eval_network = components.make_network(network_fn, env)

      num_replicas = strategy.num_replicas_in_sync
      items_per_iteration = num_replicas * items_per_replica
      self._env_steps_per_iteration = items_per_iteration * sequence_length * num_envs
      total_iterations = max(1, int(np.ceil(total_env_steps / self._env_steps_per_iteration)))

      def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        del context  # every replica reads its own items from the same queue or table
        return self._collection.dataset(items_per_replica)

      # (`dataset_fn` runs at the learner's first step, after the collection below is made.)
      self.learner = learner = learner_fn(network=self.network, dataset_fn=dataset_fn, strategy=strategy,
                                          total_iterations=total_iterations)
      _check_learner(learner)
      # The kickstarter's recurrent teachers the actor steps beside its policy (their states go with the steps).
      self._actor_teachers = kickstarting.actor_teachers(
          *components.environment_specs(env), kickstarter=learner.kickstarter)
      # The collection mode is chosen here, once: the run's own actor in turn with the learner or in a
      # thread, or actors in other processes (`agents.training.collection`).
      self._collection = collection_lib.make_collection(
          env, self.network, actor_network, self._actor_teachers, reverb_address, local_actor,
          asynchronous_actor, table_name, sequence_length, items_per_iteration)
      self._restore(env, seed, hyperparameters_from_gin)
      self._open_summaries(self._write_operative_config())

      resume_seed = seed + int(learner.train_step.numpy())
      self._env = env = self._collection.attach(env, seed, resume_seed)
      self.frames_per_step = env.frames_per_step
      self._progress = progress.Progress(total_env_steps, self.frames_per_step, progress_interval_seconds)
      self.recent_returns = collections.deque(maxlen=20)
      self._pending_episodes = []  # (returns, lengths) not yet written to TensorBoard
      self.evaluations = []
      self._eval_return = None
      self._next_eval = ((self.env_steps // eval_interval_env_steps + 1) * eval_interval_env_steps
                         if eval_interval_env_steps else None)
      self._last_checkpoint = time.time()
      self.train_seconds = self.actor_seconds = self.learner_seconds = 0.0
      self._steps_at_start = self.env_steps
      self._updating = False  # True between a learner update and the counters that go with it
      self._started = self._closed = False
      self.stopped_early = bool(self._reached_stop_return.numpy()) and (
          stop_at_eval_return is not None or stop_at_episode_return is not None)
      print(f'Training {self.env_id} ({num_envs} envs × {sequence_length} steps, {num_replicas} replica(s), '
            f'{self._collection.description}) for {total_env_steps:,} env steps; run directory {root_dir}',
            flush=True)
    except BaseException:
      self.run_directory.release()  # a run that could not start holds nothing
      raise

  def _restore(self, env, seed: int, hyperparameters_from_gin: bool) -> None:
    """Makes the run's counters and checkpoint and restores the latest usable checkpoint (or, in a new
    run, lets the learner initialise from `env`)."""
    self._env_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name='env_steps')
    # Set when an evaluation reached stop_at_eval_return: rerunning the directory then does not train on.
    self._reached_stop_return = tf.Variable(False, trainable=False, name='reached_stop_return')
    # The best training episode so far and the env steps after the iteration that first reached it.
    self._best_return = tf.Variable(-np.inf, dtype=tf.float64, trainable=False, name='best_episode_return')
    self._best_return_steps = tf.Variable(-1, dtype=tf.int64, trainable=False, name='best_episode_env_steps')
    # Distinct values (RAM bytes, 0..255) of the environment's tracked info entries over the whole run,
    # e.g. Montezuma's rooms visited; checkpointed, so a resumed run keeps counting.
    self._visited = {key: tf.Variable(tf.zeros([256], tf.bool), trainable=False, name=f'visited_{key}')
                     for key in env.tracked_info_keys}
    self.checkpoint = tf.train.Checkpoint(
        env_steps=self._env_steps, reached_stop_return=self._reached_stop_return,
        best_episode_return=self._best_return, best_episode_env_steps=self._best_return_steps,
        **{f'visited_{key}': variable for key, variable in self._visited.items()},
        **self.learner.checkpoint_items())
    # Every floating-point value of the learner's state (weights, optimiser, normalisers, hyperparameters)
    # is checked after each iteration and before each save. (The run's own counters are not: the best
    # return starts at -inf.)
    self._guard = run_directory.NonFiniteGuard(self.learner.checkpoint_items().values())
    checkpoint_dir = os.path.join(self.root_dir, 'checkpoints')
    self._manager = run_directory.open_checkpoints(self.checkpoint, checkpoint_dir, max_to_keep=3)
    configured = _hyperparameter_values(self.learner.checkpoint_items())
    restored = run_directory.restore_latest_usable(self.checkpoint, self._manager, checkpoint_dir, self._guard)
    if restored:
      print(f'Resumed from {restored} at {self.env_steps:,} env steps.', flush=True)
      if hyperparameters_from_gin:  # (a PBT member assigns its own after every restore)
        _warn_of_restored_hyperparameters(configured, _hyperparameter_values(self.learner.checkpoint_items()))
    else:
      # E.g. RND seeds its observation statistics with a random agent; these steps are not counted in
      # env_steps and nothing reaches replay. The run's actor resets the environments.
      self.learner.initialize_from_environment(env, seed=seed)

  def _open_summaries(self, operative_config: str) -> None:
    """Opens the TensorBoard writer and records the configuration as text and the main hyperparameters
    (HParams) at the step the run starts from."""
    self._summary_writer = tf.summary.create_file_writer(os.path.join(self.root_dir, 'summaries'))
    hyperparameters = dict(_hyperparameter_values(self.learner.hyperparameters()), seed=self._seed,
                           total_env_steps=self.total_env_steps)
    summaries.write_run_start(self._summary_writer, self.env_steps, operative_config, hyperparameters)

  @property
  def env_steps(self) -> int:
    return int(self._env_steps.numpy())

  @property
  def finished(self) -> bool:
    """True once the budget is spent or a stopping rule fired."""
    return self.stopped_early or self.env_steps >= self.total_env_steps

  def _evaluate(self, env_steps: int) -> Dict[str, float]:
    actor_lib.copy_weights(self.network.variables, self._eval_network)
    result = evaluation.evaluate(self._eval_network, self.env_id, self._eval_episodes, seed=self._seed + 10_000,
                                 greedy=self._eval_greedy)
    result['env_steps'] = env_steps
    with self._summary_writer.as_default(step=env_steps):
      tf.summary.scalar('eval/return_mean', result['return_mean'])
      tf.summary.scalar('eval/return_std', result['return_std'])
      for task, task_result in result.get('tasks', {}).items():  # a several-task environment: each task
        tf.summary.scalar(f'eval_tasks/{task}/return_mean', task_result['return_mean'])
    return result

  def _update_visited(self) -> None:
    for key, values in self._env.visited_info_values().items():
      bitmap = self._visited[key].numpy()
      bitmap[[v for v in values if 0 <= v < 256]] = True
      self._visited[key].assign(bitmap)

  def run_iteration(self) -> Dict[str, Any]:
    """Collects one learner batch, trains on it, and does the iteration's bookkeeping; returns the
    learner's metrics. Sets `stopped_early` when a stopping rule fires."""
    learner, collection = self.learner, self._collection
    if not self._started:
      self._started = True
      collection.start(self.network.variables, learner.train_step.numpy())
    iteration_start = time.time()
    collection.collect(self.network.variables, learner.train_step.numpy())
    actor_done = time.time()
    if not collection.wait_for_items(self.stop_requested):
      return None  # a stop was requested while the learner waited for its actor; nothing was trained
    self._updating = True  # until the iteration's counters are in step with the learner again
    try:
      metrics = learner.run()
    except (tf.errors.OpError, RuntimeError):
      collection.raise_actor_error()  # the real cause, if the learner only saw its input end
      raise
    # A NaN or infinity in a loss term, the gradient norm or any weight stops the run here, before
    # anything of this iteration is counted or saved; the earlier checkpoints stay.
    self._guard.check(metrics, iteration=int(learner.train_step.numpy()),
                      env_steps=self.env_steps + self._env_steps_per_iteration,
                      last_checkpoint=self._manager.latest_checkpoint)
    # (Actors in other processes report their episodes themselves.)
    episode_returns, episode_lengths = collection.after_learner_step(self.network.variables,
                                                                     learner.train_step.numpy())
    env_steps = int(self._env_steps.assign_add(self._env_steps_per_iteration).numpy())
    self._updating = False
    now = time.time()
    self.train_seconds += now - iteration_start
    self.actor_seconds += actor_done - iteration_start
    self.learner_seconds += now - actor_done

    self.recent_returns.extend(episode_returns.tolist())
    if episode_returns.size and episode_returns.max() > self._best_return.numpy():
      self._best_return.assign(float(episode_returns.max()))
      self._best_return_steps.assign(env_steps)
    self._pending_episodes.append((episode_returns, episode_lengths))
    iteration = int(learner.train_step.numpy())
    if iteration % self._summary_interval == 0:
      with self._summary_writer.as_default(step=env_steps):
        for name, value in metrics.items():
          tf.summary.scalar(f'learner/{name}', value)
        tf.summary.scalar('timing/actor_fraction', self.actor_seconds / max(self.train_seconds, 1e-9))
        # Distinct values of tracked info entries so far, e.g. Montezuma's rooms visited (RAM byte 3).
        self._update_visited()
        for key, bitmap in self._visited.items():
          tf.summary.scalar(f'env/visited_{key}s', int(tf.reduce_sum(tf.cast(bitmap, tf.int32))))
        # Every finished episode, also those of iterations between two writes.
        for returns, lengths in self._pending_episodes:
          for value in returns:
            tf.summary.scalar('env/episode_return', value)
          for value in lengths:
            tf.summary.scalar('env/episode_length', value)
      self._pending_episodes.clear()
    recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
    rate = self._progress.update(env_steps, recent, self._eval_return)
    if iteration % self._summary_interval == 0 and rate is not None and np.isfinite(rate):
      with self._summary_writer.as_default(step=env_steps):
        tf.summary.scalar('env/steps_per_second', rate)
        tf.summary.scalar('env/frames_per_second', rate * self.frames_per_step)

    if self._next_eval is not None and env_steps >= self._next_eval:
      result = self._evaluate(env_steps)
      result['train_seconds'] = self.train_seconds
      self.evaluations.append(result)
      self._eval_return = result['return_mean']
      self._next_eval += self._eval_interval
      if self._stop_at_eval_return is not None and self._eval_return >= self._stop_at_eval_return:
        print(f'Evaluation return {self._eval_return:.1f} >= stop_at_eval_return={self._stop_at_eval_return}: '
              f'stopping at {env_steps:,} env steps.', flush=True)
        self.stopped_early = True
        self._reached_stop_return.assign(True)
        return metrics
    if (self._stop_at_episode_return is not None
        and self._best_return.numpy() >= self._stop_at_episode_return):
      print(f'A training episode returned {self._best_return.numpy():.2f} >= stop_at_episode_return='
            f'{self._stop_at_episode_return}: stopping at {env_steps:,} env steps.', flush=True)
      self.stopped_early = True
      self._reached_stop_return.assign(True)
      return metrics
    if time.time() - self._last_checkpoint >= self._checkpoint_interval:
      self.save()
    return metrics

  def save_if_consistent(self) -> Optional[str]:
    """Saves a checkpoint unless an iteration was cut off between its learner update and its counters
    (then the last checkpoint is the consistent state); returns the path saved, or None."""
    if self._updating:
      return None
    return self.save()

  def save(self) -> str:
    """Writes a checkpoint now (numbered by the learner step); returns its path. Refuses non-finite state
    (`DivergenceError`); a full disk is a one-line `RunDirectoryError`, the previous checkpoint intact."""
    path = run_directory.save_checkpoint(self._manager, self.learner.train_step, self._guard)
    self._last_checkpoint = time.time()
    return path

  @property
  def guard(self) -> run_directory.NonFiniteGuard:
    """The check of the learner's state for NaN and infinity (run after every iteration)."""
    return self._guard

  @property
  def latest_checkpoint(self) -> Optional[str]:
    return self._manager.latest_checkpoint

  def _write_operative_config(self) -> str:
    text = gin.operative_config_str()
    self.run_directory.write_text('operative_config.gin', text)
    return text

  def release(self) -> None:
    """Releases the run directory's lock (idempotent); call it when nothing more will be written."""
    self.run_directory.release()

  def close(self) -> None:
    """Stops the actor and closes the environments, the trajectory writer and the in-process queue
    (idempotent)."""
    if self._closed:
      return
    self._closed = True
    self._collection.stop()
    # The input pipeline's threads are stopped now: left to the interpreter's exit (an exception's
    # traceback can hold the iterator until then), a reader in a `numpy_function` could wait for the
    # interpreter's lock for ever.
    self.learner.release_iterator()
    gc.collect()
    self._env.close()

  def finish(self) -> Dict[str, Any]:
    """Closes the run: a last checkpoint, the final evaluation, the exported policy and summary.json."""
    self.close()
    root_dir = self.root_dir
    env_steps = self.env_steps
    self._update_visited()
    recent = float(np.mean(self.recent_returns)) if self.recent_returns else None
    self._progress.update(env_steps, recent, self._eval_return,
                          final_rate=((env_steps - self._steps_at_start) / self.train_seconds
                                      if self.train_seconds else float('nan')))
    self.save()
    evals = self.evaluations
    final = evals[-1] if evals and evals[-1]['env_steps'] == env_steps else self._evaluate(env_steps)
    policy_dir = policy_export.export_policy(self._eval_network, ts.time_step_spec(self.observation_spec),
                                        self.action_spec, os.path.join(root_dir, 'policy'),
                                        train_step=self.learner.train_step)
    self._write_operative_config()
    self._summary_writer.flush()
    self._collection.end(self.network.variables, self.learner.train_step.numpy())

    best_steps = int(self._best_return_steps.numpy())
    summary = {
        'env_id': self.env_id,
        'env_steps': env_steps,
        'frames': int(env_steps * self.frames_per_step),
        'learner_iterations': int(self.learner.train_step.numpy()),
        'wall_seconds': time.time() - self._start_time,
        'train_seconds_this_run': self.train_seconds,
        'actor_seconds_this_run': self.actor_seconds,  # stepping envs, acting, writing trajectories
        'learner_seconds_this_run': self.learner_seconds,  # reading trajectories and training
        'env_steps_this_run': env_steps - self._steps_at_start,
        'visited': {key: np.flatnonzero(bitmap.numpy()).tolist() for key, bitmap in self._visited.items()},
        'best_episode_return': float(self._best_return.numpy()) if best_steps >= 0 else None,
        'best_episode_env_steps': best_steps if best_steps >= 0 else None,
        'eval_return_mean': final['return_mean'],
        'eval_return_std': final['return_std'],
        'eval_episodes': final['episodes'],
        'eval_tasks': final.get('tasks'),  # each task's figures in a several-task environment, else None
        'stopped_early': self.stopped_early,
        'evaluations': evals,
        'policy_dir': policy_dir,
        'checkpoint': self._manager.latest_checkpoint,
    }
    # The whole run's curves, resumes included, from its event files (None if they could not be drawn).
    summary['curves'] = summaries.write_curves(
        root_dir, title=f'{self.env_id}, {type(self.learner).__name__}: {env_steps:,} env steps ({root_dir})')
    self.run_directory.write_json('summary.json', summary)
    curves = f'{summaries.CURVES_FILE}, ' if summary['curves'] else ''
    print(f'Done: eval return {final["return_mean"]:.1f} ± {final["return_std"]:.1f} over '
          f'{final["episodes"]} episodes after {env_steps:,} env steps. Results in {root_dir} '
          f'(summary.json, {curves}policy/, summaries/ for TensorBoard).', flush=True)
    if final.get('tasks'):
      print('Per task: ' + ', '.join(f'{task} {result["return_mean"]:.1f} over {result["episodes"]} episodes'
                                     for task, result in final['tasks'].items()) + '.', flush=True)
    self.release()
    return summary


