"""Resolution exchange vs plain MD vs temperature replica exchange on alanine dipeptide.

    python benchmarks/resolution_exchange.py [--md-ns 2] [--iterations 2000] [--out benchmarks/results/resolution_exchange.json]

All-atom: ACE-ALA-NME (tests/data/exchange/alanine_dipeptide.pdb), Amber14 + OBC2 (OpenMM's native
GBSAOBCForce), 1 nm non-periodic cut-off, HBonds, 2 fs, Langevin 1/ps, 300 K, one thread
(Reference platform: for 22 atoms it is 8x faster than CPU).  CG: the hand-written Martini 3
topology tests/data/exchange/alanine_dipeptide_martini.top.  Three samplers of the 300 K all-atom
ensemble, each reported with the phi/psi basin populations (block standard errors, 20 blocks),
the effective sample size of the alpha_R indicator (the slow alpha_R <-> beta exchange; alpha_L is
not visited at 300 K in these runs) per CPU-hour (all replicas' CPU time), and for the
replica exchanges the acceptance per neighbour pair and the round trips:
  * plain MD (the reference),
  * resolution exchange, states (1, l, 1 - l) for l in --lambdas (the l = 1 replica is sampled),
  * temperature replica exchange with the same number of replicas (--temperatures, geometric),
    run as potential scaling T0/T_k (the same configurational ensembles as real temperatures).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
from openmm import app, unit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import write_result

DATA = HERE.parent / "tests" / "data" / "exchange"
PDB = DATA / "alanine_dipeptide.pdb"
TOP = DATA / "alanine_dipeptide_martini.top"
BASINS = ("alpha_R", "beta", "alpha_L")
STEPS = 250  # 2 fs steps between samples / exchange attempts (0.5 ps)


def phi_psi(topology: app.Topology, xyz: np.ndarray) -> np.ndarray:
    """(frames, 2) phi, psi of the alanine (degrees)."""
    traj = mdtraj.Trajectory(np.asarray(xyz), mdtraj.Topology.from_openmm(topology))
    return np.degrees(np.concatenate([mdtraj.compute_phi(traj)[1], mdtraj.compute_psi(traj)[1]], axis=1))


def basins(angles: np.ndarray) -> np.ndarray:
    """(frames, 3) indicators: alpha_R (phi < 0, -120 <= psi < 50), beta (phi < 0, the rest: C7eq,
    PPII, beta), alpha_L (phi > 0: alpha_L and C7ax)."""
    phi, psi = angles[:, 0], angles[:, 1]
    right = (phi < 0) & (psi >= -120) & (psi < 50)
    return np.stack([right, (phi < 0) & ~right, phi >= 0], axis=1).astype(float)


def populations(indicators: np.ndarray, blocks: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Means (3,) and block standard errors (3,) of basin indicators (frames, 3)."""
    n = len(indicators) // blocks * blocks
    means = indicators[:n].reshape(blocks, -1, indicators.shape[1]).mean(axis=1)
    return indicators.mean(axis=0), means.std(axis=0, ddof=1) / np.sqrt(blocks)


def effective_samples(indicator: np.ndarray, blocks: int = 20) -> float:
    """p (1 - p) / SE^2 of one indicator (its block standard error); the sample count if it never varies."""
    p = indicator.mean()
    _, se = populations(indicator[:, None], blocks)
    return float(p * (1 - p) / se[0] ** 2) if se[0] > 0 else float("nan")


def setup():
    from openmm_herobm.exchange import all_atom_system

    pdb = app.PDBFile(str(PDB))
    return pdb, all_atom_system(pdb.topology, pdb.positions)


def plain_md(pdb, system, ns: float, seed: int = 1) -> dict:
    integrator = mm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(pdb.positions)
    context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    integrator.step(5000)  # 10 ps
    frames, t0 = [], time.process_time()
    for _ in range(int(ns * 1000 / (STEPS * 0.002))):
        integrator.step(STEPS)
        frames.append(context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    return summary(pdb, np.array(frames), time.process_time() - t0, n_replicas=1)


def exchange(pdb, system, states, iterations: int, seed: int = 1, label: str = "") -> dict:
    from openmm_herobm.exchange import ResolutionExchange, resolution_system

    rex_system = resolution_system(pdb.topology, system, pdb.positions, str(TOP))
    rex = ResolutionExchange(rex_system, pdb.positions, states, steps=STEPS, platform="Reference", seed=seed)
    rex.run(10)  # 5 ps per replica
    rex.samples, rex.history = [], []
    rex.attempts[:], rex.accepts[:] = 0, 0
    t0 = time.process_time()
    rex.run(iterations)
    out = summary(pdb, np.array(rex.samples), time.process_time() - t0, n_replicas=len(states))
    history = np.array(rex.history)
    out.update(acceptance=rex.acceptance.tolist(), round_trips=rex.round_trips(),
               # mixing: the fraction of states each replica visited, and how often the target changed hands
               states_visited_per_replica=[len(set(history[:, r])) / len(states) for r in range(len(states))],
               target_replica_changes=int((np.diff(np.argmax(history == rex.target, axis=1)) != 0).sum()),
               states=np.asarray(states).tolist())
    return out


def summary(pdb, frames: np.ndarray, cpu_s: float, n_replicas: int) -> dict:
    ind = basins(phi_psi(pdb.topology, frames))
    p, se = populations(ind)
    ess = effective_samples(ind[:, 0])
    return {"frames": len(frames), "cpu_s": cpu_s, "replicas": n_replicas,
            "populations": dict(zip(BASINS, p.tolist())), "errors": dict(zip(BASINS, se.tolist())),
            "ess_alpha_R": ess, "ess_alpha_R_per_cpu_hour": ess / (cpu_s / 3600)}


def main(argv=None) -> dict:
    from openmm_herobm.exchange import resolution_states, temperature_states

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--md-ns", type=float, default=2.0, help="plain MD length (ns)")
    parser.add_argument("--iterations", type=int, default=2000, help="exchange iterations (0.5 ps per replica each)")
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.3, 0.45, 0.6, 0.8, 1.0])
    parser.add_argument("--temperatures", type=float, nargs="+", default=None,
                        help="default: geometric 300 .. 600 K, as many as lambdas")
    parser.add_argument("--skip", nargs="*", default=(), choices=("md", "rex", "trex"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    pdb, system = setup()
    temps = args.temperatures or np.geomspace(300, 600, len(args.lambdas)).tolist()
    results = {}
    if "md" not in args.skip:
        results["plain_md"] = dict(plain_md(pdb, system, args.md_ns), ns=args.md_ns)
        print("plain MD", results["plain_md"], flush=True)
    if "rex" not in args.skip:
        results["resolution_exchange"] = exchange(pdb, system, resolution_states(args.lambdas), args.iterations)
        print("resolution exchange", results["resolution_exchange"], flush=True)
    if "trex" not in args.skip:
        results["temperature_exchange"] = dict(exchange(pdb, system, temperature_states(temps[::-1]), args.iterations),
                                               temperatures=temps[::-1])
        print("temperature exchange", results["temperature_exchange"], flush=True)
    write_result(args.out, machine="2-core AMD EPYC (shared), Reference platform, 1 thread", **results)
    return results


if __name__ == "__main__":
    main()
