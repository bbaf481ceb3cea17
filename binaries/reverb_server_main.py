r"""The Reverb server of a distributed run: the trajectory queue and the variables table, checkpointed.

  python binaries/reverb_server_main.py --gin_file=gin/quickstart.gin --port=8000 \
      --checkpoint_dir=runs/cartpole/reverb_checkpoints

The tables' signatures come from the gin file (environment, network, `train.sequence_length`), the same
file the actors and the learner run with. With `--checkpoint_dir` the server writes its tables there every
`--checkpoint_interval_seconds` and on SIGTERM/SIGINT, and restores the newest complete checkpoint on
start, so a restarted server carries on with the weights and trajectories it held; clients on the same
address reconnect by themselves. Reverb has no authentication: serve on a private network only (README,
"Security").
"""

import os
import signal
import sys
import threading

# Before TensorFlow is imported: keep its C++ start-up chatter (oneDNN notices) off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.replay import optional_reverb

common.define_gin_flags()
flags.DEFINE_integer('port', None, 'Port to serve on.')
flags.DEFINE_string('checkpoint_dir', None, 'Directory of the tables\' checkpoints (restored on start); '
                    'default: none.')
flags.DEFINE_float('checkpoint_interval_seconds', 60.0, 'Seconds between checkpoints of the tables.')
flags.DEFINE_integer('keep_checkpoints', 2, 'Complete checkpoints of the tables to keep (older are deleted).')
flags.DEFINE_integer('items_per_learner_step', 0, 'Items the learner reads per iteration (replicas × '
                     'train.items_per_replica); 0: train.items_per_replica, a one-replica learner.')
flags.mark_flag_as_required('port')
FLAGS = flags.FLAGS


def main(argv):
  # First, before anything can fail or print: what this process exposes (where it can serve at all: without
  # dm-reverb it stops with one line naming it, and listens on nothing).
  if optional_reverb.installed():
    print(f'reverb_server_main: listening on all network interfaces on port {FLAGS.port}, without '
          'authentication or encryption: anyone who reaches this port can read and write the run\'s data. '
          'Serve on a private network only (README, "Security").', flush=True)
  with common.job('reverb_server_main', argv):
    from protege.agents.training import deployment  # pylint: disable=g-import-not-at-top
    stop = threading.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
      signal.signal(signal_number, lambda *_: stop.set())
    deployment.run_server(FLAGS.port, stop, checkpoint_dir=FLAGS.checkpoint_dir,
                          checkpoint_interval_seconds=FLAGS.checkpoint_interval_seconds,
                          keep_checkpoints=FLAGS.keep_checkpoints,
                          items_per_learner_step=FLAGS.items_per_learner_step or None)


def run():
  """The `protege-reverb-server` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
