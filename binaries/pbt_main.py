r"""Population based training of Protégé learners on Ray Tune.

  python binaries/train_main.py --gin_file=gin/quickstart.gin --root_dir=/tmp/pbt_teacher   # a teacher
  python binaries/pbt_main.py --gin_file=gin/pbt_kickstart_cartpole.gin --population=4 \
      --gin_bindings="TeacherSet.paths = ['/tmp/pbt_teacher/policy']" --root_dir=runs/pbt_cartpole

Each member is a learner as `train_main` runs it (`pbt.member.Member`, a Ray Tune Trainable around
`agents.training.trainer.Trainer`); `pbt.scheduler.PBTScheduler` (Ray Tune's PBT, extended) copies and perturbs them.
Without `--ray_address` a local Ray cluster starts in this process with `--num_cpus`; with the address of a
running cluster (`ray start --head` and `ray start --address=...` on each machine, this repository installed
on each, `--root_dir` on storage every node sees) the same command spreads the members over its machines.

Flags carry run mechanics (where, how many, which resources); the algorithm — the learner, the search space
(`search_space.*`), the ready period and the selection rule (`PBTScheduler.*`) — is in gin. Written to
`--root_dir`:

  lineage.jsonl     every report, comparison, exploit, explore and failure (pbt.lineage)
  lineage.png       each member's hyperparameters and score against env steps
  population.json   per member: final evaluation, env steps, hyperparameters; and the run's settings
  members/member_<i>/   the member's Trainer directory (summaries/, policy/, summary.json, events.jsonl)
  population/       Ray Tune's experiment: trial results, logs and checkpoints
"""

import os
import sys
import time

# Before TensorFlow is imported: keep its C++ start-up chatter (oneDNN notices) off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.runtime import config
from protege.runtime import errors
from protege.runtime import run_directory

flags.DEFINE_multi_string('gin_file', [], 'Gin file(s) of the members and of PBT (search_space, '
                          'PBTScheduler).')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, e.g. "PBTScheduler.ready_env_steps = '
                          '4096".')
flags.DEFINE_string('root_dir', None, 'Population directory (see the module docstring); must not hold one '
                    'yet.')
flags.DEFINE_integer('population', 4, 'Number of members.')
flags.DEFINE_string('ray_address', None, 'Address of a running Ray cluster (e.g. "10.0.0.1:6379", "auto"); '
                    'default: start a local one.')
flags.DEFINE_float('num_cpus', 0, 'CPUs of the local Ray cluster (0: all); ignored with --ray_address.')
flags.DEFINE_float('cpus_per_member', 1.0, 'CPUs Ray reserves per member (e.g. 0.5 fits 4 members on 2 '
                   'cores).')
flags.DEFINE_integer('threads_per_member', 1, 'TensorFlow and OpenMP threads per member (0: library '
                     'default).')
flags.DEFINE_integer('max_failures', 3, 'Restarts of a member that crashes (from its last checkpoint).')
flags.DEFINE_integer('checkpoints_to_keep', 0, 'Ray checkpoints kept per member (0: all; a donor\'s '
                     'checkpoint must outlive the exploits that copy it).')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')
flags.mark_flag_as_required('root_dir')
FLAGS = flags.FLAGS

EXPERIMENT = 'population'


def resolve_gin_files(paths):
  """Absolute paths (members run in other working directories): as given, else in the repository's gin/."""
  return [config.resolve_gin_file(path) for path in paths]


def check_configuration(space, teacher_names) -> None:
  """What would make every member fail in its own process, found here first (one line each)."""
  from protege.agents.distillation import kickstarting  # pylint: disable=g-import-not-at-top
  from protege.agents.distillation import teacher_loading  # pylint: disable=g-import-not-at-top
  from protege.agents.training import settings  # pylint: disable=g-import-not-at-top
  from protege.runtime.config import bound  # pylint: disable=g-import-not-at-top

  # The members' train.* settings (budget, intervals), checked as each member's Trainer would check them.
  settings.train_settings()

  if kickstarting.kickstarter_configured():
    if not teacher_names:
      raise errors.ConfigError('The learner kickstarts (kickstarter_fn = @Kickstarter) but TeacherSet.paths is '
                               'empty: pass the teachers\' policy directories, e.g. --gin_bindings="TeacherSet.paths = '
                               '[\'/tmp/pbt_teacher/policy\']".')
    paths = bound('TeacherSet.paths', ())
    for path in [paths] if isinstance(paths, str) else list(paths or ()):
      if not os.path.exists(path):
        raise errors.PolicyLoadError(f'teacher {path!r} (TeacherSet.paths) does not exist, seen from '
                                     f'{os.getcwd()} (members resolve relative paths from the directory '
                                     'pbt_main runs in): train or export the teacher first, or pass its '
                                     'absolute path.')
      teacher_loading.teacher_kind(path)  # one that holds no policy is refused here too
  moves_lambda = any(name.startswith('lambda_') for name in space)
  if moves_lambda and bound('TeacherWeights.mode', 'schedule') != 'pbt':
    raise errors.ConfigError("The search space moves the teachers' λ but TeacherWeights.mode is not 'pbt' "
                             "(its schedule would overwrite them): set TeacherWeights.mode = 'pbt', or "
                             'search_space.teacher_weight = None.')


