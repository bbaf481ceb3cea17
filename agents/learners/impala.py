"""The IMPALA learner (Espeholt et al. 2018, arXiv 1802.01561) on Reverb-fed, time-major trajectory batches.

Actors act with a policy that lags behind the learner's (asynchronous collection, or actors in other
processes) and record its logits, μ(·|x_t), with every step. The learner corrects for the lag with V-trace
(`agents.learners.vtrace`): the value targets v_s and the policy-gradient advantages are importance-weighted by
clipped ratios π/μ of the current policy π to the recorded one.

One object owns all training state: the network, the optimiser, the step counter and every hyperparameter
that may change while training runs (learning rate, entropy and value costs, γ, λ, the clipping
thresholds), each a `tf.Variable` read inside the compiled step, so a schedule or PBT can move it without
a retrace. One call of `run()` pulls one batch of `[T + 1, B]` steps inside the compiled function and
makes `num_sgd_steps` gradient steps on it (1, as in the paper), each recomputing V-trace with the current
network. Under a `tf.distribute` strategy every replica gets its own columns of the batch; each replica's
loss is weighted by its share of the batch's (unmasked) transitions and the gradients are summed over
replicas, so the update is the one-device update on the whole batch; then clipped by global norm.

Batch layout (see `agents.training.actor` and `replay.reverb_replay`): step t holds the time step the actor saw
(`step_type`, the `reward`/`discount` received on arriving there, `observation`), the action it took, its
`behaviour_logits`, `behaviour_values`, `policy_version` and, for recurrent networks, the `core_state`
before the step. Transition t is (step t → step t+1) with reward `reward[t+1]` and discount
`γ·discount[t+1]`. The transition that starts at a LAST step is the environment's reset (its action was
ignored): it is masked out of every loss and V-trace neither crosses it nor uses it, while the bootstrap of
a truncated episode (LAST with discount 1) uses the value of its final observation (see `vtrace.vtrace`).
A recurrent core is unrolled over the whole sequence from the state stored at t = 0, reset at FIRST steps.

The loss, per transition and averaged over the unmasked ones (Section 4.2; the paper's code sums):

    −ρ^pg_s (r_s + γ_s v_{s+1} − V(x_s)) · log π(a_s|x_s)  +  value_coef · ½ (v_s − V(x_s))²
      −  entropy_coef · H(π(·|x_s))   [+ Σ_k λ_k ℓ_k, a kickstarter's distillation terms]
"""

from typing import Any, Callable, Dict, Optional

import gin
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.agents.learners import base
from protege.agents.learners import losses
from protege.agents.learners import vtrace
from protege.replay import frame_stacks
from protege.runtime import config as run_config
from protege.runtime import errors

_EXTRINSIC = 'extrinsic'
_OPTIMIZERS = ('rmsprop', 'adam')


