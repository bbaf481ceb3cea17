"""What a run records for TensorBoard besides its scalars, what it reads back, and the figure it draws.

* `write_run_start`: at every start (and resume) of a run, the operative gin configuration as text
  (`config/operative`, indented as a markdown code block) and the run's main hyperparameters through the
  HParams plugin (the learner's `hyperparameters()` values, the seed and `total_env_steps`).
* `read_scalars`: every scalar of a run's event files, its whole history across resumes: each resumed
  process writes a new event file, and the points an earlier file holds after the step a later one starts
  from (logged after the last checkpoint of a killed run, then logged again) give way to the later file's,
  as in TensorBoard; so do those at that step under a tag the later file logs there again.
* `plot_curves` / `write_curves`: `<root_dir>/curves.png`, drawn at the end of every run
  (`Trainer.finish`): the training episodes' return and the evaluations against env steps, and, when the
  run logged them, RND's intrinsic reward and kickstarting's teacher weights λ_k.
"""

import os
from typing import Callable, Dict, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from protege.runtime import plotting

CONFIG_TAG = 'config/operative'
EPISODE_RETURN = 'env/episode_return'
EVAL_MEAN, EVAL_STD = 'eval/return_mean', 'eval/return_std'
INTRINSIC_MEAN, INTRINSIC_STD = 'learner/rnd/intrinsic_reward_mean', 'learner/rnd/intrinsic_reward_std'
LAMBDA_PREFIX = 'learner/kickstart/lambda_'
CURVES_FILE = 'curves.png'
_HPARAMS_PREFIX = '_hparams_/'  # the HParams plugin's summaries, written at step 0 whatever the run's step
_EPISODE_WINDOW = 20  # training episodes in the running mean of the return panel

Series = Tuple[np.ndarray, np.ndarray]  # (steps, values), in step order


def write_run_start(writer, step: int, operative_config: str, hyperparameters: Mapping[str, float]) -> None:
  """Writes the run's configuration at `step` (its env steps when it starts or resumes) to `writer`."""
  from tensorboard.plugins.hparams import api as hparams_api  # pylint: disable=g-import-not-at-top
  # Indented by four spaces: TensorBoard renders text as markdown, and gin's comments start with '#'.
  text = '\n'.join('    ' + line for line in operative_config.splitlines())
  with writer.as_default(step=step):
    tf.summary.text(CONFIG_TAG, text)
    hparams_api.hparams(dict(hyperparameters))
  writer.flush()


def _scalar(value) -> Optional[float]:
  """The number a `Summary.Value` holds, or None if it is no scalar (text, an image, a histogram)."""
  if value.HasField('tensor'):
    array = tf.make_ndarray(value.tensor)
    return float(array.reshape(())) if array.size == 1 and np.issubdtype(array.dtype, np.number) else None
  return float(value.simple_value) if value.HasField('simple_value') else None


def _file_scalars(path: str, keep: Callable[[str], bool]):
  """`(started, first, {tag: [(step, value), ...]})` of one event file: the wall time of its first summary
  (about the writer's start), the step of its first summary other than HParams' (None if it has none: the
  step the process started from, where `write_run_start` records the configuration), and its scalars whose
  tag `keep` accepts."""
  started, first, points = None, None, {}
  try:
    for record in tf.data.TFRecordDataset(path):
      event = tf.compat.v1.Event.FromString(record.numpy())
      for value in event.summary.value:
        # (The file's first event, its version, has a wall time in whole seconds: the first summary's is finer.)
        started = event.wall_time if started is None else started
        if value.tag.startswith(_HPARAMS_PREFIX):
          continue
        first = event.step if first is None else min(first, event.step)
        number = _scalar(value) if keep(value.tag) else None
        if number is not None:
          points.setdefault(value.tag, []).append((event.step, number))
  except tf.errors.DataLossError:
    pass  # a process killed while writing leaves a truncated last record; the records before it stand
  return (started or 0.0, first, points)


def _without_stale(merged: Dict[str, list], first: int, points: Dict[str, list]) -> Dict[str, list]:
  """The points of `merged` (earlier files) that a later file, whose process started from step `first` and
  wrote `points`, leaves standing: those before `first`, and those at `first` under a tag the later file
  does not write there again (a finished run's rerun evaluates again at its last step)."""
  kept = {}
  for tag, old in merged.items():
    rewritten = any(step == first for step, _ in points.get(tag, ()))
    kept[tag] = [(step, value) for step, value in old if step < first or (step == first and not rewritten)]
  return kept


def read_scalars(summaries_dir: str, keep: Optional[Callable[[str], bool]] = None) -> Dict[str, Series]:
  """`{tag: (steps, values)}` of every scalar in the event files of `summaries_dir` whose tag `keep`
  accepts (default: all), across resumes (see the module docstring); the points of one step keep the order
  they were written in. An absent or empty directory gives `{}`."""
  files = [_file_scalars(path, keep or (lambda tag: True))
           for path in tf.io.gfile.glob(os.path.join(summaries_dir, 'events.out.tfevents.*'))]
  merged: Dict[str, list] = {}
  for _, first, points in sorted(files, key=lambda file: file[0]):  # oldest first
    if first is not None:
      merged = _without_stale(merged, first, points)
    for tag, new in points.items():
      merged.setdefault(tag, []).extend(new)
  series = {}
  for tag, points in merged.items():
    if points:
      steps = np.array([step for step, _ in points], np.int64)
      order = np.argsort(steps, kind='stable')
      series[tag] = (steps[order], np.array([value for _, value in points], np.float64)[order])
  return series


