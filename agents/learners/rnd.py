"""RND exploration (Burda et al. 2019, arXiv 1810.12894) as a wrapper around an on-policy learner.

In the spirit of Acme's `RNDLearner`: this learner owns the random-network-distillation state (the
frozen target, the trained predictor, the observation and intrinsic-return normalisers), rewrites each
batch before the inner learner sees it, and trains the predictor; the inner learner (PPO by default)
is unchanged apart from a second value head that it is told about. One `run()` is one compiled step:

  1. pull the batch `[T + 1, B]`; the intrinsic reward of transition t is the predictor's error on the
     next observation, `‖f̂(o_{t+1}) − f(o_{t+1})‖²` averaged over the 512 features, with the RND input
     normalised by the statistics gathered *before* this batch;
  2. update the observation normaliser with the batch's new observations (rows 1..T: row 0 was the
     previous batch's last row);
  3. run the discounted intrinsic return forward in time per environment column (OpenAI's
     RewardForwardFilter: R_t = γ_I·R_{t−1} + r_t, carried across batches and across episode ends),
     update the running variance of those returns, and divide the intrinsic rewards by its square root
     (no mean subtraction);
  4. train the predictor for the inner learner's epochs × minibatches, each minibatch on a random
     `update_proportion` of its observations (so its effective batch stays constant as envs grow; the
     paper draws a Bernoulli mask, here the count is fixed and only the chosen entries are computed);
  5. hand the batch, with `intrinsic_reward` added, to the inner learner, whose value head 'intrinsic'
     has non-episodic GAE (γ_I, λ across episode ends) and whose advantage is
     `extrinsic_advantage_coef · A_E + intrinsic_advantage_coef · A_I` (the paper: 2·A_E + 1·A_I).

Every normaliser and coefficient is a `tf.Variable` owned here (and checkpointed), read inside the
compiled step. Under a `tf.distribute` strategy each replica holds some environment columns: the
normalisers' sums are all-reduced and the return filter's state is gathered from every replica, so
two replicas compute what one device computes on the whole batch.

The RND input is the newest frame of an image observation (the paper: "the last frame only"): its last
`frame_channels` channels, `[H, W, 1]` for a stack of grey frames, `[H, W, 3]` for one RGB frame or a
frame-major RGB stack; or the whole flattened vector of a vector observation, normalised per element with running
mean/std and clipped to [−5, 5]. Before training, `initialize_from_environment` seeds the observation
statistics with a random agent (the paper's code: 50 × 128 steps of every environment).
"""

import functools
from typing import Any, Callable, Dict, Optional

import gin
import numpy as np
import tensorflow as tf

from protege.agents.learners import base
from protege.agents.learners import normalization
from protege.agents.learners import ppo
from protege.agents.learners import rnd_losses
from protege.networks import rnd as rnd_networks
from protege.replay import frame_stacks
from protege.runtime import errors

_INTRINSIC = 'intrinsic'
_EXTRINSIC = 'extrinsic'


