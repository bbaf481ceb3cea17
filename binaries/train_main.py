r"""Trains an agent in one process: the actor(s) and the learner, configured by gin.

  python binaries/train_main.py --gin_file=gin/quickstart.gin --root_dir=runs/quickstart

The trajectories stay inside the process (`replay.local_queue`), which listens on no port; with
`--reverb_address` they go through the Reverb server there instead (README, "Security").

Flags carry run mechanics only (where to write, which devices, which server); everything about the
algorithm is in the gin file(s) and `--gin_bindings`. Running again with the same `--root_dir`
resumes from its latest checkpoint. SIGINT (Ctrl-C) or SIGTERM saves a checkpoint and exits with 128 + the
signal's number; a second signal exits at once.
"""

import os
import sys

# Before TensorFlow is imported: keep its C++ start-up chatter (oneDNN notices) off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.runtime import interrupts

flags.DEFINE_multi_string('gin_file', [], 'Gin file(s) with the experiment configuration.')
flags.DEFINE_multi_string('gin_bindings', [], 'Extra gin bindings, e.g. "train.seed = 3".')
flags.DEFINE_string('root_dir', None, 'Run directory: checkpoints, summaries, policy, summary.json.')
flags.DEFINE_string('tpu', None, 'TPU name/address: run the learner under TPUStrategy.')
flags.DEFINE_bool('use_gpu', False, 'Run the learner under MirroredStrategy over the local GPUs.')
flags.DEFINE_integer('logical_cpus', 0, 'Split the CPU into N logical devices and mirror over them '
                     '(exercises the multi-replica path without accelerators).')
flags.DEFINE_string('reverb_address', None, 'host:port of a running Reverb server to exchange trajectories '
                    'through; default: none, the trajectories stay in this process, which listens on no '
                    'port.')
flags.DEFINE_bool('traceback', False, 'Show the full traceback of errors instead of one line.')
flags.mark_flag_as_required('root_dir')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with common.one_line_errors('train_main', show_traceback=FLAGS.traceback):
    common.parse_gin(FLAGS.gin_file, FLAGS.gin_bindings)
    common.tensorflow_threads()
    from protege.agents.training import strategy as strategy_lib  # pylint: disable=g-import-not-at-top
    from protege.agents.training import trainer  # pylint: disable=g-import-not-at-top
    strategy = strategy_lib.get_strategy(FLAGS.tpu, FLAGS.use_gpu, FLAGS.logical_cpus)

    # SIGINT/SIGTERM: the run saves a checkpoint after the iteration under way and exits with 128 + the
    # signal's number; running the same command resumes it.
    stop = interrupts.StopRequest('train_main', on_deadline=lambda: interrupts.resume_hint(FLAGS.root_dir))
    summary = trainer.train(root_dir=FLAGS.root_dir, strategy=strategy, reverb_address=FLAGS.reverb_address,
                            program='train_main', stop_request=stop)
    if summary is None:
      sys.exit(stop.exit_code)

def run():
  """The `protege-train` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
