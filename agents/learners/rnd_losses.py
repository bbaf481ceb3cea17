"""Pure functions of Random Network Distillation (Burda et al. 2019, arXiv 1810.12894).

Stateless: tensors in, tensors out, no variables, no gin. The learner owns the state (the networks,
the normalisers, the return filter's running value) and passes it in. Static ranks and dtypes are
checked at trace time; a mismatch raises a one-line `ValueError` (shape) or `TypeError` (dtype).
Every function runs eagerly, inside `tf.function` (also with `autograph=False`) and with
`jit_compile=True`.

* `prediction_error`: the intrinsic reward of an observation and, averaged, the predictor's loss.
* `discounted_return_filter`: the discounted intrinsic return whose running std scales the rewards.
* `predictor_loss`: the error averaged over the random subset of a minibatch the predictor trains on.
"""

from typing import Tuple

import tensorflow as tf


def _float_tensor(x, name):
  """Converts `x` to a tensor and checks it holds floating-point values."""
  x = tf.convert_to_tensor(x)
  if not x.dtype.is_floating:
    raise TypeError(f'`{name}` must be a floating-point tensor; got dtype {x.dtype.name}. '
                    'Cast it with tf.cast(..., tf.float32).')
  return x


def _check_rank(x, rank, name, layout):
  if x.shape.rank is not None and x.shape.rank != rank:
    raise ValueError(f'`{name}` must have rank {rank} ({layout}); got shape {x.shape}.')


def prediction_error(predicted, target) -> tf.Tensor:
  """The RND bonus: the predictor's mean squared error on the target's features.

    e(o) = (1/K) Σ_k (f̂(o)_k − sg[f(o)_k])²,

  with K the feature size (512 in the paper) and sg the stop-gradient: the target is fixed and only
  the predictor learns from this error. It is the intrinsic reward of observation o, "the prediction
  error ‖f̂(x) − f(x)‖²" (Burda et al. 2019, Section 2.2), averaged over the features as in the
  paper's code (`int_rew = reduce_mean(square(stop_gradient(X_r) − X_r_hat), axis=-1)`), and averaged
  over examples it is the predictor's loss (see `predictor_loss`).

  Args:
      predicted: f̂(o), float `[..., K]`.
      target: f(o), float `[..., K]`, same shape and dtype.

  Returns:
      e(o), float `[...]` (the leading shape of the inputs).
  """
  predicted = _float_tensor(predicted, 'predicted')
  target = _float_tensor(target, 'target')
  if predicted.dtype != target.dtype:
    raise TypeError(f'`predicted` has dtype {predicted.dtype.name} but `target` has {target.dtype.name}; '
                    'cast them to the same float dtype.')
  if predicted.shape.rank == 0:
    raise ValueError('`predicted` must have a feature axis [..., K]; got a scalar.')
  if not predicted.shape.is_compatible_with(target.shape):
    raise ValueError(
        f'`predicted` has shape {predicted.shape} but must match `target`\'s shape {target.shape}.')
  return tf.reduce_mean(tf.square(predicted - tf.stop_gradient(target)), axis=-1)


