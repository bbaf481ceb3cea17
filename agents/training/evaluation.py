"""Evaluation of a policy network on fresh environments."""

import functools
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.envs import minatar
from protege.envs import suite


def evaluate(network, env_id: str, num_episodes: int = 10, seed: int = 12345, greedy: bool = True,
             max_steps: int = 1_000_000,
             observation_fn: Optional[Callable[[Any], None]] = None) -> Dict[str, float]:
  """Mean undiscounted return of `num_episodes` episodes, one per parallel environment.

  Each environment runs until its first episode ends, so every episode starts from a fresh reset with
  its own seed (`seed + i` through the vector env's seeding). Returns are raw environment rewards (game
  scores on Atari), never clipped. An environment of several tasks (several MinAtar games joined by '+')
  also gives each task's own figures under 'tasks': `{task name: {'return_mean', 'return_std', 'episodes'}}`,
  the name being the task's game id, e.g. 'MinAtar/Breakout-v0' (its episodes are the task's block of the
  `num_episodes` environments, `envs/minatar.py`'s layout).

  Args:
    network: an `ActorCriticNetwork`.
    env_id: environment id (as `suite.make_environment`).
    num_episodes: number of episodes (= parallel environments).
    seed: seed of the evaluation environments; keep it apart from the training seed.
    greedy: act with argmax of the logits (True) or sample.
    max_steps: safety bound on vector steps.
    observation_fn: called with the observations `[n, ...]` of the n episodes still running, before each
      action (e.g. to sample the states a policy visits). Default None.
  """
  env = suite.make_environment(env_id=env_id, num_envs=num_episodes, seed=seed)
  generator = tf.random.Generator.from_seed(seed)

  @functools.partial(tf.function, autograph=False)
  def act(observation, step_type, state):
    (logits, _), next_state = network(observation, step_type=step_type, network_state=state)
    if greedy:
      return tf.argmax(logits, axis=-1), next_state
    return tf.random.stateless_categorical(logits, 1, generator.make_seeds(1)[:, 0])[:, 0], next_state

  try:
    time_step = env.reset()
    state = network.get_initial_state(num_episodes)
    returns = np.zeros(num_episodes, np.float64)
    lengths = np.zeros(num_episodes, np.int64)
    done = np.zeros(num_episodes, bool)
    action_dtype = env.action_spec().dtype
    for _ in range(max_steps):
      if observation_fn is not None:
        observation_fn(tf.nest.map_structure(lambda x: np.asarray(x)[~done], time_step.observation))
      action, state = act(time_step.observation, time_step.step_type, state)
      time_step = env.step(action.numpy().astype(action_dtype, copy=False))
      active = ~done
      returns[active] += time_step.reward[active]
      lengths[active] += 1
      done |= time_step.step_type == ts.StepType.LAST
      if done.all():
        break
    task_ids = np.asarray(getattr(env, 'task_ids', np.zeros(num_episodes, np.int32)))
  finally:
    env.close()
  result = {'return_mean': float(returns.mean()), 'return_std': float(returns.std()),
            'return_min': float(returns.min()), 'return_max': float(returns.max()),
            'length_mean': float(lengths.mean()), 'episodes': int(num_episodes),
            'complete': bool(done.all())}
  if len(np.unique(task_ids)) > 1:
    names = task_names(env_id, int(task_ids.max()) + 1)
    result['tasks'] = {names[task]: {'return_mean': float(returns[task_ids == task].mean()),
                                     'return_std': float(returns[task_ids == task].std()),
                                     'episodes': int((task_ids == task).sum())}
                       for task in np.unique(task_ids)}
  return result


def task_names(env_id: str, num_tasks: int) -> List[str]:
  """The name of each task of a several-task environment: its game id for MinAtar games joined by '+',
  else 'task_k'."""
  parts = env_id.split(minatar.TASK_SEPARATOR)
  return parts if len(parts) == num_tasks else [f'task_{k}' for k in range(num_tasks)]
