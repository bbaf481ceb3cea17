"""The actor: steps a batched environment with the current policy and writes trajectory sequences.

Written by hand rather than with TF-Agents' `Actor`/`PyDriver`: those step through a `PyEnvironment`
with per-step nest conversion and a `py_tf_eager_policy`, which measured ~550 agent steps/s in TF-Agents'
own PPO example on this machine. Here one compiled policy call serves all `N` environments of a native
vector environment, and one append to the trajectory writer (`replay.local_queue` in one process,
`replay.reverb_replay` between processes) writes all of them.

Each appended step holds what the actor saw and did at time t (the layout of SEED RL / Acme, not
TF-Agents' `Trajectory`): the time step (`step_type`, `reward` and `discount` received on arriving at
t, `observation`), the action taken, the behaviour logits and value heads, the policy version, and, for
recurrent networks, the core state before the step.
"""

import functools
import queue
import threading
from typing import Any, Callable, Dict, Optional

import gin
import numpy as np
import tensorflow as tf
from tf_agents.specs import tensor_spec

from protege.networks import numpy_inference



@gin.configurable
def actor_options(numpy_inference_for_mlps: bool = True) -> Dict[str, Any]:
  """Gin settings of every `Actor` of the run.

  Args:
    numpy_inference_for_mlps: True (default): small feed-forward MLP policies run their forward pass in
      NumPy (`networks.numpy_inference`; equal to TensorFlow's up to float32 rounding, ~25x cheaper per
      step on the machine of BENCHMARKS.md). False: always TensorFlow.
  """
  return {'numpy_inference_for_mlps': bool(numpy_inference_for_mlps)}


def is_multi_task(environment) -> bool:
  """Whether the environments play several tasks (e.g. two MinAtar games): then every step records
  each environment's `task_id`, which routes kickstarting teachers per task."""
  return len(np.unique(getattr(environment, 'task_ids', [0]))) > 1


def step_spec(observation_spec, action_spec, network, multi_task: bool = False,
              teachers=None) -> Dict[str, Any]:
  """Spec of one appended step of ONE environment (see the module docstring); with `multi_task`, the
  step also holds the environment's `task_id`; with `teachers` (`kickstarting.actor_teachers`), each
  recurrent teacher's state before the step ('teacher_state')."""
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
  if multi_task:
    spec['task_id'] = tf.TensorSpec([], tf.int32, 'task_id')
  recorded = teachers.recorded_state_specs() if teachers is not None else {}
  if recorded:
    spec['teacher_state'] = recorded
  return spec


def _check_same_architecture(source_variables, target_variables) -> None:
  if len(target_variables) != len(source_variables):
    raise ValueError(f'Weight source has {len(source_variables)} variables, the target network '
                     f'{len(target_variables)}: they are not the same architecture.')


def copy_weights(source_variables, target_network) -> None:
  """Assigns `source_variables` (variables or arrays, in the network's order) to `target_network`."""
  targets = target_network.variables
  _check_same_architecture(source_variables, targets)
  for target, value in zip(targets, source_variables):
    target.assign(value)


