"""The driver of `protege-launch`: places the run's jobs on Ray, watches them, ends the run.

    server        pinned to the node Ray first chose for it (a restarted server must come back on the
                  address the others know, with its checkpoints on its disk)
    learner       pinned likewise (its run directory, unless on a shared or gs:// file system)
    actor_0..N-1  anywhere Ray finds `launch.actor_cpus` free, restarted anywhere

The run ends when the learner has spent its budget (or met its stop rule): it publishes that training
finished, the actors exit, and the driver stops the server (which checkpoints its tables). A job whose
process dies more than `launch.max_restarts` times, or that fails with an error, ends the run: the driver
asks the others to stop (the learner saves), then reports the job and why. SIGINT/SIGTERM to the driver
does the same for every job, and the same command resumes the run from the learner's checkpoint.

Ray and Reverb do the work; what is written by hand here is the small supervision loop (which job to
start where and in which order, and what ends the run), which neither provides for this topology.
"""

import os
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

from protege.agents.training import deployment
from protege.launch import jobs as jobs_lib
from protege.launch import network
from protege.runtime import errors

# How long the started jobs may take to end once asked (the learner's final save, an actor's last item).
STOP_SECONDS = 120.0
# How long the server may take to start serving (a restart includes TensorFlow's import and a restore).
SERVER_START_SECONDS = 300.0
REPORT_EVERY_SECONDS = 30.0
# Ray's log monitor forwards the jobs' lines to the driver by polling their log files (and pauses up to ~1 s
# between polls); the driver waits this long before it ends the jobs' processes.
LOG_DRAIN_SECONDS = 3.0


def _ray():
  import ray  # pylint: disable=g-import-not-at-top  (after `binaries.common.secure_local_ray`)
  return ray


def start_ray(ray_address: Optional[str], num_cpus: float, env_vars: Dict[str, str]) -> None:
  """Connects to the cluster at `ray_address`, or starts a local one with `num_cpus` CPUs."""
  args = dict(include_dashboard=False, log_to_driver=True, runtime_env={'env_vars': env_vars})
  if ray_address:
    args['address'] = ray_address
  else:
    args['num_cpus'] = num_cpus
  _ray().init(**args)


def _placed(options: Dict[str, Any], node_id: Optional[str]) -> Dict[str, Any]:
  if node_id is None:
    return options
  from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # pylint: disable=g-import-not-at-top
  return dict(options, scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False))


def _get(ref, what: str):
  """`ray.get(ref)`, saying every 30 s that it waits (a job Ray cannot place yet: resources busy)."""
  ray = _ray()
  start = time.time()
  while True:
    ready, _ = ray.wait([ref], timeout=REPORT_EVERY_SECONDS)
    if ready:
      return ray.get(ref)
    print(f'protege-launch: waiting for Ray to place {what} ({time.time() - start:.0f} s so far; is a node '
          'with the resources it asks for free? `ray status` shows them).', flush=True)


