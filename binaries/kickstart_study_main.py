r"""Kickstarting against learning from scratch: a teacher, then kickstarted and from-scratch students.

  python binaries/kickstart_study_main.py --root_dir=runs/kickstart_study         # MinAtar Breakout
  python binaries/kickstart_study_main.py --root_dir=runs/kickstart_study \
      --teacher_policy=runs/minatar_breakout/policy --teacher_eval_episodes=256 --seeds=2
  python binaries/kickstart_study_main.py --root_dir=/tmp/k --teacher_gin_file=quickstart.gin \
      --student_gin_file=kickstart_cartpole.gin --seeds=2
  python binaries/kickstart_study_main.py --root_dir=/tmp/kick_dqn --student_gin_file=kickstart_cartpole.gin \
      --teacher_policy=runs/dqn_cartpole/policy        # a DQN teacher (binaries/train_dqn_teacher_main.py)

1. The teacher: `--teacher_gin_file` trained by `binaries/train_main.py` into `<root_dir>/teacher` (or
   `--teacher_policy`, a policy exported by an earlier run of train_main or of train_dqn_teacher_main, which
   both write their score in a summary.json beside it). Its score is its final evaluation's mean
   return, or, with `--teacher_eval_episodes=N`, the mean of N fresh episodes played by
   `binaries/eval_main.py` (a training run's final evaluation is short: 16 MinAtar episodes leave a
   standard error of about 2 on the target every student is measured against). A DQN teacher's summary.json
   already holds `final_eval_episodes` fresh greedy episodes of its export; `--teacher_eval_episodes` needs a
   train_main run's operative_config.gin.
2. The students: `--student_gin_file` (a configuration that kickstarts: `PPOLearner.kickstarter_fn =
   @Kickstarter` or `IMPALALearner.kickstarter_fn = @Kickstarter`, the student's network, the λ schedule),
   run per seed twice with the same budget — kickstarted (`TeacherSet.paths = [<teacher policy>]`) and from
   scratch (the learner's `kickstarter_fn = None`, nothing else changed; `--scratch_gin_bindings` may give the scratch students a longer budget
   when they do not reach the teacher within the kickstarted one).
3. The report (`binaries/kickstart_report.py`): per method, the env steps at which each seed first holds the
   teacher's score (times `--reach_fraction`) for `--reach_evaluations` consecutive evaluations, their
   median, the final returns (per seed with their standard errors; mean ± std over seeds) beside the
   teacher's, and the ratio scratch / kickstarted — printed as a success only when the kickstarted
   students also end at or above the target and their scratch twins; the learning curves (evaluation
   return against env steps) as `curves.png`.

Every run is its own process (`--parallel_runs` of them at once); finished runs in `root_dir` are read back,
not rerun. Written to `<root_dir>/study.md`, `study.json` and `curves.png`.
"""

from concurrent import futures
import json
import os
import subprocess
import sys
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.binaries import kickstart_report
from protege.runtime import errors
from protege.runtime import run_directory
from protege.runtime import plotting

flags.DEFINE_string('root_dir', None, 'Study directory: the teacher and one run directory per method and seed.')
flags.DEFINE_multi_string('teacher_gin_file', ['ppo_minatar_breakout.gin'], 'Gin file(s) of the teacher.')
flags.DEFINE_multi_string('teacher_gin_bindings', [], 'Extra gin bindings for the teacher.')
flags.DEFINE_string('teacher_policy', None, 'A policy directory to use as the teacher instead of training one; '
                    'its score is read from the summary.json beside it.')
flags.DEFINE_integer('teacher_eval_episodes', 0, 'If > 0, the teacher\'s score is the mean return of this many '
                     'fresh episodes (binaries/eval_main.py, written to <root_dir>/teacher_eval.json) instead of '
                     'its run\'s final evaluation.')
flags.DEFINE_bool('teacher_eval_greedy', False, 'With --teacher_eval_episodes: act with the argmax (True) or '
                  'sample (False, as the shipped MinAtar configurations evaluate their students).')
flags.DEFINE_multi_string('student_gin_file', ['kickstart_minatar_breakout.gin'],
                          'Gin file(s) of the students (kickstarting configured; scratch runs switch it off).')
flags.DEFINE_multi_string('student_gin_bindings', [], 'Extra gin bindings for both students.')
flags.DEFINE_multi_string('scratch_gin_bindings', [], 'Extra gin bindings for the from-scratch students only, '
                          'e.g. a longer train.total_env_steps, to measure when they reach the teacher beyond '
                          'the kickstarted students\' budget (the table then names both budgets).')
