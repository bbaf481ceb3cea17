r"""Evaluates an exported policy (SavedModel) or a training checkpoint for N episodes; can record a video.

  python binaries/eval_main.py --gin_file=runs/cartpole/operative_config.gin \
      --policy_dir=runs/cartpole/policy --num_episodes=20 --video_path=runs/cartpole/episode.gif
  python binaries/eval_main.py --gin_file=gin/quickstart.gin \
      --checkpoint=runs/cartpole/checkpoints --video_path=runs/cartpole/episode.mp4

The gin file gives the environment (and, for a checkpoint, the network); a run's own
`operative_config.gin` holds both. Episodes run one per environment, each from a fresh reset, and
returns are the environment's own (game scores on Atari). A video (.gif or .mp4) shows
`--video_episodes` further episodes played one after another. A SavedModel, like a gin file, executes
code when loaded: evaluate only ones you trust.
"""

import json
import os
import sys

# Before TensorFlow is imported: keep its C++ start-up chatter (oneDNN notices) off the console.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

from absl import app
from absl import flags

from protege.binaries import common
from protege.runtime import errors
from protege.runtime import run_directory

common.define_gin_flags()
flags.DEFINE_string('policy_dir', None, 'An exported policy (a run\'s policy/ SavedModel directory).')
flags.DEFINE_string('checkpoint', None, 'A training checkpoint: a run\'s checkpoints/ directory (its latest) '
                    'or a prefix such as checkpoints/ckpt-12.')
flags.DEFINE_integer('num_episodes', 10, 'Episodes to evaluate (run in parallel environments).')
flags.DEFINE_bool('greedy', True, 'Act with the argmax of the logits (True) or sample the policy.')
flags.DEFINE_integer('seed', 12345, 'Seed of the evaluation environments.')
flags.DEFINE_string('video_path', None, 'Write a video of --video_episodes episodes here (.gif or .mp4).')
flags.DEFINE_integer('video_episodes', 1, 'Episodes in the video.')
flags.DEFINE_integer('video_fps', 30, 'Frames per second of the video.')
flags.DEFINE_string('output_json', None, 'Also write the results to this JSON file.')
FLAGS = flags.FLAGS


def main(argv):
  with common.job('eval_main', argv):
    if (FLAGS.policy_dir is None) == (FLAGS.checkpoint is None):
      raise errors.ConfigError('pass exactly one of --policy_dir (a SavedModel) and --checkpoint.')
    from protege.agents.training import evaluation  # pylint: disable=g-import-not-at-top
    from protege.agents.training import saved_network  # pylint: disable=g-import-not-at-top
    from protege.agents.training import settings  # pylint: disable=g-import-not-at-top
    from protege.agents.training import video  # pylint: disable=g-import-not-at-top
    from protege.envs import suite  # pylint: disable=g-import-not-at-top
    env = suite.make_environment(num_envs=1, seed=FLAGS.seed)
    env_id = env.env_id
    try:
      if FLAGS.policy_dir is not None:
        source = FLAGS.policy_dir
        network = saved_network.SavedPolicyNetwork(FLAGS.policy_dir)
      else:
        source = FLAGS.checkpoint
        network = saved_network.restore_network(FLAGS.checkpoint, settings.train_settings().network_fn, env)
    finally:
      env.close()
    result = evaluation.evaluate(network, env_id, FLAGS.num_episodes, seed=FLAGS.seed, greedy=FLAGS.greedy)
    result.update(env_id=env_id, source=source, greedy=FLAGS.greedy)
    print(f'{env_id}: return {result["return_mean"]:.1f} ± {result["return_std"]:.1f} (min '
          f'{result["return_min"]:.1f}, max {result["return_max"]:.1f}) over {result["episodes"]} episodes '
          f'of {source}.', flush=True)
    if FLAGS.video_path:
      frames = video.record_video(network, env_id, FLAGS.video_path, FLAGS.video_episodes,
                                  seed=FLAGS.seed + 1_000, greedy=FLAGS.greedy, fps=FLAGS.video_fps)
      result['video'] = {'path': FLAGS.video_path, 'frames': frames}
      print(f'Video of {FLAGS.video_episodes} episode(s), {frames} frames: {FLAGS.video_path}', flush=True)
    if FLAGS.output_json:
      with run_directory.atomic_file(FLAGS.output_json) as f:
        json.dump(result, f, indent=2)


def run():
  """The `protege-eval` console script: absl parses the flags, then calls `main`."""
  sys.exit(app.run(main))


if __name__ == '__main__':
  run()
