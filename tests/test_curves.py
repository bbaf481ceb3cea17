"""A run's TensorBoard record and curves.png (`agents.training.summaries`), on event files written here."""

import os
import subprocess
import sys

import numpy as np
import tensorflow as tf
from matplotlib import image

from protege.agents.training import summaries
from protege.runtime import plotting

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _write(directory, start_step, episodes, evaluations, extra=None):
  """One process's event file: its run-start record at `start_step`, then `(step, return)` episodes,
  `(step, mean)` evaluations and `extra` `{tag: [(step, value)]}` scalars."""
  writer = tf.summary.create_file_writer(directory)
  summaries.write_run_start(writer, start_step, "train.seed = 3\n# a comment", {'learning_rate': 1e-3, 'seed': 3})
  with writer.as_default():
    for step, value in episodes:
      tf.summary.scalar(summaries.EPISODE_RETURN, value, step=step)
    for step, value in evaluations:
      tf.summary.scalar(summaries.EVAL_MEAN, value, step=step)
      tf.summary.scalar(summaries.EVAL_STD, 1.0, step=step)
    for tag, points in (extra or {}).items():
      for step, value in points:
        tf.summary.scalar(tag, value, step=step)
  writer.close()


def test_a_resumed_run_reads_back_whole_with_its_repeated_steps_from_the_later_file(tmp_path):
  directory = str(tmp_path / 'summaries')
  # The first process logs up to step 40 and is killed; its last checkpoint was at step 20.
  _write(directory, 0, [(10, 1.0), (20, 2.0), (20, 2.5), (30, 3.0), (40, 4.0)], [(20, 5.0), (40, 6.0)])
  # The resumed process starts again from step 20.
  _write(directory, 20, [(30, 30.0), (40, 40.0), (50, 50.0)], [(40, 60.0), (60, 70.0)])
  assert len(tf.io.gfile.glob(os.path.join(directory, 'events.out.tfevents.*'))) == 2  # one per process

  scalars = summaries.read_scalars(directory)
  # Up to step 20 from the first file (the checkpoint's history), after it from the second.
  steps, returns = scalars[summaries.EPISODE_RETURN]
  assert steps.tolist() == [10, 20, 20, 30, 40, 50]
  assert returns.tolist() == [1.0, 2.0, 2.5, 30.0, 40.0, 50.0]
  steps, means = scalars[summaries.EVAL_MEAN]
  assert steps.tolist() == [20, 40, 60] and means.tolist() == [5.0, 60.0, 70.0]
  # A finished run run again evaluates again at its last step: the later evaluation replaces the earlier.
  _write(directory, 60, [], [(60, 80.0)])
  steps, means = summaries.read_scalars(directory)[summaries.EVAL_MEAN]
  assert steps.tolist() == [20, 40, 60] and means.tolist() == [5.0, 60.0, 80.0]
  assert summaries.CONFIG_TAG not in scalars  # text is no scalar
  only = summaries.read_scalars(directory, keep=lambda tag: tag == summaries.EVAL_MEAN)
  assert list(only) == [summaries.EVAL_MEAN]
  assert summaries.read_scalars(str(tmp_path / 'absent')) == {}


def test_the_run_start_record_holds_the_config_text_and_the_hyperparameters(tmp_path):
  directory = str(tmp_path / 'summaries')
  _write(directory, 0, [], [])
  texts, tags = [], set()
  for path in tf.io.gfile.glob(os.path.join(directory, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        tags.add(value.tag)
        if value.tag == summaries.CONFIG_TAG:
          texts.append(tf.make_ndarray(value.tensor).item().decode())
          assert value.metadata.plugin_data.plugin_name == 'text'
        if value.tag.startswith('_hparams_/'):
          assert value.metadata.plugin_data.plugin_name == 'hparams'
          assert b'learning_rate' in value.metadata.plugin_data.content
  # Indented: markdown shows it as code, and gin's '#' comments do not become headings.
  assert texts == ['    train.seed = 3\n    # a comment']
  assert '_hparams_/session_start_info' in tags


def test_curves_png_draws_rnd_and_kickstarting_panels(tmp_path):
  directory = str(tmp_path / 'summaries')
  steps = range(100, 1001, 100)
  _write(directory, 0, [(s, s / 100.0) for s in steps], [(s, s / 50.0) for s in steps[::3]],
         extra={summaries.INTRINSIC_MEAN: [(s, 1.0 / s) for s in steps],
                summaries.INTRINSIC_STD: [(s, 0.1 / s) for s in steps],
                summaries.LAMBDA_PREFIX + 'teacher_0': [(s, 1.0 - s / 1000.0) for s in steps],
                summaries.LAMBDA_PREFIX + 'teacher_1': [(s, 0.5) for s in steps]})
  path = summaries.write_curves(str(tmp_path), title='a title')
  assert path == str(tmp_path / summaries.CURVES_FILE)
  picture = image.imread(path)
  assert picture.shape[0] == 1000 and picture.shape[1] == 1000  # 3 panels of 10 x (1 + 3 x 3) inches at 100 dpi
  assert not [name for name in os.listdir(tmp_path) if name.endswith('.tmp')]


def test_a_figure_that_cannot_be_drawn_is_one_warning(tmp_path, monkeypatch, capsys):
  def no_matplotlib():
    raise ImportError('No module named matplotlib')
  monkeypatch.setattr(plotting, 'pyplot', no_matplotlib)
  assert summaries.write_curves(str(tmp_path)) is None
  out = capsys.readouterr().out
  assert out.count('\n') == 1 and out.startswith('warning: curves.png was not drawn (ImportError')
  assert not os.path.exists(tmp_path / summaries.CURVES_FILE)


def test_running_mean():
  np.testing.assert_allclose(summaries._running_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])


def test_matplotlib_is_imported_on_first_use_only():
  code = ('import sys; from protege.agents.training import trainer; from protege.runtime import plotting; '
          'assert "matplotlib" not in sys.modules')
  # Outside the checkout: the installed package, not the root folders the working directory would expose.
  result = subprocess.run([sys.executable, '-c', code], cwd=os.path.dirname(REPO), capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 0, result.stderr[-3000:]