@gin.configurable
class RNDLearner(base.LearnerWrapper):
  """RND around an inner on-policy learner (see the module docstring).

  Args:
    network: the `ActorCriticNetwork`, which must have value heads 'extrinsic' and 'intrinsic'.
    dataset_fn: as the inner learner's.
    strategy: as the inner learner's.
    total_iterations: as the inner learner's.
    inner_learner_fn: builds the inner learner from `(network, dataset_fn, strategy, total_iterations)`;
      it must offer `add_value_head`, `train_batch`, `iterator`, `checkpoint_items` (PPOLearner does).
    intrinsic_discount: γ_I of the non-episodic intrinsic returns (paper: 0.99).
    extrinsic_advantage_coef: weight of the extrinsic advantages (paper: 2).
    intrinsic_advantage_coef: weight of the intrinsic advantages (paper: 1).
    update_proportion: fraction of each minibatch the predictor trains on (paper: 0.25).
    observation_clip: the normalised RND input is clipped to [−c, c] (paper: 5).
    observation_normalization_steps: random-agent steps of every environment that seed the observation
      statistics before training (paper's code: 50 rollouts × 128 steps = 6,400); 0 skips seeding.
    output_size: features of the target and predictor (paper: 512).
    frame_channels: channels of one frame of an image observation, the last ones of which are the RND
      input: 1 (default) for stacks of grey frames (the paper's Atari frames, `[84, 84, 4]`), 3 for RGB
      images (MiniGrid's pixels `[56, 56, 3]`, or a frame-major RGB stack). Must divide the channels.
      Not used for vector observations and small grids, which go whole to the MLP version.
    target_fn: builds the frozen target from `(input_spec, output_size)`.
    predictor_fn: builds the predictor from `(input_spec, output_size)`.
  """

  def __init__(self,
               network,
               dataset_fn,
               strategy: Optional[tf.distribute.Strategy] = None,
               total_iterations: int = 1,
               inner_learner_fn: Callable[..., Any] = ppo.PPOLearner,
               intrinsic_discount: float = 0.99,
               extrinsic_advantage_coef: float = 2.0,
               intrinsic_advantage_coef: float = 1.0,
               update_proportion: float = 0.25,
               observation_clip: float = 5.0,
               observation_normalization_steps: int = 50 * 128,
               output_size: int = 512,
               frame_channels: int = 1,
               target_fn: Callable[..., Any] = rnd_networks.RNDTargetNetwork,
               predictor_fn: Callable[..., Any] = rnd_networks.RNDPredictorNetwork):
    if _INTRINSIC not in network.value_head_names:
      raise errors.ConfigError(
          f'RND needs a value head {_INTRINSIC!r}; the network has {list(network.value_head_names)}. '
          "Set ActorCriticNetwork.value_heads = ('extrinsic', 'intrinsic').")
    if not 0.0 < update_proportion <= 1.0:
      raise errors.ConfigError(f'RNDLearner.update_proportion must be in (0, 1], got {update_proportion}.')
    if observation_normalization_steps < 0:
      raise errors.ConfigError('RNDLearner.observation_normalization_steps must be >= 0, got '
                               f'{observation_normalization_steps}.')
    self._strategy = strategy or tf.distribute.get_strategy()
    super().__init__(inner_learner_fn(network=network, dataset_fn=dataset_fn, strategy=self._strategy,
                                      total_iterations=total_iterations))
    # A Python float: it sets the predictor's minibatch size, a static shape (TPUs need them).
    self._update_proportion = float(update_proportion)
    self.observation_normalization_steps = int(observation_normalization_steps)
    self._observation_spec = network.input_tensor_spec
    # Frames the paper's convolutions take (Atari): the newest frame of the stack. Anything else (vectors,
    # small grids such as MinAtar's 10x10 maps) goes flattened, all channels, to the MLP version.
    shape = self._observation_spec.shape
    self._image = shape.rank == 3 and min(shape[0], shape[1]) >= rnd_networks.MIN_IMAGE_SIDE
    if self._image:
      channels = shape[-1]
      if isinstance(frame_channels, bool) or not isinstance(frame_channels, int) or frame_channels < 1 or (
          channels % frame_channels):
        raise errors.ConfigError(
            f'RNDLearner.frame_channels must be a positive int dividing the observation\'s {channels} '
            f'channels (1: grey frames, 3: RGB), got {frame_channels!r}.')
      self._frame_channels = frame_channels
      input_shape = self._observation_spec.shape[:-1].as_list() + [frame_channels]
    else:
      input_shape = [int(np.prod(self._observation_spec.shape.as_list()))]
    input_spec = tf.TensorSpec(input_shape, tf.float32, 'rnd_input')
    hyper = functools.partial(tf.Variable, dtype=tf.float32, trainable=False)
    with self._strategy.scope():
      self.intrinsic_discount = hyper(intrinsic_discount, name='intrinsic_discount')
      self.observation_clip = hyper(observation_clip, name='observation_clip')
      self.target = target_fn(input_spec, output_size=output_size)
      self.predictor = predictor_fn(input_spec, output_size=output_size)
      self.observation_normalizer = normalization.RunningMeanStd(input_shape, name='rnd_observation')
      self.intrinsic_return_normalizer = normalization.RunningMeanStd((), name='rnd_intrinsic_return')
      # The forward filter's running return per environment column; sized on the first batch.
      self.intrinsic_return_filter = tf.Variable(tf.zeros([0]), shape=tf.TensorShape([None]),
                                                 trainable=False, name='intrinsic_return_filter')
      inner_optimizer = self._inner.optimizer
      self.predictor_optimizer = tf.keras.optimizers.Adam(
          learning_rate=float(self._inner.learning_rate.numpy()),
          epsilon=float(inner_optimizer.epsilon))
      self.predictor_optimizer.build(self.predictor.trainable_variables)
    # The inner learner's own extrinsic head (its rewards, γ_E and reward clipping), reweighted.
    self._inner.value_heads[_EXTRINSIC].advantage_coef.assign(extrinsic_advantage_coef)
    self._inner.add_value_head(_INTRINSIC, reward_key='intrinsic_reward', discount=self.intrinsic_discount,
                               episodic=False, advantage_coef=intrinsic_advantage_coef)
    self.extrinsic_advantage_coef = self._inner.value_heads[_EXTRINSIC].advantage_coef
    self.intrinsic_advantage_coef = self._inner.value_heads[_INTRINSIC].advantage_coef
    self._compiled_run = tf.function(self._run, autograph=False)
    self._compiled_observe = tf.function(
        self._observe, autograph=False,
        input_signature=[tf.TensorSpec([None] + self._observation_spec.shape.as_list(),
                                       self._observation_spec.dtype)])

  # --- the learner interface (`base.LearnerWrapper`: the rest reaches the inner learner) ----------------

  def _own_hyperparameters(self) -> Dict[str, tf.Variable]:
    return dict(intrinsic_discount=self.intrinsic_discount, observation_clip=self.observation_clip,
                extrinsic_advantage_coef=self.extrinsic_advantage_coef,
                intrinsic_advantage_coef=self.intrinsic_advantage_coef)

  def checkpoint_items(self) -> Dict[str, Any]:
    items = super().checkpoint_items()
    items.update(rnd_target=self.target, rnd_predictor=self.predictor,
                 rnd_predictor_optimizer=self.predictor_optimizer,
                 rnd_observation_normalizer=self.observation_normalizer,
                 rnd_intrinsic_return_normalizer=self.intrinsic_return_normalizer,
                 rnd_intrinsic_return_filter=self.intrinsic_return_filter,
                 rnd_intrinsic_discount=self.intrinsic_discount)
    return items

  def tracing_count(self) -> int:
    return self._compiled_run.experimental_get_tracing_count()

  def run(self) -> Dict[str, tf.Tensor]:
    """One RND + inner-learner iteration on the next batch; returns scalar metrics."""
    return self._compiled_run(self._inner.iterator())

  # --- observation statistics before training ------------------------------------------------------

  def update_observation_statistics(self, observations) -> None:
    """Adds a batch of observations `[K, *observation_shape]` to the RND input normaliser."""
    self._compiled_observe(tf.convert_to_tensor(observations, self._observation_spec.dtype))

  def initialize_from_environment(self, environment, seed: int = 0, print_fn=print) -> None:
    """Seeds the observation statistics with `observation_normalization_steps` random-agent steps of
    every environment of the batched `environment` (the paper's initialisation); nothing is written to
    replay. The environment is left mid-episode: reset it before collecting."""
    steps = self.observation_normalization_steps
    if steps == 0:
      return
    rng = np.random.default_rng(seed)
    action_spec = environment.action_spec()
    num_envs = environment.batch_size
    print_fn(f'RND: seeding observation statistics with {steps:,} random steps of {num_envs} '
             f'environments ({steps * num_envs:,} agent steps)...')
    chunk = []
    chunk_steps = max(1, 4096 // num_envs)  # observations per update: bounded memory at any env count
    environment.reset()
    for step in range(steps):
      actions = rng.integers(action_spec.minimum, action_spec.maximum + 1, size=num_envs)
      time_step = environment.step(actions.astype(action_spec.dtype))
      chunk.append(time_step.observation)
      if len(chunk) == chunk_steps or step == steps - 1:
        self.update_observation_statistics(np.concatenate(chunk, axis=0))
        chunk = []
    environment.pop_finished_episodes()  # random-agent episodes are not the agent's

  # --- the compiled step ----------------------------------------------------------------------------

  def _rnd_input(self, observation, num_outer_dims: int, dtype=tf.float32, frames: bool = False):
    """The unnormalised RND input: the newest frame of an image stack, or the flattened vector.
    `frames`: `observation` holds single frames (a batch storing frames once, `replay.frame_stacks`)."""
    if frames:
      return tf.cast(observation[..., None], dtype)
    if self._image:
      return tf.cast(observation[..., -self._frame_channels:], dtype)
    outer = tf.shape(observation)[:num_outer_dims]
    return tf.reshape(tf.cast(observation, dtype), tf.concat([outer, [-1]], axis=0))

  def _normalized(self, rnd_input):
    return self.observation_normalizer.normalize(rnd_input, clip=self.observation_clip)

  def _observe(self, observations):
    self.observation_normalizer.update(self._rnd_input(observations, 1))

  def _novelty(self, batch):
    """Per replica: raw intrinsic rewards `[T, B]` (error on o_{t+1}) and the RND input's sums."""
    # Sums of (x − running mean): no cancellation in E[x²] − E[x]² for pixel values.
    shift = tf.identity(self.observation_normalizer.mean)

    frames = frame_stacks.is_compact(batch)

    def at(observation_t):
      rnd_input = self._rnd_input(observation_t, 1, frames=frames)
      normalized = self._normalized(rnd_input)
      error = rnd_losses.prediction_error(self.predictor(normalized), self.target(normalized))
      return (error,) + normalization.moments_sums(rnd_input, 1, shift=shift)

    # One time step at a time, read in place from the stored (uint8) frames: the whole batch as float32
    # RND inputs and conv activations, or even a sliced or unstacked copy of its frames (tf.map_fn's),
    # would cost gigabytes at 128 envs.
    observation = batch['observation']
    num_steps = tf.shape(observation)[0] - 1
    zeros = tf.zeros_like(shift)

    def body(t, errors, sums, sums_of_squares, count):
      error, step_sum, step_sum_of_squares, step_count = at(observation[t + 1])
      return (t + 1, errors.write(t, error), sums + step_sum, sums_of_squares + step_sum_of_squares,
              count + step_count)

    _, errors, sums, sums_of_squares, count = tf.while_loop(
        lambda t, *_: t < num_steps, body,
        (tf.constant(0), tf.TensorArray(tf.float32, size=num_steps), zeros, zeros, tf.constant(0.0)),
        parallel_iterations=1)
    return errors.stack(), (sums, sums_of_squares, count)

  def _filter(self, raw):
    """Per replica: the discounted intrinsic return over time, from this replica's filter columns."""
    context = tf.distribute.get_replica_context()
    replica = tf.cast(context.replica_id_in_sync_group, tf.int32)
    columns = tf.shape(raw)[1]
    total = columns * context.num_replicas_in_sync
    # Zeros on the first batch (the variable is empty) or if the number of columns changed.
    state = tf.convert_to_tensor(self.intrinsic_return_filter)
    known = tf.cast(tf.equal(tf.size(state), total), tf.float32)
    state = tf.concat([state, tf.zeros([total])], axis=0)[:total] * known
    initial = tf.slice(state, [replica * columns], [columns])
    returns, final = rnd_losses.discounted_return_filter(raw, initial, self.intrinsic_discount)
    # This replica's columns in place, zeros elsewhere: a SUM over replicas assembles the whole state
    # (an all-reduce, like every other cross-replica sum here).
    final = tf.pad(final, [[replica * columns, total - (replica + 1) * columns]])
    return normalization.moments_sums(returns, 2, shift=self.intrinsic_return_normalizer.mean), final

  def _rewrite(self, batch, raw):
    """Per replica: the batch with `intrinsic_reward` `[T + 1, B]` (row t + 1 rewards transition t)."""
    normalized = raw / tf.sqrt(self.intrinsic_return_normalizer.var + 1e-8)
    batch = dict(batch)
    batch['intrinsic_reward'] = tf.concat([tf.zeros_like(normalized[:1]), normalized], axis=0)
    return batch, normalized

  def _predictor_inputs(self, batch):
    """Per replica: the unnormalised RND inputs flattened to `[rows, ...]`, and the row of the first
    transition's (transition i is row `first + i`; there are `T·B` of them)."""
    if frame_stacks.is_compact(batch):
      # Frames stored once: a reshape of the batch's own frames, without a copy; row 0 is skipped.
      frames = batch['observation']
      return tf.reshape(frames, tf.concat([[-1], tf.shape(frames)[2:], [1]], axis=0)), tf.shape(frames)[1]
    # Kept in the observation's dtype (uint8 frames: 4x less memory), cast per minibatch.
    # The newest frame first, then the rows: slicing rows first would copy every frame of the batch.
    rnd_input = self._rnd_input(batch['observation'], 2, dtype=batch['observation'].dtype)[1:]
    return tf.reshape(rnd_input, tf.concat([[-1], tf.shape(rnd_input)[2:]], axis=0)), tf.constant(0)

  def _predictor_update(self, inputs, first, orders, epoch, index):
    num_minibatches = self._inner.num_minibatches
    size = tf.shape(orders)[1] // num_minibatches
    # The minibatch is a random draw (a slice of a random permutation), so its first
    # round(update_proportion · size) entries are a random update_proportion of it: the paper's random
    # mask with a fixed count, computed on those entries only (4x less work and memory at 0.25).
    count = tf.maximum(1, tf.cast(tf.round(self._update_proportion * tf.cast(size, tf.float32)), tf.int32))
    indices = first + orders[epoch, index * size:index * size + count]
    normalized = self._normalized(tf.cast(tf.gather(inputs, indices), tf.float32))
    variables = self.predictor.trainable_variables
    with tf.GradientTape() as tape:
      # The subset is already drawn: every one of its examples trains (a mask of ones).
      loss = rnd_losses.predictor_loss(self.predictor(normalized), self.target(normalized), tf.ones([count]))
    gradients = tape.gradient(loss, variables)
    context = tf.distribute.get_replica_context()
    if context.num_replicas_in_sync > 1:
      gradients = context.all_reduce(tf.distribute.ReduceOp.MEAN, gradients)
    if self._inner.max_grad_norm is not None:
      gradients, _ = tf.clip_by_global_norm(gradients, self._inner.max_grad_norm)
    self.predictor_optimizer.apply_gradients(zip(gradients, variables), skip_gradients_aggregation=True)
    return loss

  def _train_predictor(self, batch):
    strategy = self._strategy
    inputs, first = strategy.run(self._predictor_inputs, (batch,))
    num_epochs, num_minibatches = self._inner.num_epochs, self._inner.num_minibatches
    orders = strategy.run(
        lambda x, first: tf.argsort(tf.random.uniform(tf.stack([num_epochs, tf.shape(x)[0] - first])), axis=1),
        (inputs, first))
    num_updates = num_epochs * num_minibatches

    def body(iteration, total):
      epoch, index = iteration // num_minibatches, iteration % num_minibatches
      loss = strategy.run(self._predictor_update, (inputs, first, orders, epoch, index))
      return iteration + 1, total + strategy.reduce(tf.distribute.ReduceOp.MEAN, loss, axis=None)

    _, total = tf.while_loop(lambda i, _: i < num_updates, body, (tf.constant(0), tf.constant(0.0)))
    return total / num_updates

  def _run(self, iterator):
    strategy = self._strategy
    reduce_sum = lambda value: strategy.reduce(tf.distribute.ReduceOp.SUM, value, axis=None)
    batch = next(iterator)
    if not self._image and frame_stacks.is_compact(batch):
      # The MLP version reads whole observations; images read the newest frame, stored once or not.
      batch = strategy.run(frame_stacks.with_full_observations, (batch,))
    # The sums below are of (x − running mean), the shift read before any update.
    observation_shift = tf.identity(self.observation_normalizer.mean)
    return_shift = tf.identity(self.intrinsic_return_normalizer.mean)
    # 1-2: rewards under the statistics gathered before this batch, then the statistics move on.
    raw, observation_sums = strategy.run(self._novelty, (batch,))
    observation_sums = tf.nest.map_structure(reduce_sum, observation_sums)
    # 3: the intrinsic return filter, its variance, and the normalised rewards.
    return_sums, final = strategy.run(self._filter, (raw,))
    self.intrinsic_return_filter.assign(reduce_sum(final))
    return_sums = tf.nest.map_structure(reduce_sum, return_sums)
    self.intrinsic_return_normalizer.update_from_moments(
        *normalization.moments_from_sums(*return_sums, shift=return_shift))
    # Program order is execution order for variable reads and writes in a tf.function: the rewards above
    # used the statistics from before this update.
    self.observation_normalizer.update_from_moments(
        *normalization.moments_from_sums(*observation_sums, shift=observation_shift))
    batch, normalized = strategy.run(self._rewrite, (batch, raw))
    # 4: the predictor, with the inner learner's current learning rate.
    self.predictor_optimizer.learning_rate.assign(self._inner.current_learning_rate())
    predictor_loss = self._train_predictor(batch)
    # 5: the inner learner on the rewritten batch, after the predictor: nothing else orders the two, and
    # run side by side their activations and gradients would be held at once.
    with tf.control_dependencies([predictor_loss]):
      metrics = dict(self._inner.train_batch(batch))
    mean = lambda value: strategy.reduce(tf.distribute.ReduceOp.MEAN, value, axis=None)
    raw_mean = mean(strategy.run(tf.reduce_mean, (raw,)))
    normalized_mean = mean(strategy.run(tf.reduce_mean, (normalized,)))
    normalized_square = mean(strategy.run(lambda x: tf.reduce_mean(tf.square(x)), (normalized,)))
    metrics.update({
        'rnd/predictor_loss': predictor_loss,
        'rnd/intrinsic_reward_raw_mean': raw_mean,
        'rnd/intrinsic_reward_mean': normalized_mean,
        'rnd/intrinsic_reward_std': tf.sqrt(tf.maximum(normalized_square - tf.square(normalized_mean), 0.0)),
        'rnd/intrinsic_return_std': tf.sqrt(self.intrinsic_return_normalizer.var),
        'rnd/observation_std_mean': tf.reduce_mean(tf.sqrt(self.observation_normalizer.var)),
    })
    return metrics