flags.DEFINE_integer('seeds', 3, 'Seeds per student (0 .. seeds-1).')
flags.DEFINE_float('reach_fraction', 1.0, 'A student reaches the teacher at an evaluation return of at '
                   'least this fraction of the teacher\'s score.')
flags.DEFINE_integer('parallel_runs', 1, 'Student runs trained at once, each its own process. Results are counted '
                     'in agent steps, so the synchronous learners learn the same at any setting; the runs share '
                     'the machine\'s cores (on 2 cores, 2 runs take about as long together as one after the '
                     'other).')
flags.DEFINE_integer('reach_evaluations', 3, 'Consecutive evaluations that must all reach the target for a '
                     'student to count as reaching the teacher (the first of them is the step reported).')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')
flags.mark_flag_as_required('root_dir')
FLAGS = flags.FLAGS

METHODS = ('kickstarted', 'scratch')
EVAL_MAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'eval_main.py')


def train_teacher(root_dir: str):
  """Returns (policy directory, run summary) of the teacher, training it unless `--teacher_policy` is given."""
  if FLAGS.teacher_policy:
    summary_path = os.path.join(os.path.dirname(os.path.abspath(FLAGS.teacher_policy)), 'summary.json')
    if not os.path.exists(summary_path):
      raise errors.PolicyLoadError(f'--teacher_policy={FLAGS.teacher_policy}: no summary.json beside it to '
                                   'read the teacher\'s score from; pass the policy/ directory of a '
                                   'train_main or train_dqn_teacher_main run.')
    with open(summary_path) as f:
      return FLAGS.teacher_policy, json.load(f)
  run_dir = os.path.join(root_dir, 'teacher')
  summary = common.run_train_main(run_dir, FLAGS.teacher_gin_file, FLAGS.teacher_gin_bindings, 'the teacher')
  return os.path.join(run_dir, 'policy'), summary


def evaluate_teacher(root_dir: str, teacher_policy: str) -> dict:
  """`--teacher_eval_episodes` fresh episodes of the teacher (read back if `teacher_eval.json` exists)."""
  path = os.path.join(root_dir, 'teacher_eval.json')
  if not os.path.exists(path):
    run_dir = os.path.dirname(os.path.abspath(teacher_policy))
    operative_config = os.path.join(run_dir, 'operative_config.gin')
    if not os.path.exists(operative_config):
      raise errors.PolicyLoadError(f'--teacher_eval_episodes needs the teacher run\'s environment: no '
                                   f'{operative_config}; pass the policy/ directory of a train_main run.')
    command = [sys.executable, EVAL_MAIN, f'--gin_file={operative_config}', f'--policy_dir={teacher_policy}',
               f'--num_episodes={FLAGS.teacher_eval_episodes}', f'--greedy={FLAGS.teacher_eval_greedy}',
               f'--output_json={path}']
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
      raise RuntimeError(f'evaluating the teacher failed (exit {result.returncode}): '
                         f'{(result.stderr or result.stdout).strip().splitlines()[-1:]}')
  with open(path) as f:
    return json.load(f)


def run_student(method: str, seed: int, root_dir: str, teacher_policy: str) -> dict:
  if method == 'kickstarted':
    extra = [f"TeacherSet.paths = ['{teacher_policy}']"]
  else:
    # Whichever learner the student's gin file kickstarts (both are registered with gin by agents.training.trainer).
    extra = ['PPOLearner.kickstarter_fn = None', 'IMPALALearner.kickstarter_fn = None'] + list(
        FLAGS.scratch_gin_bindings)
  bindings = list(FLAGS.student_gin_bindings) + extra + [f'train.seed = {seed}']
  return common.run_train_main(os.path.join(root_dir, f'{method}_seed{seed}'), FLAGS.student_gin_file,
                               bindings, f'{method} student seed {seed}')


def plot(path: str, runs: dict, teacher_score: float, score_source: str = 'final evaluation') -> None:
  """The learning curves (evaluation return against env steps), one line per student seed, and the teacher."""
  with plotting.figure(path, figsize=(7, 4.5), dpi=110) as (_, axes):
    for method, color in zip(METHODS, ('tab:red', 'tab:blue')):
      plotting.run_lines(axes, [([e['env_steps'] for e in summary['evaluations']],
                                 [e['return_mean'] for e in summary['evaluations']]) for summary in runs[method]],
                         color, label=f'{method} student', alpha=0.8, linewidth=1.2)
    plotting.target_line(axes, teacher_score, label=f'teacher ({score_source})')
    axes.set_xlabel('env steps (agent steps)')
    axes.set_ylabel('evaluation return (mean)')
    axes.set_title('Kickstarted vs from-scratch students (one line per seed)')
    axes.legend()


