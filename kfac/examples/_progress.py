"""A progress bar for the examples' training loops (no dependency).

On a terminal, one line rewritten in place at most every `refresh_seconds`:

    kfac [########------------]  412/1000  loss 0.5321  23.4 steps/s  ETA 0:25

Elsewhere (a log file, CI), the same text as a plain line at most every
`plain_seconds`, and once at the end. `update` costs a clock read and a
comparison when nothing is drawn (about a microsecond; `bench/progress.py`
measures it against a training step).
"""

import sys
import time
from typing import Callable
from typing import Optional
from typing import TextIO

WIDTH = 20


def format_duration(seconds: float) -> str:
    """`H:MM:SS`, or `M:SS` under an hour."""
    seconds = int(round(max(seconds, 0.0)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return "{:d}:{:02d}:{:02d}".format(hours, minutes, seconds)
    return "{:d}:{:02d}".format(minutes, seconds)


class ProgressBar:
    """Steps, loss, steps per second and ETA of one training run.

    Args:
      name: shown first (e.g. the optimizer).
      total: number of steps, for the bar and the ETA (None: unknown).
      stream: where to write (default `sys.stderr`).
      refresh_seconds: least time between two redraws on a terminal.
      plain_seconds: least time between two plain lines off a terminal.
      clock: `() -> seconds` (tests pass a fake one).
    """

    def __init__(self, name: str = "", total: Optional[int] = None,
                 stream: Optional[TextIO] = None, refresh_seconds: float = 0.2,
                 plain_seconds: float = 30.0,
                 clock: Callable[[], float] = time.perf_counter):
        self._name = name
        self._total = total
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._interval = refresh_seconds if self._tty else plain_seconds
        self._clock = clock
        self._start = clock()
        self._last_draw = None
        self._text = ""

    def text(self, steps: int, loss: Optional[float], elapsed: float) -> str:
        """The line for `steps` done in `elapsed` seconds."""
        parts = [self._name] if self._name else []
        rate = steps / elapsed if elapsed > 0 else 0.0
        if self._total:
            done = min(steps / self._total, 1.0)
            filled = int(round(done * WIDTH))
            parts.append("[" + "#" * filled + "-" * (WIDTH - filled) + "]")
            parts.append("{:d}/{:d}".format(steps, self._total))
        else:
            parts.append("step {:d}".format(steps))
        if loss is not None:
            parts.append("loss {:.4f}".format(loss))
        parts.append("{:.1f} steps/s".format(rate))
        if self._total and rate > 0:
            parts.append("ETA " + format_duration((self._total - steps) / rate))
        return "  ".join(parts)

    def update(self, steps: int, loss: Optional[float] = None,
               force: bool = False) -> None:
        """Reports `steps` steps done (the latest loss `loss`); draws only when
        `refresh_seconds`/`plain_seconds` have passed since the last draw."""
        now = self._clock()
        if not force and self._last_draw is not None and (
                now - self._last_draw < self._interval):
            return
        self._last_draw = now
        self._text = self.text(steps, loss, now - self._start)
        if self._tty:
            self._stream.write("\r\x1b[K" + self._text)
        else:
            self._stream.write(self._text + "\n")
        self._stream.flush()

    def close(self, steps: int, loss: Optional[float] = None) -> None:
        """Draws the final state (and ends the terminal line)."""
        self.update(steps, loss, force=True)
        if self._tty:
            self._stream.write("\n")
            self._stream.flush()
