"""How long a lab run should take on this machine, said as a range before it starts.

The seconds each experiment took on the project's reference machine are scaled
by this machine's measured speed: a calibration workload (40 SGD steps of a
small MLP on one thread, the kind of work the experiments do) timed a few times
now, against its best time on the reference machine. The fastest repeat gives
the low end; the middle repeat, stretched by the load average beyond the core
count (other work that will keep competing), gives the high end. After the run,
:func:`took` says whether the time fell in the range, and why not.

Only for the messages around a run: never shown as a result.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass

__all__ = [
    "DEFAULT_SECONDS",
    "Speed",
    "duration",
    "expected_range",
    "expected_time",
    "measure_speed",
    "reference_seconds",
    "took",
]

# Seconds each experiment took in the default preset on the reference machine
# (this project's 2-core Intel Xeon, AVX-512), quiet (load <= 1), from a fresh
# venv, 2026-12-03.
DEFAULT_SECONDS = {
    "masks": 0.9, "expectation": 2.2, "averaging": 8.2, "gradients": 0.1,
    "exact-count": 17.2, "smaller-network": 17.2, "convergence": 4.3,
    "rate": 20.7, "data-size": 19.7, "when-it-helps": 61.2, "features": 10.1,
    "uncertainty": 8.6, "variants": 32.7, "uci": 10.8,
}  # fmt: skip
# Whole runs on the reference machine, quiet, 2026-12-03 (old page, one figure per
# experiment): default 4 min 47 s, quick 24 s. With the page's cost taken out
# (RENDER_SECONDS each), the experiments' own time is these factors times the
# sum above (data loading, warm-ups and process start-up included).
PRESET_FACTOR = {"quick": 0.047, "default": 1.27}
# The page's cost per experiment: its figure drawn twice (desktop and phone),
# on the reference machine; fitted with REFERENCE_CALIBRATION_S below.
RENDER_SECONDS = 1.2
# The calibration workload's time on the reference machine: the unit of this
# machine's speed. The Intel Xeon that measured DEFAULT_SECONDS could not be
# rerun, so it is fitted on the project's 2-core AMD EPYC of 2026-12-06, quiet
# (load 0.4-0.9, 17:14-17:20 UTC, from a fresh venv): calibration best 0.0262 s,
# `droplab report` 240 s and `--preset quick` 22 s, which the model gives with
# a speed of 0.83 (0.0262 / 0.0315) and RENDER_SECONDS 1.2. (Until then it was
# 0.122 s, measured at load 3: runs were expected in about half their time.)
REFERENCE_CALIBRATION_S = 0.0315


@dataclass(frozen=True)
class Speed:
    """This machine now, against the reference: ``best`` and ``typical`` are
    calibration times over the reference's (1.0: as fast; 2.0: half as fast)."""

    best: float
    typical: float
    load: float | None  # 1-minute load average (None where the OS has none)
    cores: int


