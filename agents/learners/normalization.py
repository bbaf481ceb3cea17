"""Running mean and variance, the normaliser of RND's inputs and intrinsic returns.

RND (Burda et al. 2019, arXiv 1810.12894) keeps two running statistics: the per-pixel mean/std of the
RND input (observations are whitened and clipped to [-5, 5] before the target and predictor see them)
and the variance of the discounted intrinsic return (intrinsic rewards are divided by its square root).
Both are OpenAI baselines' `RunningMeanStd`: mean 0, var 1 and count `epsilon` = 1e-4 at the start,
then each batch's moments are merged in with Chan et al.'s parallel formula (Chan, Golub & LeVeque
1979, "Updating formulae and a pairwise algorithm for computing sample variances"):

  δ = μ_B − μ_A,  n = n_A + n_B,
  μ = μ_A + δ·n_B/n,
  σ² = (σ²_A·n_A + σ²_B·n_B + δ²·n_A·n_B/n) / n.

Variances are population variances (divide by n, NumPy's default `ddof=0`), as in baselines.

Across `tf.distribute` replicas, each replica computes `moments_sums` of its own data; the sums are
all-reduced with `ReduceOp.SUM` and turned into moments with `moments_from_sums`, so every replica
merges the moments of the whole global batch.
"""

from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

# Added to the variance before the square root in `normalize` (baselines' value).
_NORMALIZE_EPSILON = 1e-8


