"""Which input coordinates a teacher was trained on, read from its weights alone (no data, no simulator).

A first-layer weight w_ij from input coordinate i gets the gradient x_i · δ_j, which is 0 whenever x_i = 0.
A coordinate that was 0 in every observation the teacher trained on (MinAtar Breakout's paddle anywhere
but the bottom row, its bricks below row 3, the padding channels) therefore keeps the weights it was
initialised with, while a coordinate that was ever on moves them. Initial rows are alike: their norms
cluster tightly (on the MinAtar Breakout teacher, 0.72 ± 0.03 against 1.6 to 7.0 for the trained rows;
BENCHMARKS.md "Data-free distillation on game frames"; with U units an initial row's norm varies by about
1/sqrt(2U), 4% at 256). `input_support` calls a coordinate trained when its row's norm exceeds `ratio`
(default 1.25) times the median norm of the quietest quarter of rows. A coordinate that was on but that the
teacher barely learnt from may stay under that bar (and matters little to its decisions); a lower ratio
takes it in, down to the spread of the untouched rows.

Assumptions, stated in the errors and the docs: the teacher's first layer is dense on the flattened
observation (an MLP torso; a convolution shares its weights across cells and says nothing per cell), the
observation is 0 where it is off (MinAtar's {0, 1} frames), training used no weight decay (which shrinks
the untouched rows too; teachers trained with it were not measured), and at least a quarter of the
coordinates were never on. Written here because no library reads a network's input support from its
weights.
"""

from typing import List, Sequence

import numpy as np

from protege.agents.distillation import teachers
from protege.runtime import errors


def first_layer_kernels(variables: Sequence, input_size: int) -> List[np.ndarray]:
  """The 2-D kernels `[input_size, units]` among `variables` (the dense layers that read the flattened
  observation: the policy torso's, and a separate value torso's when there is one).

  Told apart by their shape alone: if a layer also outputs `input_size` units, the kernel after it has the
  same fan-in and could be taken for a first layer, so that case is refused rather than guessed.

  Raises:
    ConfigError: When some kernel outputs `input_size` units.
  """
  kernels = [v for v in variables if len(v.shape) == 2]
  if any(int(v.shape[1]) == input_size for v in kernels):
    raise errors.ConfigError(f'the teacher has a dense layer of {input_size} units, as many as the observation\'s '
                             'coordinates, so its first layer cannot be told apart from a deeper one by shape; '
                             'set StructuredGenerator.support = None and paired_channels = () (or give support '
                             'as a bool array).')
  return [np.asarray(v.numpy() if hasattr(v, 'numpy') else v, np.float64) for v in kernels
          if int(v.shape[0]) == input_size]


def teacher_kernels(teacher: teachers.Teacher, observation_shape: Sequence[int]) -> List[np.ndarray]:
  """`first_layer_kernels` of `teacher.weights` for observations of `observation_shape`."""
  return first_layer_kernels(teacher.weights, int(np.prod(observation_shape)))


def input_support(kernels: Sequence[np.ndarray], observation_shape: Sequence[int], ratio: float = 1.25
                  ) -> np.ndarray:
  """`[*observation_shape]` bool: the coordinates whose first-layer rows moved from their initialisation.

  Args:
    kernels: First-layer kernels `[prod(observation_shape), units]` (`first_layer_kernels`); their rows are
      joined, so a coordinate counts as trained if any of them moved it.
    observation_shape: The observation's shape.
    ratio: A row is trained when its norm exceeds `ratio` × the median norm of the quietest quarter of rows.
      Default 1.25.

  Raises:
    ConfigError: On no kernel, a ratio <= 1, or when no coordinate (or every one) looks trained.
  """
  if not kernels:
    raise errors.ConfigError(f'the teacher has no dense first layer on the flattened observation '
                             f'(a kernel [{int(np.prod(observation_shape))}, units]); its input support cannot be '
                             'read from its weights (a convolutional teacher shares weights across cells). Set '
                             'StructuredGenerator.support = None.')
  if not ratio > 1.0:
    raise errors.ConfigError(f'StructuredGenerator.support_ratio must be > 1, got {ratio!r}.')
  norms = np.linalg.norm(np.concatenate(list(kernels), axis=1), axis=1)
  quiet = np.sort(norms)[:max(1, len(norms) // 4)]
  support = norms > ratio * float(np.median(quiet))
  if not support.any() or support.all():
    raise errors.ConfigError(f'the teacher\'s first-layer rows do not split into trained and untouched ones '
                             f'(norms {norms.min():.3g} to {norms.max():.3g}, ratio {ratio}); its input '
                             'support cannot be read. Set StructuredGenerator.support = None.')
  return support.reshape(tuple(observation_shape))


def teacher_input_support(teacher: teachers.Teacher, observation_shape: Sequence[int], ratio: float = 1.25
                          ) -> np.ndarray:
  """`input_support` of `teacher`'s own first layer (see the module docstring)."""
  return input_support(teacher_kernels(teacher, observation_shape), observation_shape, ratio)


def cell_affinity(kernels: Sequence[np.ndarray], observation_shape: Sequence[int], source: int, target: int
                  ) -> np.ndarray:
  """`[H·W, H·W]`: the cosine similarity of the first-layer rows of channel `source`'s cells (rows) and channel
  `target`'s cells (columns), for frames `[H, W, C]`.

  Two inputs that are on together receive the same updates x_i · δ_j, so the trained parts of their rows
  align, while the initial parts are independent: a high similarity marks cells that were on together in
  training (on the MinAtar Breakout teacher, the trail cell most similar to a ball cell was on with it in the
  teacher's play 58% of the time, against 3% for a cell at random; BENCHMARKS.md).
  """
  if not kernels:
    raise errors.ConfigError('the teacher has no dense first layer on the flattened observation; the '
                             'affinity of its input cells cannot be read. Set StructuredGenerator.paired_channels '
                             '= ().')
  height, width, depth = observation_shape
  rows = np.concatenate(list(kernels), axis=1).reshape(height * width, depth, -1)
  rows = rows / np.maximum(np.linalg.norm(rows, axis=-1, keepdims=True), 1e-12)
  return rows[:, source] @ rows[:, target].T


def cell_affinities(kernels: Sequence[np.ndarray], observation_shape: Sequence[int],
                    pairs: Sequence[Sequence[int]]) -> np.ndarray:
  """`[len(pairs), H·W, H·W]` float32: `cell_affinity` of the first-layer `kernels` for each (source, target)
  pair."""
  return np.stack([cell_affinity(kernels, observation_shape, a, b) for a, b in pairs]).astype(np.float32)


def teacher_cell_affinities(teacher: teachers.Teacher, observation_shape: Sequence[int],
                            pairs: Sequence[Sequence[int]]) -> np.ndarray:
  """`cell_affinities` of `teacher`'s own first layer."""
  return cell_affinities(teacher_kernels(teacher, observation_shape), observation_shape, pairs)