def discounted_return_filter(rewards, initial_return, discount) -> Tuple[tf.Tensor, tf.Tensor]:
  """The discounted intrinsic return, run forward in time per environment column.

    R_t = γ_I · R_{t−1} + r_t,   R_{−1} = `initial_return`,

  for t = 0..T−1 along axis 0 (time), independently for each column b (environment). There are no
  episode resets: the intrinsic return is non-episodic (Burda et al. 2019, Section 2.3), and across
  batches the learner passes the previous `final_return` as the next `initial_return`. RND divides
  the intrinsic rewards by the running std of these R_t (Section 2.4, "Reward and Observation
  Normalization"). This is OpenAI's `RewardForwardFilter` as the paper's code uses it
  (`ppo_agent.py`: `[rff_int.update(rew) for rew in buf_rews_int.T]` on a `[num_envs, num_steps]`
  buffer, i.e. one update per time step with a vector over environments; its first update starts
  from R_{−1} = 0).

  CleanRL's `ppo_rnd_envpool.py` applies the same loop to a `[num_steps, num_envs]` buffer
  transposed, so its filter runs over the *environment* axis instead of time (vwxyzjn/cleanrl issue
  #360); this function runs over time, axis 0.

  Args:
      rewards: Intrinsic rewards r_t, float `[T, B]` (time-major).
      initial_return: R_{−1}, float `[B]`, same dtype (zeros at the start of training).
      discount: γ_I, a scalar (Python float, tensor or `tf.Variable`, read when the step runs).

  Returns:
      `(returns, final_return)`: R_t `[T, B]` and R_{T−1} `[B]` (equal to `initial_return` if T = 0).
  """
  rewards = _float_tensor(rewards, 'rewards')
  _check_rank(rewards, 2, 'rewards', 'time-major [T, B]')
  if not tf.is_tensor(initial_return):
    initial_return = tf.convert_to_tensor(initial_return, dtype=rewards.dtype)
  initial_return = _float_tensor(initial_return, 'initial_return')
  _check_rank(initial_return, 1, 'initial_return', '[B]')
  if initial_return.dtype != rewards.dtype:
    raise TypeError(f'`initial_return` has dtype {initial_return.dtype.name} but `rewards` has '
                    f'{rewards.dtype.name}; cast them to the same float dtype.')
  if not rewards.shape[1:].is_compatible_with(initial_return.shape):
    raise ValueError(f'`initial_return` has shape {initial_return.shape} but must be [B] = '
                     f'{rewards.shape[1:]} for `rewards` of shape {rewards.shape}.')
  discount = tf.cast(discount, rewards.dtype)
  _check_rank(discount, 0, 'discount', 'a scalar γ_I')
  returns = tf.scan(lambda previous, reward: discount * previous + reward, rewards,
                    initializer=initial_return)
  final_return = tf.concat([initial_return[tf.newaxis], returns], axis=0)[-1]
  return returns, final_return


def predictor_loss(predicted, target, update_mask) -> tf.Tensor:
  """The predictor's loss: the mean prediction error over the examples selected by `update_mask`.

    L = Σ_i m_i · e(o_i) / max(Σ_i m_i, 1),

  with e the `prediction_error` and m the mask. The paper trains the predictor on a random
  `update_proportion` (0.25) of each minibatch, so that its effective batch stays constant as the
  number of environments grows (Burda et al. 2019, Table 5; the paper's code, `aux_loss` with
  `proportion_of_exp_used_for_predictor_update`). `RNDLearner` draws that subset as the first
  round(proportion · size) entries of a randomly ordered minibatch (the same distribution with a fixed count)
  and calls this loss on them with a mask of ones. The max(·, 1) makes an all-zero mask give a loss of 0
  rather than 0/0.

  Args:
      predicted: f̂(o), float `[B, K]` (any leading shape `[...]` works).
      target: f(o), float `[B, K]`, same shape and dtype; gradients are stopped.
      update_mask: m, `[B]` (the leading shape), float, int or bool; 1 trains on the example.

  Returns:
      L, a scalar of `predicted`'s dtype.
  """
  error = prediction_error(predicted, target)
  update_mask = tf.convert_to_tensor(update_mask)
  if not (update_mask.dtype.is_floating or update_mask.dtype.is_integer or update_mask.dtype == tf.bool):
    raise TypeError(f'`update_mask` must be a float, int or bool tensor; got dtype {update_mask.dtype.name}.')
  if not update_mask.shape.is_compatible_with(error.shape):
    raise ValueError(f'`update_mask` has shape {update_mask.shape} but must be the leading shape '
                     f'{error.shape} of `predicted` {predicted.shape}.')
  mask = tf.cast(update_mask, error.dtype)
  return tf.reduce_sum(error * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)