def _calibration_step() -> float:
    """Seconds for 40 SGD steps of a 64-256-256-10 MLP, batch 64, on one thread."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(64, 64, generator=gen)
        y = torch.randint(0, 10, (64,), generator=gen)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = torch.nn.Sequential(
                torch.nn.Linear(64, 256), torch.nn.ReLU(),
                torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10),
            )  # fmt: skip
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)
        start = time.perf_counter()
        for _ in range(40):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x), y).backward()
            optimizer.step()
        return time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)


def measure_speed(repeats: int = 5) -> Speed:
    """Time the calibration ``repeats`` times (about a second in all) and read the
    load average."""
    _calibration_step()  # warm-up
    times = [_calibration_step() for _ in range(repeats)]
    try:
        load: float | None = os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every OS
        load = None
    return Speed(
        best=min(times) / REFERENCE_CALIBRATION_S,
        typical=statistics.median(times) / REFERENCE_CALIBRATION_S,
        load=load,
        cores=os.cpu_count() or 1,
    )


def expected_range(
    names: list[str], preset: str, reused: set[str], speed: Speed
) -> tuple[float, float]:
    """(low, high) seconds for running ``names`` (reused results cost nothing).

    >>> quiet = Speed(best=1.0, typical=1.05, load=0.3, cores=2)
    >>> [round(s) for s in expected_range(["rate"], "default", set(), quiet)]
    [27, 36]
    >>> busy = Speed(best=1.3, typical=1.6, load=8.0, cores=2)
    >>> [round(s) for s in expected_range(["rate"], "default", set(), busy)]
    [36, 176]
    """
    work = reference_seconds(names, preset, reused)
    # The load beyond the cores: work that competes with this run all along.
    crowd = (
        max(1.0, (speed.load or 0.0) / speed.cores) if speed.load is not None else 1.0
    )
    low = work * max(speed.best, 0.5)
    high = work * max(speed.typical, speed.best) * crowd
    return low, max(high, 1.3 * low)


def reference_seconds(
    names: list[str], preset: str, reused: set[str] | None = None
) -> float:
    """Seconds the run takes on the reference machine, quiet (the page included).

    >>> round(reference_seconds(list(DEFAULT_SECONDS), "default"))
    288
    >>> round(reference_seconds(list(DEFAULT_SECONDS), "quick"))
    27
    """
    todo = [n for n in names if n not in (reused or set())]
    work = PRESET_FACTOR.get(preset, 1.0) * sum(
        DEFAULT_SECONDS.get(n, 10.0) for n in todo
    )
    return work + RENDER_SECONDS * len(names)


def duration(seconds: float) -> str:
    """``seconds`` for a reader, to 10 s above 90 s.

    >>> duration(21.4), duration(214), duration(3600)
    ('21 s', '3 min 30 s', '60 min')
    """
    if seconds < 90:
        return f"{seconds:.0f} s"
    tens = round(seconds / 10)
    return f"{tens // 6} min {10 * (tens % 6)} s" if tens % 6 else f"{tens // 6} min"


def _span(low: float, high: float) -> str:
    """``low`` to ``high`` seconds, for a reader.

    >>> _span(200, 330), _span(20, 31)
    ('3 min 20 s to 5 min 30 s', '20 to 31 s')
    """
    a, b = duration(low), duration(high)
    if a.endswith(" s") and b.endswith(" s") and "min" not in a + b:
        return f"{a[:-2]} to {b}"
    return f"{a} to {b}"


def _machine(speed: Speed) -> str:
    load = (
        f", load {speed.load:.1f} on {speed.cores} cores"
        if speed.load is not None
        else ""
    )
    return f"this machine now {speed.best:.1f}-{speed.typical:.1f}x the reference's time{load}"


def expected_time(
    names: list[str], preset: str, reused: set[str], speed: Speed | None
) -> str:
    """The sentence printed as a run starts.

    >>> quiet = Speed(best=1.0, typical=1.05, load=0.3, cores=2)
    >>> print(expected_time(["masks", "rate"], "default", {"masks"}, quiet))
    expected time: 29 to 37 s (1 experiment to run, 1 saved result reused; measured: this machine now 1.0-1.1x the reference's time, load 0.3 on 2 cores)
    >>> print(expected_time(["rate"], "full", set(), quiet))
    expected time: the full preset takes minutes to hours per experiment (when-it-helps: 37 min on 2 cores)
    """
    if preset not in PRESET_FACTOR or speed is None:
        return (
            "expected time: the full preset takes minutes to hours per experiment "
            "(when-it-helps: 37 min on 2 cores)"
        )
    todo = [n for n in names if n not in reused]
    counts = f"{len(todo)} experiment{'' if len(todo) == 1 else 's'} to run"
    if reused:
        counts += (
            f", {len(reused)} saved result{'' if len(reused) == 1 else 's'} reused"
        )
    low, high = expected_range(names, preset, reused, speed)
    return f"expected time: {_span(low, high)} ({counts}; measured: {_machine(speed)})"


def took(
    seconds: float, expected: tuple[float, float] | None, load: float | None, cores: int
) -> str:
    """The sentence printed as a run ends: its time against the range expected.

    >>> took(287, (200, 330), 1.1, 2)
    'took 4 min 50 s (expected 3 min 20 s to 5 min 30 s)'
    >>> took(954, (200, 330), 8.0, 2)
    'took 15 min 50 s, more than the 3 min 20 s to 5 min 30 s expected: the machine got busier (load 8.0 on 2 cores now)'
    """
    if expected is None:
        return f"took {duration(seconds)}"
    low, high = expected
    if seconds <= high:
        return f"took {duration(seconds)} (expected {_span(low, high)})"
    why = (
        f"the machine got busier (load {load:.1f} on {cores} cores now)"
        if load is not None and load > 0.8 * cores
        else "slower than measured at the start"
    )
    return f"took {duration(seconds)}, more than the {_span(low, high)} expected: {why}"
