"""Exploit and explore of population based training, as Ray Tune's PBT scheduler extended for Kickstarting.

Population based training (Jaderberg et al. 2017, arXiv 1711.09846; docs/pbt.md), as Kickstarting (Schmitt et
al. 2018, arXiv 1803.03835; docs/kickstarting.md, "λ under PBT") uses it to choose each teacher's weight λ_k,
the learning rate and the entropy cost while the population trains:

* A member is *ready* every `ready_env_steps` env steps (its step reports then).
* **Exploit**, t-test selection (the default; PBT paper, appendix A.1 "T-test selection"): sample another
  member uniformly; if its mean over the last `episodes_window` episode returns is higher and Welch's t-test
  rejects equal means at `significance`, copy its weights and hyperparameters. **Truncation selection**
  (option): a member in the bottom `truncation_fraction` of the population by score copies one of the top
  `truncation_fraction` — Ray Tune's own quantile rule, used unchanged.
* **Explore**: each copied hyperparameter is resampled from its initial distribution with probability
  `resample_probability`, otherwise multiplied by 0.8 or 1.2 (Ray Tune's `_explore`, used unchanged), then
  clipped into its range.

`PBTScheduler` extends `ray.tune.schedulers.PopulationBasedTraining` where it fits rather than rewriting it:
the time unit is env steps (`time_attr='env_steps'`, `perturbation_interval=ready_env_steps`); t-test
selection replaces only the choice of *whether* and *whom* to copy (`_checkpoint_or_exploit`, which then
hands Ray's own code a one-member upper and lower "quantile"); saving, the copy of the donor's checkpoint, the
pause and restart of the member, and the explore step are Ray's. Every decision goes to a `LineageLog`.

The search space (`search_space`, gin-configurable) gives each hyperparameter a range and whether it is
sampled uniformly or log-uniformly; the same distribution gives the initial values and the resamples.
The keys name what a member assigns (see `pbt.member`): 'learning_rate', 'entropy_coef', 'lambda_<teacher>'
for each λ_k (or the factor λ̂_k when factorised) and 'lambda_scale' for the global λ of λ_k = λ·λ̂_k, and
any other learner variable given in `others` (e.g. RND's 'intrinsic_advantage_coef').

Seeding: Ray's PBT draws from Python's global `random` (exploit choices, explore) and Ray's search spaces
from NumPy's global generator (initial values, resamples); `PBTScheduler(seed=...)` seeds both.
"""

import collections
import copy
import math
import os
import random
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Sequence, Tuple

import gin
import numpy as np
from ray import tune
from ray.tune.experiment import Trial
from ray.tune.schedulers.trial_scheduler import TrialScheduler
from ray.tune.search.basic_variant import BasicVariantGenerator
from ray.tune.schedulers import pbt as ray_pbt
from scipy import stats

from protege.pbt import lineage as lineage_lib
from protege.runtime import errors

SELECTIONS = ('t_test', 'truncation')
# The key of a member's settings in a trial's config (everything else in the config is a hyperparameter).
MEMBER_KEY = 'member'
LAMBDA_PREFIX = 'lambda_'
# The key of the global scale λ when λ_k = λ · λ̂_k (schedules.SCALE, the name TeacherWeights uses).
LAMBDA_SCALE = LAMBDA_PREFIX + 'scale'


class Hyperparameter(NamedTuple):
  """A hyperparameter's range [low, high], sampled uniformly, or log-uniformly when `log`."""
  low: float
  high: float
  log: bool = False

  def domain(self):
    """The Ray Tune search space that samples the initial values and the resamples."""
    return tune.loguniform(self.low, self.high) if self.log else tune.uniform(self.low, self.high)

  def clip(self, value: float) -> float:
    return float(min(max(float(value), self.low), self.high))


