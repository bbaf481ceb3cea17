"""The actor-critic network: torso -> optional recurrent core -> policy logits + value heads.

One network serves every learner of Protégé: PPO reads `logits` and `values['extrinsic']`;
RND adds an `'intrinsic'` value head (its two-head critic, V = V_E + V_I); IMPALA and
kickstarting use the ResNet torso with an LSTM core.

Tensors are BATCH-MAJOR here, as everywhere in TF-Agents networks: `[B, ...]` for one step and
`[B, T, ...]` for a sequence. (Losses work time-major; the learner transposes.)
"""

import gin
import numpy as np
import tensorflow as tf
from tf_agents.keras_layers import dynamic_unroll_layer
from tf_agents.networks import network
from tf_agents.networks import utils as network_utils
from tf_agents.specs import tensor_spec
from tf_agents.trajectories import time_step as ts
from tf_agents.utils import nest_utils

from protege.networks import torsos
from protege.runtime import errors
from protege.runtime.properties import read_only

_CORES = (None, 'lstm', 'gru')


def _num_discrete_actions(action_spec):
  """Returns the number of actions of a discrete `action_spec`, or raises a one-line error."""
  spec = None if tf.nest.is_nested(action_spec) else tensor_spec.from_spec(action_spec)
  if (
    not isinstance(spec, tensor_spec.BoundedTensorSpec)
    or not spec.dtype.is_integer
    or spec.shape.rank != 0
    or np.any(spec.minimum != 0)
  ):
    raise errors.ConfigError(
      'ActorCriticNetwork supports one discrete action: a scalar integer '
      f'BoundedTensorSpec with minimum 0, got {action_spec!r}; continuous, '
      'multi-dimensional or nested actions need another policy head.'
    )
  return int(spec.maximum) + 1


def _check_value_heads(value_heads):
  """Returns `value_heads` as a tuple of unique non-empty names, or raises."""
  if isinstance(value_heads, (str, bytes)):
    raise errors.ConfigError(
      f'ActorCriticNetwork.value_heads must be a sequence of names, got the '
      f'string {value_heads!r}; write ({value_heads!r},).'
    )
  names = tuple(value_heads)
  if not names or not all(isinstance(n, str) and n for n in names) or len(set(names)) != len(names):
    raise errors.ConfigError(
      'ActorCriticNetwork.value_heads must be one or more unique non-empty '
      f"names such as ('extrinsic', 'intrinsic'), got {value_heads!r}."
    )
  return names


