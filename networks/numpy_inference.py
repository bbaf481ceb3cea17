"""The forward pass of small feed-forward actor-critics in NumPy, for the actor's one-step policy calls.

Written by hand, for one reason measured on this project's 2-core machine: every call of a compiled
TensorFlow function hands work to TensorFlow's thread pools and waits for it, and a woken thread answers
only after ~60 µs there, so a call costs ~0.5 ms whatever the network (an empty function included). An
actor stepping 8 CartPoles calls its policy once per step: for a 64-64 MLP the call is >90% overhead,
~30% of the quickstart's training time. The same forward pass in NumPy takes ~20 µs. Large networks
(convolutions, recurrent cores) are compute-bound and stay in TensorFlow: `numpy_forward` returns None
for anything but dense layers.

Supported: `ActorCriticNetwork` without a recurrent core whose torsos are `MLPTorso`s, with tanh, ReLU or
linear activations. The result equals the TensorFlow network's up to float32 rounding (tests compare
them); `refresh()` re-reads the weights after they change.
"""

from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf

from protege.networks import actor_critic
from protege.networks import torsos

_ACTIVATIONS: Dict[str, Callable[[np.ndarray], np.ndarray]] = {
    'linear': lambda x: x,
    'tanh': np.tanh,
    'relu': lambda x: np.maximum(x, 0.0),
}


def _activation_name(layer: tf.keras.layers.Dense) -> Optional[str]:
  name = tf.keras.activations.serialize(layer.activation)
  return name if isinstance(name, str) and name in _ACTIVATIONS else None


class NumpyForward:
  """`(logits [B, A], {head: values [B]})` of one step of a supported network, computed in NumPy."""

  def __init__(self, network: actor_critic.ActorCriticNetwork, torso_layers: List[tf.keras.layers.Dense],
               value_torso_layers: Optional[List[tf.keras.layers.Dense]]):
    self._network = network
    self._torso = [(layer, _ACTIVATIONS[_activation_name(layer)]) for layer in torso_layers]
    self._value_torso = None if value_torso_layers is None else [
        (layer, _ACTIVATIONS[_activation_name(layer)]) for layer in value_torso_layers]
    self._weights: List[Tuple[np.ndarray, np.ndarray]] = []
    self.refresh()

  def _layers(self):
    value_torso = self._value_torso or []
    heads = [self._network._policy_head] + list(self._network._value_heads)  # pylint: disable=protected-access
    return [layer for layer, _ in self._torso + value_torso] + heads

  def refresh(self) -> None:
    """Re-reads every kernel and bias (call it after the network's weights changed)."""
    self._weights = [(layer.kernel.numpy(), layer.bias.numpy()) for layer in self._layers()]

  def __call__(self, observation: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    observation = np.asarray(observation)
    x = observation.reshape(observation.shape[0], -1)
    if x.dtype == np.uint8:
      x = x.astype(np.float32) * np.float32(1.0 / 255.0)
    else:
      x = x.astype(np.float32, copy=False)
    weights = iter(self._weights)

    def run(layers, inputs):
      for _, activation in layers:
        kernel, bias = next(weights)
        inputs = activation(inputs @ kernel + bias)
      return inputs

    features = run(self._torso, x)
    value_features = features if self._value_torso is None else run(self._value_torso, x)
    kernel, bias = next(weights)
    logits = features @ kernel + bias
    values = {}
    for name in self._network.value_head_names:
      kernel, bias = next(weights)
      values[name] = (value_features @ kernel + bias)[:, 0]
    return logits, values


def _mlp_layers(torso) -> Optional[List[tf.keras.layers.Dense]]:
  if type(torso) is not torsos.MLPTorso:  # pylint: disable=unidiomatic-typecheck
    return None
  layers = list(torso._layers)  # pylint: disable=protected-access
  if not all(type(layer) is tf.keras.layers.Dense and _activation_name(layer) for layer in layers):  # pylint: disable=unidiomatic-typecheck
    return None
  return layers


def numpy_forward(network) -> Optional[NumpyForward]:
  """A `NumpyForward` of `network` (its variables must exist), or None if the network is not supported.

  Supported: an `ActorCriticNetwork` without a core whose torso (and separate value torso, if any) is an
  `MLPTorso` of dense layers with tanh, ReLU or linear activations, and non-empty `layer_sizes`.
  """
  if type(network) is not actor_critic.ActorCriticNetwork or network._core is not None:  # pylint: disable=protected-access,unidiomatic-typecheck
    return None
  torso = _mlp_layers(network._torso)  # pylint: disable=protected-access
  value_torso = None
  if network._value_torso is not None:  # pylint: disable=protected-access
    value_torso = _mlp_layers(network._value_torso)  # pylint: disable=protected-access
    if value_torso is None:
      return None
  if not torso or (network._value_torso is not None and not value_torso):  # pylint: disable=protected-access
    return None
  heads = [network._policy_head] + list(network._value_heads)  # pylint: disable=protected-access
  if any(_activation_name(head) != 'linear' for head in heads):
    return None
  return NumpyForward(network, torso, value_torso)