class Actor:
  """Collects experience from a `VectorGymnasiumEnvironment` into a `SequenceWriter`.

  Weights: the actor owns its own copy of the network and pulls weights from a source (the learner's
  variables in a single-process run), recording the source's version in every step it writes.
  """

  def __init__(self, environment, network, writer, seed: int = 0, greedy: bool = False,
               numpy_inference_for_mlps: Optional[bool] = None, teachers=None):
    """Args:
      environment: a batched environment (`batch_size` N) stepped with `send`/`receive` (`envs.suite`).
      network: the actor's own copy of the network, its variables created.
      writer: the trajectory writer (`replay.local_queue.SequenceWriter` in a single-process run,
        `replay.reverb_replay.SequenceWriter` with a Reverb server); `append(step)` returns whether an item
        was completed.
      seed: seeds the action sampling.
      greedy: act with the argmax instead of sampling.
      numpy_inference_for_mlps: run the policy in NumPy when the network is a small feed-forward MLP
        (`networks.numpy_inference`: a compiled TensorFlow call costs ~0.5 ms on the 2-core machine of
        BENCHMARKS.md, the NumPy pass ~20 µs); other networks always use TensorFlow. None (default): the
        gin setting `actor_options.numpy_inference_for_mlps` (default True).
      teachers: `kickstarting.actor_teachers`' set, or None: the recurrent teachers the actor steps beside
        its policy, recording each one's state before every step (the step spec's 'teacher_state').
    """
    if numpy_inference_for_mlps is None:
      numpy_inference_for_mlps = actor_options()['numpy_inference_for_mlps']
    self._env = environment
    self._network = network
    self._writer = writer
    self._greedy = greedy
    self._num_envs = environment.batch_size
    self._rng = np.random.default_rng(seed)
    self._policy_version = 0
    self._time_step = environment.reset()
    self._state = network.get_initial_state(self._num_envs)
    self._recurrent = bool(tf.nest.flatten(network.state_spec))
    self._task_ids = np.asarray(environment.task_ids, np.int32) if is_multi_task(environment) else None
    self._value_heads = list(network.value_head_names)
    self._policy_step = self._compile_policy_step(environment.observation_spec())
    self._numpy_forward = None
    if numpy_inference_for_mlps and not self._recurrent:
      self._numpy_forward = numpy_inference.numpy_forward(network)
    self._assign = None
    self._teachers = teachers if teachers is not None and teachers.recorded_state_specs() else None
    if self._teachers is not None:
      self._teacher_states = self._teachers.initial_recorded_states(self._num_envs)
      # AutoGraph off, as the policy step's: the step has no data-dependent Python control flow.
      self._step_teachers = tf.function(self._teachers.step_recorded_states, autograph=False)
    self.env_steps = 0  # agent steps summed over environments

  @property
  def network(self):
    return self._network

  def _compile_policy_step(self, observation_spec):
    """The policy step as one concrete function over flat tensors of fixed shape.

    Calling a concrete function skips `tf.function`'s per-call argument matching (about a third of
    the call's cost for a small network), and AutoGraph is off: the step has no data-dependent
    Python control flow and converting TF-Agents' network code costs ~2 s of tracing.
    """
    batch = [self._num_envs]
    state_specs = [tf.TensorSpec(batch + s.shape.as_list(), s.dtype)
                   for s in tf.nest.flatten(self._network.state_spec)]

    def flat_step(observation, step_type, *state):
      state = tf.nest.pack_sequence_as(self._network.state_spec, list(state))
      (logits, values), next_state = self._network(
          observation, step_type=step_type, network_state=state, training=False)
      return [logits] + [values[k] for k in self._value_heads] + tf.nest.flatten(next_state)

    concrete = tf.function(flat_step, autograph=False).get_concrete_function(
        tf.TensorSpec(batch + list(observation_spec.shape), tf.as_dtype(observation_spec.dtype)),
        tf.TensorSpec(batch, tf.int32), *state_specs)
    num_heads = len(self._value_heads)

    def step(observation, step_type, state):
      """Returns numpy `(action, logits, {head: value})` and the next state (tensors)."""
      outputs = concrete(tf.convert_to_tensor(observation), tf.convert_to_tensor(step_type),
                         *tf.nest.flatten(state))
      logits = outputs[0].numpy()
      values = {k: v.numpy() for k, v in zip(self._value_heads, outputs[1:1 + num_heads])}
      next_state = tf.nest.pack_sequence_as(self._network.state_spec, outputs[1 + num_heads:])
      return self._sample(logits), logits, values, next_state

    return step

  def _sample(self, logits: np.ndarray) -> np.ndarray:
    """The argmax (greedy) or a sample of each row's categorical distribution (Gumbel-max).

    Sampled in numpy: for an `[N, A]` batch this costs microseconds, where TensorFlow's seeded
    sampling ops added ~0.5 ms to every policy step.
    """
    if not self._greedy:
      logits = logits + self._rng.gumbel(size=logits.shape)
    return np.argmax(logits, axis=-1)

  def pull_weights(self, source_variables, version: int) -> None:
    """Copies `source_variables` (same structure as the network's) into the actor's network.

    `source_variables` are variables (another network in this process: the copy is compiled once with
    the sources captured, so each call costs one function call) or arrays (a published snapshot).
    """
    targets = self._network.variables
    _check_same_architecture(source_variables, targets)
    if all(isinstance(v, tf.Variable) for v in source_variables):
      key = tuple(id(v) for v in source_variables)
      if self._assign is None or self._assign[0] != key:
        sources = list(source_variables)

        @functools.partial(tf.function, autograph=False)
        def assign():
          for target, source in zip(targets, sources):
            target.assign(source)

        self._assign = (key, assign.get_concrete_function())
      self._assign[1]()
    else:
      copy_weights(source_variables, self._network)
    self._policy_version = int(version)

  @property
  def uses_numpy_inference(self) -> bool:
    """Whether the policy runs in NumPy (`numpy_inference_for_mlps` and a supported network)."""
    return self._numpy_forward is not None

  def _act(self, observation, step_type, state):
    if self._numpy_forward is None:
      return self._policy_step(observation, step_type, state)
    logits, values = self._numpy_forward(observation)
    return self._sample(logits), logits, values, state

  def run(self, num_steps: int) -> int:
    """Steps all environments `num_steps` times; returns the number of items completed."""
    items = 0
    version = np.full([self._num_envs], self._policy_version, np.int64)
    action_dtype = self._env.action_spec().dtype
    if self._numpy_forward is not None:
      self._numpy_forward.refresh()  # the weights may have changed since the last call (~10 reads)
    for _ in range(num_steps):
      time_step = self._time_step
      action, logits, values, next_state = self._act(time_step.observation, time_step.step_type, self._state)
      action = action.astype(action_dtype, copy=False)
      # The environments step on their own threads (ale-py) while this step is written.
      self._env.send(action)
      step = {
          'observation': time_step.observation,
          'step_type': time_step.step_type,
          'reward': time_step.reward,
          'discount': time_step.discount,
          'action': action,
          'behaviour_logits': logits,
          'behaviour_values': values,
          'policy_version': version,
      }
      if self._recurrent:
        step['core_state'] = tf.nest.map_structure(lambda s: s.numpy(), self._state)
      if self._task_ids is not None:
        step['task_id'] = self._task_ids
      if self._teachers is not None:
        step['teacher_state'] = tf.nest.map_structure(lambda s: s.numpy(), self._teacher_states)
        self._teacher_states = self._step_teachers(
            tf.convert_to_tensor(time_step.observation), tf.convert_to_tensor(time_step.step_type),
            self._teacher_states, task_ids=self._task_ids)
      if self._writer.append(step):
        items += 1
      self._state = next_state
      self._time_step = self._env.receive()
      self.env_steps += self._num_envs
    return items


