"""Progress of long runs: a tqdm bar on a terminal, a heartbeat line elsewhere.

A :class:`Progress` has a main count (``stage``/``advance``: splits, experiments,
trials) and a finer one (``step``: the epoch of a training stage, the task of a
parallel map). Where it writes (stderr by default) is a terminal and ``CI`` is
not set, it draws a tqdm bar; otherwise (a log file, a pipe, CI) it writes one
line at most every ``interval`` seconds (30 by default, or
``$DROPLAB_HEARTBEAT_SECONDS``) saying what runs, how far it is, the time
elapsed and an estimate of the time left::

    droplab uci yacht | splits: 0/20 done | grid search: 812/4000 epochs | 3m12s elapsed, about 12m35s left in grid search

Code deep inside a run (``droplab.uncertainty.uci.protocol.run_splits``, ``parallel_map``) reports
to the :func:`current` progress, the one whose ``with`` block it runs in, so
no callback has to be threaded through every layer. The clock and the interval
can be injected, which is how the tests check the heartbeat without waiting.
"""

from __future__ import annotations

import contextvars
import math
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TextIO

__all__ = [
    "HEARTBEAT_ENV",
    "Progress",
    "current",
    "format_seconds",
    "heartbeat_interval",
    "interactive",
]

HEARTBEAT_ENV = "DROPLAB_HEARTBEAT_SECONDS"
DEFAULT_INTERVAL = 30.0
BAR_SECONDS = 0.1  # the bar redraws at most this often for step()

_CURRENT: contextvars.ContextVar[Progress | None] = contextvars.ContextVar(
    "droplab_progress", default=None
)


def current() -> Progress | None:
    """The progress of the innermost ``with Progress(...)`` block, or None."""
    return _CURRENT.get()