@gin.configurable
class ActorCriticNetwork(network.Network):
  """Policy logits and named state values from one shared torso (and optional RNN core).

  observation -> `torso_fn()` -> [LSTM | GRU core] -> policy head `Dense(num_actions)`
                                                    -> one value head `Dense(1)` per name.

  `call` returns `((logits, values), network_state)`, `values` a dict `{head_name: value}`:

  * one step, observation `[B, *obs_shape]`: logits `[B, A]`, each value `[B]`;
  * a sequence, observation `[B, T, *obs_shape]`: logits `[B, T, A]`, each value `[B, T]`.

  Without a core the network is stateless (`state_spec == ()`) and a sequence is folded into
  one `[B*T]` batch for the torso, which is faster than a loop over time. With a core the
  recurrent state is reset to zeros wherever `step_type == StepType.FIRST` (in sequences and
  single steps alike), so an episode never sees its predecessor's memory; the state spec
  follows TF-Agents: LSTM `[h, c]`, GRU `h`, each `[core_size]` float32, so
  `policy.get_initial_state(batch_size)` returns zeros of the right structure.

  Initialisation follows the PPO baselines: policy head orthogonal with gain 0.01 (initial
  policy close to uniform, so early exploration is not biased by random weights), value
  heads orthogonal with gain 1.0, zero biases; the torso uses gain sqrt(2) (see
  `networks.torsos`). The core keeps Keras's LSTM/GRU initialisation (Glorot-uniform input
  kernel, orthogonal recurrent kernel, LSTM forget-gate bias 1). Unlike IMPALA, the core sees
  only the torso's features, not the previous action and reward.
  """

  def __init__(
    self,
    observation_spec,
    action_spec,
    torso_fn=torsos.MLPTorso,
    value_heads=('extrinsic',),
    core=None,
    core_size=256,
    separate_value_torso=False,
    name='ActorCriticNetwork',
  ):
    """Builds the layers; variables are created on the first call or `create_variables()`.

    Args:
        observation_spec: A single `TensorSpec` (or `ArraySpec`) of one observation, without
            batch dimensions, e.g. float32 `(4,)` or uint8 `(84, 84, 4)` (NHWC).
        action_spec: A scalar integer `BoundedTensorSpec` (or `BoundedArraySpec`) with
            minimum 0; `maximum + 1` is the number of actions. Discrete actions only.
        torso_fn: A class or factory called with no arguments that returns a Keras layer
            mapping `[B, *obs_shape]` to `[B, F]`, e.g. `torsos.NatureCNNTorso` (gin:
            `ActorCriticNetwork.torso_fn = @NatureCNNTorso`). Each network calls it, so a
            copy of the network (actor vs learner) never shares the torso's layers.
        value_heads: Names of the value heads, one `Dense(1)` each, e.g. ('extrinsic',) for
            PPO and ('extrinsic', 'intrinsic') for RND.
        core: None for a feed-forward network, 'lstm' or 'gru' for a recurrent core between
            torso and heads.
        core_size: Units of the recurrent core (256, IMPALA's LSTM); unused without a core.
        separate_value_torso: If True, the value heads get a torso of their own (a second
            `torso_fn()`), so value regression does not shape the policy's features — the
            default MLP policy of SB3 and rl-zoo for classic control. Feed-forward only.
        name: Network name (variable scope).

    Raises:
        ValueError: If the observation spec is nested, the action spec is not discrete,
            `value_heads` is not a set of unique names, `core` is unknown, or
            `core_size` is not positive.
    """
    if observation_spec is None or tf.nest.is_nested(observation_spec):
      raise errors.ConfigError(
        'ActorCriticNetwork needs a single TensorSpec observation, got '
        f'{observation_spec!r}; combine nested observations first.'
      )
    num_actions = _num_discrete_actions(action_spec)
    head_names = _check_value_heads(value_heads)
    if core not in _CORES:
      raise errors.ConfigError(f"ActorCriticNetwork.core must be None, 'lstm' or 'gru', got {core!r}.")
    if separate_value_torso and core is not None:
      raise errors.ConfigError(
        f'ActorCriticNetwork.separate_value_torso=True works without a core only (core={core!r}); '
        'unset one of them.'
      )
    if core is not None and (not isinstance(core_size, int) or core_size <= 0):
      raise errors.ConfigError(f'ActorCriticNetwork.core_size must be a positive int, got {core_size!r}.')

    if core is None:
      cell, state_spec = None, ()
    else:
      cell_class = tf.keras.layers.LSTMCell if core == 'lstm' else tf.keras.layers.GRUCell
      cell = cell_class(core_size, name=f'{core}_cell')
      # DynamicUnroll carries `cell.state_size`: [h, c] for LSTM, h for GRU.
      state_spec = tf.nest.map_structure(lambda size: tf.TensorSpec([size], tf.float32), cell.state_size)
    super().__init__(input_tensor_spec=observation_spec, state_spec=state_spec, name=name)

    self._num_actions = num_actions
    self._action_spec = action_spec
    self._value_head_names = head_names
    self._torso = torso_fn()
    self._value_torso = torso_fn() if separate_value_torso else None
    self._core = None if cell is None else dynamic_unroll_layer.DynamicUnroll(cell, name=core)
    self._policy_head = tf.keras.layers.Dense(
      num_actions,
      kernel_initializer=tf.keras.initializers.Orthogonal(gain=0.01),
      bias_initializer='zeros',
      name='policy_head',
    )
    self._value_heads = [
      tf.keras.layers.Dense(
        1,
        kernel_initializer=tf.keras.initializers.Orthogonal(gain=1.0),
        bias_initializer='zeros',
        name=f'value_head_{head_name}',
      )
      for head_name in head_names
    ]

  num_actions = read_only('_num_actions', 'Number of discrete actions `A` (the last dimension of the logits).')
  action_spec = read_only('_action_spec',
                          'The discrete action spec the network was built for (teachers are checked against it).')
  value_head_names = read_only('_value_head_names',
                               'Names of the value heads, in construction order (the keys of `values`).')

  def call(self, observation, step_type=None, network_state=(), training=False):
    """Computes policy logits and values for one step or a sequence.

    Args:
        observation: `[B, *obs_shape]` (one step) or `[B, T, *obs_shape]` (a sequence).
        step_type: `StepType` values `[B]` or `[B, T]`. With a core, the state is reset to
            zeros where it is `StepType.FIRST`; None means no resets. Ignored without a
            core.
        network_state: The core state from the previous call (structure of
            `state_spec`), or `()` for zeros. Ignored without a core.
        training: Passed to every layer.

    Returns:
        `((logits, values), network_state)`: logits `[B, A]` or `[B, T, A]`; `values` a
        dict `{head_name: [B] or [B, T]}`; the core's state after the last step (`()`
        without a core).

    Raises:
        ValueError: If the observation has neither one nor two outer dimensions.
    """
    outer_rank = nest_utils.get_outer_rank(observation, self.input_tensor_spec)
    if outer_rank not in (1, 2):
      raise ValueError(
        'ActorCriticNetwork expects observations [B, *obs_shape] or '
        f'[B, T, *obs_shape] with obs_shape {self.input_tensor_spec.shape}, got shape '
        f'{observation.shape}.'
      )

    # The torso sees one flat batch: folding [B, T] into [B*T] runs the whole sequence
    # through the convolutions at once instead of step by step.
    batch_squash = network_utils.BatchSquash(outer_rank)
    flat_observation = batch_squash.flatten(observation)
    features = batch_squash.unflatten(self._torso(flat_observation, training=training))
    value_features = features
    if self._value_torso is not None:
      value_features = batch_squash.unflatten(self._value_torso(flat_observation, training=training))

    if self._core is not None:
      features, network_state = self._unroll_core(
        features, step_type, network_state, has_time_dim=outer_rank == 2, training=training
      )
      value_features = features

    logits = self._policy_head(features, training=training)
    values = {
      head_name: tf.squeeze(head(value_features, training=training), axis=-1)
      for head_name, head in zip(self._value_head_names, self._value_heads)
    }
    return (logits, values), network_state

  def _unroll_core(self, features, step_type, network_state, has_time_dim, training):
    """Runs the recurrent core over `features` `[B, F]` or `[B, T, F]`."""
    if not has_time_dim:
      # DynamicUnroll takes a [B, 1, ...] sequence and unrolls it statically (no loop).
      features = tf.expand_dims(features, axis=1)
      if step_type is not None:
        step_type = tf.expand_dims(step_type, axis=1)
    reset_mask = None if step_type is None else tf.equal(step_type, ts.StepType.FIRST)
    outputs, network_state = self._core(
      features, initial_state=network_state, reset_mask=reset_mask, training=training
    )
    if not has_time_dim:
      outputs = tf.squeeze(outputs, axis=1)
    return outputs, network_state