class ActorThread(threading.Thread):
  """Runs an `Actor` in the background, one item at a time, while the learner trains.

  The learner's thread publishes weights with `publish(variables, version)` (a numpy snapshot, so the
  actor never reads half-updated variables); the actor picks up the newest snapshot before each item.
  The trajectory queue's capacity bounds how far the actor runs ahead. Finished episodes are handed
  over through a thread-safe queue (`pop_finished_episodes`).
  """

  def __init__(self, actor: Actor, environment, writer, sequence_length: int,
               on_error: Optional[Callable[[], None]] = None):
    super().__init__(name='actor', daemon=True)
    self._on_error = on_error
    self._actor = actor
    self._env = environment
    self._writer = writer
    self._sequence_length = sequence_length
    self._stop_requested = threading.Event()
    self._published = None
    self._episodes = queue.SimpleQueue()
    self.error: Optional[BaseException] = None

  def publish(self, variables, version: int) -> None:
    self._published = ([v.numpy() for v in variables], int(version))

  def pop_finished_episodes(self):
    returns, lengths = [], []
    while True:
      try:
        episode_returns, episode_lengths = self._episodes.get_nowait()
      except queue.Empty:
        break
      returns.append(episode_returns)
      lengths.append(episode_lengths)
    if not returns:
      return np.zeros([0]), np.zeros([0], np.int64)
    return np.concatenate(returns), np.concatenate(lengths)

  def stop(self) -> None:
    self._stop_requested.set()

  def run(self) -> None:
    try:
      steps = self._sequence_length + 1  # the first item needs T + 1 steps
      version = None
      while not self._stop_requested.is_set():
        published = self._published
        if published is not None and published[1] != version:
          self._actor.pull_weights(published[0], published[1])
          version = published[1]
        self._actor.run(steps)
        steps = self._sequence_length
        self._episodes.put(self._env.pop_finished_episodes())
        if not self._writer.flush_unless(self._stop_requested.is_set):
          break
    except BaseException as error:  # pylint: disable=broad-except
      # Reported by the training loop, which re-raises it in the main thread; `on_error` (e.g. closing
      # the in-process queue) unblocks a learner waiting for items that will never come.
      self.error = error
      if self._on_error is not None:
        self._on_error()
