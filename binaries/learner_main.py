r"""The learner of a distributed run: trains on the Reverb server's trajectories, publishes its weights.

  python binaries/learner_main.py --gin_file=gin/quickstart.gin --reverb_address=SERVER:8000 \
      --root_dir=runs/cartpole

The single-process run (`train_main.py`) without its actor: the same run directory (checkpoints,
summaries, policy/, summary.json), resumed from its latest checkpoint when run again, with env steps
counted from the trajectory items it consumed. After every iteration it publishes its weights to the
server's variables table; at the end it publishes that training finished, and the actors exit.
Devices: `--tpu=NAME` (TPUStrategy; the Reverb dataset stays on the host and is spread over the cores by
`distribute_datasets_from_function`, with the static shapes of the table signature), `--use_gpu`, or
`--logical_cpus=N`; `--mixed_precision=mixed_bfloat16` and `--xla` are numerics options.
"""

import os
import sys

# Before TensorFlow is imported: keep its C++ start-up chatter (oneDNN notices) off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.runtime import interrupts

common.define_gin_flags()
flags.DEFINE_string('root_dir', None, 'Run directory: checkpoints, summaries, policy, summary.json.')
flags.DEFINE_string('reverb_address', None, 'host:port of the run\'s Reverb server.')
flags.DEFINE_string('tpu', None, 'TPU name/address: run the learner under TPUStrategy.')
flags.DEFINE_bool('use_gpu', False, 'Run the learner under MirroredStrategy over the local GPUs.')
flags.DEFINE_integer('logical_cpus', 0, 'Split the CPU into N logical devices and mirror over them.')
flags.DEFINE_enum('mixed_precision', None, ['mixed_bfloat16', 'mixed_float16'],
                  'Keras mixed-precision policy of the learner\'s network (variables stay float32).')
flags.DEFINE_bool('xla', False, 'Compile the learner\'s step with XLA (auto-clustering; TPUs always do).')
flags.mark_flag_as_required('root_dir')
flags.mark_flag_as_required('reverb_address')
FLAGS = flags.FLAGS


def main(argv):
  with common.job('learner_main', argv):
    from protege.agents.training import deployment  # pylint: disable=g-import-not-at-top
    # SIGINT/SIGTERM: a checkpoint after the iteration under way (or at once while waiting for items),
    # then exit with 128 + the signal's number.
    stop = interrupts.StopRequest('learner_main', on_deadline=lambda: interrupts.resume_hint(FLAGS.root_dir))
    summary = deployment.run_learner(FLAGS.root_dir, FLAGS.reverb_address, tpu=FLAGS.tpu, use_gpu=FLAGS.use_gpu,
                                     logical_cpus=FLAGS.logical_cpus, mixed_precision=FLAGS.mixed_precision,
                                     xla=FLAGS.xla, stop_request=stop)
    if summary is None:
      sys.exit(stop.exit_code)


def run():
  """The `protege-learner` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