def _running_mean(values: np.ndarray, window: int) -> np.ndarray:
  """At each point: the mean of the last `window` values up to it (fewer at the start)."""
  sums = np.cumsum(np.concatenate([[0.0], values]))
  ends = np.arange(1, len(values) + 1)
  starts = np.maximum(ends - window, 0)
  return (sums[ends] - sums[starts]) / (ends - starts)


def _with_std(scalars: Mapping[str, Series], mean_tag: str, std_tag: str):
  """`(steps, means, stds)` of a mean and its std logged together (stds 0 if missing or not in step)."""
  steps, means = scalars[mean_tag]
  stds = scalars.get(std_tag, (None, np.array([])))[1]
  return steps, means, stds if len(stds) == len(means) else np.zeros_like(means)


def _return_panel(axis, scalars: Mapping[str, Series]) -> None:
  if EPISODE_RETURN in scalars:
    steps, returns = scalars[EPISODE_RETURN]
    axis.scatter(steps, returns, s=7, color='tab:blue', alpha=0.3, linewidths=0, rasterized=True,
                 label='training episode')
    # Episodes are logged in groups at one step each: the mean as it stood after each group.
    last_of_step = np.flatnonzero(np.append(steps[1:] != steps[:-1], True))
    axis.plot(steps[last_of_step], _running_mean(returns, _EPISODE_WINDOW)[last_of_step], color='tab:blue',
              label=f'training, mean of the last {_EPISODE_WINDOW} episodes')
  if EVAL_MEAN in scalars:
    steps, means, stds = _with_std(scalars, EVAL_MEAN, EVAL_STD)
    plotting.band(axis, steps, means - stds, means, means + stds, label='evaluation, mean ± std', style='o-',
                  color='tab:orange', markersize=4)
  if EPISODE_RETURN not in scalars and EVAL_MEAN not in scalars:
    axis.text(0.5, 0.5, 'no episode logged', ha='center', va='center', transform=axis.transAxes)
  axis.set(ylabel='episode return', title='Return')


def _intrinsic_panel(axis, scalars: Mapping[str, Series]) -> None:
  steps, means, stds = _with_std(scalars, INTRINSIC_MEAN, INTRINSIC_STD)
  plotting.band(axis, steps, means - stds, means, means + stds, label='batch mean ± std', color='tab:green')
  axis.set(ylabel='intrinsic reward\n(normalised)', title='RND intrinsic reward')


def _lambda_panel(axis, scalars: Mapping[str, Series]) -> None:
  for tag in sorted(tag for tag in scalars if tag.startswith(LAMBDA_PREFIX)):
    axis.plot(*scalars[tag], label=f'λ {tag[len(LAMBDA_PREFIX):]}')
  axis.set(ylabel=r'$\lambda_k$ (teacher weight)', title='Kickstarting: weight of each teacher')


def plot_curves(scalars: Mapping[str, Series], path: str, title: Optional[str] = None) -> None:
  """Draws the run's curves from `read_scalars`' `scalars` into the PNG `path`: the return panel, then
  the intrinsic-reward panel (RND) and the λ_k panel (kickstarting) when the run logged them; one shared
  env-steps axis, each legend to the right of its panel."""
  panels = [_return_panel]
  if INTRINSIC_MEAN in scalars:
    panels.append(_intrinsic_panel)
  if any(tag.startswith(LAMBDA_PREFIX) for tag in scalars):
    panels.append(_lambda_panel)
  with plotting.figure(path, len(panels), 1, figsize=(10, 1.0 + 3.0 * len(panels)), dpi=100, sharex=True,
                       squeeze=False) as (drawing, axes):
    for draw, axis in zip(panels, axes[:, 0]):
      draw(axis, scalars)
      plotting.legend_outside(axis)
    axes[-1, 0].set_xlabel('env steps')
    axes[-1, 0].set_xlim(left=0)
    plotting.thousands(axes[-1, 0])
    if title:
      drawing.suptitle(title)


def write_curves(root_dir: str, title: Optional[str] = None) -> Optional[str]:
  """Draws `<root_dir>/curves.png` from the run's `summaries/` and returns its path; if it cannot be
  drawn (matplotlib missing, an unreadable event file, ...), prints one warning line and returns None:
  the run's results stand without it."""
  path = os.path.join(root_dir, CURVES_FILE)
  try:
    plot_curves(read_scalars(os.path.join(root_dir, 'summaries')), path, title)
  except Exception as error:  # pylint: disable=broad-except
    print(f'warning: {CURVES_FILE} was not drawn ({type(error).__name__}: {error}); the run\'s other results '
          'are complete.', flush=True)
    return None
  return path