def run_population(root_dir, gin_files, gin_bindings, population, ray_address=None, num_cpus=0,
                   cpus_per_member=1.0, threads_per_member=1, max_failures=3, checkpoints_to_keep=0):
  """Runs the population with gin already parsed in this process; returns the summary (population.json)."""
  import ray  # pylint: disable=g-import-not-at-top
  from ray import tune  # pylint: disable=g-import-not-at-top

  from protege.launch import network  # pylint: disable=g-import-not-at-top
  from protege.pbt import lineage as lineage_lib  # pylint: disable=g-import-not-at-top
  from protege.pbt import member as member_lib  # pylint: disable=g-import-not-at-top
  from protege.pbt import scheduler as scheduler_lib  # pylint: disable=g-import-not-at-top

  if population < 2:
    raise errors.ConfigError(f'--population={population}: PBT needs at least 2 members.')
  config.check_number('--num_cpus', num_cpus, 0, inclusive=True, meaning='0: all')
  config.check_number('--cpus_per_member', cpus_per_member, 0)
  for flag, value in (('--threads_per_member', threads_per_member), ('--max_failures', max_failures),
                      ('--checkpoints_to_keep', checkpoints_to_keep)):
    config.check_number(flag, value, 0, inclusive=True, integer=True)
  teacher_names, factorised = member_lib.kickstart_layout()
  space = scheduler_lib.search_space(teacher_names=teacher_names, factorised=factorised)
  check_configuration(space, teacher_names)
  lineage = lineage_lib.LineageLog(os.path.join(root_dir, 'lineage.jsonl'))
  scheduler = scheduler_lib.PBTScheduler(space=space, lineage=lineage)
  settings = member_lib.member_settings(0, root_dir, gin_files, gin_bindings, scheduler.ready_env_steps,
                                        threads_per_member)
  settings['index'] = tune.grid_search(list(range(population)))
  print(f'PBT: {population} members, ready every {scheduler.ready_env_steps:,} env steps, '
        f'{scheduler.selection} selection; searching {dict((k, tuple(v)) for k, v in space.items())}',
        flush=True)

  threads = str(threads_per_member) if threads_per_member else None
  # Members save and end their process on SIGINT/SIGTERM (pbt.member).
  env_vars = {'TF_CPP_MIN_LOG_LEVEL': os.environ.get('TF_CPP_MIN_LOG_LEVEL', '1'), member_lib.SIGNALS_ENV_VAR: '1'}
  if threads:
    env_vars.update(OMP_NUM_THREADS=threads, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
  if os.environ.get(member_lib.KILL_ENV_VAR):
    env_vars[member_lib.KILL_ENV_VAR] = os.environ[member_lib.KILL_ENV_VAR]  # a test's fault injection
  init_args = dict(include_dashboard=False, runtime_env={'env_vars': env_vars}, log_to_driver=False)
  if ray_address:
    network.check_reachable(ray_address)  # Ray would wait for an absent cluster without end
    init_args['address'] = ray_address
  elif num_cpus:
    init_args['num_cpus'] = num_cpus
  ray.init(**init_args)
  try:
    tuner = tune.Tuner(
        tune.with_resources(member_lib.Member, {'cpu': cpus_per_member}),
        param_space={scheduler_lib.MEMBER_KEY: settings},
        tune_config=tune.TuneConfig(
            scheduler=scheduler, search_alg=scheduler_lib.PopulationSearch(scheduler),
            reuse_actors=True, num_samples=1,
            trial_dirname_creator=lambda trial: scheduler_lib.member_name(trial),
            trial_name_creator=lambda trial: scheduler_lib.member_name(trial)),
        run_config=tune.RunConfig(
            name=EXPERIMENT, storage_path=root_dir, log_to_file=True, verbose=1,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            # Every member that does not copy another saves when it is ready (PBTScheduler): the
            # checkpoints donors give and crashed members restart from.
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoints_to_keep or None)))
    grid = tuner.fit()
  finally:
    ray.shutdown()

  members, failed = [], []
  for result in grid:
    name = scheduler_lib.member_name(result)  # a Result has .config like a Trial
    metrics = result.metrics or {}
    members.append({'member': name, 'env_steps': metrics.get('env_steps'),
                    'eval_return_mean': metrics.get('eval_return_mean'),
                    'eval_return_std': metrics.get('eval_return_std'),
                    'episode_return_mean': metrics.get('episode_return_mean'),
                    'hyperparameters': scheduler_lib.hyperparameters_of(result.config, space),
                    'error': None if result.error is None else str(result.error).strip().splitlines()[-1]})
    if result.error is not None:
      failed.append(name)
  members.sort(key=lambda m: int(m['member'].rpartition('_')[2]))
  # Stopped (Ctrl-C) before every member finished: Ray's last results are then not each member's own, so
  # each member's row is what its own event log says it reached and saved.
  interrupted = any(not (result.metrics or {}).get('done') and result.error is None for result in grid)
  if interrupted:
    members = [stopped_member(root_dir, f'member_{index}') for index in range(population)]
  events = lineage.events()
  summary = {
      'population': population, 'gin_files': gin_files, 'gin_bindings': gin_bindings,
      'ready_env_steps': scheduler.ready_env_steps, 'selection': scheduler.selection,
      'search_space': {k: list(v) for k, v in space.items()},
      'exploits': sum(1 for e in events if e['event'] == 'exploit'),
      'member_failures': sum(1 for e in events if e['event'] == 'error'),
      'members': members, 'failed': failed, 'interrupted': interrupted,
  }
  return summary