def hyperparameter(name: str, spec) -> Hyperparameter:
  """`(low, high)` (uniform) or `(low, high, 'log' | 'linear')` as a `Hyperparameter`, checked."""
  if isinstance(spec, Hyperparameter):
    return spec
  if not isinstance(spec, (tuple, list)) or len(spec) not in (2, 3):
    raise errors.ConfigError(f'search_space: {name}={spec!r} must be (low, high) or (low, high, '
                             "'log'|'linear').")
  scale = spec[2] if len(spec) == 3 else 'linear'
  if scale not in ('log', 'linear'):
    raise errors.ConfigError(f"search_space: {name}={spec!r} has scale {scale!r}; use 'log' or 'linear'.")
  low, high = float(spec[0]), float(spec[1])
  if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
    raise errors.ConfigError(f'search_space: {name}={spec!r} needs finite low < high.')
  if scale == 'log' and low <= 0:
    raise errors.ConfigError(f"search_space: {name}={spec!r} is log-uniform and needs low > 0; use 'linear' "
                             'to include 0.')
  if name == 'learning_rate' and low <= 0:
    raise errors.ConfigError(f'search_space: learning_rate={spec!r} reaches {low:g}; a learning rate must be '
                             '> 0: raise low.')
  if name.startswith(LAMBDA_PREFIX) and low < 0:
    raise errors.ConfigError(f'search_space: {name}={spec!r}: kickstarting weights must be >= 0.')
  return Hyperparameter(low, high, scale == 'log')


@gin.configurable
def search_space(teacher_names: Sequence[str] = (), factorised: bool = False,
                 learning_rate=(1e-4, 3e-3, 'log'), entropy_coef=(1e-4, 1e-2, 'log'),
                 teacher_weight=(0.0, 4.0, 'linear'), teacher_weights: Optional[Mapping[str, Any]] = None,
                 teacher_scale=(0.0, 4.0, 'linear'),
                 others: Optional[Mapping[str, Any]] = None) -> Dict[str, Hyperparameter]:
  """The hyperparameters PBT moves, each with its range and sampling (gin: `search_space.<name>`).

  Args:
    teacher_names: the kickstarting teachers (`TeacherSet.names`); the driver reads them from gin. Default
      () (no λ).
    factorised: True when λ_k = λ · λ̂_k (`TeacherWeights.scale_schedule` set): PBT then moves the global λ
      ('lambda_scale', range `teacher_scale`) and each factor λ̂_k (range `teacher_weight`). Default False.
    learning_rate: the learner's base learning rate (its schedule, if any, still applies on top). Default
      (1e-4, 3e-3, 'log'); None leaves it alone.
    entropy_coef: the entropy cost. Default (1e-4, 1e-2, 'log'); None leaves it alone.
    teacher_weight: every λ_k (or λ̂_k). Default (0.0, 4.0, 'linear') (0 switches a teacher off); None
      leaves the λ's to their schedules.
    teacher_weights: per-teacher ranges, teacher name -> range, overriding `teacher_weight`. Default None.
    teacher_scale: the global λ when `factorised`. Default (0.0, 4.0, 'linear').
    others: further learner variables, name -> range, e.g. `{'intrinsic_advantage_coef': (0.5, 2.0, 'log')}`
      (a member assigns the attribute of that name of its learner, or of the learner's `inner`). Default None.

  Returns:
    name -> `Hyperparameter`, in a fixed order.
  """
  space = collections.OrderedDict()
  if learning_rate is not None:
    space['learning_rate'] = hyperparameter('learning_rate', learning_rate)
  if entropy_coef is not None:
    space['entropy_coef'] = hyperparameter('entropy_coef', entropy_coef)
  teacher_weights = dict(teacher_weights or {})
  unknown = sorted(set(teacher_weights) - set(teacher_names))
  if unknown:
    raise errors.ConfigError(f'search_space.teacher_weights names unknown teachers {unknown}; the teachers '
                             f'are {list(teacher_names)} (TeacherSet.names).')
  if teacher_weight is not None or teacher_weights:
    if factorised and teacher_scale is not None:
      space[LAMBDA_SCALE] = hyperparameter(LAMBDA_SCALE, teacher_scale)
    for name in teacher_names:
      spec = teacher_weights.get(name, teacher_weight)
      if spec is not None:
        space[LAMBDA_PREFIX + name] = hyperparameter(LAMBDA_PREFIX + name, spec)
  for name, spec in (others or {}).items():
    if name in space or name == MEMBER_KEY:
      raise errors.ConfigError(f'search_space.others names {name!r}, which is already a hyperparameter; '
                               'remove it.')
    space[name] = hyperparameter(name, spec)
  if not space:
    raise errors.ConfigError('search_space is empty: give PBT at least one hyperparameter to move '
                             '(learning_rate, entropy_coef, teacher_weight or others).')
  return space