def main(argv):
  with common.one_line_errors('kickstart_study_main', show_traceback=FLAGS.traceback):
    run_study(argv)


def run_study(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if FLAGS.parallel_runs < 1:
    raise app.UsageError(f'--parallel_runs={FLAGS.parallel_runs}: give 1 or more runs at once.')
  root_dir = FLAGS.root_dir
  os.makedirs(root_dir, exist_ok=True)
  start = time.time()
  print('Teacher...', flush=True)
  teacher_policy, teacher_summary = train_teacher(root_dir)
  teacher_score, teacher_standard_error = kickstart_report.final_return(teacher_summary)
  teacher_eval = None
  if FLAGS.teacher_eval_episodes > 0:
    teacher_eval = evaluate_teacher(root_dir, teacher_policy)
    print(f'Teacher: final training evaluation {teacher_score:.1f}; {teacher_eval["episodes"]} fresh episodes '
          f'{teacher_eval["return_mean"]:.2f} ± {teacher_eval["return_std"]:.2f} (the score used)', flush=True)
    teacher_score, teacher_standard_error = kickstart_report.final_return(
        {'eval_return_mean': teacher_eval['return_mean'], 'eval_return_std': teacher_eval['return_std'],
         'eval_episodes': teacher_eval['episodes']})
  target = FLAGS.reach_fraction * teacher_score
  print(f'Teacher: {teacher_policy}, score {teacher_score:.1f} ({time.time() - start:.0f} s)', flush=True)
  jobs = [(method, seed) for seed in range(FLAGS.seeds) for method in METHODS]
  summaries, students_start = {}, time.time()
  with futures.ThreadPoolExecutor(max_workers=FLAGS.parallel_runs) as pool:
    pending = {pool.submit(run_student, method, seed, root_dir, teacher_policy): (method, seed)
               for method, seed in jobs}
    for future in futures.as_completed(pending):
      method, seed = pending[future]
      if future.exception() is not None:
        pool.shutdown(wait=True, cancel_futures=True)   # the runs under way finish; none is started
        raise future.exception()
      summary = summaries[method, seed] = future.result()
      done = len(summaries)
      reached = kickstart_report.steps_to_reach(summary['evaluations'], target, FLAGS.reach_evaluations)
      elapsed = time.time() - students_start
      print(f'[{done}/{len(jobs)}] {method} seed {seed}: '
            + (f'reached {target:.1f} at {reached:,} env steps ({FLAGS.reach_evaluations} evaluations in a row)'
               if reached is not None
               else f'did not reach {target:.1f} in {summary["env_steps"]:,} env steps')
            + f', final {summary["eval_return_mean"]:.1f}; ETA {elapsed / done * (len(jobs) - done) / 60:.1f} min',
            flush=True)
  runs = {method: [summaries[method, seed] for seed in range(FLAGS.seeds)] for method in METHODS}
  rows = [kickstart_report.summarize(method, runs[method], target, FLAGS.reach_evaluations) for method in METHODS]
  score_source = (f'final evaluation, {teacher_summary.get("eval_episodes")} episodes' if teacher_eval is None
                  else f'{teacher_eval["episodes"]} fresh episodes, ± {teacher_eval["return_std"]:.1f} std')
  text = kickstart_report.table(rows, teacher_score, target, FLAGS.reach_evaluations, teacher_standard_error,
                                score_source)
  print(text)
  plot(os.path.join(root_dir, 'curves.png'), runs, teacher_score, score_source)
  with run_directory.atomic_file(os.path.join(root_dir, 'study.md')) as f:
    f.write(f'Teacher: {FLAGS.teacher_policy or FLAGS.teacher_gin_file} {FLAGS.teacher_gin_bindings}; '
            f'students: {FLAGS.student_gin_file} {FLAGS.student_gin_bindings}; scratch students also '
            f'{FLAGS.scratch_gin_bindings}; {FLAGS.seeds} seeds.\n\n'
            f'{text}\n\n![learning curves](curves.png)\n')
  with run_directory.atomic_file(os.path.join(root_dir, 'study.json')) as f:
    json.dump({'teacher_policy': teacher_policy, 'teacher_score': teacher_score,
               'teacher_standard_error': teacher_standard_error, 'teacher_eval': teacher_eval, 'target': target,
               'reach_evaluations': FLAGS.reach_evaluations, 'students': rows,
               'verdict': kickstart_report.verdict(rows, target)}, f, indent=2, allow_nan=True)
  print(f'Wrote {os.path.join(root_dir, "study.md")} and curves.png ({(time.time() - start) / 60:.1f} min)')


def run():
  """The `protege-kickstart-study` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