@gin.configurable
class IMPALALearner(base.OnPolicyLearner):
  """IMPALA's actor-critic with V-trace, composed from `agents.learners.vtrace` and `agents.learners.losses`.

  The defaults are the paper's Atari settings (Espeholt et al. 2018): RMSProp with learning rate 6e-4
  decayed linearly to 0, decay 0.99, momentum 0, ε 0.01; entropy cost 0.01, baseline cost 0.5, γ 0.99,
  ρ̄ = c̄ = 1, λ = 1, global-norm gradient clipping at 40 (the schedule, the optimiser and the clipping as
  in the paper's code, github.com/deepmind/scalable_agent). Two differences: the losses are means over the
  batch's transitions, where the paper's code sums them (so gradients are T·B times smaller, and
  RMSProp's ε weighs relatively more: small tasks may want a smaller one), and Keras' RMSProp starts its
  mean square at 0 where TF1's started at 1 (ε is inside the square root in both).

  Args:
    network: an `ActorCriticNetwork` (feed-forward, LSTM or GRU core) with an 'extrinsic' value head,
      created under `strategy.scope()` (the learner's own copy).
    dataset_fn: `(tf.distribute.InputContext) -> tf.data.Dataset` of per-replica `[T + 1, B]` batches.
    strategy: the `tf.distribute.Strategy` the network was built under; None: the default strategy.
    total_iterations: number of `run()` calls the run will make; the linear schedule reaches 0 there.
    learning_rate: the optimiser's step size, 6e-4 (a variable; PBT and schedules assign it).
    learning_rate_schedule: 'linear' (default, the paper's: decays to 0 at `total_iterations`) or
      'constant'.
    optimizer: 'rmsprop' (default, the paper's) or 'adam'.
    rmsprop_decay: RMSProp's decay of the mean square, 0.99.
    rmsprop_momentum: RMSProp's momentum, 0.0.
    rmsprop_epsilon: RMSProp's ε, added to the mean square inside the square root, 0.01.
    adam_epsilon: Adam's ε, 1e-5 (as PPO's learner); unused with RMSProp.
    num_sgd_steps: gradient steps per batch, 1 (the paper's); more reuse each batch, with V-trace
      recomputed before every step (the ratios then also correct for the learner's own updates).
    discount: γ, 0.99.
    vtrace_lambda: λ of V-trace's traces c_i = λ·min(c̄, π/μ) (Remark 2), 1.0.
    clip_rho_threshold: ρ̄ of the temporal differences' weights, 1.0; None: no clipping.
    clip_c_threshold: c̄ of the traces, 1.0; None: no clipping.
    clip_pg_rho_threshold: ρ̄ of the policy gradient's weights, 1.0; None: no clipping.
    value_coef: weight of the value loss ½(v_s − V(x_s))², 0.5 (the paper's baseline cost).
    entropy_coef: weight of the entropy bonus, 0.01.
    max_grad_norm: global-norm gradient clipping, 40.0; None disables it.
    reward_clip: clip rewards to [−c, c] before V-trace (the paper's Atari agents: 1.0); None (default)
      disables clipping.
    kickstarter_fn: None (default), or a factory `(observation_spec, action_spec, strategy=,
      student_network=, total_iterations=)` of a
      `kickstarting.Kickstarter` (gin: `IMPALALearner.kickstarter_fn = @Kickstarter`): teachers'
      pseudo-rewards join the rewards before V-trace and Σ_k λ_k·ℓ_k joins the loss; metrics
      'kickstart/...'.
  """

  def __init__(self,
               network,
               dataset_fn: Callable[[tf.distribute.InputContext], tf.data.Dataset],
               strategy: Optional[tf.distribute.Strategy] = None,
               total_iterations: int = 1,
               learning_rate: float = 6e-4,
               learning_rate_schedule: str = 'linear',
               optimizer: str = 'rmsprop',
               rmsprop_decay: float = 0.99,
               rmsprop_momentum: float = 0.0,
               rmsprop_epsilon: float = 0.01,
               adam_epsilon: float = 1e-5,
               num_sgd_steps: int = 1,
               discount: float = 0.99,
               vtrace_lambda: float = 1.0,
               clip_rho_threshold: Optional[float] = 1.0,
               clip_c_threshold: Optional[float] = 1.0,
               clip_pg_rho_threshold: Optional[float] = 1.0,
               value_coef: float = 0.5,
               entropy_coef: float = 0.01,
               max_grad_norm: Optional[float] = 40.0,
               reward_clip: Optional[float] = None,
               kickstarter_fn: Optional[Callable[..., Any]] = None):
    run_config.check_number('IMPALALearner.learning_rate', learning_rate, 0,
                            meaning=f'the {optimizer} step size')
    if optimizer not in _OPTIMIZERS:
      raise errors.ConfigError(f"IMPALALearner.optimizer={optimizer!r} is unknown; use 'rmsprop' (the "
                               "paper's) or 'adam'.")
    if num_sgd_steps < 1:
      raise errors.ConfigError(f'IMPALALearner.num_sgd_steps={num_sgd_steps} must be >= 1.')
    if reward_clip is not None and reward_clip <= 0:
      raise errors.ConfigError(f'IMPALALearner.reward_clip={reward_clip} must be > 0, or None for no '
                               'clipping.')
    if _EXTRINSIC not in network.value_head_names:
      raise errors.ConfigError(f'IMPALALearner trains the value head {_EXTRINSIC!r}, which the network lacks '
                               f'(it has {list(network.value_head_names)}); add it with '
                               'ActorCriticNetwork.value_heads.')
    super().__init__('IMPALALearner', network, dataset_fn, strategy, total_iterations, learning_rate,
                     learning_rate_schedule, max_grad_norm, kickstarter_fn)
    self._num_sgd_steps = num_sgd_steps
    self._reward_clip = reward_clip
    no_clip = lambda threshold: float('inf') if threshold is None else threshold
    hyper = self._hyperparameter
    self.entropy_coef = hyper('entropy_coef', entropy_coef)
    self.value_coef = hyper('value_coef', value_coef)
    self.discount = hyper('discount', discount)
    self.vtrace_lambda = hyper('vtrace_lambda', vtrace_lambda)
    self.clip_rho_threshold = hyper('clip_rho_threshold', no_clip(clip_rho_threshold))
    self.clip_c_threshold = hyper('clip_c_threshold', no_clip(clip_c_threshold))
    self.clip_pg_rho_threshold = hyper('clip_pg_rho_threshold', no_clip(clip_pg_rho_threshold))
    if optimizer == 'rmsprop':
      self._build_optimizer(tf.keras.optimizers.RMSprop(learning_rate=learning_rate, rho=rmsprop_decay,
                                                        momentum=rmsprop_momentum, epsilon=rmsprop_epsilon))
    else:
      self._build_optimizer(tf.keras.optimizers.Adam(learning_rate=learning_rate, epsilon=adam_epsilon))
    self._attach_kickstarter()

  @property
  def num_sgd_steps(self) -> int:
    return self._num_sgd_steps

  # --- the compiled step ------------------------------------------------------------------------------

  def train_batch(self, batch) -> Dict[str, tf.Tensor]:
    """One iteration on `batch` (per-replica values, cross-replica context), inside a compiled step."""
    strategy = self._strategy
    self.optimizer.learning_rate.assign(self.current_learning_rate())
    kickstart = None
    if self.kickstarter is not None:
      self.kickstarter.update(self.train_step)
      # Teachers' logits and pseudo-rewards once per batch (they do not depend on the student's weights).
      kickstart = strategy.run(self._prepare_kickstart, (batch,))
    lag_mean, lag_max = strategy.run(self._policy_lag, (batch,))
    # Each replica's metrics are already weighted by its share of the transitions: their sum is the whole
    # batch's masked mean.
    result = self._repeat_updates(self._num_sgd_steps, lambda _, batch, kickstart: self._update(batch, kickstart),
                                  tf.distribute.ReduceOp.SUM, args=(batch, kickstart))
    result['learning_rate'] = tf.identity(self.optimizer.learning_rate)
    result['policy_lag'] = strategy.reduce(tf.distribute.ReduceOp.MEAN, lag_mean, axis=None)
    # (tf.distribute has no MAX reduction: the maximum over this worker's replicas.)
    result['policy_lag_max'] = tf.reduce_max(tf.stack(strategy.experimental_local_results(lag_max)))
    with tf.control_dependencies(list(result.values())):
      self.train_step.assign_add(1)
    return result

  def _policy_lag(self, batch):
    """Learner updates between the weights that acted and the ones now training: (mean, max)."""
    lags = tf.cast(self.train_step, tf.float32) - tf.cast(batch['policy_version'], tf.float32)
    return tf.reduce_mean(lags), tf.reduce_max(lags)

  def _prepare_kickstart(self, batch):
    return self.kickstarter.prepare(batch, discount=self.discount)

  def _forward(self, batch):
    """Logits `[T + 1, B, A]` and extrinsic values `[T + 1, B]` of the network on the whole sequence."""
    batch_major = lambda x: tf.experimental.numpy.swapaxes(x, 0, 1)
    state = ()
    if self._recurrent:
      # The core starts from the state the actor had before step 0 and resets itself at FIRST steps.
      state = tf.nest.pack_sequence_as(self._network.state_spec,
                                       [x[0] for x in tf.nest.flatten(batch['core_state'])])
    observation = frame_stacks.full_observations(batch)  # stacks stored frame by frame are rebuilt
    (logits, values), _ = self._network(tf.nest.map_structure(batch_major, observation),
                                        step_type=batch_major(batch['step_type']), network_state=state,
                                        training=True)
    return batch_major(logits), batch_major(values[_EXTRINSIC])

  def targets(self, batch, logits, values, pseudo_rewards=None):
    """V-trace on a batch given the network's `logits` `[T + 1, B, A]` and `values` `[T + 1, B]`.

    Returns `(vtrace.VTraceReturns, target_log_probs [T, B], mask [T, B])`; `mask` is 0 on reset
    transitions (those starting at a LAST step). `pseudo_rewards` `[T, B]` (a kickstarter's) join the
    rewards after clipping.
    """
    actions = batch['action'][:-1]
    not_last = tf.cast(tf.not_equal(batch['step_type'], ts.StepType.LAST), tf.float32)
    mask = not_last[:-1]
    rewards = tf.cast(batch['reward'][1:], tf.float32)
    if self._reward_clip is not None:
      rewards = tf.clip_by_value(rewards, -self._reward_clip, self._reward_clip)
    if pseudo_rewards is not None:
      rewards += pseudo_rewards
    discounts = self.discount * tf.cast(batch['discount'][1:], tf.float32)
    target_log_probs = losses.categorical_log_prob(logits[:-1], actions)
    behaviour_log_probs = losses.categorical_log_prob(tf.cast(batch['behaviour_logits'][:-1], tf.float32),
                                                      actions)
    returns = vtrace.vtrace(
        behaviour_log_probs, target_log_probs, rewards, discounts, values[:-1], values[-1],
        clip_rho_threshold=self.clip_rho_threshold, clip_c_threshold=self.clip_c_threshold,
        clip_pg_rho_threshold=self.clip_pg_rho_threshold, lambda_=self.vtrace_lambda, mask=mask)
    return returns, target_log_probs, mask

  def loss(self, batch, kickstart=None):
    """The IMPALA loss of one replica's batch (masked means over its transitions); (loss, metrics, mask)."""
    logits, values = self._forward(batch)
    pseudo_rewards = None if kickstart is None else kickstart['pseudo_rewards']
    returns, target_log_probs, mask = self.targets(batch, logits, values, pseudo_rewards)
    policy_loss = -losses.masked_mean(target_log_probs * returns.pg_advantages, mask)
    value_loss, value_metrics = losses.value_loss(values[:-1], returns.vs, mask=mask)
    entropy_loss, entropy_metrics = losses.entropy_loss(logits[:-1], mask)
    loss = policy_loss + self.value_coef * value_loss + self.entropy_coef * entropy_loss
    metrics = {}
    if kickstart is not None:
      kickstart_loss, kickstart_metrics = self.kickstarter.loss(logits[:-1], kickstart, mask)
      loss += kickstart_loss
      metrics.update(kickstart_metrics)
    rhos = tf.exp(returns.log_rhos)
    clipped = tf.cast(rhos > self.clip_rho_threshold, tf.float32)
    metrics.update({
        'loss': loss,
        'policy_loss': policy_loss,
        'value_loss': value_loss,
        'entropy': entropy_metrics['entropy'],
        'explained_variance': value_metrics['explained_variance'],
        # How far the acting policy μ is from π: mean ratio, the share of ratios clipped at ρ̄, and the
        # non-negative estimator E_μ[(ρ − 1) − log ρ] of KL(μ ‖ π).
        'rho_mean': losses.masked_mean(rhos, mask),
        'rho_clip_fraction': losses.masked_mean(clipped, mask),
        'approx_kl': losses.masked_mean((rhos - 1.0) - returns.log_rhos, mask),
        'vs_mean': losses.masked_mean(returns.vs, mask),
        'pg_advantage_mean': losses.masked_mean(returns.pg_advantages, mask),
    })
    return loss, tf.nest.map_structure(tf.stop_gradient, metrics), mask

  def _update(self, batch, kickstart):
    """Per replica: one gradient step; returns metrics weighted by the replica's share of transitions."""
    variables = self._network.trainable_variables
    replica_context = tf.distribute.get_replica_context()
    num_replicas = replica_context.num_replicas_in_sync
    with tf.GradientTape() as tape:
      loss, metrics, mask = self.loss(batch, kickstart)
    gradients = tape.gradient(loss, variables)
    count = tf.reduce_sum(mask)
    total = replica_context.all_reduce(tf.distribute.ReduceOp.SUM, count) if num_replicas > 1 else count
    # This replica's share of the batch's transitions: the share-weighted sum over replicas of their
    # masked means is the mean over the whole batch (replicas may hold different numbers of resets).
    share = tf.math.divide_no_nan(count, total)
    gradients = [tf.zeros_like(v) if g is None else share * tf.convert_to_tensor(g)
                 for g, v in zip(gradients, variables)]
    # Summed over replicas: the share-weighted sum is the one-device gradient on the whole batch.
    norm = self._apply_gradients(gradients, tf.distribute.ReduceOp.SUM)
    metrics = {name: share * tf.cast(value, tf.float32) for name, value in metrics.items()}
    # Already the same on every replica (all-reduced): its share-weighted sum is itself.
    metrics['gradient_norm'] = share * norm
    return metrics
