"""The jobs of a launched run as Ray actors: the same job functions the hand-started binaries call.

Each job (the Reverb server, an actor, the learner) is one `Job` in its own Ray worker process, which
parses the run's gin files and then calls the function its binary calls (`deployment.run_server`,
`deployment.run_actor`, `deployment.run_learner`), so a launched run and a hand-started one share every
line of job code. A job's process that dies (a crash, kill -9, a lost node) is restarted by Ray up to
`launch.max_restarts` times, and the call under way is retried in the new process: an actor rejoins with
the newest weights, the server restores its newest checkpoint, the learner resumes from its own.

Ray runs the calls of a `Job` on threads (`max_concurrency`), so the driver can ask a running job to stop
(`stop`) or what it is (`info`); the job polls its stop flag where the binaries poll SIGINT/SIGTERM.
"""

import os
import threading
import warnings
from typing import Any, Dict, Optional, Sequence

# Ray runs the calls of a job concurrently on this many threads: the job's own call, `stop`, `info`,
# `wait_started`.
MAX_CONCURRENCY = 4


class Job:
  """One job of a launched run (wrapped by `ray.remote` in the driver, `launch.driver`)."""

  def __init__(self, name: str, gin_files: Sequence[str], gin_bindings: Sequence[str]):
    import ray  # pylint: disable=g-import-not-at-top
    from protege.binaries import common  # pylint: disable=g-import-not-at-top
    self._name = name
    self._stop = threading.Event()
    self._started = threading.Event()
    with warnings.catch_warnings():  # Ray 2.55 deprecates an attribute this property reads, not the property
      warnings.simplefilter('ignore')
      self._restarted = ray.get_runtime_context().was_current_actor_reconstructed
    if self._restarted:
      print(f'{name}: restarted by Ray after its process died; carrying on.', flush=True)
    common.parse_gin(gin_files, gin_bindings)
    common.tensorflow_threads()

  def __repr__(self) -> str:
    return self._name  # Ray prefixes the job's console lines with it: "(actor_0 pid=...)"

  def info(self) -> Dict[str, Any]:
    import ray  # pylint: disable=g-import-not-at-top
    return {'name': self._name, 'pid': os.getpid(), 'node_ip': ray.util.get_node_ip_address(),
            'restarted': self._restarted}

  def stop(self) -> None:
    """Asks the job to end as on SIGTERM: the learner saves, an actor finishes its item, the server
    checkpoints its tables."""
    self._stop.set()

  def wait_started(self, timeout_seconds: float) -> bool:
    """True once the server serves (False after `timeout_seconds`)."""
    return self._started.wait(timeout_seconds)

  def run_server(self, port: int, checkpoint_dir: Optional[str], checkpoint_interval_seconds: float,
                 keep_checkpoints: int, items_per_learner_step: Optional[int]) -> Dict[str, Any]:
    from protege.agents.training import deployment  # pylint: disable=g-import-not-at-top
    deployment.run_server(port, self._stop, checkpoint_dir=checkpoint_dir,
                          checkpoint_interval_seconds=checkpoint_interval_seconds,
                          keep_checkpoints=keep_checkpoints, items_per_learner_step=items_per_learner_step,
                          on_started=lambda _: self._started.set(), checkpoint_dir_flag='--root_dir')
    return {'stopped': True}

  def run_actor(self, reverb_address: str, actor_id: int, root_dir: Optional[str],
                retry_seconds: float) -> Dict[str, Any]:
    from protege.agents.training import deployment  # pylint: disable=g-import-not-at-top
    return deployment.run_actor(reverb_address, actor_id, root_dir=root_dir, retry_seconds=retry_seconds,
                                stop_request=self._stop.is_set)

  def run_learner(self, root_dir: str, reverb_address: str, **devices) -> Optional[Dict[str, Any]]:
    from protege.agents.training import deployment  # pylint: disable=g-import-not-at-top
    return deployment.run_learner(root_dir, reverb_address, stop_request=self._stop.is_set,
                                  program='protege-launch learner', **devices)
