"""A TF-Agents policy around `ActorCriticNetwork`, so that PolicySaver can export it.

The policy emits the network's logits and value heads in `PolicyStep.info`, so an exported SavedModel
can later serve as a teacher (its logits and critic reach distillation losses).
"""


import contextlib
import warnings

from absl import logging
import tensorflow as tf
import tensorflow_probability as tfp
from tf_agents.policies import greedy_policy
from tf_agents.policies import policy_saver
from tf_agents.policies import tf_policy
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import policy_step

from protege.runtime import errors
from protege.runtime import run_directory


def info_spec(network) -> dict:
  """Spec of `PolicyStep.info`: `{'logits': [A], 'values': {head: []}}`."""
  return {
      'logits': tf.TensorSpec([network.num_actions], tf.float32, name='logits'),
      'values': {name: tf.TensorSpec([], tf.float32, name=f'value_{name}')
                 for name in network.value_head_names},
  }


class ActorCriticPolicy(tf_policy.TFPolicy):
  """Samples from the categorical distribution of an `ActorCriticNetwork`'s logits."""

  def __init__(self, time_step_spec, action_spec, network, name='ActorCriticPolicy'):
    self._network = network
    super().__init__(
        time_step_spec=time_step_spec,
        action_spec=action_spec,
        policy_state_spec=network.state_spec,
        info_spec=info_spec(network),
        name=name)

  def _variables(self):
    return self._network.variables

  def _distribution(self, time_step, policy_state):
    (logits, values), next_state = self._network(
        time_step.observation, step_type=time_step.step_type, network_state=policy_state,
        training=False)
    distribution = tfp.distributions.Categorical(logits=logits, dtype=self.action_spec.dtype)
    return policy_step.PolicyStep(distribution, next_state, {'logits': logits, 'values': values})


def export_policy(network, time_step_spec, action_spec, directory: str, train_step=None,
                  greedy: bool = False) -> str:
  """Exports the policy as a SavedModel with TF-Agents' PolicySaver; returns `directory`.

  Written whole into a hidden sibling first, then swapped with the old export in one atomic step
  (`runtime.run_directory.replace_directory`), so `directory` always holds a complete policy, old or new.
  """
  policy = ActorCriticPolicy(tensor_spec.from_spec(time_step_spec), tensor_spec.from_spec(action_spec),
                             network)
  if greedy:
    policy = greedy_policy.GreedyPolicy(policy)
  saver = policy_saver.PolicySaver(policy, batch_size=None, train_step=train_step)
  staging = run_directory.staging_directory(directory)
  try:
    with _quiet_saving():
      saver.save(staging)
  except BaseException as error:
    if tf.io.gfile.exists(staging):
      tf.io.gfile.rmtree(staging)
    if errors.is_disk_full(error):
      raise run_directory.disk_full_error(directory, 'the policy', error,
                                          'the previous export, if any, is intact') from None
    raise
  run_directory.replace_directory(staging, directory)
  return directory


@contextlib.contextmanager
def _quiet_saving():
  """Keeps SavedModel export's routine notices (renamed inputs, untraced Keras functions) off the console."""
  verbosity = logging.get_verbosity()
  logging.set_verbosity(logging.ERROR)
  try:
    with warnings.catch_warnings():
      warnings.filterwarnings('ignore', message='Encoding a StructuredValue')
      yield
  finally:
    logging.set_verbosity(verbosity)