def moments_sums(x, num_leading_axes: int, shift=None) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Sum, sum of squares and count of `x` over its `num_leading_axes` leading axes.

  With `shift` c the sums are of (x − c), i.e. Σ(x − c) and Σ(x − c)²; passing a value near the
  mean (e.g. the running mean) avoids the cancellation of E[x²] − E[x]² when |mean| ≫ std.

  Args:
      x: Tensor `[d_1, ..., d_k, *shape]` with k = `num_leading_axes`; cast to float32.
      num_leading_axes: k, the number of axes to reduce (a Python int, 0 <= k <= rank of x).
      shift: Optional tensor broadcastable to `shape`, subtracted before summing. Default None (0).

  Returns:
      `(sum, sum_of_squares, count)`: float32 tensors of `shape`, `shape`, and a float32 scalar
      count d_1·…·d_k. Each may be all-reduced with SUM across replicas (with the same `shift`).
  """
  x = tf.convert_to_tensor(x)
  if x.dtype != tf.float32:
    x = tf.cast(x, tf.float32)
  if not isinstance(num_leading_axes, int) or not 0 <= num_leading_axes <= (x.shape.rank or 0):
    raise ValueError(f'num_leading_axes must be a Python int in [0, rank {x.shape.rank}] of x with shape '
                     f'{x.shape}, got {num_leading_axes!r}.')
  if shift is not None:
    x = x - tf.cast(shift, tf.float32)
  axes = list(range(num_leading_axes))
  count = tf.cast(tf.reduce_prod(tf.shape(x)[:num_leading_axes]), tf.float32)
  return tf.reduce_sum(x, axis=axes), tf.reduce_sum(tf.square(x), axis=axes), count


def moments_from_sums(sum_, sum_of_squares, count, shift=None) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """Mean, population variance and count from (possibly all-reduced) `moments_sums`.

  mean = c + S/n,  var = max(Q/n − (S/n)², 0), with S = Σ(x − c), Q = Σ(x − c)², c = `shift`.
  The variance is clipped at 0 (rounding can make it slightly negative). An empty batch (n = 0)
  gives mean c (or 0), var 0 and count 0, which `RunningMeanStd.update_from_moments` merges as a no-op.

  Args:
      sum_: Σ(x − c), float `shape`.
      sum_of_squares: Σ(x − c)², float `shape`.
      count: n, float scalar.
      shift: The `shift` given to `moments_sums`, or None (0).

  Returns:
      `(mean, var, count)`, float32 tensors of `shape`, `shape` and a scalar.
  """
  sum_ = tf.cast(sum_, tf.float32)
  sum_of_squares = tf.cast(sum_of_squares, tf.float32)
  count = tf.cast(count, tf.float32)
  safe_count = tf.maximum(count, 1.0)
  shifted_mean = sum_ / safe_count
  var = tf.maximum(sum_of_squares / safe_count - tf.square(shifted_mean), 0.0)
  mean = shifted_mean if shift is None else shifted_mean + tf.cast(shift, tf.float32)
  return mean, var, count


class RunningMeanStd(tf.Module):
  """Running mean and population variance of a stream of tensors with trailing shape `shape`.

  The state is three non-trainable float32 variables, created where the constructor is called (under
  a `strategy.scope()` they are mirrored), so a `tf.train.Checkpoint` saves them and values read
  inside a `tf.function` are never frozen at trace time:
    mean  `shape`, initially 0;
    var   `shape`, initially 1;
    count scalar, initially `epsilon` (the weight of the initial guess, baselines' 1e-4).

  The count is float32 (float64 is not supported on TPUs): each update rounds it by at most a
  relative 6e-8, which only perturbs the merge weights n_B/n.

  The variables use `VariableAggregation.ONLY_FIRST_REPLICA`: inside `strategy.run` every replica must
  pass the same (all-reduced) moments and the first replica's assignment is kept; `update` does the
  all-reduce itself.
  """

  def __init__(self, shape: Union[Sequence[int], tf.TensorShape] = (), epsilon: float = 1e-4,
               name: str = 'RunningMeanStd'):
    """Creates the variables.

    Args:
        shape: Trailing shape of the tensors the statistics are kept for, e.g. `(84, 84, 1)` for
            per-pixel RND-input statistics or `()` for the intrinsic return. Default ().
        epsilon: Initial count, the weight of the initial mean 0 / var 1. Default 1e-4 (baselines).
        name: Module name (also the variables' name scope).

    Raises:
        ValueError: If `shape` is not fully defined or `epsilon` is negative.
    """
    super().__init__(name=name)
    shape = tf.TensorShape(shape)
    if not shape.is_fully_defined():
      raise ValueError(f'RunningMeanStd needs a fully defined shape, got {shape}.')
    if epsilon < 0:
      raise ValueError(f'RunningMeanStd.epsilon must be >= 0, got {epsilon}.')
    self._shape = shape
    self._epsilon = float(epsilon)

    def variable(value, name):
      return tf.Variable(value, trainable=False, name=name, dtype=tf.float32,
                         aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    with self.name_scope:
      self.mean = variable(tf.zeros(shape), 'mean')
      self.var = variable(tf.ones(shape), 'var')
      self.count = variable(self._epsilon, 'count')

  @property
  def shape(self) -> tf.TensorShape:
    """The trailing shape the statistics are kept for."""
    return self._shape

  @property
  def std(self) -> tf.Tensor:
    """sqrt(var), `shape`."""
    return tf.sqrt(self.var)

  def update_from_moments(self, batch_mean, batch_var, batch_count) -> None:
    """Merges a batch's mean, population variance and count (Chan et al., see the module docstring).

    Usable eagerly and inside `tf.function` (also with `autograph=False`); a zero `batch_count`
    leaves the statistics unchanged.

    Args:
        batch_mean: float `shape`.
        batch_var: float `shape`, the batch's population variance (ddof 0).
        batch_count: float scalar, the number of samples of the batch.
    """
    batch_mean = tf.cast(batch_mean, tf.float32)
    batch_var = tf.cast(batch_var, tf.float32)
    batch_count = tf.cast(batch_count, tf.float32)
    count = tf.convert_to_tensor(self.count)
    mean = tf.convert_to_tensor(self.mean)
    var = tf.convert_to_tensor(self.var)
    total = count + batch_count
    # total > 0 unless epsilon = 0 and nothing has been merged yet; keep 0/0 out of the variables.
    safe_total = tf.where(total > 0.0, total, 1.0)
    delta = batch_mean - mean
    new_mean = mean + delta * (batch_count / safe_total)
    m2 = var * count + batch_var * batch_count + tf.square(delta) * (count * batch_count / safe_total)
    self.mean.assign(new_mean)
    self.var.assign(m2 / safe_total)
    self.count.assign(total)

  def update(self, x) -> None:
    """Merges the moments of `x` `[..., *shape]` over all its leading axes.

    Inside `strategy.run` with several replicas, the sums of every replica are all-reduced first,
    so the statistics move by the moments of the global batch (the same on every replica).

    Args:
        x: Tensor whose trailing dimensions equal `shape`; cast to float32.

    Raises:
        ValueError: If the trailing dimensions of `x` differ from `shape`.
    """
    x = tf.convert_to_tensor(x)
    num_leading_axes = self._num_leading_axes(x)
    shift = tf.convert_to_tensor(self.mean)
    sums = moments_sums(x, num_leading_axes, shift=shift)
    context = tf.distribute.get_replica_context()
    if context is not None and context.num_replicas_in_sync > 1:
      sums = context.all_reduce(tf.distribute.ReduceOp.SUM, sums)
    self.update_from_moments(*moments_from_sums(*sums, shift=shift))

  def normalize(self, x, clip: Optional[Union[float, tf.Tensor]] = None) -> tf.Tensor:
    """(x − mean) / sqrt(var + 1e-8), optionally clipped to [−clip, clip].

    Args:
        x: Tensor `[..., *shape]`; cast to float32.
        clip: Optional bound (float, tensor or variable, e.g. RND's 5). Default None: no clipping.

    Returns:
        float32 tensor shaped like `x`.
    """
    x = tf.convert_to_tensor(x)
    self._num_leading_axes(x)
    normalized = (tf.cast(x, tf.float32) - self.mean) / tf.sqrt(self.var + _NORMALIZE_EPSILON)
    if clip is None:
      return normalized
    clip = tf.cast(clip, tf.float32)
    return tf.clip_by_value(normalized, -clip, clip)

  def reset(self) -> None:
    """Back to mean 0, var 1, count `epsilon`."""
    self.mean.assign(tf.zeros(self._shape))
    self.var.assign(tf.ones(self._shape))
    self.count.assign(self._epsilon)

  def _num_leading_axes(self, x) -> int:
    """The number of axes of `x` before `shape`; raises if its trailing dimensions are not `shape`."""
    rank, trailing = x.shape.rank, self._shape.rank
    if rank is None or rank < trailing or not x.shape[rank - trailing:].is_compatible_with(self._shape):
      raise ValueError(
        f'{self.name} keeps statistics of shape {self._shape}; got a tensor of shape {x.shape}, whose '
        f'trailing dimensions must be {self._shape.as_list()}.'
      )
    return rank - trailing