class Launch:
  """The jobs of one launched run and the loop that watches them."""

  def __init__(self, root_dir: str, gin_files: Sequence[str], gin_bindings: Sequence[str], num_actors: int,
               local: bool, devices: Dict[str, Any], reverb_port: int = 0, reverb_behind_firewall: bool = False,
               server_checkpoint_interval_seconds: float = 60.0, actor_retry_seconds: float = 120.0):
    self.root_dir = root_dir
    self.gin_files, self.gin_bindings = list(gin_files), list(gin_bindings)
    self.num_actors = num_actors
    self.local = local
    self.devices = devices
    self.reverb_port = reverb_port
    self.reverb_behind_firewall = reverb_behind_firewall
    self.server_checkpoint_interval_seconds = server_checkpoint_interval_seconds
    self.actor_retry_seconds = actor_retry_seconds
    self.resources = deployment.launch_resources()
    self.jobs: Dict[str, Any] = {}      # name -> the Ray actor handle
    self.runs: Dict[str, Any] = {}      # name -> the ObjectRef of its run_* call
    self.address: Optional[str] = None

  # --- placement ---------------------------------------------------------------------------------------

  def _job(self, name: str, node_id: Optional[str], **resources):
    ray = _ray()
    limit = self.resources.max_restarts
    options = _placed(dict(resources, max_restarts=limit, max_task_retries=limit,
                           max_concurrency=jobs_lib.MAX_CONCURRENCY), node_id)
    job = ray.remote(jobs_lib.Job).options(**options).remote(name, self.gin_files, self.gin_bindings)
    self.jobs[name] = job
    return job

  def _learner_resources(self) -> Dict[str, Any]:
    resources: Dict[str, Any] = {'num_cpus': self.resources.learner_cpus}
    if self.devices.get('use_gpu'):
      resources['num_gpus'] = self.resources.learner_gpus
    if self.devices.get('tpu') and self.resources.learner_tpu_chips:
      resources['resources'] = {'TPU': self.resources.learner_tpu_chips}
    return resources

  def _check_local_resources(self) -> None:
    """On a local instance (nothing joins it later), a learner that asks for a device the machine lacks would
    wait for it without end: ConfigError instead."""
    ray = _ray()
    total = ray.cluster_resources()
    learner = self._learner_resources()
    wanted = {'GPU': learner.get('num_gpus', 0), **learner.get('resources', {})}
    for name, amount in wanted.items():
      if amount and total.get(name, 0) < amount:
        flag = '--use_gpu' if name == 'GPU' else '--tpu'
        raise errors.ConfigError(f'the learner asks Ray for {amount:g} {name} ({flag}), and this machine\'s '
                                 f'local Ray instance has {total.get(name, 0):g}: leave out {flag}, lower '
                                 f'launch.learner_{"gpus" if name == "GPU" else "tpu_chips"}, or pass the '
                                 '--ray_address of a cluster that has them.')

  def start(self) -> None:
    """Places the server, waits until it serves, then places the learner and the actors."""
    ray = _ray()
    if self.local:
      self._check_local_resources()
    describe = ray.remote(network.describe_node)
    node = _get(describe.options(num_cpus=self.resources.server_cpus).remote(self.reverb_port),
                f'the Reverb server ({self.resources.server_cpus} CPU)')
    host = '127.0.0.1' if self.local else node['node_ip']
    network.check_reverb_exposure(host, node['port'], node['addresses'], self.reverb_behind_firewall)
    self.address = f'{host}:{node["port"]}'
    server = self._job('server', node['node_id'], num_cpus=self.resources.server_cpus)
    self.runs['server'] = server.run_server.remote(
        node['port'], os.path.join(self.root_dir, 'reverb_checkpoints'), self.server_checkpoint_interval_seconds,
        2, None)
    started = server.wait_started.remote(SERVER_START_SECONDS)
    ready, _ = ray.wait([started, self.runs['server']], num_returns=1, timeout=SERVER_START_SECONDS + 30)
    if self.runs['server'] in ready:
      try:
        ray.get(self.runs['server'])
      except Exception as error:  # pylint: disable=broad-except  (reported as one line)
        raise self._failure('server', error) from None
    if not ready or not ray.get(started):
      raise errors.UnreachableError(f'the Reverb server did not start serving within {SERVER_START_SECONDS:.0f} '
                                    's; its console lines above (prefixed "(server") say why.')
    print(f'protege-launch: Reverb server serving on {self.address} (node {node["node_ip"]}).', flush=True)

    learner_node = _get(describe.options(**self._learner_resources()).remote(),
                        f'the learner ({self._learner_resources()})')
    learner = self._job('learner', learner_node['node_id'], **self._learner_resources())
    self.runs['learner'] = learner.run_learner.remote(self.root_dir, self.address, **self.devices)
    for i in range(self.num_actors):
      actor = self._job(f'actor_{i}', None, num_cpus=self.resources.actor_cpus)
      self.runs[f'actor_{i}'] = actor.run_actor.remote(self.address, i, self.root_dir, self.actor_retry_seconds)
    for name, job in self.jobs.items():
      info = _get(job.info.remote(), name)
      print(f'protege-launch: {name} runs as pid {info["pid"]} on {info["node_ip"]}.', flush=True)

  # --- supervision -------------------------------------------------------------------------------------

  def _failure(self, name: str, error: BaseException) -> errors.UserError:
    """The one-line error that ends the run when job `name` failed with `error` (a user's error, or its
    restarts spent); any other error is re-raised with the job's traceback."""
    from protege.binaries import common  # pylint: disable=g-import-not-at-top
    ray = _ray()
    if isinstance(error, ray.exceptions.RayActorError):
      return errors.JobError(f'{name} died and Ray restarted it launch.max_restarts={self.resources.max_restarts} '
                             f'times already: the run stops. Its console lines above (prefixed "({name}") '
                             'say why; the same command resumes the run from the learner\'s checkpoint.')
    cause = getattr(error, 'cause', None) or error
    line = common.user_error_line(cause)
    if line is None:
      raise error  # a bug: Ray's error carries the job's traceback
    return errors.JobError(f'{name} failed: {line}')

  def watch(self, stop_requested: Callable[[], bool]) -> Optional[Dict[str, Any]]:
    """Waits for the learner's end; returns its summary (None: stopped on request). Stops the run and raises
    JobError when a job fails or its restarts are spent."""
    ray = _ray()
    names = {ref: name for name, ref in self.runs.items()}
    pending = list(names)
    summary = None
    while pending:
      if stop_requested():
        self.stop_all()
        return None
      ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
      for ref in ready:
        name = names[ref]
        try:
          result = ray.get(ref)
        except Exception as error:  # pylint: disable=broad-except  (reported as one line)
          self.stop_all(failed=name)
          raise self._failure(name, error) from None
        if name == 'learner':
          summary = result
          if summary is None:  # stopped on request
            self.stop_all()
            return None
          self._end_run()
          return summary
        if name == 'server' or not result.get('learner_finished'):
          self.stop_all(failed=name)
          raise errors.JobError(f'{name} ended before the learner finished: {result}.')
    return summary

  def _end_run(self) -> None:
    """After the learner's end: the actors exit by themselves (the learner published that it finished),
    then the server checkpoints and stops."""
    ray = _ray()
    actor_runs = [ref for name, ref in self.runs.items() if name.startswith('actor_')]
    done, late = ray.wait(actor_runs, num_returns=len(actor_runs), timeout=STOP_SECONDS)
    for ref in done:
      try:
        ray.get(ref)
      except Exception as error:  # pylint: disable=broad-except  (the learner's work is saved already)
        print(f'protege-launch: an actor ended with {type(error).__name__} after the learner finished.', flush=True)
    if late:
      print(f'protege-launch: {len(late)} actor(s) did not exit within {STOP_SECONDS:.0f} s of the learner\'s '
            'end; stopping them.', flush=True)
    self.stop_all()

  def stop_all(self, failed: Optional[str] = None) -> None:
    """Asks every job still running to stop, in order, waiting up to STOP_SECONDS for each group: the
    learner (it saves), then the actors (each finishes its item), then the server (it checkpoints)."""
    ray = _ray()
    groups = (['learner'], [name for name in self.jobs if name.startswith('actor_')], ['server'])
    for group in groups:
      names = [name for name in group if name in self.jobs and name != failed]
      for name in names:
        self.jobs[name].stop.remote()
      refs = [self.runs[name] for name in names if name in self.runs]
      if refs:
        ray.wait(refs, num_returns=len(refs), timeout=STOP_SECONDS)

  def shutdown(self) -> None:
    """Ends every job's process. First waits LOG_DRAIN_SECONDS: Ray forwards the jobs' console lines from
    their log files by polling, and their last lines (the learner's "saved ...") would otherwise be lost."""
    ray = _ray()
    time.sleep(LOG_DRAIN_SECONDS)
    for job in self.jobs.values():
      ray.kill(job, no_restart=True)
    self.jobs.clear()

  def restarted_jobs(self) -> List[str]:
    ray = _ray()
    restarted = []
    for name, job in self.jobs.items():
      try:
        if ray.get(job.info.remote(), timeout=30)['restarted']:
          restarted.append(name)
      except Exception:  # pylint: disable=broad-except  (an ended job: nothing to report)
        pass
    return restarted


def shutdown_ray() -> None:
  """Disconnects from the cluster (and stops the local Ray instance this process started)."""
  ray = _ray()
  if ray.is_initialized():
    ray.shutdown()
