"""What generated observations lack, measured against the states a teacher visits (for the report only).

Data-free distillation trains on frames a generator makes; a policy is judged on the states it visits.
These measures compare the two sets of frames `[n, H, W, C]` (MinAtar's binary channels, one object kind per
channel) channel by channel, with NumPy only:

  count profile     active cells per frame and channel: how often a channel is empty, holds exactly one
                    cell (a paddle, a ball), or more
  binary share      how many values are near 0 or 1 (a MinAtar frame is exactly binary)
  co-occurrence     P(channel i and channel j both present in a frame)
  occupancy         where each channel's cells are (the paddle lives in the bottom row), and the total
                    variation distance between the generated and the real spatial distributions
  support           the cells the generator ever turns on (in at least `min_frequency` of its frames); the
                    share of the real states' active cells outside it, and the states projected onto it (the
                    teacher's action on them against its action on the states says how far its decisions
                    depend on inputs the generator never produces)

A cell is active where its value exceeds `threshold` (0.5 by default).
"""

from typing import Dict

import numpy as np


def active(frames: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Boolean `[n, H, W, C]`: which cells are on."""
  frames = np.asarray(frames)
  if frames.ndim != 4:
    raise ValueError(f'expected frames [n, H, W, C], got shape {frames.shape}')
  return frames > threshold


def count_profile(frames: np.ndarray, threshold: float = 0.5) -> Dict[str, np.ndarray]:
  """Per channel: the mean number of active cells per frame and the share of frames with 0, 1, > 1."""
  counts = active(frames, threshold).sum(axis=(1, 2))  # [n, C]
  return {'mean_cells': counts.mean(axis=0), 'share_empty': (counts == 0).mean(axis=0),
          'share_one': (counts == 1).mean(axis=0), 'share_many': (counts > 1).mean(axis=0)}


def binary_share(frames: np.ndarray, tolerance: float = 0.1) -> float:
  """The share of values within `tolerance` of 0 or of 1."""
  frames = np.asarray(frames, dtype=np.float64)
  return float(np.mean((np.abs(frames) <= tolerance) | (np.abs(frames - 1.0) <= tolerance)))


def co_occurrence(frames: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """`[C, C]`: the share of frames in which channels i and j are both present (the diagonal: i present)."""
  present = active(frames, threshold).any(axis=(1, 2)).astype(np.float64)  # [n, C]
  return present.T @ present / len(present)


def occupancy(frames: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """`[H, W, C]`: how often each cell is active."""
  return active(frames, threshold).mean(axis=0)


def occupancy_distance(generated: np.ndarray, real: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """Per channel, the total variation distance (0: the same, 1: disjoint) between where the generated and the
  real frames put that channel's cells (each occupancy normalised to a distribution over the H × W cells);
  NaN for a channel that one of the two never turns on."""
  a, b = occupancy(generated, threshold), occupancy(real, threshold)
  a_sum, b_sum = a.sum(axis=(0, 1)), b.sum(axis=(0, 1))
  with np.errstate(invalid='ignore', divide='ignore'):
    distance = 0.5 * np.abs(a / a_sum - b / b_sum).sum(axis=(0, 1))
  return np.where((a_sum > 0) & (b_sum > 0), distance, np.nan)


def support(generated: np.ndarray, threshold: float = 0.5, min_frequency: float = 0.01) -> np.ndarray:
  """Boolean `[H, W, C]`: the cells active in at least `min_frequency` of the generated frames."""
  return occupancy(generated, threshold) >= min_frequency


def off_support(states: np.ndarray, mask: np.ndarray, threshold: float = 0.5) -> Dict[str, float]:
  """How much of the real `states` lies outside the generator's support `mask`: the share of their active
  cells outside it, and the share of states with at least one such cell."""
  on = active(states, threshold)
  outside = on & ~mask[None]
  cells = on.sum()
  return {'share_of_active_cells': float(outside.sum() / cells) if cells else 0.0,
          'share_of_states': float(outside.any(axis=(1, 2, 3)).mean())}


def project(states: np.ndarray, mask: np.ndarray) -> np.ndarray:
  """`states` with every cell outside the generator's support set to 0 (what the generator could show)."""
  return np.asarray(states) * mask[None].astype(np.asarray(states).dtype)


def dead_channels(states: np.ndarray, threshold: float = 0.5) -> np.ndarray:
  """The channels never active in `states` (e.g. the padding channels of a MinAtar game with fewer objects)."""
  return ~active(states, threshold).any(axis=(0, 1, 2))


def transplant(states: np.ndarray, generated: np.ndarray, channels: np.ndarray, seed: int = 0) -> np.ndarray:
  """`states` with the `channels` (a boolean `[C]`) of a random generated frame each: what the generator puts
  where the game never does, on the teacher's own states."""
  rng = np.random.default_rng(seed)
  donors = np.asarray(generated)[rng.integers(len(generated), size=len(states))]
  return np.where(np.asarray(channels)[None, None, None, :], donors, np.asarray(states))