def stopped_member(root_dir, name):
  """A member of a population stopped before it finished: the env steps of its last event and its newest
  checkpoint in its own directory (saved when it was stopped)."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from protege.pbt import lineage as lineage_lib  # pylint: disable=g-import-not-at-top
  member_dir = os.path.join(root_dir, 'members', name)
  events = lineage_lib.read_events(os.path.join(member_dir, 'events.jsonl'))
  steps = [e['env_steps'] for e in events if e.get('env_steps') is not None]
  return {'member': name, 'env_steps': steps[-1] if steps else None, 'eval_return_mean': None,
          'eval_return_std': None, 'episode_return_mean': None, 'hyperparameters': {},
          'checkpoint': tf.train.latest_checkpoint(os.path.join(member_dir, 'checkpoints')), 'error': None}


def format_summary(summary) -> str:
  lines = ['| member | env steps | final eval return | recent train return | hyperparameters |',
           '|---|---|---|---|---|']
  for m in summary['members']:
    hypers = ', '.join(f'{k}={v:.3g}' for k, v in m['hyperparameters'].items())
    evaluation = ('—' if m['eval_return_mean'] is None
                  else f'{m["eval_return_mean"]:.1f} ± {m["eval_return_std"]:.1f}')
    recent = m['episode_return_mean']
    recent = '—' if recent is None or recent != recent else f'{recent:.1f}'
    steps = '—' if m['env_steps'] is None else f'{m["env_steps"]:,}'
    lines.append(f'| {m["member"]} | {steps} | {evaluation} | {recent} | {hypers} |'
                 + (f' failed: {m["error"]}' if m['error'] else ''))
  lines.append(f'\n{summary["exploits"]} exploits, {summary["member_failures"]} member failures (restarted).')
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if not FLAGS.ray_address:
    common.secure_local_ray()
  with common.one_line_errors('pbt_main', show_traceback=FLAGS.traceback):
    from protege.pbt import lineage as lineage_lib  # pylint: disable=g-import-not-at-top
    # Registers search_space and PBTScheduler with gin before the files are parsed.
    from protege.pbt import scheduler  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    start = time.time()
    root_dir = os.path.abspath(FLAGS.root_dir)
    if os.path.exists(os.path.join(root_dir, EXPERIMENT)):
      raise errors.RunDirectoryError(f'--root_dir={FLAGS.root_dir} already holds a population '
                                     f'({EXPERIMENT}/); pass a new --root_dir.')
    gin_files = resolve_gin_files(FLAGS.gin_file)
    common.parse_gin(gin_files, FLAGS.gin_bindings)  # fails here, before Ray starts, on a bad configuration
    summary = run_population(root_dir, gin_files, list(FLAGS.gin_bindings), FLAGS.population,
                             ray_address=FLAGS.ray_address, num_cpus=FLAGS.num_cpus,
                             cpus_per_member=FLAGS.cpus_per_member,
                             threads_per_member=FLAGS.threads_per_member, max_failures=FLAGS.max_failures,
                             checkpoints_to_keep=FLAGS.checkpoints_to_keep)
    summary['wall_seconds'] = time.time() - start
    events = lineage_lib.read_events(os.path.join(root_dir, 'lineage.jsonl'))
    lineage_lib.plot_lineage(events, os.path.join(root_dir, 'lineage.png'))
    run_directory.write_json(os.path.join(root_dir, 'population.json'), summary)
    if summary['interrupted']:
      for member in summary['members']:
        print(f"{member['member']}: {member['env_steps'] or 0:,} env steps; saved {member['checkpoint']}")
      print(f'pbt_main: stopped before the population finished ({summary["wall_seconds"] / 60:.1f} min); each '
            f'member saved its state in {root_dir}/members/. A stopped population cannot be resumed yet: '
            'start it again with a new --root_dir.', flush=True)
      sys.exit(130)
    print(format_summary(summary))
    print(f'Done in {summary["wall_seconds"] / 60:.1f} min. Results in {root_dir} (population.json, '
          f'lineage.jsonl, lineage.png, members/).', flush=True)
    if summary['failed']:
      raise RuntimeError(f'members {summary["failed"]} ended with an error Ray did not recover from '
                         f'(--max_failures={FLAGS.max_failures}); see the error column above and '
                         f'{os.path.join(root_dir, EXPERIMENT)}.')


def run():
  """The `protege-pbt` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
