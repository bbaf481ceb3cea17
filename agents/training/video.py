"""Recording a policy network's episodes to a .gif or .mp4 (`binaries/eval_main.py --video_path`)."""

import os
from typing import List

import numpy as np
import tensorflow as tf
from tf_agents.trajectories import time_step as ts

from protege.envs import suite
from protege.runtime import errors


def record_video(network, env_id: str, path: str, num_episodes: int = 1, seed: int = 12345,
                 greedy: bool = True, fps: int = 30, max_steps: int = 10_000) -> int:
  """Plays `num_episodes` episodes one after another on one environment and writes them to `path` (.gif
  through Pillow, .mp4 through OpenCV); returns the number of frames.

  Frames are the environment's `rgb_array` rendering; Atari games, which take no render option here, are
  shown through the newest frame of their observation (the preprocessed 84×84 screen).
  """
  extension = os.path.splitext(path)[1].lower()
  if extension not in ('.gif', '.mp4'):
    raise errors.ConfigError(f"video path '{path}' must end in .gif or .mp4.")
  atari = env_id.startswith('ALE/')
  env = suite.make_environment(env_id=env_id, num_envs=1, seed=seed,
                               env_kwargs=None if atari else {'render_mode': 'rgb_array'})

  def frame(observation):
    if atari:
      screen = np.asarray(observation)[0]
      screen = screen[..., -1] if screen.ndim == 3 else screen
      return np.repeat(screen[..., None], 3, axis=-1).astype(np.uint8)
    return np.asarray(env.vector_env.render()[0], np.uint8)

  generator = np.random.default_rng(seed)
  frames = []
  try:
    time_step = env.reset()
    state = network.get_initial_state(1)
    episodes = 0
    frames.append(frame(time_step.observation))
    for _ in range(max_steps):
      (logits, _), state = network(tf.convert_to_tensor(time_step.observation),
                                   step_type=tf.convert_to_tensor(time_step.step_type), network_state=state)
      logits = np.asarray(logits)
      action = np.argmax(logits if greedy else logits + generator.gumbel(size=logits.shape), axis=-1)
      time_step = env.step(action.astype(env.action_spec().dtype))
      frames.append(frame(time_step.observation))
      if time_step.step_type[0] == ts.StepType.LAST:
        episodes += 1
        if episodes >= num_episodes:
          break
  finally:
    env.close()
  _write_video(frames, path, fps)
  return len(frames)


def _write_video(frames: List[np.ndarray], path: str, fps: int) -> None:
  tf.io.gfile.makedirs(os.path.dirname(os.path.abspath(path)))
  if path.lower().endswith('.gif'):
    from PIL import Image  # pylint: disable=g-import-not-at-top
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return
  import cv2  # pylint: disable=g-import-not-at-top  (OpenCV: installed with the Atari preprocessing)
  height, width = frames[0].shape[:2]
  video = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*'mp4v'), fps, (width, height))
  for f in frames:
    video.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
  video.release()
