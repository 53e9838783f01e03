"""Reporters for the pipeline's stages, in the spirit of ``Simulation.reporters``.

A reporter is any object with ``report(event: StageEvent)``; it may also have
``finish(result)``, called once when the whole run is over.  The pipeline calls them when a
stage starts and ends (and inside long stages: each minimisation pass, blocks of
equilibration), for every frame::

    pipeline = hb.Pipeline(bm, reporters=[hb.ProgressReporter(), hb.JSONReporter("run.json")])

Times are seconds, energies kJ/mol.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class StageEvent:
    """One step of the pipeline: ``stage`` of ``frame`` (None: not frame-specific) started
    (``done`` False) or ended after ``elapsed`` s, with the potential ``energy`` (kJ/mol) it left
    where it has one, and a short ``detail`` (a minimisation pass, the atoms added...)."""
    stage: str
    frame: int | None
    done: bool
    elapsed: float = 0.0
    energy: float | None = None
    detail: str = ""
    wall: float = 0.0  # time.time() when it was reported

    def line(self) -> str:
        where = "" if self.frame is None else f"frame {self.frame} "
        if not self.done:
            return f"{where}{self.stage} ..." + (f" {self.detail}" if self.detail else "")
        parts = [f"{where}{self.stage} {self.elapsed:.1f} s"]
        if self.energy is not None:
            parts.append(f"{self.energy:.0f} kJ/mol")
        if self.detail:
            parts.append(self.detail)
        return ", ".join(parts)


class ProgressReporter:
    """One line per event on a stream (standard error by default): what the CLI shows."""

    def __init__(self, stream=None, prefix: str = "herobm: "):
        self.stream = stream
        self.prefix = prefix

    def report(self, event: StageEvent) -> None:
        stream = self.stream or sys.stderr
        stamp = time.strftime("%H:%M:%S", time.localtime(event.wall or time.time()))
        print(f"{self.prefix}{stamp} {event.line()}", file=stream, flush=True)


class JSONReporter:
    """Collects every finished stage and, when the run ends, writes the run's report (energies,
    timings, checks: ``result.report``) with the list of stages under ``"stages"`` to ``path``
    (atomically: a reader never sees half a file)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.events: list[dict] = []

    def report(self, event: StageEvent) -> None:
        if event.done:
            self.events.append({k: v for k, v in asdict(event).items() if v not in (None, "") and k != "done"})

    def document(self, result) -> dict:
        return {**result.report, "stages": self.events}

    def finish(self, result) -> None:
        from ..io import atomic_output

        with atomic_output(self.path) as tmp:
            Path(tmp).write_text(json.dumps(self.document(result), indent=2, default=float) + "\n")


class Stages:
    """The pipeline's side of the reporters: times each stage into ``timings`` (s, summed over
    frames) and tells every reporter when it starts and ends."""

    def __init__(self, reporters=(), timings: dict | None = None):
        self.reporters = list(reporters)
        self.timings = {} if timings is None else timings

    def emit(self, stage: str, frame: int | None, done: bool, elapsed: float = 0.0, energy: float | None = None,
             detail: str = "") -> None:
        event = StageEvent(stage, frame, done, elapsed, energy, detail, time.time())
        for reporter in self.reporters:
            reporter.report(event)

    def __call__(self, stage: str, frame: int | None = None, energy=None):
        """``with stages("minimize", frame, energy=lambda: potential(sim)) as step: ...`` ;
        ``step.detail`` may be set inside; ``energy`` is called at the end if given."""
        return _Stage(self, stage, frame, energy)

    def finish(self, result) -> None:
        for reporter in self.reporters:
            if hasattr(reporter, "finish"):
                reporter.finish(result)


class _Stage:
    def __init__(self, stages: Stages, stage: str, frame, energy):
        self.stages, self.stage, self.frame, self.energy = stages, stage, frame, energy
        self.detail = ""

    def progress(self, detail: str) -> None:
        """Progress inside a long stage (a minimisation pass, a block of dynamics)."""
        self.stages.emit(self.stage, self.frame, False, time.perf_counter() - self.t, None, detail)

    def __enter__(self):
        self.t = time.perf_counter()
        self.stages.emit(self.stage, self.frame, False)
        return self

    def __exit__(self, kind, *exc):
        seconds = time.perf_counter() - self.t
        self.stages.timings[self.stage] = self.stages.timings.get(self.stage, 0.0) + seconds
        if kind is None:
            energy = self.energy() if callable(self.energy) else self.energy
            self.stages.emit(self.stage, self.frame, True, seconds, energy, self.detail)
