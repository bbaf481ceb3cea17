"""The pool of past exemplars: the samples of each generator before it is re-initialised, mixed into
every later student batch so the student keeps what earlier generators taught it."""

from typing import Sequence, Tuple

import numpy as np
import tensorflow as tf

from protege.runtime import errors


class ExemplarPool(tf.Module):
  """A first-in-first-out store of generated observations `[capacity, *obs_shape]` in a `tf.Variable`.

  Filled with the samples of each generator before it is re-initialised; sampled uniformly for the
  student's batches. When full, the oldest exemplars are overwritten.
  """

  def __init__(self, observation_shape: Sequence[int], capacity: int, seed: int = 0, dtype=tf.float32,
               name: str = 'ExemplarPool'):
    super().__init__(name=name)
    if not isinstance(capacity, int) or capacity <= 0:
      raise errors.ConfigError(f'ExemplarPool.capacity must be a positive int, got {capacity!r}.')
    self.capacity = capacity
    self.observations = tf.Variable(tf.zeros((capacity,) + tuple(observation_shape), dtype), trainable=False,
                                    name='observations')
    self.generation = tf.Variable(tf.fill([capacity], tf.constant(-1, tf.int64)), trainable=False,
                                  name='generation')
    self.size = tf.Variable(0, dtype=tf.int64, trainable=False, name='size')
    self.next_index = tf.Variable(0, dtype=tf.int64, trainable=False, name='next_index')
    self._rng = tf.random.Generator.from_seed(seed)

  def add(self, observations, generation=0) -> None:
    """Appends `observations` `[N, *obs_shape]` (the last `capacity` of them if N > capacity)."""
    observations = tf.convert_to_tensor(observations, self.observations.dtype)
    observations = observations[-self.capacity:]
    count = tf.shape(observations, out_type=tf.int64)[0]
    indices = (self.next_index + tf.range(count, dtype=tf.int64)) % self.capacity
    self.observations.scatter_nd_update(indices[:, None], observations)
    self.generation.scatter_nd_update(indices[:, None], tf.fill([count], tf.cast(generation, tf.int64)))
    self.next_index.assign((self.next_index + count) % self.capacity)
    self.size.assign(tf.minimum(self.size + count, self.capacity))

  def sample(self, batch_size) -> tf.Tensor:
    """`batch_size` exemplars drawn uniformly with replacement; the pool must not be empty."""
    tf.debugging.assert_positive(self.size, message='ExemplarPool.sample: the pool is empty.')
    indices = self._rng.uniform([batch_size], minval=0, maxval=self.size, dtype=tf.int64)
    return tf.gather(self.observations, indices)

  def sample_if_not_empty(self, batch_size) -> tf.Tensor:
    """`batch_size` exemplars as `sample`, or none (`[0, *obs_shape]`) while the pool is empty: one traced
    step serves before and after the first archive (the batch dimension is dynamic)."""
    count = tf.where(self.size > 0, tf.cast(batch_size, tf.int64), tf.constant(0, tf.int64))
    indices = self._rng.uniform([count], minval=0, maxval=tf.maximum(self.size, 1), dtype=tf.int64)
    return tf.gather(self.observations, indices)

  def contents(self) -> Tuple[np.ndarray, np.ndarray]:
    """The stored exemplars and the generation each came from, as NumPy arrays `[size, ...]`, `[size]`."""
    size = int(self.size.numpy())
    return self.observations.numpy()[:size], self.generation.numpy()[:size]
