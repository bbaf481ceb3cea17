r"""Compares methods by their runs: train_main runs and pbt_main populations, on one learning-curve measure.

  python binaries/compare_runs_main.py --output_dir=runs/pbt_compare --target=22.09 \
      '--runs=constant λ = 1:runs/kick_constant_seed*' \
      '--runs=hand schedule:runs/kick_minatar/kickstarted_seed*' \
      '--population=PBT:runs/pbt_minatar_breakout'

A method is a label and its runs: `--runs=LABEL:GLOB` (train_main run directories) or
`--population=LABEL:DIR` (a pbt_main directory: each member is a run). Every run is measured the same way:

- the training curve: at every multiple of `--grid_env_steps`, the mean of the last `--window` training
  episode returns finished by then. For a train_main run they are read from its TensorBoard
  `env/episode_return`; for a population member they are the reports it made to the scheduler at each ready
  (`lineage.jsonl`: the same mean of its last 20 episodes, of the weights it had then; a member that copied
  a donor continues from the donor's weights). Set `--grid_env_steps` to the population's ready period.
- the final evaluation every run makes at its end (`summary.json`: `eval_return_mean`).
- with `--target`: the first grid point whose training-curve value reaches it.
- for kickstarted runs, each teacher's weight λ_k on the same grid: a train_main run's TensorBoard
  `learner/kickstart/lambda_<teacher>`; a member's `lambda_<teacher>` hyperparameter along its lineage (from
  each report on; after an exploit the explored value from the donor's step on). The table then gives every
  run's last λ_k and the figure a second panel of them: where PBT took λ, beside a hand schedule.

Written to `--output_dir`: `comparison.md` (a table per method, per run), `comparison.json`, and
`curves.png` (every run thin, each method's median thick).
"""

import glob
import json
import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.binaries import run_comparison
from protege.runtime import errors
from protege.runtime import run_directory

flags.DEFINE_multi_string('runs', [], 'LABEL:GLOB of train_main run directories (one method).')
flags.DEFINE_multi_string('population', [], 'LABEL:DIR of a pbt_main run (one method, its members the runs).')
flags.DEFINE_string('output_dir', None, 'Where comparison.md, comparison.json and curves.png go.')
flags.DEFINE_integer('grid_env_steps', 65536, 'Env steps between two points of the training curve (a '
                     'population\'s ready period).')
flags.DEFINE_integer('window', 20, 'Training episodes averaged at each point of a train_main run\'s curve (a '
                     'member reports the mean of its last 20).')
flags.DEFINE_float('target', None, 'A score; the table gives the env steps at which each curve reaches it.')
flags.DEFINE_string('title', None, 'Title of the plot.')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')
flags.mark_flags_as_required(['output_dir'])
FLAGS = flags.FLAGS


def _split(spec: str, flag: str):
  label, sep, path = spec.rpartition(':')
  if not sep or not label or not path:
    raise errors.ConfigError(f'--{flag}={spec!r} must be LABEL:PATH, '
                             f'e.g. --{flag}="constant λ:runs/const_seed*".')
  return label, path


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with common.one_line_errors('compare_runs_main', show_traceback=FLAGS.traceback):
    if not FLAGS.runs and not FLAGS.population:
      raise errors.ConfigError('nothing to compare: pass --runs=LABEL:GLOB and/or --population=LABEL:DIR.')
    if FLAGS.grid_env_steps <= 0 or FLAGS.window <= 0:
      raise errors.ConfigError(f'--grid_env_steps={FLAGS.grid_env_steps} and --window={FLAGS.window} must be '
                               '> 0.')
    specs = []
    for spec in FLAGS.runs:
      label, pattern = _split(spec, 'runs')
      directories = sorted(d for d in glob.glob(pattern) if os.path.isdir(d))
      if not directories:
        raise errors.ConfigError(f'--runs={spec!r}: no directory matches {pattern!r}.')
      specs.append((label, 'runs', directories))
    for spec in FLAGS.population:
      label, root = _split(spec, 'population')
      specs.append((label, 'population', root))
    loaded = [(label,
               [run_comparison.load_run(d) for d in where] if kind == 'runs'
               else run_comparison.load_population(where),
               FLAGS.window if kind == 'runs' else 1) for label, kind, where in specs]
    budget = max(record['env_steps'] or 0 for _, records, _ in loaded for record in records)
    grid = list(range(FLAGS.grid_env_steps, budget + 1, FLAGS.grid_env_steps))
    methods = {}
    for label, records, window in loaded:
      for record in records:
        run_comparison.add_curve(record, grid, window)
        if FLAGS.target is not None:
          record['reached'] = run_comparison.first_reaching(record['curve'], grid, FLAGS.target)
      methods[label] = records
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    table = run_comparison.report(methods, grid, FLAGS.target)
    with run_directory.atomic_file(os.path.join(FLAGS.output_dir, 'comparison.md')) as f:
      f.write(table + '\n')
    with run_directory.atomic_file(os.path.join(FLAGS.output_dir, 'comparison.json')) as f:
      json.dump({'grid_env_steps': grid, 'target': FLAGS.target, 'methods': methods}, f, indent=1)
    run_comparison.plot(os.path.join(FLAGS.output_dir, 'curves.png'), methods, grid, FLAGS.target,
                        FLAGS.title)
    print(table)
    print(f'Written to {FLAGS.output_dir}: comparison.md, comparison.json, curves.png.', flush=True)


def run():
  """The `protege-compare-runs` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
