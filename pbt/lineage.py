"""The lineage of a population: every report, exploit and explore as JSON lines, and a plot of it.

A population based training run (Jaderberg et al. 2017; docs/pbt.md, "Lineage") is only understood through its
history: which member copied which, when, and how each hyperparameter moved. The scheduler appends one JSON
object per line to `<root_dir>/lineage.jsonl` (a file that is never rewritten, so a crash loses at most the
line being written):

  {"event": "report",  "member": "member_0", "env_steps": 4096, "score": 131.2,
   "hyperparameters": {"learning_rate": 0.0011, "lambda_teacher_0": 1.7}, "time": ...}
  {"event": "compare", "member": ..., "peer": ..., "own_mean": ..., "peer_mean": ..., "p_value": ...,
   "exploit": false, ...}                                  (t-test selection: every comparison)
  {"event": "exploit", "member": ..., "donor": ..., "env_steps": ..., "donor_env_steps": ...,
   "score": ..., "donor_score": ..., "selection": "t_test", "p_value": 0.01, ...}
  {"event": "explore", "member": ..., "env_steps": <the donor's: where the member continues>,
   "old": {...the donor's hyperparameters}, "new": {...}, "operations": {"learning_rate": "* 1.2", ...},
   "clipped": ["lambda_teacher_0"], ...}
  {"event": "error", "member": ...}                         (the member's process failed; Ray restarts it)
  {"event": "complete", "member": ..., "env_steps": ..., "eval_return_mean": ...}

`plot_lineage` draws, against env steps, one panel per hyperparameter and one for the score, one line per
member; an exploit is a dotted jump from where the member stopped to where it continues (the donor's step and
the explored values), marked in the donor's colour.
"""

import json
import math
import os
import threading
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence

from protege.runtime import plotting


