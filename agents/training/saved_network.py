"""An exported policy or a training checkpoint as a network that `evaluation.evaluate` and
`video.record_video` can play (`binaries/eval_main.py`)."""

import os

import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.agents.training import components
from protege.runtime import errors


class SavedPolicyNetwork:
  """An exported SavedModel policy (`policy_export.export_policy`) behind the network interface that
  `evaluation.evaluate` calls: `((logits, values), next_state) = network(observation, step_type=...,
  network_state=...)`, read from the policy's `info`.

  SavedModels execute their own graphs: load only ones you trust.
  """

  def __init__(self, policy_dir: str):
    if not tf.io.gfile.exists(os.path.join(policy_dir, 'saved_model.pb')):
      raise errors.PolicyLoadError(f"'{policy_dir}' is not a SavedModel directory (no saved_model.pb); pass "
                                   "the run's policy/ directory, or a checkpoint with --checkpoint.")
    self._policy = tf.saved_model.load(policy_dir)
    self.num_actions = None

  def get_initial_state(self, batch_size: int):
    return self._policy.get_initial_state(batch_size)

  def __call__(self, observation, step_type, network_state=(), training=False):
    del training
    batch = tf.shape(step_type)[0]
    time_step = ts.TimeStep(step_type=step_type, reward=tf.zeros([batch], tf.float32),
                            discount=tf.ones([batch], tf.float32), observation=observation)
    step = self._policy.action(time_step, network_state)
    return (step.info['logits'], step.info['values']), step.state


def restore_network(checkpoint: str, network_fn, env):
  """A network for `env` with the weights of a training checkpoint (a file prefix or a checkpoints/ dir)."""
  path = tf.train.latest_checkpoint(checkpoint) if tf.io.gfile.isdir(checkpoint) else checkpoint
  if not path or not tf.io.gfile.glob(path + '.index'):
    raise errors.CheckpointError(f"no checkpoint at '{checkpoint}'; pass a run's checkpoints/ directory or a "
                                 "checkpoint prefix such as checkpoints/ckpt-12.")
  network = components.make_network(network_fn, env)
  try:
    tf.train.Checkpoint(network=network).restore(path).expect_partial().assert_existing_objects_matched()
  except AssertionError as error:
    raise errors.CheckpointError(f"checkpoint '{path}' does not hold this gin configuration's network "
                                 f'({str(error).splitlines()[0]}); pass the gin file the run trained '
                                 'with.') from None
  return network
