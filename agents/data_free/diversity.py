"""Diversity of generated observations, measured in the teacher's feature space, per class: distinct
clusters, the recall of real samples (which serve only to measure, never to train), and the mean pairwise
distance. NumPy in, NumPy out."""

import numpy as np


def _pairwise_distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
  squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
  return np.sqrt(np.maximum(squared, 0.0))


def clusters_per_class(features: np.ndarray, labels: np.ndarray, num_classes: int, distance_threshold: float,
                       min_cluster_fraction: float = 0.02, max_per_class: int = 2000,
                       seed: int = 0) -> np.ndarray:
  """Distinct clusters of each class's features: agglomerative clustering (average linkage, Euclidean)
  cut at `distance_threshold`, counting clusters that hold at least `min_cluster_fraction` of the class.

  Args:
    features: float `[N, F]` (e.g. the teacher's penultimate features, L2-normalised by the caller).
    labels: int `[N]` (the teacher's argmax for generated inputs).
    num_classes: A.
    distance_threshold: Where the dendrogram is cut.
    min_cluster_fraction: Smaller clusters (stray samples) are not counted. Default 0.02.
    max_per_class: At most this many samples per class are clustered (a random subset). Default 2000.
    seed: Seed of that subset.

  Returns:
    int `[A]`: clusters per class (0 for a class with no sample).
  """
  from sklearn.cluster import AgglomerativeClustering  # pylint: disable=g-import-not-at-top
  rng = np.random.RandomState(seed)
  counts = np.zeros(num_classes, np.int64)
  for label in range(num_classes):
    members = features[labels == label]
    if len(members) > max_per_class:
      members = members[rng.choice(len(members), max_per_class, replace=False)]
    if len(members) < 2:
      counts[label] = len(members)
      continue
    assignment = AgglomerativeClustering(n_clusters=None, distance_threshold=distance_threshold,
                                         linkage='average').fit_predict(members)
    sizes = np.bincount(assignment)
    counts[label] = int((sizes >= max(1, min_cluster_fraction * len(members))).sum())
  return counts


def recall_per_class(real_features: np.ndarray, real_labels: np.ndarray, generated_features: np.ndarray,
                     generated_labels: np.ndarray, num_classes: int, k: int = 3,
                     max_per_class: int = 2000, seed: int = 0) -> np.ndarray:
  """Per class, the fraction of real samples inside the generated samples' manifold (the recall of
  Kynkäänniemi et al. 2019, arXiv 1904.06991): real r is covered when ||r − g|| ≤ d_k(g) for some generated
  g of the class, d_k(g) the distance from g to its k-th nearest generated neighbour. A generator that
  found one prototype per class covers little; one that found the class's modes covers much.

  Real samples serve only to measure, never to train.

  Returns:
    float `[A]` in [0, 1] (0 for a class with fewer than k + 1 generated samples).
  """
  rng = np.random.RandomState(seed)
  recall = np.zeros(num_classes)
  for label in range(num_classes):
    generated = generated_features[generated_labels == label]
    real = real_features[real_labels == label]
    if len(generated) > max_per_class:
      generated = generated[rng.choice(len(generated), max_per_class, replace=False)]
    if len(generated) <= k or not len(real):
      continue
    radii = np.sort(_pairwise_distances(generated, generated), axis=1)[:, k]
    covered = (_pairwise_distances(real, generated) <= radii[None, :]).any(axis=1)
    recall[label] = covered.mean()
  return recall


def mean_pairwise_distance_per_class(features: np.ndarray, labels: np.ndarray, num_classes: int,
                                     max_per_class: int = 1000, seed: int = 0) -> np.ndarray:
  """Per class, the mean Euclidean distance between two different samples' features (0 if < 2 samples)."""
  rng = np.random.RandomState(seed)
  spread = np.zeros(num_classes)
  for label in range(num_classes):
    members = features[labels == label]
    if len(members) > max_per_class:
      members = members[rng.choice(len(members), max_per_class, replace=False)]
    if len(members) >= 2:
      distances = _pairwise_distances(members, members)
      spread[label] = distances.sum() / (len(members) * (len(members) - 1))
  return spread