def clip_to_space(config: Dict[str, Any],
                  space: Mapping[str, Hyperparameter]) -> Tuple[Dict[str, Any], List[str]]:
  """A copy of `config` with every hyperparameter of `space` clipped into its range, and the clipped keys."""
  clipped_config, clipped = dict(config), []
  for name, hyper in space.items():
    if name in clipped_config:
      value = hyper.clip(clipped_config[name])
      if value != clipped_config[name]:
        clipped.append(name)
      clipped_config[name] = value
  return clipped_config, clipped


class Comparison(NamedTuple):
  """The outcome of comparing a member's recent returns with a peer's (`compare_returns`)."""
  exploit: bool
  own_mean: float
  peer_mean: float
  t_statistic: float
  p_value: float


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> Tuple[float, float]:
  """Welch's unequal-variances t-test of mean(a) = mean(b): (t, two-sided p).

  t = (ā − b̄) / √(s_a²/n_a + s_b²/n_b) with unbiased variances, and Welch–Satterthwaite degrees of freedom
  ν = (s_a²/n_a + s_b²/n_b)² / ((s_a²/n_a)²/(n_a−1) + (s_b²/n_b)²/(n_b−1)). Both samples need 2 or more
  values. When both variances are 0 the difference is certain: p = 0 if the means differ, else 1.
  """
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  if a.size < 2 or b.size < 2:
    raise ValueError(f'welch_t_test needs at least 2 values per sample, got {a.size} and {b.size}.')
  va, vb = a.var(ddof=1) / a.size, b.var(ddof=1) / b.size
  difference = a.mean() - b.mean()
  if va + vb == 0:
    return (math.copysign(math.inf, difference), 0.0) if difference != 0 else (0.0, 1.0)
  t = difference / math.sqrt(va + vb)
  dof = (va + vb) ** 2 / (va ** 2 / (a.size - 1) + vb ** 2 / (b.size - 1))
  return float(t), float(2.0 * stats.t.sf(abs(t), dof))


def compare_returns(own_returns: Sequence[float], peer_returns: Sequence[float], significance: float = 0.05,
                    episodes_window: int = 10, min_episodes: int = 2) -> Optional[Comparison]:
  """T-test selection: should a member with `own_returns` copy a peer with `peer_returns`?

  PBT (Jaderberg et al. 2017, appendix A.1): compare the last `episodes_window` episode returns of both with
  Welch's t-test; copy when the peer's mean is higher and the test is significant (two-sided p <
  `significance`).

  Returns:
    A `Comparison`, or None when either side has fewer than `min_episodes` (>= 2) returns (no decision).
  """
  own = list(own_returns)[-episodes_window:]
  peer = list(peer_returns)[-episodes_window:]
  if len(own) < max(2, min_episodes) or len(peer) < max(2, min_episodes):
    return None
  t, p = welch_t_test(peer, own)
  own_mean, peer_mean = float(np.mean(own)), float(np.mean(peer))
  return Comparison(exploit=bool(peer_mean > own_mean and p < significance), own_mean=own_mean,
                    peer_mean=peer_mean, t_statistic=t, p_value=p)


def member_name(trial) -> str:
  """The member a trial runs ('member_<index>' from its config), for logs."""
  settings = (getattr(trial, 'config', None) or {}).get(MEMBER_KEY) or {}  # None: a Result of a failed trial
  if 'index' in settings:
    return f'member_{settings["index"]}'
  trial_id = getattr(trial, 'trial_id', None)
  # A Result without its config still has its directory, which pbt_main names after the member.
  return str(trial_id) if trial_id else os.path.basename(str(getattr(trial, 'path', '') or '').rstrip('/'))


def hyperparameters_of(config: Mapping[str, Any], space: Mapping[str, Any]) -> Dict[str, Any]:
  return {name: config[name] for name in space if name in (config or {})}


