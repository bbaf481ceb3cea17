"""What a gin file says about a run: `RunSettings` (gin name `train`) and the checks of its values.

Every job of a run reads them here: the single-process run and the learner (`agents.training.trainer`),
the Reverb server and the actors (`agents.training.deployment`), the PBT members.
"""

import dataclasses
from typing import Any, Callable, Dict, Optional

import gin

from protege.agents.learners import ppo
from protege.networks import actor_critic
from protege.runtime import config as run_config
from protege.runtime import errors


# The gin name stays `train` (`train.total_env_steps = ...`), so configurations keep their names.
@gin.configurable('train')
@dataclasses.dataclass(frozen=True)
class RunSettings:
  """What a gin file says about a run: the one owner of the run's settings.

  Every job of a run reads them here: the single-process run and the learner (`train`, `Trainer`), the
  Reverb server and the actors (`agents.training.deployment`), the PBT members. Run mechanics (the
  directory, the devices, the server's address) are flags and are not here. Values are checked when the
  settings are made, before any work starts (`check_settings`).

  Attributes:
    table_name: the Reverb table the actor writes and the learner reads.
    total_env_steps: training budget in agent steps summed over environments (frames = steps × frameskip).
    sequence_length: T, transitions per trajectory item (the rollout length).
    items_per_replica: items each learner replica consumes per iteration; a learner iteration uses
      `num_replicas × items_per_replica × num_envs × sequence_length` transitions.
    seed: seeds TensorFlow, the environments and the action sampling.
    network_fn: builds the network from `(observation_spec, action_spec)`.
    learner_fn: builds the learner from `(network, dataset_fn, strategy, total_iterations)`.
    eval_interval_env_steps: evaluate every this many env steps (0: only at the end).
    eval_episodes: episodes per evaluation (each on its own environment).
    eval_greedy: evaluate the argmax action (True) or sample the policy.
    stop_at_eval_return: stop training early once an evaluation reaches this mean return (None: never). The
      run is then finished: running the directory again does not train on unless this is unset.
    stop_at_episode_return: stop training once a training episode reaches this return (None: never), e.g.
      at the first success of a hard-exploration task; summary.json records when it happened.
    checkpoint_interval_seconds: seconds between checkpoints (one is always written at the end).
    progress_interval_seconds: seconds between progress lines.
    summary_interval_iterations: learner iterations between TensorBoard writes.
    asynchronous_actor: False (default): collect, then learn, in turn — exactly on-policy and
      reproducible from the seed. True: the actor collects in a background thread while the learner
      trains, with a policy lag of up to the queue's size (PPO's ratio uses the recorded behaviour
      logits); faster when the learner and the environments can share the cores.
  """
  table_name: str = 'trajectories'
  total_env_steps: int = 100_000
  sequence_length: int = 128
  items_per_replica: int = 1
  seed: int = 0
  network_fn: Callable[..., Any] = actor_critic.ActorCriticNetwork
  learner_fn: Callable[..., Any] = ppo.PPOLearner
  eval_interval_env_steps: int = 0
  eval_episodes: int = 10
  eval_greedy: bool = True
  stop_at_eval_return: Optional[float] = None
  stop_at_episode_return: Optional[float] = None
  checkpoint_interval_seconds: float = 300.0
  progress_interval_seconds: float = 5.0
  summary_interval_iterations: int = 1
  asynchronous_actor: bool = False

  def __post_init__(self):
    check_settings(self.total_env_steps, self.sequence_length, self.items_per_replica,
                   self.eval_interval_env_steps, self.eval_episodes, self.checkpoint_interval_seconds,
                   self.progress_interval_seconds, self.summary_interval_iterations)

  def as_dict(self) -> Dict[str, Any]:
    return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def check_settings(total_env_steps, sequence_length, items_per_replica, eval_interval_env_steps,
                   eval_episodes, checkpoint_interval_seconds, progress_interval_seconds,
                   summary_interval_iterations, local_actor=True, reverb_address=None) -> None:
  """Raises ConfigError, one line naming the `train.*` setting and the fix, on a value no run can use.

  `Trainer` calls it before it builds anything; `binaries/pbt_main.py` calls it for its members before
  Ray starts. The arguments are `RunSettings`' fields and `train()`'s.
  """
  if not local_actor and reverb_address is None:
    raise errors.ConfigError('local_actor=False (a learner without its own actor) reads from a running '
                             'Reverb server: pass its host:port with --reverb_address.')
  check = run_config.check_number
  check('train.total_env_steps', total_env_steps, 0, integer=True,
        meaning='the training budget in env steps')
  check('train.sequence_length', sequence_length, 0, integer=True, meaning='steps per trajectory item')
  check('train.items_per_replica', items_per_replica, 0, integer=True, meaning='items per replica and step')
  check('train.eval_interval_env_steps', eval_interval_env_steps, 0, inclusive=True, integer=True,
        meaning='0: evaluate only at the end')
  if isinstance(eval_episodes, bool) or not isinstance(eval_episodes, int) or eval_episodes < 1:
    raise errors.ConfigError('train.eval_episodes must be an int >= 1 (the run ends with an evaluation '
                             f'whose mean summary.json reports), got {eval_episodes!r}; to evaluate only at '
                             'the end, set train.eval_interval_env_steps = 0.')
  check('train.checkpoint_interval_seconds', checkpoint_interval_seconds, 0,
        meaning='seconds between checkpoints')
  check('train.progress_interval_seconds', progress_interval_seconds, 0,
        meaning='seconds between progress lines')
  check('train.summary_interval_iterations', summary_interval_iterations, 0, integer=True,
        meaning='learner iterations between TensorBoard writes')



def train_settings() -> RunSettings:
  """The run's settings as the gin configuration sets them (`RunSettings`, gin name `train`).

  The server and the actors read the run's layout (sequence length, network, table, seed) from the same
  gin file as the learner.
  """
  return RunSettings()
