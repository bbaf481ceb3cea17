"""Numerics options of the learner: mixed precision and XLA (flags of `train_main` and `learner_main`)."""

from typing import Any, Callable, Optional

import tensorflow as tf


def configure_numerics(mixed_precision: Optional[str] = None, xla: bool = False) -> None:
  """Numerics options of the learner; call before any network is built.

  Args:
    mixed_precision: None (float32), or a Keras mixed-precision policy: 'mixed_bfloat16' (TPUs, recent
      CPUs/GPUs) or 'mixed_float16' (GPUs). Layers compute in 16 bits and keep float32 variables.
    xla: compile the learner's step with XLA through TensorFlow's auto-clustering (on TPUs the step is
      always compiled by XLA). Auto-clustering compiles the XLA-compatible parts of the graph and leaves
      the Reverb dataset ops, which XLA cannot compile, to TensorFlow.
  """
  if mixed_precision is not None:
    tf.keras.mixed_precision.set_global_policy(mixed_precision)
  if xla:
    tf.config.optimizer.set_jit('autoclustering')


def float32_outputs(network_fn: Callable[..., Any]) -> Callable[..., Any]:
  """Wraps a network factory so that its networks return float32 logits and values whatever the Keras
  precision policy: under mixed precision the heads compute in 16 bits, and the losses, the behaviour
  logits from replay and the exported policy's outputs are float32 (Keras' advice: keep the model's
  outputs in float32 for numerical stability)."""

  def make(observation_spec, action_spec):
    network = network_fn(observation_spec, action_spec)

    class Float32Outputs(type(network)):  # the network's own class, its outputs cast

      def call(self, observation, step_type=None, network_state=(), training=False):
        (logits, values), state = super().call(observation, step_type=step_type, network_state=network_state,
                                               training=training)
        to_float32 = lambda x: tf.cast(x, tf.float32)
        return (to_float32(logits), tf.nest.map_structure(to_float32, values)), state

    # A subclass swapped in rather than a patched `call` attribute: SavedModel export serialises methods.
    network.__class__ = Float32Outputs
    return network

  return make

