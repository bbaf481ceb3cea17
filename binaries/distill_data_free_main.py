r"""Distils a teacher into a student with no simulator and no data (Generative Adversarial Simulator).

  python binaries/distill_data_free_main.py --teacher=runs/mnist_study/teacher.keras \
      --gin_file=gin/data_free_mnist.gin --root_dir=runs/mnist_dafl
  python binaries/distill_data_free_main.py --teacher=/tmp/cp_teacher/policy \
      --gin_file=gin/data_free_cartpole.gin --root_dir=runs/cartpole_data_free

`--teacher` is a Keras classifier (a `.keras`/`.h5` file or a Keras SavedModel) or a policy exported by
TF-Agents' `PolicySaver`: `binaries/train_main.py`'s `<root_dir>/policy`, or any other, e.g. a DQN agent's
greedy or ε-greedy policy. The run prints which kind of teacher it took (logits, a Categorical
distribution, Q-values taught as softmax(Q/τ), or actions only as an ε-smoothed one-hot;
`agents.distillation.teacher_loading`, gin `teacher_targets`) and writes it in summary.json. A generator synthesises observations, the teacher
labels them and the student learns the teacher's distribution on them (`agents.data_free`); the student
never reads a data set or builds an environment while it trains. It is written into `--root_dir` as
`student.keras` (classifier teachers) or as a PolicySaver `policy/` like train_main's (policy teachers),
with `exemplars.npz` (generated observations), `summary.json` and `operative_config.gin`. With
`distill_data_free.eval_episodes > 0` (policy teachers) the student and the teacher are then evaluated in
`make_environment.env_id`.

Flags carry run mechanics only; the student, the generator, every loss weight and schedule are in gin.
The run checkpoints every `distill_data_free.checkpoint_interval_seconds`; SIGINT (Ctrl-C) or SIGTERM saves
a checkpoint after the step under way and exits with 128 + the signal's number, and the same command
resumes from it.
"""

import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.runtime import interrupts

flags.DEFINE_string('teacher', None,
                    'The teacher: a Keras classifier file or a PolicySaver export (e.g. a policy/ of '
                    'train_main, or a DQN policy).')
flags.DEFINE_string('root_dir', None, 'Output directory: the student, exemplars.npz, summary.json.')
common.define_gin_flags()
flags.mark_flags_as_required(['teacher', 'root_dir'])
FLAGS = flags.FLAGS


def main(argv):
  # Registers the gin configurables of agents.data_free.
  from protege.agents.data_free import run as data_free_run  # pylint: disable=g-import-not-at-top
  with common.job('distill_data_free_main', argv):
    # SIGINT/SIGTERM: the run saves a checkpoint after the step under way and exits with 128 + the signal's
    # number; running the same command resumes it.
    stop = interrupts.StopRequest('distill_data_free_main', on_deadline=lambda: interrupts.resume_hint(FLAGS.root_dir))
    summary = data_free_run.distill_data_free(root_dir=FLAGS.root_dir, teacher_path=FLAGS.teacher,
                                              stop_request=stop)
    if summary is None:
      sys.exit(stop.exit_code)
    line = (f'Done: {summary["steps"]:,} steps in {summary["train_seconds"]:.0f} s from a '
            f'{summary["teacher_kind"]} teacher, '
            f'{summary["generations"]} generator(s)')
    if 'student_eval' in summary:
      line += (f'; student return {summary["student_eval"]["return_mean"]:.1f}, teacher '
               f'{summary["teacher_eval"]["return_mean"]:.1f} over {summary["student_eval"]["episodes"]} '
               'episodes')
      agreement = summary['agreement_on_teacher_states']
      line += (f'; on {agreement["states"]:,} states the teacher visited, the student picks its action '
               f'{100 * agreement["argmax_agreement"]:.0f}% of the time')
    print(f'{line}. Results in {FLAGS.root_dir}.', flush=True)


def run():
  """The `protege-distill-data-free` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
