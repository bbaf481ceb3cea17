"""What the trajectory queue and the weights table hold, and how big the queue is: the part of the
transport that needs no Reverb.

A single-process run keeps its trajectories in `replay.local_queue` and never imports Reverb; a distributed
run and `train_main --reverb_address` exchange them through a Reverb server (`replay.reverb_replay`). Both
transports take their items' layout, the frame storage of Atari stacks and the queue's capacity from here,
so one gin setting means the same in both, and a single-process run, its gin files included, works on a
Python where dm-reverb has no wheel.

Items are fixed-length trajectory sequences of a *batch* of environments, time-major
`[sequence_length + 1, N, ...]`; consecutive items overlap by one step (see `replay.reverb_replay`).
"""

from typing import Any, NamedTuple, Optional, Sequence

import gin
import tensorflow as tf

from protege.replay import frame_stacks
from protege.replay import local_queue


@gin.configurable
def frame_storage(environment, store_frames_once: bool = True) -> Optional[str]:
  """How the trajectory tables of `environment` store observations: the stack padding of
  `replay.frame_stacks` ('zeros' or 'reset') to store each frame once, or None for whole observations.

  Args:
    environment: the batched environment; its `frame_stack_padding` (Atari grey frame stacks: how its
      stacks are padded after a reset) says whether its observations are frame stacks.
    store_frames_once: True (default): frame stacks are stored one frame per step (4x less memory for
      the Atari 4-frame stack in the writer, the table and the learner's batch) and the learner rebuilds
      the stacks, bit for bit the environment's. False: whole stacks, as every other observation.
  """
  if not store_frames_once:
    return None
  return getattr(environment, 'frame_stack_padding', None)


def sequence_signature(step_spec: Any, sequence_length: int, batch_size: int,
                       stored_frames: Optional[str] = None) -> Any:
  """The table signature of an item: `step_spec` with `[sequence_length + 1, batch_size]` prepended.

  Args:
    step_spec: nest of `tf.TensorSpec` describing one step of ONE environment.
    sequence_length: number of transitions per item (`T`); items hold `T + 1` steps.
    batch_size: number of environments written together (`N`).
    stored_frames: None (default): observations as they are. A stack padding (`frame_storage`): the
      frame stacks `[H, W, S]` are stored one frame per step (`frame_stacks.compact_signature`).
  """
  if sequence_length < 1:
    raise ValueError(f'sequence_length must be >= 1, got {sequence_length}.')
  if batch_size < 1:
    raise ValueError(f'batch_size (number of envs per item) must be >= 1, got {batch_size}.')
  prefix = [sequence_length + 1, batch_size]
  signature = tf.nest.map_structure(
      lambda s: tf.TensorSpec(prefix + s.shape.as_list(), s.dtype, s.name), step_spec)
  if stored_frames is not None:
    signature = frame_stacks.compact_signature(signature, stored_frames)
  return signature


class QueueTable(NamedTuple):
  """An on-policy trajectory queue as `on_policy_table` configures it; `reverb_replay.queue_table` makes
  the Reverb table of it."""
  name: str
  capacity: int  # items
  signature: Any


@gin.configurable
def on_policy_table(signature: Any, name: str = 'trajectories', max_size: Optional[int] = None,
                    items_per_learner_step: int = 1) -> QueueTable:
  """A FIFO queue for on-policy learners.

  As a Reverb table (`reverb_replay.queue_table`), Reverb's Queue rate limiter blocks an actor's insert
  while the queue holds `max_size` items and blocks the learner's sample while it is empty; each item is
  sampled exactly once. `max_size` bounds the policy lag: an actor can be at most `max_size` items ahead of
  the learner. A single-process run's in-process queue takes the same capacity (`on_policy_capacity`).

  Args:
    signature: item signature (see `sequence_signature`).
    name: table name.
    max_size: capacity in items; None (default) means `items_per_learner_step`, the smallest queue that
      holds one learner step, hence the least policy lag.
    items_per_learner_step: items the learner reads per step (set by the training run, not by gin).
  """
  return QueueTable(name, local_queue.on_policy_capacity(items_per_learner_step, max_size), signature)


def on_policy_capacity(items_per_learner_step: int) -> int:
  """The capacity in items of `on_policy_table` as gin configures it (`on_policy_table.max_size`): also
  the capacity of a single-process run's queue (`local_queue.TrajectoryQueue`), so one gin setting
  bounds the policy lag whichever transport the run uses."""
  return local_queue.on_policy_capacity(items_per_learner_step,
                                        gin.get_bindings(on_policy_table).get('max_size'))


def variables_signature(variables: Sequence[Any]) -> dict:
  """The signature of a published weights item: the weights (in the network's variable order), the
  learner step that produced them, when they were published and whether training has finished."""
  return {
      'weights': [tf.TensorSpec(v.shape, v.dtype, f'weight_{i}') for i, v in enumerate(variables)],
      'version': tf.TensorSpec([], tf.int64, 'version'),
      'published_at': tf.TensorSpec([], tf.float64, 'published_at'),
      'finished': tf.TensorSpec([], tf.bool, 'finished'),
  }