@gin.configurable(denylist=['space', 'lineage'])
class PBTScheduler(ray_pbt.PopulationBasedTraining):
  """Ray Tune's PBT with t-test selection, clipped explore and a lineage log (see the module docstring).

  Members must report `env_steps`, `metric` (the mean recent episode return) and `returns_key` (the raw
  recent episode returns, a list) — `pbt.member.Member` does.

  Args:
    space: the hyperparameters (`search_space()`).
    lineage: where decisions are logged; None logs nothing.
    ready_env_steps: env steps between two exploit/explore decisions of a member (its "ready" period; the
      member's step runs this long). Required.
    burn_in_env_steps: no decision before a member has trained this many env steps. Default 0.
    selection: 't_test' (default) or 'truncation'.
    significance: the t-test's level: copy when p < significance. Default 0.05.
    episodes_window: the last this many episode returns enter the t-test (PBT: 10). Default 10.
    min_episodes: fewer returns than this on either side: no decision. Default 3.
    truncation_fraction: with truncation selection, the bottom this fraction copies the top this fraction
      (PBT: 20%; Ray's default 25%). In (0, 0.5]. Default 0.25.
    resample_probability: probability that explore resamples a hyperparameter from its distribution
      instead of perturbing it. Default 0.25.
    perturbation_factors: the factors of a perturbation, one drawn uniformly. Default (0.8, 1.2).
    metric: the score in the members' results. Default 'episode_return_mean'.
    returns_key: the raw recent returns in the members' results. Default 'recent_returns'.
    seed: seeds Python's `random` and NumPy's global generator, which Ray's PBT and search spaces draw
      from; None leaves them alone. Default None.
    time_multiplexing: False (default): every member has its own resources and trains on between its
      decisions. True: more members than fit take turns — Ray's rule, which pauses a ready member whenever
      another waits (each pause saves and restores it).
  """

  def __init__(self, space: Mapping[str, Hyperparameter], lineage: Optional[lineage_lib.LineageLog] = None,
               ready_env_steps: int = gin.REQUIRED, burn_in_env_steps: int = 0, selection: str = 't_test',
               significance: float = 0.05, episodes_window: int = 10, min_episodes: int = 3,
               truncation_fraction: float = 0.25, resample_probability: float = 0.25,
               perturbation_factors: Sequence[float] = (0.8, 1.2), metric: str = 'episode_return_mean',
               returns_key: str = 'recent_returns', seed: Optional[int] = None,
               time_multiplexing: bool = False):
    if selection not in SELECTIONS:
      raise errors.ConfigError(f"PBTScheduler.selection={selection!r} is unknown; use 't_test' or "
                               "'truncation'.")
    if not isinstance(ready_env_steps, int) or ready_env_steps < 1:
      raise errors.ConfigError(f'PBTScheduler.ready_env_steps={ready_env_steps!r} must be a positive int '
                               '(env steps).')
    if isinstance(burn_in_env_steps, bool) or not isinstance(burn_in_env_steps, int) or burn_in_env_steps < 0:
      raise errors.ConfigError(f'PBTScheduler.burn_in_env_steps={burn_in_env_steps!r} must be an int >= 0 '
                               '(env steps before a member\'s first decision).')
    if not 0 < significance <= 1:
      raise errors.ConfigError(f'PBTScheduler.significance={significance!r} must be in (0, 1].')
    if not 0 < truncation_fraction <= 0.5:
      raise errors.ConfigError(f'PBTScheduler.truncation_fraction={truncation_fraction!r} must be in '
                               '(0, 0.5].')
    if not 0 <= resample_probability <= 1:
      raise errors.ConfigError(f'PBTScheduler.resample_probability={resample_probability!r} must be in '
                               '[0, 1].')
    if episodes_window < 2 or min_episodes < 2 or min_episodes > episodes_window:
      raise errors.ConfigError(f'PBTScheduler: need 2 <= min_episodes ({min_episodes}) <= episodes_window '
                               f'({episodes_window}).')
    space = collections.OrderedDict((name, hyperparameter(name, spec)) for name, spec in space.items())
    if seed is not None:
      random.seed(seed)
      np.random.seed(seed)
    self.space = space
    self.ready_env_steps = ready_env_steps
    self.selection = selection
    self._lineage = lineage
    self._significance = significance
    self._episodes_window = episodes_window
    self._min_episodes = min_episodes
    self._returns_key = returns_key
    self._time_multiplexing = bool(time_multiplexing)
    self._restarting = set()  # ids of members paused by an exploit that have not reported since
    # Ids of members whose last event was an error (e.g. training diverged: a non-finite loss or weight)
    # and that have not reported since: never a donor, whatever their last score.
    self._failed = set()
    self._explored = None  # {'operations', 'clipped'} of the explore under way, for the lineage
    self._selection_info = {'selection': selection, 'p_value': None}  # of the exploit under way
    super().__init__(time_attr='env_steps', metric=metric, mode='max', perturbation_interval=ready_env_steps,
                     burn_in_period=burn_in_env_steps,
                     hyperparam_mutations={name: hyper.domain() for name, hyper in space.items()},
                     quantile_fraction=truncation_fraction, resample_probability=resample_probability,
                     perturbation_factors=tuple(perturbation_factors), custom_explore_fn=self._clip,
                     log_config=False, require_attrs=True, synch=False)

  # --- what Ray calls ------------------------------------------------------------------------------

  def on_trial_result(self, tune_controller, trial: Trial, result: Dict) -> str:
    self._restarting.discard(trial.trial_id)
    self._failed.discard(trial.trial_id)
    self._record('report', member=member_name(trial), trial_id=trial.trial_id,
                 env_steps=result.get('env_steps'), score=result.get(self._metric),
                 episodes=len(result.get(self._returns_key) or ()),
                 hyperparameters=hyperparameters_of(trial.config, self.space))
    decision = super().on_trial_result(tune_controller, trial, result)
    if decision == TrialScheduler.PAUSE and not self._time_multiplexing:
      # Ray pauses a ready member whenever another one is pending or paused, to share slots among more
      # members than fit. When every member has its own slot that only costs a save, a restore and, when
      # Ray hands the process to another member, a rebuild: the member continues.
      decision = TrialScheduler.CONTINUE
    return decision

  def on_trial_error(self, tune_controller, trial: Trial):
    self._restarting.discard(trial.trial_id)
    self._failed.add(trial.trial_id)
    self._record('error', member=member_name(trial), trial_id=trial.trial_id)
    super().on_trial_error(tune_controller, trial)

  def on_trial_complete(self, tune_controller, trial: Trial, result: Dict):
    self._restarting.discard(trial.trial_id)
    self._record('complete', member=member_name(trial), trial_id=trial.trial_id,
                 env_steps=(result or {}).get('env_steps'), score=(result or {}).get(self._metric),
                 eval_return_mean=(result or {}).get('eval_return_mean'),
                 hyperparameters=hyperparameters_of(trial.config, self.space))
    super().on_trial_complete(tune_controller, trial, result)

  @property
  def restarting(self) -> bool:
    """True while a member paused by an exploit waits to restart."""
    return bool(self._restarting)

  # --- the extension ---------------------------------------------------------------------------------

  def _checkpoint_or_exploit(self, trial: Trial, tune_controller, upper_quantile: List[Trial],
                             lower_quantile: List[Trial]):
    """T-test selection: a ready member copies a random peer that is significantly better, else it saves
    (so that others can copy it). Truncation selection: Ray's quantile rule, unchanged."""
    upper_quantile = [other for other in upper_quantile if not self.failed(other)]
    if self.selection == 'truncation':
      self._selection_info = {'selection': 'truncation', 'p_value': None}
      if trial not in lower_quantile and trial not in upper_quantile:
        # Ray saves only the members that are in the top quantile when they are ready; members ready at
        # other times (asynchronous PBT) would then often have no checkpoint when they are the top. Every
        # member that does not copy saves, so the top members always have one.
        return super()._checkpoint_or_exploit(trial, tune_controller, [trial], [])
      return super()._checkpoint_or_exploit(trial, tune_controller, upper_quantile, lower_quantile)
    peer = self._random_peer(trial)
    comparison = None
    if peer is not None:
      comparison = compare_returns(self._returns(trial), self._returns(peer), self._significance,
                                   self._episodes_window, self._min_episodes)
      if comparison is not None:
        self._record('compare', member=member_name(trial), peer=member_name(peer),
                     env_steps=self._trial_state[trial].last_train_time, **comparison._asdict())
    if comparison is not None and comparison.exploit:
      self._selection_info = {'selection': 't_test', 'p_value': comparison.p_value}
      # Ray's code with a one-member "upper quantile" (the peer) and "lower quantile" (this member): the
      # donor's last checkpoint is resolved and copied, the member paused, explored and restarted.
      return super()._checkpoint_or_exploit(trial, tune_controller, [peer], [trial])
    # Not copying: save, so that this member can be a donor until its next ready.
    return super()._checkpoint_or_exploit(trial, tune_controller, [trial], [])

  def failed(self, trial: Trial) -> bool:
    """Whether `trial` errored (diverged, crashed) and has not reported since: it is never copied."""
    return trial.trial_id in self._failed or trial.status == Trial.ERROR

  def _random_peer(self, trial: Trial) -> Optional[Trial]:
    """A member chosen uniformly among the others that have reported returns and saved a checkpoint."""
    candidates = [other for other, state in self._trial_state.items()
                  if other is not trial and not other.is_finished() and not self.failed(other)
                  and state.last_checkpoint is not None
                  and state.last_result is not None and self._returns(other)]
    return random.choice(candidates) if candidates else None

  def _returns(self, trial: Trial) -> List[float]:
    result = self._trial_state[trial].last_result or {}
    returns = result.get(self._returns_key) or []
    return [float(r) for r in returns if r is not None and math.isfinite(float(r))]

  def _clip(self, config: Dict) -> Dict:
    """Ray's `custom_explore_fn`: keeps every explored value in its range."""
    clipped_config, clipped = clip_to_space(config, self.space)
    if self._explored is not None:
      self._explored['clipped'] = clipped
    return clipped_config

  def _get_new_config(self, trial: Trial, trial_to_clone: Trial) -> Tuple[Dict, Dict]:
    """Ray's explore of the donor's hyperparameters; everything else stays the member's own (Ray copies the
    donor's whole config, which would hand this member the donor's settings: its index, its directory)."""
    self._explored = {'clipped': []}
    new_config, operations = super()._get_new_config(trial, trial_to_clone)
    for key, value in trial.config.items():
      if key not in self.space:
        new_config[key] = copy.deepcopy(value)
    self._explored['operations'] = operations
    return new_config, operations

  def _exploit(self, tune_controller, trial: Trial, trial_to_clone: Trial):
    state, donor_state = self._trial_state[trial], self._trial_state[trial_to_clone]
    member, donor = member_name(trial), member_name(trial_to_clone)
    own_steps, donor_steps = state.last_train_time, donor_state.last_train_time
    own_score, donor_score = state.last_score, donor_state.last_score
    donor_config = hyperparameters_of(trial_to_clone.config, self.space)
    # Ray pauses the member (its process is kept for it while it is in `restarting`: `PopulationSearch`),
    # then restarts it: reset_config(explored config), load_checkpoint(donor's checkpoint), train.
    self._restarting.add(trial.trial_id)
    super()._exploit(tune_controller, trial, trial_to_clone)
    explored = self._explored or {}
    self._explored = None
    self._record('exploit', member=member, donor=donor, trial_id=trial.trial_id,
                 donor_trial_id=trial_to_clone.trial_id, env_steps=own_steps, donor_env_steps=donor_steps,
                 score=own_score, donor_score=donor_score, **self._selection_info)
    self._record('explore', member=member, donor=donor, trial_id=trial.trial_id, env_steps=donor_steps,
                 old=donor_config, new=hyperparameters_of(trial.config, self.space),
                 operations={k: str(v) for k, v in (explored.get('operations') or {}).items()},
                 clipped=explored.get('clipped', []))

  def _record(self, event: str, **fields) -> None:
    if self._lineage is not None:
      self._lineage.record(event, **fields)


class PopulationSearch(BasicVariantGenerator):
  """Ray Tune's default search algorithm (it makes the members from the param space), that stays open while
  a member paused by an exploit waits to restart.

  With `reuse_actors=True` Ray keeps a paused member's process for reuse only while its search algorithm
  may still bring trials (`_maybe_cache_trial_actor`); once every member has been made it ends the process,
  and the member restarts in a new one — a second TensorFlow start-up, environment, Reverb server and trace
  of the training step. Reporting "not finished" until that member reports again lets Ray give it its own
  process back: `reset_config`, `load_checkpoint`, no retracing.

  Args:
    scheduler: the population's `PBTScheduler`.
    **kwargs: `BasicVariantGenerator`'s.
  """

  def __init__(self, scheduler: PBTScheduler, **kwargs):
    super().__init__(**kwargs)
    self._scheduler = scheduler

  def is_finished(self) -> bool:
    return super().is_finished() and not self._scheduler.restarting
