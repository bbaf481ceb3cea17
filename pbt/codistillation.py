"""Codistillation: population members teach each other (online distillation, Anil et al. 2018).

This goes beyond the Kickstarting and PBT papers: next to its fixed teachers, a member distils from the
current policies of its best peers. `TeacherSet.peers = P` gives the student P `PeerTeacher`s (copies of
its own network, λ named 'peer_0', ...), and at every ready a member (`pbt.member.Member.step`)

1. publishes its network's weights and its recent mean return to `<root_dir>/codistillation/<member>.npz`,
   written to a hidden temporary file and renamed (a reader sees the previous file or the new one whole);
2. loads the weights of the P other members with the highest published mean return into its peer
   teachers (the best first), which then teach from the next learner iteration on.

The files are exchanged through the population's root directory (shared storage on a Ray cluster, as the
checkpoints are). The weights are plain arrays in the network's `variables` order; a peer whose arrays do
not fit the student's network is a one-line error (every member builds the same network). Until a member
has loaded its first peer, its peer teachers are masked out (`PeerTeacher.active`).

gin, with a population of kickstarted members (`binaries/pbt_main.py`):

    TeacherSet.peers = 1                        # the best other member teaches too
    TeacherWeights.schedules = {'peer_0': 0.5}  # its λ (PBT moves it when TeacherWeights.mode = 'pbt')
"""

import glob
import math
import os
import tempfile
from typing import Dict, List, NamedTuple, Optional, Sequence

import numpy as np

DIRECTORY = 'codistillation'
_SCORE = '__score__'
_ENV_STEPS = '__env_steps__'


class Published(NamedTuple):
  """A member's published policy."""
  member: str
  score: float
  env_steps: int
  weights: List[np.ndarray]


def directory(root_dir: str) -> str:
  """Where the members of the population rooted at `root_dir` publish their policies."""
  return os.path.join(root_dir, DIRECTORY)


def publish(root_dir: str, member: str, weights: Sequence[np.ndarray], score: float, env_steps: int) -> str:
  """Writes `member`'s weights and score atomically (temporary file, then `os.replace`); returns the path."""
  target_dir = directory(root_dir)
  os.makedirs(target_dir, exist_ok=True)
  path = os.path.join(target_dir, f'{member}.npz')
  arrays = {f'w{index:04d}': np.asarray(value) for index, value in enumerate(weights)}
  arrays[_SCORE] = np.float64(score)
  arrays[_ENV_STEPS] = np.int64(env_steps)
  descriptor, staging = tempfile.mkstemp(prefix=f'.{member}.', suffix='.npz.partial', dir=target_dir)
  try:
    with os.fdopen(descriptor, 'wb') as f:
      np.savez(f, **arrays)
      f.flush()
      os.fsync(f.fileno())
    os.replace(staging, path)
  except BaseException:
    if os.path.exists(staging):
      os.remove(staging)
    raise
  return path


def read(path: str) -> Optional[Published]:
  """A published policy, or None if the file cannot be read whole (e.g. removed meanwhile)."""
  try:
    with np.load(path) as data:
      keys = sorted(k for k in data.files if k.startswith('w'))
      weights = [data[k] for k in keys]
      score, env_steps = float(data[_SCORE]), int(data[_ENV_STEPS])
  except (OSError, ValueError, KeyError, EOFError):
    return None
  member = os.path.basename(path)[:-len('.npz')]
  return Published(member, score, env_steps, weights)


def best_peers(root_dir: str, member: str, count: int) -> List[Published]:
  """The `count` other members with the highest published mean return (best first; fewer if fewer have
  published a finite score)."""
  published = []
  for path in glob.glob(os.path.join(directory(root_dir), '*.npz')):
    if os.path.basename(path) == f'{member}.npz':
      continue
    peer = read(path)
    if peer is not None and math.isfinite(peer.score):
      published.append(peer)
  published.sort(key=lambda peer: (-peer.score, peer.member))
  return published[:count]


def exchange(root_dir: str, member: str, network, peer_teachers, recent_returns: Sequence[float],
             env_steps: int) -> Dict[str, Dict[str, float]]:
  """One ready's codistillation step of `member`: publishes `network`'s weights with the mean of
  `recent_returns` (NaN when there are none: not chosen as a teacher), then loads the best peers into
  `peer_teachers`. Returns `{teacher name: {'peer', 'score', 'env_steps'}}` for the teachers loaded."""
  score = float(np.mean(recent_returns)) if len(recent_returns) else float('nan')
  publish(root_dir, member, [variable.numpy() for variable in network.variables], score, env_steps)
  loaded = {}
  for teacher, peer in zip(peer_teachers, best_peers(root_dir, member, len(peer_teachers))):
    teacher.assign_weights(peer.weights, peer=peer.member)
    loaded[teacher.name] = {'peer': peer.member, 'score': peer.score, 'env_steps': peer.env_steps}
  return loaded
