"""The progress line a training run prints: env steps, throughput, recent return, ETA."""

import collections
import time
from typing import Optional

import numpy as np


def _format_duration(seconds: float) -> str:
  if not np.isfinite(seconds):
    return '?'
  seconds = int(max(seconds, 0))
  return f'{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}'


class Progress:
  """Prints one line every `interval` seconds: steps, throughput, recent return, ETA."""

  def __init__(self, total_env_steps: int, frames_per_step: float, interval: float):
    self._total = total_env_steps
    self._frames_per_step = frames_per_step
    self._interval = interval
    self._last_print = 0.0
    self._window = collections.deque(maxlen=10)  # (time, env_steps)

  def update(self, env_steps: int, recent_return: Optional[float], eval_return: Optional[float],
             final_rate: Optional[float] = None) -> Optional[float]:
    """Records progress; prints a line if `interval` has passed, or always with `final_rate` (the
    run's average steps/s, for the closing line). Returns the recent steps/s."""
    now = time.time()
    self._window.append((now, env_steps))
    (t0, s0), (t1, s1) = self._window[0], self._window[-1]
    rate = (s1 - s0) / (t1 - t0) if t1 > t0 else float('nan')
    if final_rate is None and now - self._last_print < self._interval:
      return rate
    self._last_print = now
    shown = rate if final_rate is None else final_rate
    eta = (self._total - env_steps) / shown if np.isfinite(shown) and shown > 0 else float('nan')
    if final_rate is not None:
      eta = 0.0  # training is over
    throughput = '- steps/s' if not np.isfinite(shown) else (
        f'{shown:,.0f} steps/s' + (f' ({shown * self._frames_per_step:,.0f} frames/s)'
                                   if self._frames_per_step != 1 else ''))
    parts = [f'[{100.0 * env_steps / self._total:5.1f}%] env steps {env_steps:,}/{self._total:,}',
             throughput + (' on average' if final_rate is not None else ''),
             'return ' + ('-' if recent_return is None else f'{recent_return:.1f}'),
             'eval ' + ('-' if eval_return is None else f'{eval_return:.1f}'),
             f'ETA {_format_duration(eta)}']
    print(' | '.join(parts), flush=True)
    return rate

