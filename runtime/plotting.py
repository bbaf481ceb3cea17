"""The one plotting helper of every figure: matplotlib on the Agg backend and the shared styling.

Every figure is drawn the same way:

  with plotting.figure(path, 1, 2, figsize=(14, 5.5), dpi=100) as (figure, (left, right)):
    plotting.quartile_band(left, steps, quartiles, label='on_policy_distill')
    plotting.run_lines(right, [(steps, returns) for ...], color='tab:blue', label='kickstarted student')
    plotting.target_line(right, teacher_score, label='teacher')

On leaving the block every axes gets the light grid (`grid=True`), the layout is tightened, the PNG
replaces `path` in one atomic step (`runtime.run_directory.atomic_file`: a reader never sees half a file;
the directory is created) at `dpi`, and the figure is closed; an exception closes it unsaved.

Users: every training run's curves.png (`agents/training/summaries.py`), the random-MDP study
(`studies/random_mdp_report.py`), the kickstart study (`binaries/kickstart_study_main.py`), the data-free
MNIST study (`binaries/data_free_mnist_study_main.py`), `binaries/run_comparison.py` and the PBT lineage
plot (`pbt/lineage.py`). matplotlib is imported on first use only: importing it costs about a second, and
most programs that import these modules draw nothing.
"""

import contextlib
import os
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np

from protege.runtime import run_directory

GRID_ALPHA = 0.3  # the grid of every curve figure
BAND_ALPHA = 0.15  # the interquartile band's fill


def pyplot():
  """`matplotlib.pyplot` on the Agg backend (files only; no display is needed or opened)."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot as plt  # pylint: disable=g-import-not-at-top
  return plt


@contextlib.contextmanager
def figure(path: str, nrows: int = 1, ncols: int = 1, *, figsize: Tuple[float, float], dpi: int = 100,
           grid: bool = True, **subplots) -> Iterator[tuple]:
  """Yields `(figure, axes)` of `pyplot.subplots(nrows, ncols, figsize=figsize, **subplots)`; then styles,
  saves to the PNG `path` and closes it.

  Args:
    path: the PNG to write; its directory is created.
    nrows, ncols: the grid of axes.
    figsize: inches.
    dpi: of the saved PNG (pixels = figsize x dpi).
    grid: a light grid (alpha `GRID_ALPHA`) on every axes; off for images.
    **subplots: more arguments of `pyplot.subplots` (`sharex`, `squeeze`, ...).
  """
  plt = pyplot()
  drawing, axes = plt.subplots(nrows, ncols, figsize=figsize, **subplots)
  try:
    yield drawing, axes
    if grid:
      for axis in drawing.axes:
        axis.grid(alpha=GRID_ALPHA)
    drawing.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with run_directory.atomic_file(path, 'wb') as f:
      drawing.savefig(f, dpi=dpi, format='png')
  finally:
    plt.close(drawing)


def run_lines(axis, runs: Sequence[tuple], color, label: Optional[str] = None, **style) -> None:
  """One learning curve per run (seed, population member): `runs` are `(x, y)` pairs, all in `color`;
  only the first carries `label`, so the runs share one legend entry. `style`: more `plot` arguments."""
  for index, (x, y) in enumerate(runs):
    axis.plot(x, y, color=color, label=label if index == 0 else None, **style)


def band(axis, x, low, middle, high, label: Optional[str] = None, style: str = '-', **line_style):
  """The line `middle` against `x` and the band from `low` to `high` around it in the line's colour;
  returns the line. `line_style`: more `plot` arguments (`color`, `marker`, ...)."""
  line, = axis.plot(x, middle, style, label=label, **line_style)
  axis.fill_between(x, low, high, color=line.get_color(), alpha=BAND_ALPHA, linewidth=0)
  return line


def quartile_band(axis, x, quartiles, label: Optional[str] = None, style: str = '-', **line_style):
  """The median line of `quartiles` (`[N, 3]`: 25th, 50th, 75th percentiles at each x) and the
  interquartile band around it in the line's colour; returns the line."""
  quartiles = np.asarray(quartiles)
  return band(axis, x, quartiles[:, 0], quartiles[:, 1], quartiles[:, 2], label, style, **line_style)


def legend_outside(axis, **legend) -> None:
  """The legend to the right of `axis`, outside it, so that it never covers a curve (`figure` tightens the
  layout around it); nothing when no artist carries a label."""
  if axis.get_legend_handles_labels()[0]:
    axis.legend(loc='upper left', bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, **legend)


def thousands(axis) -> None:
  """Tick labels of the x axis with thousands separators (env steps: 20,480 rather than 20480 or 2e4)."""
  from matplotlib import ticker  # pylint: disable=g-import-not-at-top
  axis.xaxis.set_major_formatter(ticker.FuncFormatter(lambda x, _: f'{x:,.0f}'))


def target_line(axis, value: float, label: Optional[str] = None) -> None:
  """A horizontal reference level (a teacher's score, a target), black and dashed."""
  axis.axhline(value, color='black', linestyle='--', linewidth=1, label=label)
