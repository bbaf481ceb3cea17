"""The actor: steps a batched environment with the current policy and writes trajectory sequences.

Written by hand rather than with TF-Agents' `Actor`/`PyDriver`: those step through a `PyEnvironment`
with per-step nest conversion and a `py_tf_eager_policy`, which measured ~550 agent steps/s in TF-Agents'
own PPO example on this machine. Here one compiled policy call serves all `N` environments of a native
vector environment, and one Reverb append writes all of them.

Each appended step holds what the actor saw and did at time t (the layout of SEED RL / Acme, not
TF-Agents' `Trajectory`): the time step (`step_type`, `reward` and `discount` received on arriving at
t, `observation`), the action taken, the behaviour logits and value heads, the policy version, and, for
recurrent networks, the core state before the step.
"""

from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec



def step_spec(observation_spec, action_spec, network) -> Dict[str, Any]:
  """Spec of one appended step of ONE environment (see the module docstring)."""
  spec = {
      'observation': tensor_spec.from_spec(observation_spec),
      'step_type': tf.TensorSpec([], tf.int32, 'step_type'),
      'reward': tf.TensorSpec([], tf.float32, 'reward'),
      'discount': tf.TensorSpec([], tf.float32, 'discount'),
      'action': tf.TensorSpec([], tf.as_dtype(action_spec.dtype), 'action'),
      'behaviour_logits': tf.TensorSpec([network.num_actions], tf.float32, 'behaviour_logits'),
      'behaviour_values': {name: tf.TensorSpec([], tf.float32, f'behaviour_value_{name}')
                           for name in network.value_head_names},
      'policy_version': tf.TensorSpec([], tf.int64, 'policy_version'),
  }
  spec['observation'] = tf.TensorSpec(spec['observation'].shape, spec['observation'].dtype,
                                      'observation')
  if tf.nest.flatten(network.state_spec):
    spec['core_state'] = network.state_spec
  return spec


class Actor:
  """Collects experience from a `VectorGymnasiumEnvironment` into a `SequenceWriter`.

  Weights: the actor owns its own copy of the network and pulls weights from a source (the learner's
  variables in a single-process run), recording the source's version in every step it writes.
  """

  def __init__(self, environment, network, writer, seed: int = 0, greedy: bool = False):
    self._env = environment
    self._network = network
    self._writer = writer
    self._greedy = greedy
    self._num_envs = environment.batch_size
    self._seed_generator = tf.random.Generator.from_seed(seed)
    self._policy_version = 0
    self._time_step = environment.reset()
    self._state = network.get_initial_state(self._num_envs)
    self._recurrent = bool(tf.nest.flatten(network.state_spec))
    self._policy_step = tf.function(self._policy_step_fn)
    self._assign = None
    self.env_steps = 0  # agent steps summed over environments

  @property
  def network(self):
    return self._network

  def _policy_step_fn(self, observation, step_type, state):
    (logits, values), next_state = self._network(
        observation, step_type=step_type, network_state=state, training=False)
    if self._greedy:
      action = tf.argmax(logits, axis=-1)
    else:
      seed = self._seed_generator.make_seeds(1)[:, 0]
      action = tf.random.stateless_categorical(logits, 1, seed)[:, 0]
    return action, logits, values, next_state

  def pull_weights(self, source_variables, version: int) -> None:
    """Copies `source_variables` (same structure as the network's) into the actor's network."""
    if self._assign is None:
      targets = self._network.variables

      @tf.function
      def assign(sources):
        for target, source in zip(targets, sources):
          target.assign(source)

      if len(targets) != len(source_variables):
        raise ValueError(f'Weight source has {len(source_variables)} variables, the actor network '
                         f'{len(targets)}: they are not the same architecture.')
      self._assign = assign
    self._assign(list(source_variables))
    self._policy_version = int(version)

  def run(self, num_steps: int) -> int:
    """Steps all environments `num_steps` times; returns the number of items completed."""
    items = 0
    version = np.full([self._num_envs], self._policy_version, np.int64)
    action_dtype = self._env.action_spec().dtype
    for _ in range(num_steps):
      time_step = self._time_step
      action, logits, values, next_state = self._policy_step(
          time_step.observation, time_step.step_type, self._state)
      action = action.numpy().astype(action_dtype, copy=False)
      step = {
          'observation': time_step.observation,
          'step_type': time_step.step_type,
          'reward': time_step.reward,
          'discount': time_step.discount,
          'action': action,
          'behaviour_logits': logits.numpy(),
          'behaviour_values': {k: v.numpy() for k, v in values.items()},
          'policy_version': version,
      }
      if self._recurrent:
        step['core_state'] = tf.nest.map_structure(lambda s: s.numpy(), self._state)
      if self._writer.append(step):
        items += 1
      self._state = next_state
      self._time_step = self._env.step(action)
      self.env_steps += self._num_envs
    return items
