"""The PPO-clip learner (Schulman et al. 2017) on Reverb-fed, time-major trajectory batches.

One object owns all training state: the network, the optimiser, the step counter and every
hyperparameter that may change while training runs (learning rate, entropy cost, clip range, value
cost), each a `tf.Variable` read inside the compiled step, so a schedule or PBT can move it without a
retrace.

One call of `run()` is one PPO iteration: it pulls one batch of `[T + 1, B]` steps from the dataset
inside the compiled function, computes GAE advantages once, then makes `num_epochs` passes of
`num_minibatches` minibatch updates. Every update runs under the `tf.distribute` strategy (one device,
MirroredStrategy over GPUs or logical CPUs, or TPUStrategy): each replica gets its own columns of the
batch, gradients are averaged over replicas, clipped by global norm, then applied.

Batch layout (see `agents.training.actor`): step t holds the time step the actor saw at t (`step_type`, the
`reward`/`discount` received on arriving there, `observation`), the action it took and its behaviour
logits/values. Transition t is (step t → step t+1), with reward `reward[t+1]` and discount
`discount[t+1]`. A transition that starts at a LAST step is the environment's reset step (its action was
ignored): it is masked out, and GAE does not propagate across it (per-step λ = 0), while the
bootstrap of a truncated episode (LAST with discount 1) still uses the value of its final observation.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

import gin
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.agents.learners import base
from protege.agents.learners import losses
from protege.replay import frame_stacks
from protege.runtime import config as run_config
from protege.runtime import errors
from protege.runtime.properties import read_only

_EXTRINSIC = 'extrinsic'
# The value head that learns the kickstarter's pseudo-returns with `pseudo_reward_advantages='separate'`.
KICKSTART_HEAD = 'kickstart'
# `ValueHead.reward_key` of a head trained on the kickstarter's pseudo-rewards (not a batch entry).
PSEUDO_REWARDS = '<pseudo_rewards>'
_PSEUDO_REWARD_ADVANTAGES = ('joint', 'separate')


@dataclasses.dataclass(frozen=True)
class ValueHead:
  """How one value head's returns and advantages are computed (see `PPOLearner.add_value_head`).

  Attributes:
    reward_key: the batch entry holding this head's rewards, `[T + 1, B]` (entry t + 1 rewards
      transition t, like `reward`), or `PSEUDO_REWARDS`: the kickstarter's pseudo-rewards `[T, B]`.
    discount: γ of this head, a scalar variable.
    episodic: True: returns stop at episode ends (the environment's discount and per-step λ apply, and the
      reset transition is masked out of the value loss). False: returns run on across episode ends, as
      RND's intrinsic returns do (γ and λ everywhere, every transition trains the value).
    advantage_coef: weight of this head's advantages in the policy's advantage, a scalar variable.
    reward_clip: clip this head's rewards to [-c, c] before GAE; None: no clipping.
    normalized: True: this head's advantages join the per-minibatch normalisation
      (`PPOLearner.normalize_advantages`); False: they are added to the policy's advantage after it
      (`losses.partly_normalized_advantages`), at their own scale.
  """
  reward_key: str
  discount: tf.Variable
  episodic: bool
  advantage_coef: tf.Variable
  reward_clip: Optional[float] = None
  normalized: bool = True


@gin.configurable
class PPOLearner(base.OnPolicyLearner):
  """PPO-clip with GAE, value and entropy terms, composed from `agents.learners.losses`.

  Args:
    network: an `ActorCriticNetwork` created under `strategy.scope()` (the learner's own copy).
    dataset_fn: `(tf.distribute.InputContext) -> tf.data.Dataset` of per-replica batches.
    strategy: the `tf.distribute.Strategy` the network was built under.
    total_iterations: number of `run()` calls the run will make; linear schedules reach 0 there.
    learning_rate: Adam step size (a variable; PBT and schedules assign it).
    learning_rate_schedule: 'constant', or 'linear' (decays to 0 at `total_iterations`, as rl-zoo's `lin_`).
    adam_epsilon: Adam's ε (1e-5, the PPO baselines' value, not Keras' 1e-7).
    num_epochs: passes over each batch.
    num_minibatches: minibatches per pass (per replica).
    discount: γ (extrinsic).
    gae_lambda: λ of GAE.
    clip_epsilon: PPO's ε for the probability ratio.
    clip_schedule: 'constant' or 'linear' (decays to 0 like the learning rate).
    value_coef: weight of the value loss.
    value_clip_epsilon: clip range for value updates (PPO2-style); None disables value clipping.
    entropy_coef: weight of the entropy bonus.
    max_grad_norm: global-norm gradient clipping; None disables it.
    normalize_advantages: normalise advantages per minibatch (mean 0, std 1).
    reward_clip: clip rewards to [-c, c] before GAE (Atari: 1.0); None disables clipping.
    microbatch_size: if set, each minibatch's gradient is accumulated over chunks of at most this many
      transitions (sequences, for recurrent networks), run one after another: the same gradient (each
      loss term is re-weighted by its chunk's share of the minibatch's masked steps, and advantages are
      normalised over the whole minibatch) with the activation memory of one chunk. None (default)
      computes each minibatch at once. Per replica.
    kickstarter_fn: None (default), or a factory `(observation_spec, action_spec, strategy=,
      student_network=, total_iterations=)` of a
      `kickstarting.Kickstarter` (gin: `PPOLearner.kickstarter_fn = @Kickstarter`): teachers' pseudo-rewards
      join the extrinsic rewards before GAE and Σ_k λ_k·ℓ_k joins each minibatch's loss.
    pseudo_reward_advantages: how a kickstarter's pseudo-rewards reach the policy's advantage (see
      `agents/distillation/kickstarting.py` for the analysis). 'joint' (default): added to the extrinsic rewards, so
      the extrinsic critic learns environment + pseudo returns and one advantage is normalised per
      minibatch; that division by std(A) reweighs the pseudo-returns against the unnormalised loss
      Σ_k λ_k·ℓ_k, so the distillation update is eq. 1's only when std(A) = 1. 'separate': their own GAE
      on the network's value head 'kickstart' (add it: `ActorCriticNetwork.value_heads =
      ('extrinsic', 'kickstart')`), with the learner's γ and λ, added to the policy's advantage after the
      environment advantages are normalised: the pseudo-returns keep eq. 1's weight against ℓ and the
      extrinsic critic learns environment returns only. 'joint' stays the default: 'separate' needs the
      extra head, the shipped kickstart settings were tuned with 'joint', and on the random-MDP study
      (BENCHMARKS.md) neither dominates: the joint normalisation weighs ℓ up (σ ≫ 1 there: R̂ sums many
      log-probabilities), which speeds
      N-distill and expected entropy-regularised distillation towards cloning on a good teacher but
      breaks entropy-regularised distillation at its rate and copies more of a noisy teacher's errors;
      'separate' keeps eq. 1's results for the pure distillation variants and did best with
      teacher_value_reward (environment reward + the teacher's shaping). A structural choice fixed at
      construction (like `normalize_advantages`), not a hyperparameter a schedule or PBT moves.
  """

  def __init__(self,
               network,
               dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
               strategy: Optional[tf.distribute.Strategy] = None,
               total_iterations: int = 1,
               learning_rate: float = 3e-4,
               learning_rate_schedule: str = 'constant',
               adam_epsilon: float = 1e-5,
               num_epochs: int = 4,
               num_minibatches: int = 4,
               discount: float = 0.99,
               gae_lambda: float = 0.95,
               clip_epsilon: float = 0.2,
               clip_schedule: str = 'constant',
               value_coef: float = 0.5,
               value_clip_epsilon: Optional[float] = None,
               entropy_coef: float = 0.01,
               max_grad_norm: Optional[float] = 0.5,
               normalize_advantages: bool = True,
               reward_clip: Optional[float] = None,
               microbatch_size: Optional[int] = None,
               kickstarter_fn: Optional[Callable[..., Any]] = None,
               pseudo_reward_advantages: str = 'joint'):
    if pseudo_reward_advantages not in _PSEUDO_REWARD_ADVANTAGES:
      raise errors.ConfigError(f'PPOLearner.pseudo_reward_advantages={pseudo_reward_advantages!r} is unknown; '
                               f'use one of {_PSEUDO_REWARD_ADVANTAGES}.')
    if pseudo_reward_advantages == 'separate' and kickstarter_fn is None:
      raise errors.ConfigError("PPOLearner.pseudo_reward_advantages='separate' routes a kickstarter's "
                               'pseudo-rewards, but PPOLearner.kickstarter_fn is None: set it (e.g. '
                               "@Kickstarter) or leave pseudo_reward_advantages at 'joint'.")
    run_config.check_number('PPOLearner.learning_rate', learning_rate, 0, meaning="Adam's step size")
    base.check_schedule('PPOLearner.clip_schedule', clip_schedule)
    if num_epochs < 1 or num_minibatches < 1:
      raise errors.ConfigError(f'PPOLearner.num_epochs ({num_epochs}) and PPOLearner.num_minibatches '
                               f'({num_minibatches}) must be >= 1.')
    if microbatch_size is not None and microbatch_size < 1:
      raise errors.ConfigError(f'PPOLearner.microbatch_size={microbatch_size} must be >= 1, or None for whole '
                               'minibatches.')
    super().__init__('PPOLearner', network, dataset_fn, strategy, total_iterations, learning_rate,
                     learning_rate_schedule, max_grad_norm, kickstarter_fn)
    self._microbatch_size = microbatch_size
    self._num_epochs = num_epochs
    self._num_minibatches = num_minibatches
    self._clip_schedule = clip_schedule
    self._normalize_advantages = normalize_advantages
    self.clip_epsilon = self._hyperparameter('clip_epsilon', clip_epsilon)
    self.entropy_coef = self._hyperparameter('entropy_coef', entropy_coef)
    self.value_coef = self._hyperparameter('value_coef', value_coef)
    # Not in checkpoints (as before there was a place for them): gin sets them again on a resume.
    self.discount = self._hyperparameter('discount', discount, checkpoint=False)
    self.gae_lambda = self._hyperparameter('gae_lambda', gae_lambda, checkpoint=False)
    self.value_clip_epsilon = (None if value_clip_epsilon is None else
                               self._hyperparameter('value_clip_epsilon', value_clip_epsilon, checkpoint=False))
    self._build_optimizer(tf.keras.optimizers.Adam(learning_rate=learning_rate, epsilon=adam_epsilon))
    self._value_heads: Dict[str, ValueHead] = {}
    self.add_value_head(_EXTRINSIC, reward_key='reward', discount=self.discount, episodic=True,
                        advantage_coef=1.0, reward_clip=reward_clip)
    self._attach_kickstarter()
    if pseudo_reward_advantages == 'separate':
      # The pseudo-returns' own critic, discounted like the extrinsic returns (the kickstarter's next-state
      # pseudo-rewards use the same γ), outside the advantage normalisation.
      self.add_value_head(KICKSTART_HEAD, reward_key=PSEUDO_REWARDS, discount=self.discount, episodic=True,
                          advantage_coef=1.0, normalized=False)

  num_epochs = read_only('_num_epochs', 'Passes over each batch of trajectories.')
  num_minibatches = read_only('_num_minibatches', 'Minibatches each pass splits a batch into (per replica).')

  @property
  def value_heads(self) -> Dict[str, ValueHead]:
    return dict(self._value_heads)

  def add_value_head(self, name: str, reward_key: str, discount, episodic: bool, advantage_coef,
                     reward_clip: Optional[float] = None, normalized: bool = True) -> ValueHead:
    """Trains the network's value head `name` on the rewards `batch[reward_key]` (see `ValueHead`).

    `discount` and `advantage_coef` may be floats (new variables are made) or scalar `tf.Variable`s
    shared with the caller (e.g. a learner wrapper that PBT reaches). The head 'extrinsic' is registered
    by the constructor; adding it again replaces it. Call before the first `run()`.
    """
    if name not in self._network.value_head_names:
      heads = tuple(self._network.value_head_names)
      raise errors.ConfigError(f'The network has no value head {name!r} (it has {list(heads)}); add it with '
                               f'ActorCriticNetwork.value_heads = {heads + (name,)}.')
    if reward_key == PSEUDO_REWARDS and self.kickstarter is None:
      raise errors.ConfigError(f'Value head {name!r} learns pseudo-rewards, but the learner has no kickstarter.')
    if not isinstance(discount, tf.Variable):
      discount = self._variable(discount, name=f'discount_{name}')
    if not isinstance(advantage_coef, tf.Variable):
      advantage_coef = self._variable(advantage_coef, name=f'advantage_coef_{name}')
    head = ValueHead(reward_key, discount, episodic, advantage_coef, reward_clip, normalized)
    self._value_heads[name] = head
    return head

  def _extra_checkpoint_items(self) -> Dict[str, Any]:
    items = {}
    for name, head in self._value_heads.items():
      items[f'advantage_coef_{name}'] = head.advantage_coef
      if name != _EXTRINSIC:
        items[f'discount_{name}'] = head.discount
    return items

  # --- the compiled step ------------------------------------------------------------------------

  def train_batch(self, batch) -> Dict[str, tf.Tensor]:
    """One PPO iteration on `batch` (per-replica values, cross-replica context), for use inside a
    compiled step: `run()` calls it on the dataset's next batch, and a learner wrapper (e.g. RND) on a
    batch it has rewritten."""
    if self.kickstarter is not None:
      self.kickstarter.update(self.train_step)
    prepared = self._strategy.run(self._prepare, (batch,))
    self.optimizer.learning_rate.assign(self.current_learning_rate())
    clip_epsilon = self._scheduled(self.clip_epsilon, self._clip_schedule)
    orders = self._strategy.run(self._minibatch_orders, (prepared,))

    def update(iteration, prepared, orders):
      epoch, index = iteration // self._num_minibatches, iteration % self._num_minibatches
      return self._update(prepared, orders, epoch, index, clip_epsilon)

    result = self._repeat_updates(self._num_epochs * self._num_minibatches, update, tf.distribute.ReduceOp.MEAN,
                                  args=(prepared, orders))
    self.train_step.assign_add(1)
    result['learning_rate'] = self.optimizer.learning_rate
    result['clip_epsilon'] = clip_epsilon
    result['policy_lag'] = self._strategy.reduce(
        tf.distribute.ReduceOp.MEAN, self._strategy.run(self._policy_lag, (batch,)), axis=None)
    return result

  def _policy_lag(self, batch):
    versions = tf.cast(batch['policy_version'], tf.float32)
    return tf.cast(self.train_step, tf.float32) - 1.0 - tf.reduce_mean(versions)

  def compute_advantages(self, batch, pseudo_rewards=None) -> Dict[str, tf.Tensor]:
    """GAE advantages and returns of every value head, time-major `[T, B]`.

    The policy's advantage is `Σ_head advantage_coef_head · A_head` (RND: 2·A_E + 1·A_I). Returns a dict
    with `advantages` (the sum over the heads whose advantages are normalised per minibatch),
    `unnormalized_advantages` (the sum over the others; only when there are any), `returns` and
    `value_masks` (dicts per value head), and `mask` (the policy's: 0 on reset transitions, whose action
    the environment ignored). `pseudo_rewards` `[T, B]` (a kickstarter's) join the extrinsic head's
    rewards after clipping ('joint'), or are the 'kickstart' head's rewards ('separate').
    """
    step_type = batch['step_type']
    not_last = tf.cast(tf.not_equal(step_type, ts.StepType.LAST), tf.float32)
    advantages, unnormalized, returns, value_masks = 0.0, None, {}, {}
    separate = any(head.reward_key == PSEUDO_REWARDS for head in self._value_heads.values())
    for name, head in self._value_heads.items():
      if head.reward_key == PSEUDO_REWARDS:
        if pseudo_rewards is None:
          raise ValueError(f'Value head {name!r} learns pseudo-rewards: compute_advantages needs them.')
        rewards = pseudo_rewards
      else:
        rewards = batch[head.reward_key][1:]
      if head.reward_clip is not None:
        rewards = tf.clip_by_value(rewards, -head.reward_clip, head.reward_clip)
      if name == _EXTRINSIC and pseudo_rewards is not None and not separate:
        rewards += pseudo_rewards
      values = batch['behaviour_values'][name]
      if head.episodic:
        discounts = head.discount * batch['discount'][1:]
        lambdas = self.gae_lambda * not_last[1:]
        value_masks[name] = not_last[:-1]
      else:
        discounts = head.discount * tf.ones_like(rewards)
        lambdas = self.gae_lambda * tf.ones_like(rewards)
        value_masks[name] = tf.ones_like(rewards)
      head_advantages, returns[name] = losses.generalized_advantage_estimation(
          rewards, discounts, values[:-1], values[-1], lambdas)
      if head.normalized:
        advantages += head.advantage_coef * head_advantages
      else:
        unnormalized = (0.0 if unnormalized is None else unnormalized) + head.advantage_coef * head_advantages
    targets = {'advantages': advantages, 'returns': returns, 'value_masks': value_masks,
               'mask': not_last[:-1]}
    if unnormalized is not None:
      targets['unnormalized_advantages'] = unnormalized
    return targets

  def _prepare(self, batch):
    """Per replica: advantages and the tensors the minibatch updates need, `[T, B]` time-major."""
    kickstart = None
    if self.kickstarter is not None:
      kickstart = self.kickstarter.prepare(batch, discount=self.discount)
    targets = self.compute_advantages(batch, None if kickstart is None else kickstart['pseudo_rewards'])
    compact = frame_stacks.is_compact(batch)
    prepared = {
        'step_type': batch['step_type'][:-1],
        'action': batch['action'][:-1],
        'behaviour_log_prob': losses.categorical_log_prob(batch['behaviour_logits'][:-1],
                                                          batch['action'][:-1]),
        'behaviour_values': {k: v[:-1] for k, v in batch['behaviour_values'].items()},
        'advantages': targets['advantages'],
        **{k: targets[k] for k in ('unnormalized_advantages',) if k in targets},
        'returns': targets['returns'],
        'value_masks': targets['value_masks'],
        'mask': targets['mask'],
    }
    if kickstart is not None:
      prepared['kickstart'] = {k: kickstart[k] for k in ('teacher_logits', 'teacher_masks')}
    if self._recurrent:
      prepared['initial_state'] = tf.nest.map_structure(lambda x: x[0], batch['core_state'])
      if not compact:
        prepared['observation'] = tf.nest.map_structure(lambda x: x[:-1], batch['observation'])
    else:
      # Feed-forward: minibatches are drawn from all T*B transitions.
      flatten = lambda x: tf.reshape(x, tf.concat([[-1], tf.shape(x)[2:]], axis=0))
      prepared = tf.nest.map_structure(flatten, prepared)
      if not compact:
        # The observations keep their bootstrap row: [(T + 1)·B] rows of which the first T·B are the
        # transitions' (a reshape, where slicing off the last row would copy every frame of the batch).
        prepared['observation'] = tf.nest.map_structure(flatten, batch['observation'])
    if compact:
      # Frames stored once (`replay.frame_stacks`): each minibatch rebuilds its own stacks in `_select`,
      # so the batch's stacks never exist all at once.
      prepared['frame_stacks'] = frame_stacks.prepare(batch)
    return prepared

  def _minibatch_orders(self, prepared):
    """One random permutation per epoch, `[num_epochs, size]`.

    Recurrent networks get whole sequences (batch columns) per minibatch; feed-forward ones single
    transitions.
    """
    size = (tf.shape(prepared['action'])[1] if self._recurrent
            else tf.shape(prepared['action'])[0])
    keys = tf.random.uniform(tf.stack([self._num_epochs, size]))
    return tf.argsort(keys, axis=1)

  def _select(self, prepared, orders, epoch, index):
    size = tf.shape(orders)[1] // self._num_minibatches
    indices = orders[epoch, index * size:(index + 1) * size]
    selected = {}
    for key, value in prepared.items():
      if key == 'frame_stacks':
        selected['observation'] = self._select_stacks(value, indices)
      elif key == 'initial_state':
        selected[key] = tf.nest.map_structure(lambda x: tf.gather(x, indices, axis=0), value)
      elif self._recurrent:
        selected[key] = tf.nest.map_structure(lambda x: tf.gather(x, indices, axis=1), value)
      else:
        # Transitions keep a leading axis of 1, so the losses see their time-major [T=1, B] layout.
        selected[key] = tf.nest.map_structure(lambda x: tf.gather(x, indices)[None], value)
    return selected

  def _select_stacks(self, pieces, indices):
    """The rebuilt frame stacks of the selected transitions `[1, M, ...]` (feed-forward) or sequences
    `[T, M, ...]` (recurrent), from `frame_stacks.prepare`'s pieces."""
    num_columns = tf.shape(pieces['rows'])[1]
    if not self._recurrent:
      return frame_stacks.gather_stacks(pieces, indices // num_columns, indices % num_columns)[None]
    num_steps = tf.shape(pieces['rows'])[0] - 1
    time, column = tf.meshgrid(tf.range(num_steps), indices, indexing='ij')
    stacks = frame_stacks.gather_stacks(pieces, tf.reshape(time, [-1]), tf.reshape(column, [-1]))
    return tf.reshape(stacks, tf.concat([tf.shape(time), tf.shape(stacks)[1:]], axis=0))

  def _forward(self, minibatch):
    if self._recurrent:
      batch_major = lambda x: tf.experimental.numpy.swapaxes(x, 0, 1)
      (logits, values), _ = self._network(
          tf.nest.map_structure(batch_major, minibatch['observation']),
          step_type=batch_major(minibatch['step_type']),
          network_state=tf.nest.pack_sequence_as(self._network.state_spec,
                                                 tf.nest.flatten(minibatch['initial_state'])),
          training=True)
      logits = batch_major(logits)
      values = {k: batch_major(v) for k, v in values.items()}
    else:
      # [1, B] is a batch-major sequence of length B to the network, folded through its torso.
      (logits, values), _ = self._network(minibatch['observation'],
                                          step_type=minibatch['step_type'], training=True)
    return logits, values

  def _policy_advantages(self, minibatch):
    """The policy's advantage on a whole minibatch: its normalised part (when `normalize_advantages`) plus
    the heads' outside the normalisation (`ValueHead.normalized`), 0 on masked steps."""
    advantages, unnormalized = minibatch['advantages'], minibatch.get('unnormalized_advantages')
    if self._normalize_advantages:
      return losses.partly_normalized_advantages(advantages, unnormalized, minibatch['mask'])
    return advantages if unnormalized is None else advantages + unnormalized

  def loss(self, minibatch, clip_epsilon):
    """The PPO loss of one minibatch: surrogate + c_v·Σ_heads value + c_e·entropy; (loss, metrics).

    `minibatch['term_weights']`, when present, scales the policy-masked terms (`'policy'`) and each
    value head's term (`'value_<head>'`): a microbatch's share of its minibatch's masked steps.
    """
    logits, values = self._forward(minibatch)
    weights = minibatch.get('term_weights', {})
    mask = minibatch['mask']
    advantages = minibatch['advantages']
    if 'term_weights' not in minibatch:  # a microbatch's were combined over its whole minibatch
      advantages = self._policy_advantages(minibatch)
    log_probs = losses.categorical_log_prob(logits, minibatch['action'])
    policy_loss, metrics = losses.clipped_surrogate_loss(
        log_probs, minibatch['behaviour_log_prob'], advantages, clip_epsilon, mask)
    total_value_loss = 0.0
    for head, head_returns in minibatch['returns'].items():
      head_loss, head_metrics = losses.value_loss(
          values[head], head_returns, minibatch['behaviour_values'][head],
          self.value_clip_epsilon, minibatch['value_masks'][head])
      total_value_loss += weights.get(f'value_{head}', 1.0) * head_loss
      metrics[f'value_loss_{head}'] = head_loss
      metrics[f'explained_variance_{head}'] = head_metrics['explained_variance']
    entropy_loss, entropy_metrics = losses.entropy_loss(logits, mask)
    policy_weight = weights.get('policy', 1.0)
    loss = (policy_weight * (policy_loss + self.entropy_coef * entropy_loss)
            + self.value_coef * total_value_loss)
    if 'kickstart' in minibatch:
      kickstart_loss, kickstart_metrics = self.kickstarter.loss(logits, minibatch['kickstart'], mask)
      loss += policy_weight * kickstart_loss
      metrics.update(kickstart_metrics)
    metrics.update(entropy_metrics)
    metrics['policy_loss'] = policy_loss
    metrics['loss'] = loss
    return loss, metrics

  def _gradients(self, minibatch, clip_epsilon):
    """Per replica: (gradients, metrics) of one minibatch, at once or accumulated over microbatches."""
    variables = self._network.trainable_variables
    size = tf.shape(minibatch['action'])[1]  # transitions, or sequences ([T, B] either way)
    if self._microbatch_size is None:
      with tf.GradientTape() as tape:
        loss, metrics = self.loss(minibatch, clip_epsilon)
      return tape.gradient(loss, variables), metrics
    minibatch = dict(minibatch)
    minibatch['advantages'] = self._policy_advantages(minibatch)
    minibatch.pop('unnormalized_advantages', None)
    masks = {'policy': minibatch['mask']}
    masks.update({f'value_{head}': mask for head, mask in minibatch['value_masks'].items()})
    totals = {name: tf.reduce_sum(mask) for name, mask in masks.items()}
    num_chunks = (size + self._microbatch_size - 1) // self._microbatch_size
    metric_names = []  # filled while the loop body is traced

    def chunk(i, gradient_sums, metric_sums):
      start = i * self._microbatch_size
      end = tf.minimum(size, start + self._microbatch_size)
      part = {key: tf.nest.map_structure(
                  (lambda x: x[start:end]) if key == 'initial_state' else (lambda x: x[:, start:end]), value)
              for key, value in minibatch.items()}
      part['term_weights'] = {name: tf.math.divide_no_nan(tf.reduce_sum(mask[:, start:end]), totals[name])
                              for name, mask in masks.items()}
      with tf.GradientTape() as tape:
        loss, metrics = self.loss(part, clip_epsilon)
      gradients = tape.gradient(loss, variables)
      gradients = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g)
                   for g, v in zip(gradients, variables)]
      metric_names[:] = sorted(metrics)
      # Metrics: weighted by the chunk's share of policy steps (exact for the policy's masked means;
      # the total loss is already a sum of weighted shares).
      share = part['term_weights']['policy']
      weighted = tf.stack([tf.cast(metrics[name], tf.float32) * (1.0 if name == 'loss' else share)
                           for name in metric_names])
      metric_sums = tf.cond(tf.size(metric_sums) > 0, lambda: metric_sums + weighted, lambda: weighted)
      return i + 1, [s + g for s, g in zip(gradient_sums, gradients)], metric_sums

    # One chunk after another (parallel_iterations=1): concurrent chunks would hold all their activations.
    _, gradients, metric_sums = tf.while_loop(
        lambda i, *_: i < num_chunks, chunk,
        (tf.constant(0), [tf.zeros_like(v) for v in variables], tf.zeros([0])),
        shape_invariants=(tf.TensorShape([]), [v.shape for v in variables], tf.TensorShape([None])),
        parallel_iterations=1)
    metrics = dict(zip(metric_names, tf.unstack(metric_sums, num=len(metric_names))))
    return gradients, metrics

  def _update(self, prepared, orders, epoch, index, clip_epsilon):
    """Per replica: one minibatch's gradient step (gradients averaged over replicas); returns its metrics."""
    gradients, metrics = self._gradients(self._select(prepared, orders, epoch, index), clip_epsilon)
    metrics['gradient_norm'] = self._apply_gradients(gradients, tf.distribute.ReduceOp.MEAN)
    return metrics