def _plain(value):
  """JSON-safe copies: NaN/inf become None (strict JSON has no NaN), numpy scalars become Python numbers."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if hasattr(value, 'item') and callable(value.item) and getattr(value, 'shape', None) == ():
    value = value.item()
  if isinstance(value, float) and not math.isfinite(value):
    return None
  return value


class LineageLog:
  """Appends events to a JSON-lines file (thread-safe; each line written and flushed whole).

  Args:
    path: the file; its directory is created. Existing lines are kept (a log is only appended to).
  """

  def __init__(self, path: str):
    self.path = path
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    self._lock = threading.Lock()

  def __getstate__(self):
    return {'path': self.path}  # Ray pickles the scheduler holding the log; a lock does not pickle

  def __setstate__(self, state):
    self.path = state['path']
    self._lock = threading.Lock()

  def record(self, event: str, **fields) -> Dict[str, Any]:
    """Appends `{'event': event, 'time': <unix seconds>, **fields}`; returns it as written."""
    entry = _plain({'event': event, 'time': time.time(), **fields})
    line = json.dumps(entry, sort_keys=True)
    with self._lock, open(self.path, 'a') as f:
      f.write(line + '\n')
      f.flush()
    return entry

  def events(self) -> List[Dict[str, Any]]:
    return read_events(self.path)


def read_events(path: str) -> List[Dict[str, Any]]:
  """The events of a lineage file, in order; a last line cut short by a crash is skipped."""
  events = []
  if not os.path.exists(path):
    return events
  with open(path) as f:
    for line in f:
      line = line.strip()
      if not line:
        continue
      try:
        events.append(json.loads(line))
      except json.JSONDecodeError:
        continue  # a line being written when the process died
  return events


def trajectories(events: Iterable[Dict[str, Any]]) -> Dict[str, List[Dict[str, Any]]]:
  """Per member, its points in order: `{'env_steps', 'hyperparameters', 'score', 'kind', 'donor'}`.

  'report' (and the final 'complete') events give points of kind 'report'; an 'explore' gives a point of
  kind 'explore' at the donor's env steps with the explored values (the member continues from there), its
  score the donor's (the weights the member now has), and `donor` set.
  """
  by_member: Dict[str, List[Dict[str, Any]]] = {}
  donor_scores = {}
  for event in events:
    kind = event.get('event')
    member = event.get('member')
    if kind == 'exploit':
      donor_scores[member] = (event.get('donor'), event.get('donor_score'))
    elif kind in ('report', 'complete') and event.get('env_steps') is not None:
      by_member.setdefault(member, []).append({
          'env_steps': event['env_steps'], 'hyperparameters': event.get('hyperparameters', {}),
          'score': event.get('score'), 'kind': 'report', 'donor': None})
    elif kind == 'explore':
      donor, score = donor_scores.pop(member, (event.get('donor'), None))
      by_member.setdefault(member, []).append({
          'env_steps': event['env_steps'], 'hyperparameters': event.get('new', {}), 'score': score,
          'kind': 'explore', 'donor': donor or event.get('donor')})
  return by_member


def _sort_key(name: str):
  prefix, _, number = name.rpartition('_')
  return (prefix, int(number)) if number.isdigit() else (name, -1)


def _member_lines(axis, points, panel, colours, member) -> None:
  """One member's values of `panel` (a hyperparameter or 'score'): solid between reports, dotted into an
  exploit's explored point (a circle filled with the donor's colour), a square at its first point."""
  values = [(p['env_steps'], p['score'] if panel == 'score' else p['hyperparameters'].get(panel))
            for p in points]
  previous = None
  for point, (x, y) in zip(points, values):
    if y is None:
      previous = None if point['kind'] == 'explore' else previous
      continue
    if previous is not None:
      style = ':' if point['kind'] == 'explore' else '-'
      axis.plot([previous[0], x], [previous[1], y], style, color=colours[member], linewidth=1.4)
    if point['kind'] == 'explore':
      axis.plot([x], [y], 'o', markersize=6, markerfacecolor=colours.get(point['donor'], 'white'),
                markeredgecolor=colours[member], markeredgewidth=1.5)
    previous = (x, y)
  xs = [x for (x, y) in values if y is not None]
  ys = [y for (x, y) in values if y is not None]
  if xs:
    axis.plot(xs[:1], ys[:1], 's', markersize=4, color=colours[member])


def plot_lineage(events: Sequence[Dict[str, Any]], path: str, log_scale: Sequence[str] = ('learning_rate',
                                                                                              'entropy_coef'),
                 title: Optional[str] = None, score_label: str = 'mean recent episode return') -> str:
  """Draws each member's hyperparameters and score against env steps into the PNG `path`; returns it.

  Args:
    events: a lineage (see the module docstring).
    path: the PNG to write (its directory is created).
    log_scale: hyperparameters drawn on a log axis (when all their values are positive).
    title: the figure's title. Default: the number of members and exploits.
    score_label: the y label of the score panel.
  """
  plt = plotting.pyplot()
  paths = trajectories(events)
  members = sorted(paths, key=_sort_key)
  keys = sorted({k for points in paths.values() for p in points for k in p['hyperparameters']})
  panels = keys + ['score']
  colours = {m: plt.get_cmap('tab10')(i % 10) for i, m in enumerate(members)}
  exploits = sum(1 for e in events if e.get('event') == 'exploit')
  with plotting.figure(path, len(panels), 1, figsize=(9, 2.3 * len(panels) + 0.6), dpi=110, sharex=True,
                       squeeze=False) as (drawing, axes):
    for axis, panel in zip(axes[:, 0], panels):
      for member in members:
        _member_lines(axis, paths[member], panel, colours, member)
      all_values = [p['score'] if panel == 'score' else p['hyperparameters'].get(panel)
                    for points in paths.values() for p in points]
      all_values = [v for v in all_values if v is not None]
      if panel in log_scale and all_values and min(all_values) > 0:
        axis.set_yscale('log')
      axis.set_ylabel(score_label if panel == 'score' else panel, fontsize=8)
    axes[-1, 0].set_xlabel('env steps (of the weights: an exploit continues from the donor\'s step)')
    handles = [plt.Line2D([], [], color=colours[m], label=m) for m in members]
    handles.append(plt.Line2D([], [], linestyle=':', marker='o', color='grey', markerfacecolor='white',
                              label='exploit + explore (fill: donor)'))
    axes[0, 0].legend(handles=handles, fontsize=7, loc='best', ncol=2)
    drawing.suptitle(title or f'PBT lineage: {len(members)} members, {exploits} exploits', fontsize=10)
  return path
