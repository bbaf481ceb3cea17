r"""An actor of a distributed run: N environments, weights from the Reverb server, trajectories to it.

  python binaries/actor_main.py --gin_file=gin/quickstart.gin --reverb_address=SERVER:8000 --actor_id=0 \
      --root_dir=runs/cartpole

Run one per actor machine (or core), each with its own `--actor_id` (it seeds the environments). The
actor waits for the learner's first weights, acts until the learner publishes that training finished,
and survives a restart of the server (it waits up to `--retry_seconds` for it to answer again). SIGINT or
SIGTERM ends it after the item under way, with exit code 128 + the signal's number.
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
flags.DEFINE_string('reverb_address', None, 'host:port of the run\'s Reverb server.')
flags.DEFINE_integer('actor_id', 0, 'This actor\'s index (seeds its environments, names its summaries).')
flags.DEFINE_string('root_dir', None, 'If set, summaries go to ROOT_DIR/actors/actor_<id>.')
flags.DEFINE_float('retry_seconds', 120.0, 'How long to wait for a server that stopped answering.')
flags.DEFINE_integer('max_env_steps', 0, 'Stop after this many agent steps (0: when the learner finishes).')
flags.mark_flag_as_required('reverb_address')
FLAGS = flags.FLAGS


def main(argv):
  with common.job('actor_main', argv):
    from protege.agents.training import deployment  # pylint: disable=g-import-not-at-top
    # SIGINT/SIGTERM: the item under way is finished and written, the writer closed, then exit with
    # 128 + the signal's number (an actor holds no state of its own to save).
    stop = interrupts.StopRequest('actor_main', grace_seconds=FLAGS.retry_seconds + 10)
    counts = deployment.run_actor(FLAGS.reverb_address, FLAGS.actor_id, root_dir=FLAGS.root_dir,
                                  retry_seconds=FLAGS.retry_seconds, max_env_steps=FLAGS.max_env_steps or None,
                                  stop_request=stop)
    if counts['stopped']:
      sys.exit(stop.exit_code)


def run():
  """The `protege-actor` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
