"""`binaries/eval_main.py` and its helpers (`agents.training.saved_network`, `agents.training.video`):
SavedModel or checkpoint, N episodes, videos."""

import json
import os
import subprocess
import sys

import gin
import pytest
from PIL import Image

from protege.agents.training import evaluation
from protege.agents.training import saved_network
from protege.agents.training import settings
from protege.agents.training import trainer
from protege.agents.training import video as video_lib
from protege.envs import suite
from test_train_main import TINY_GIN  # the tiny CartPole run of the train_main tests

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EVAL_MAIN = os.path.join(REPO, 'binaries', 'eval_main.py')


@pytest.fixture(scope='module')
def run(tmp_path_factory):
  """A tiny finished run: its gin file, checkpoints/ and policy/."""
  root = tmp_path_factory.mktemp('run')
  gin_path = root / 'tiny.gin'
  with open(TINY_GIN) as f:
    gin_path.write_text(f.read())
  gin.clear_config()
  gin.parse_config_file(str(gin_path))
  trainer.train(str(root))
  gin.clear_config()
  return root


def test_saved_model_and_checkpoint_evaluate_alike(run):
  gin.parse_config_file(str(run / 'tiny.gin'))
  env = suite.make_environment(num_envs=1)
  from_checkpoint = saved_network.restore_network(str(run / 'checkpoints'), settings.train_settings().network_fn,
                                                  env)
  env.close()
  from_policy = saved_network.SavedPolicyNetwork(str(run / 'policy'))
  results = [evaluation.evaluate(network, 'CartPole-v1', 3, seed=7) for network in (from_checkpoint, from_policy)]
  assert results[0]['return_mean'] == results[1]['return_mean'] and results[0]['episodes'] == 3
  with open(run / 'summary.json') as f:
    assert results[0]['return_mean'] > 0 and json.load(f)['eval_episodes'] == 2


def test_mp4_video_of_a_checkpoint(run, tmp_path):
  import cv2  # pylint: disable=g-import-not-at-top
  gin.parse_config_file(str(run / 'tiny.gin'))
  env = suite.make_environment(num_envs=1)
  network = saved_network.restore_network(str(run / 'checkpoints'), settings.train_settings().network_fn, env)
  env.close()
  path = str(tmp_path / 'episode.mp4')
  frames = video_lib.record_video(network, 'CartPole-v1', path, num_episodes=1, max_steps=40)
  video = cv2.VideoCapture(path)
  assert int(video.get(cv2.CAP_PROP_FRAME_COUNT)) == frames > 1
  ok, frame = video.read()
  assert ok and frame.shape == (400, 600, 3)


def test_eval_main_evaluates_a_saved_model_and_writes_a_gif(run, tmp_path):
  gif, output = tmp_path / 'episodes.gif', tmp_path / 'result.json'
  result = subprocess.run(
      [sys.executable, EVAL_MAIN, f'--gin_file={run / "operative_config.gin"}', f'--policy_dir={run / "policy"}',
       '--num_episodes=4', f'--video_path={gif}', '--video_episodes=2', f'--output_json={output}'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'over 4 episodes' in result.stdout
  report = json.loads(output.read_text())
  assert report['episodes'] == 4 and report['env_id'] == 'CartPole-v1' and report['complete']
  with Image.open(gif) as image:
    # Pillow stores identical consecutive frames once (e.g. a reset screen), so possibly fewer.
    assert 2 < image.n_frames <= report['video']['frames']
    assert image.size == (600, 400)
  # Two episodes, one after another: at least two episodes' worth of frames (each lasts >= 8 steps).
  assert report['video']['frames'] >= 2 * 8


def test_eval_main_needs_exactly_one_source(tmp_path):
  result = subprocess.run([sys.executable, EVAL_MAIN], cwd=REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert 'eval_main: error: pass exactly one of --policy_dir' in result.stderr


def test_bad_video_path_is_rejected():
  with pytest.raises(ValueError, match='.gif or .mp4'):
    video_lib.record_video(None, 'CartPole-v1', '/tmp/video.avi')
