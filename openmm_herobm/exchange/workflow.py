"""``herobm exchange CONFIG.yaml``: a resolution exchange run from a config file, checkpointed
(a killed run resumes where its last checkpoint left it), with progress lines and a JSON report."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import yaml

from ..errors import HeroBMError

#: config keys -> defaults (None: required); paths are relative to the config file
DEFAULTS = {"structure": None, "martini": None, "forcefield": "amber14-all.xml", "solvent": "implicit",
            "lambdas": [0.3, 0.45, 0.6, 0.8, 1.0], "temperature": 300.0, "timestep": 0.002, "friction": 1.0,
            "steps": 250, "iterations": 1000, "seed": 1, "platform": "CPU", "checkpoint": "exchange.npz",
            "checkpoint_every": 50, "report": "exchange.report.json",
            "trajectory": "exchange.dcd"}


def read_config(path) -> dict:
    """The config (a YAML mapping) with defaults filled in and paths made absolute; one-line errors."""
    path = Path(path)
    try:
        given = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise HeroBMError(f"{path}: cannot read the config: {str(exc).splitlines()[0]}") from None
    if not isinstance(given, dict):
        raise HeroBMError(f"{path}: the config must be a mapping of keys ({', '.join(DEFAULTS)})")
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise HeroBMError(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
    config = {**DEFAULTS, **given}
    missing = [k for k, v in config.items() if v is None]
    if missing:
        raise HeroBMError(f"{path}: missing {', '.join(missing)}")
    for key in ("structure", "martini", "checkpoint", "report", "trajectory"):
        config[key] = str((path.parent / config[key]).resolve())
    return config


class ProgressLine:
    """Reporter: one line on ``stream`` every ``every`` iterations (acceptance, round trips, speed)."""

    def __init__(self, every: int = 10, stream=None):
        self.every, self.stream, self.start = max(int(every), 1), stream or sys.stderr, time.perf_counter()

    def report(self, rex) -> None:
        if rex.iteration % self.every == 0:
            acc = " ".join(f"{a:.2f}" for a in rex.acceptance)
            print(f"exchange: iteration {rex.iteration}, acceptance {acc}, round trips {rex.round_trips()}, "
                  f"{time.perf_counter() - self.start:.0f} s", file=self.stream, flush=True)


class Checkpointer:
    """Reporter: :meth:`ResolutionExchange.save` every ``every`` iterations."""

    def __init__(self, path, every: int):
        self.path, self.every = path, max(int(every), 1)

    def report(self, rex) -> None:
        if rex.iteration % self.every == 0:
            rex.save(self.path)


def run_exchange(config, progress: bool = True) -> dict:
    """Run (or resume) the exchange of ``config`` (a path or :func:`read_config`'s dict) to its
    ``iterations``; writes the checkpoint and the JSON report; returns the report."""
    from openmm import app

    from .sampler import (
        ResolutionExchange,
        all_atom_system,
        resolution_states,
        resolution_system,
    )

    config = read_config(config) if not isinstance(config, dict) else config
    pdb = app.PDBFile(config["structure"])
    system = resolution_system(pdb.topology, all_atom_system(pdb.topology, pdb.positions, config["forcefield"],
                                                             config["solvent"]), pdb.positions, config["martini"])
    rex = ResolutionExchange(system, pdb.positions, resolution_states(config["lambdas"]),
                             temperature=config["temperature"], friction=config["friction"],
                             timestep=config["timestep"], steps=config["steps"], platform=config["platform"],
                             seed=config["seed"])
    checkpoint = Path(config["checkpoint"])
    resumed = 0
    if checkpoint.exists():
        rex.load(checkpoint)
        resumed = rex.iteration
    reporters = [Checkpointer(checkpoint, config["checkpoint_every"])]
    if progress:
        reporters.append(ProgressLine(config["checkpoint_every"]))
    t0 = time.perf_counter()
    rex.run(max(int(config["iterations"]) - rex.iteration, 0), reporters)
    rex.save(checkpoint)
    _write_trajectory(config["trajectory"], pdb.topology, rex.samples)
    report = {"iterations": rex.iteration, "resumed_from": resumed, "seconds_this_run": time.perf_counter() - t0,
              "lambdas": list(map(float, config["lambdas"])), "acceptance": rex.acceptance.tolist(),
              "round_trips": rex.round_trips(), "samples": len(rex.samples), "checkpoint": str(checkpoint),
              "trajectory": config["trajectory"],
              "config": config}
    path = Path(config["report"])
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=1) + "\n")
    tmp.replace(path)
    return report


def _write_trajectory(path, topology, samples) -> None:
    """The all-atom state's samples (one frame per iteration, nm) as a DCD, written atomically."""
    import mdtraj
    import numpy as np

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp.dcd")
    mdtraj.Trajectory(np.asarray(samples, dtype=np.float32).reshape(len(samples), -1, 3),
                      mdtraj.Topology.from_openmm(topology)).save_dcd(str(tmp))
    tmp.replace(path)
