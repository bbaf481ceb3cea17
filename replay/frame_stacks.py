"""Frame-stack trajectories stored one frame per step, and the stacks rebuilt from them.

An Atari observation is a stack of the last `S` frames (`[H, W, S]`, newest last), so consecutive steps
share `S - 1` of their frames and a trajectory of full stacks holds every frame `S` times. Stored
compactly, an item holds instead

* `observation`: the newest frame of every step, `[T + 1, N, H, W]`;
* `frames_before_<padding>_padding`: the older `S - 1` frames of the item's FIRST row's stack,
  `[N, H, W, S - 1]` — what the stacks of the first steps need from before the item;

and the learner rebuilds the stacks exactly as the environment built them. After a reset the
environment's stack is padded: ale-py's `AtariVectorEnv` pads with zero frames ('zeros'), gymnasium's
`FrameStackObservation` repeats the reset frame ('reset'). The padding is part of the key's name, so a
batch describes itself and the learner needs no setting of its own.

Rebuilding, for step t of column b and the stack slot `d` frames back (`d = 0` the newest): let `age`
be the steps since the column's latest FIRST step at or before t (no FIRST in the item: unbounded).
If `d <= age` the slot holds frame `t - d` (from the older frames above when `t - d < 0`); otherwise it
is padding: a zero frame, or the frame of that FIRST step (`t - age`).

`prepare` turns a compact batch into the pieces `gather_stacks` reads from (one row index per step
and slot), so a learner can rebuild only the stacks of one minibatch at a time; `full_observations`
rebuilds all of them, for learners that need the whole sequence.
"""

import sys
from typing import Any, Dict, Optional

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.runtime import errors

PADDINGS = ('zeros', 'reset')
_ZERO = -1  # source index of a zero (padding) frame


def frames_before_key(padding: str) -> str:
  """The batch key of the older frames of the first row's stacks, naming the stack `padding`."""
  if padding not in PADDINGS:
    raise errors.ConfigError(f'Frame-stack padding {padding!r} is unknown; use one of {PADDINGS}.')
  return f'frames_before_{padding}_padding'


def padding_of(batch) -> Optional[str]:
  """The stack padding of a compact batch (see the module docstring), or None for full stacks."""
  paddings = [padding for padding in PADDINGS if frames_before_key(padding) in batch]
  return paddings[0] if paddings else None


def is_compact(batch) -> bool:
  """Whether `batch` holds one frame per step (this module's layout) rather than full stacks."""
  return padding_of(batch) is not None


def compact_signature(signature: Dict, padding: str) -> Dict:
  """An item signature `{'observation': [T + 1, N, H, W, S], ...}` in the compact layout."""
  observation = signature['observation']
  shape = observation.shape.as_list()
  if len(shape) != 5 or shape[-1] < 2:
    raise errors.ConfigError(f'Frames can be stored once only for stacks [T + 1, N, H, W, S >= 2] of grey '
                             f'frames, got observations {shape}; set frame_storage.store_frames_once = False.')
  compact = dict(signature)
  compact['observation'] = tf.TensorSpec(shape[:-1], observation.dtype, observation.name)
  key = frames_before_key(padding)
  compact[key] = tf.TensorSpec(shape[1:-1] + [shape[-1] - 1], observation.dtype, key)
  return compact


def compact_step(step: Dict[str, Any], padding: str, starts_item: bool) -> Dict[str, Any]:
  """One batched step `{'observation': [N, H, W, S], ...}` as a writer of the compact layout appends it.

  The newest frames `[N, H, W]` become 'observation'; the older frames `[N, H, W, S - 1]` go under
  `frames_before_key(padding)` when the step is the first row of an item (`starts_item`), and None
  otherwise: no other row reads them.
  """
  step = dict(step)
  stack = step['observation']
  step['observation'] = np.ascontiguousarray(stack[..., -1])
  step[frames_before_key(padding)] = np.ascontiguousarray(stack[..., :-1]) if starts_item else None
  return step


def steps_since_first(step_type: tf.Tensor) -> tf.Tensor:
  """int32 `[T + 1, B]`: steps since each column's latest FIRST step at or before t (a FIRST step: 0);
  `T + 1` or more where the column has had no FIRST step since row 0."""
  step_type = tf.convert_to_tensor(step_type)
  unbounded = tf.shape(step_type)[0]
  first = tf.equal(step_type, ts.StepType.FIRST)
  return tf.scan(lambda age, is_first: tf.where(is_first, 0, age + 1), first,
                 initializer=tf.fill(tf.shape(step_type)[1:], unbounded))