def interactive(stream: TextIO) -> bool:
    """Bars only on a terminal, and never when ``CI`` is set."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and not os.environ.get("CI")


def heartbeat_interval() -> float:
    """Seconds between heartbeat lines: ``$DROPLAB_HEARTBEAT_SECONDS``, else 30."""
    text = os.environ.get(HEARTBEAT_ENV, "")
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError(
            f"The environment variable {HEARTBEAT_ENV} must be a number of seconds "
            f">= 0. Got {text!r} instead."
        )
    return value


def format_seconds(seconds: float) -> str:
    """Seconds as ``1h02m``, ``3m12s`` or ``45s``.

    >>> format_seconds(45.2), format_seconds(192), format_seconds(3725)
    ('45s', '3m12s', '1h02m')
    """
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


@dataclass
class _Count:
    label: str
    done: int
    total: int
    unit: str
    started: float
    first: int = 0  # the count when first seen (a resumed run starts past 0)

    def text(self) -> str:
        return f"{self.label}: {self.done}/{self.total} {self.unit}s"

    def left(self, now: float) -> float | None:
        """Seconds left at the rate seen since ``started``, or None if unknown."""
        if self.done <= self.first or self.total <= self.done:
            return None
        return (
            (now - self.started) / (self.done - self.first) * (self.total - self.done)
        )


class Progress:
    """A bar or a heartbeat for one long command (see the module doc).

    Args:
        what: what runs, e.g. ``"droplab uci yacht"`` (starts every line).
        stream: where to write (default ``sys.stderr``).
        interval: seconds between heartbeat lines (default
            :func:`heartbeat_interval`); 0 writes a line at every update.
        clock: monotonic seconds (injectable for tests).
        bar: force the tqdm bar on or off (default: :func:`interactive`).
        background: also beat between updates, from a daemon thread (default:
            with the real clock and an interval > 0).

    Examples:
        >>> import io
        >>> out, now = io.StringIO(), [0.0]
        >>> with Progress("demo", stream=out, interval=30, clock=lambda: now[0]) as p:
        ...     p.stage("trials", 4, "trial")
        ...     now[0] = 10.0; p.advance()      # too soon for a line
        ...     now[0] = 31.0; p.advance()      # 31 s after the start: a line
        >>> print(out.getvalue().strip())
        demo | trials: 2/4 trials done | 31s elapsed, about 31s left
    """

    def __init__(
        self,
        what: str,
        *,
        stream: TextIO | None = None,
        interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        bar: bool | None = None,
        background: bool | None = None,
    ) -> None:
        self.what = what
        self._stream = sys.stderr if stream is None else stream
        self._interval = heartbeat_interval() if interval is None else interval
        self._clock = clock
        self._started = self._last = clock()
        self._main: _Count | None = None
        self._sub: _Count | None = None
        self._item = ""
        self._drawn = -math.inf  # when the bar was last redrawn
        self._token: contextvars.Token[Progress | None] | None = None
        self._bar: Any = None
        if interactive(self._stream) if bar is None else bar:
            from tqdm import tqdm

            self._bar = tqdm(
                total=None, desc=what, file=self._stream, dynamic_ncols=True
            )
        # A heartbeat also beats between updates (one training step can take
        # minutes): a daemon thread looks every second, on the real clock only.
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        if background is None:
            background = clock is time.monotonic and self._interval > 0
        if background and self._bar is None:
            self._thread = threading.Thread(
                target=self._beat, name="droplab-heartbeat", daemon=True
            )
            self._thread.start()

    def __enter__(self) -> Progress:
        self._token = _CURRENT.set(self)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Remove the bar, stop the heartbeat and stop being :func:`current`."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._token is not None:
            _CURRENT.reset(self._token)
            self._token = None

    def stage(self, label: str, total: int, unit: str) -> None:
        """Start the main count: ``total`` ``unit``s of ``label``, none done yet."""
        self._main = _Count(label, 0, total, unit, self._clock())
        self._sub, self._item = None, ""
        if self._bar is not None:
            self._bar.reset(total=total)
            self._bar.unit = unit
            self._bar.set_description(f"{self.what}: {label}")
        self._tick()

    def advance(self, n: int = 1, *, item: str = "") -> None:
        """``n`` more of the main count done; ``item`` names what runs now."""
        if self._main is not None:
            self._main.done += n
        self._item, self._sub = item, None
        if self._bar is not None:
            self._bar.update(n)
            self._bar.set_postfix_str(item)
        self._tick()

    def goto(self, done: int, *, item: str = "") -> None:
        """Set the main count to ``done`` (e.g. trials of a resumed study)."""
        if self._main is not None:
            self.advance(done - self._main.done, item=item)

    def step(self, done: int, total: int, unit: str, *, label: str = "") -> None:
        """The finer count: ``done`` of ``total`` ``unit``s of ``label``."""
        now = self._clock()
        sub = self._sub
        if sub is None or (sub.label, sub.total, sub.unit) != (label, total, unit):
            sub = self._sub = _Count(label, done, total, unit, now, first=done)
        sub.done = done
        if self._bar is not None:
            where = f"{self._item}: " if self._item else ""
            self._bar.set_postfix_str(f"{where}{sub.text()}", refresh=False)
            # Redraw at most every BAR_SECONDS (tqdm's own mininterval).
            if now - self._drawn >= BAR_SECONDS or done >= total:
                self._drawn = now
                self._bar.refresh()
        self._tick(now)

    def write(
        self, text: str, out: TextIO | Callable[[str], None] | None = None
    ) -> None:
        """Print a line of its own, lifting the bar out of the way while it does.

        ``out`` is a stream (default: the progress's own) or a function that
        prints one line (a command's log).
        """

        def emit() -> None:
            if out is None:
                print(text, file=self._stream, flush=True)
            elif callable(out):
                out(text)
            else:
                print(text, file=out, flush=True)

        if self._bar is not None:
            with self._bar.external_write_mode(file=self._stream):
                emit()
        else:
            emit()

    def line(self, now: float | None = None) -> str:
        """The heartbeat line for the state now."""
        now = self._clock() if now is None else now
        parts = [self.what]
        if self._main is not None:
            main = f"{self._main.text()} done"
            parts.append(main + (f", now {self._item}" if self._item else ""))
        elif self._item:
            parts.append(self._item)
        if self._sub is not None:
            parts.append(self._sub.text())
        timing = f"{format_seconds(now - self._started)} elapsed"
        sub_left = self._sub.left(now) if self._sub is not None else None
        main_left = self._main.left(now) if self._main is not None else None
        if sub_left is not None:
            where = self._sub.label if self._sub is not None and self._sub.label else ""
            where = where or self._item or "this step"
            timing += f", about {format_seconds(sub_left)} left in {where}"
        elif main_left is not None:
            timing += f", about {format_seconds(main_left)} left"
        parts.append(timing)
        return " | ".join(parts)

    def _tick(self, now: float | None = None) -> None:
        if self._bar is not None:
            return
        with self._lock:
            now = self._clock() if now is None else now
            if now - self._last >= self._interval:
                self._last = now
                print(self.line(now), file=self._stream, flush=True)

    def _beat(self) -> None:
        while not self._stopped.wait(min(1.0, self._interval)):
            self._tick()