def stack_sources(step_type: tf.Tensor, stack_size: int, padding: str) -> tf.Tensor:
  """int32 `[T + 1, B, S]`: where stack slot s of step t comes from (s = S - 1 the newest frame).

  A source `i >= S - 1` is frame `i - (S - 1)` of the item, `0 <= i < S - 1` the older frame `i` of
  the first row's stack, and -1 a zero frame (see the module docstring).
  """
  frames_back = tf.range(stack_size - 1, -1, -1)  # slot s holds the frame d = S - 1 - s steps back
  age = steps_since_first(step_type)[..., None]
  time = tf.range(tf.shape(step_type)[0])[:, None, None]
  if padding == 'reset':
    source = time - tf.minimum(frames_back, age)
  else:
    source = tf.where(frames_back <= age, time - frames_back, _ZERO - (stack_size - 1))
  return source + (stack_size - 1)


def prepare(batch) -> Dict[str, tf.Tensor]:
  """The pieces `gather_stacks` rebuilds stacks from: the frames as rows `[(T + 1)·B, H, W]`, the older
  frames as rows `[(S - 1)·B + 1, H, W]` (the last row zeros: the padding frame) and, per step and stack
  slot, the row to read, `[T + 1, B, S]`: `r >= 0` is frame row `r`, `r < 0` older-frame row `-1 - r`."""
  padding = padding_of(batch)
  frames, before = batch['observation'], batch[frames_before_key(padding)]
  num_before = before.shape[-1]
  num_columns = tf.shape(frames)[1]
  frame_shape = tf.shape(frames)[2:]
  before_rows = tf.reshape(tf.transpose(before, [3, 0, 1, 2]), tf.concat([[-1], frame_shape], axis=0))
  before_rows = tf.concat([before_rows, tf.zeros_like(before_rows[:1])], axis=0)
  source = stack_sources(batch['step_type'], num_before + 1, padding)
  column = tf.range(num_columns)[None, :, None]
  rows = tf.where(source >= num_before, (source - num_before) * num_columns + column,
                  -1 - tf.where(source >= 0, source * num_columns + column, num_before * num_columns))
  return {'frames': tf.reshape(frames, tf.concat([[-1], frame_shape], axis=0)), 'frames_before': before_rows,
          'rows': rows}


def _interleave(frames, before, rows):
  """The stacks `[M, H, W, S]` whose slot s is row `rows[:, s]` (see `prepare`).

  Compiled with XLA, which fuses the row reads and the interleaving of S frames into one pass: done by
  TensorFlow's ops (a stack on the last axis, or a transpose, of bytes) the interleave took 10-40x the
  time of reading whole stored stacks (measured at 4,096 Atari stacks). S frames of one byte are packed
  into one S-byte integer and reinterpreted as S bytes, lowest first, for S in (2, 4, 8).
  """
  slots = []
  for slot in range(rows.shape[-1]):
    row = rows[:, slot]
    frame = tf.gather(frames, tf.maximum(row, 0))
    older = tf.gather(before, tf.clip_by_value(-1 - row, 0, tf.shape(before)[0] - 1))
    slots.append(tf.where((row >= 0)[:, None, None], frame, older))
  packed_dtype = {2: tf.int16, 4: tf.int32, 8: tf.int64}.get(len(slots))
  if packed_dtype is None or frames.dtype != tf.uint8:
    return tf.stack(slots, axis=-1)
  if sys.byteorder == 'big':
    slots = slots[::-1]
  packed = tf.zeros(tf.shape(slots[0]), packed_dtype)
  for slot, frame in enumerate(slots):
    packed = tf.bitwise.bitwise_or(packed, tf.bitwise.left_shift(tf.cast(frame, packed_dtype), 8 * slot))
  return tf.bitcast(packed, tf.uint8)


_compiled_interleave = tf.function(_interleave, jit_compile=True, autograph=False)


def gather_stacks(pieces: Dict[str, tf.Tensor], time: tf.Tensor, column: tf.Tensor) -> tf.Tensor:
  """The stacks `[M, H, W, S]` of the steps `(time[i], column[i])`, from `prepare`'s pieces."""
  rows = tf.gather_nd(pieces['rows'], tf.stack([time, column], axis=-1))  # [M, S]
  return _compiled_interleave(pieces['frames'], pieces['frames_before'], rows)


def full_observations(batch) -> tf.Tensor:
  """All stacks `[T + 1, B, H, W, S]` of a compact batch (full stacks are returned as they are)."""
  if not is_compact(batch):
    return batch['observation']
  pieces = prepare(batch)
  shape = tf.shape(pieces['rows'])
  time, column = tf.meshgrid(tf.range(shape[0]), tf.range(shape[1]), indexing='ij')
  stacks = gather_stacks(pieces, tf.reshape(time, [-1]), tf.reshape(column, [-1]))
  return tf.reshape(stacks, tf.concat([shape[:2], tf.shape(stacks)[1:]], axis=0))


def with_full_observations(batch) -> Dict:
  """`batch` with full stacks as 'observation' and without the older frames (a no-op for full stacks)."""
  if not is_compact(batch):
    return batch
  full = {key: value for key, value in batch.items() if key != frames_before_key(padding_of(batch))}
  full['observation'] = full_observations(batch)
  return full

