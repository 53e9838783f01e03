#!/usr/bin/env python
"""How well *any* backmapper can do on a CHARMM36 lipid bilayer: the atoms the beads leave open.

A Martini 3 bead is the centre of a few heavy atoms; many all-atom conformations share the
same beads.  Scored against the one conformation the beads came from, the best possible
prediction of every atom is the mean over all conformations with those beads (the conditional
mean), and its expected squared error is their spread (the conditional variance).  This script
samples that spread directly: CHARMM36 MD of a real all-atom bilayer (explicit water, PME) with
every lipid bead held at its own starting position (``--k``, harmonic, on the mapping's bead
centres), so the atoms explore exactly the conformations the beads allow, and reports per lipid
type

With ``--cycles`` the samples are taken after heating to ``--hot`` K and cooling back, beads held
throughout: conformations the beads allow but a short run at 303 K would not reach.

* ``bound``: the RMSD of each sampled frame from the frame-averaged structure, per molecule,
  averaged over molecules and frames: the error of the best possible prediction, estimated from
  this run (a short run samples less than all, so the true bound is larger, not smaller);
* ``pair``: the RMSD between the starting structure (a sample itself) and later frames / sqrt(2),
  a second estimate of the same number;
* both per atom name and with equivalent atoms (a choline's methyls ...) in their best assignment;
* per heavy atom name, the RMS spread (where the beads leave atoms open);
* how far the beads moved (they should stay within a few hundredths of an A).

No model is involved.  The numbers are a *lower* bound on what the beads leave open: with every
bead held, MD does not cross the barriers between the conformations those beads allow within
these runs (the choline methyls spread 0.52-0.56 A here, while their names are scrambled in an
equilibrated bilayer; the lipid frame regression's best held-out POPC error is ~0.72 A:
BENCHMARKS.md, "Lipids", session 15).

    python benchmarks/lipid_information_limit.py --ps 150 --equilibrate 10 --every 2 --k 500000 \\
        --out benchmarks/results/lipid_information_limit_popc.json
    python benchmarks/lipid_information_limit.py --cholesterol 14 --free-ps 10 --ps 30 --equilibrate 2 \\
        --every 1 --step-fs 2 --k 500000 --out benchmarks/results/lipid_information_limit_chol.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lipid_quality import best_assignment  # a sibling benchmark

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BILAYER = DATA / "lipids" / "charmm36_POPCpure.gro.gz"
RADIUS = {"H": 0.031, "C": 0.076, "N": 0.071, "O": 0.066, "P": 0.107, "S": 0.105}  # nm, covalent
WATER = {"SOL": "HOH", "TIP3": "HOH", "HOH": "HOH"}
WATER_ATOMS = {"OW": "O", "HW1": "H1", "HW2": "H2", "OH2": "O"}
#: masses change the dynamics, not the distribution of conformations sampled: heavier hydrogens
#: (taken from their heavy atom) allow 4 fs steps with bonds to hydrogen constrained (POPC; a
#: bilayer with cholesterol blew up at 4 fs: --step-fs 2)
HYDROGEN_MASS = 3.0
ION = {"NA": "SOD", "CL": "CLA", "SOD": "SOD", "CLA": "CLA"}


def openmm_topology(traj):
    """OpenMM topology of a GROMACS bilayer: CHARMM36 residue names, bonds within each residue by
    distance (covalent radii + 0.045 nm; the snapshot is an MD structure), waters as OpenMM's HOH."""
    import openmm.app as app
    from scipy.spatial import cKDTree

    top = app.Topology()
    xyz = traj.xyz[0]
    chain = top.addChain()
    for residue in traj.topology.residues:
        name = WATER.get(residue.name) or ION.get(residue.name) or ("CHL1" if residue.name == "CHL" else residue.name)
        new = top.addResidue(name, chain, str(residue.resSeq))
        atoms = [top.addAtom(WATER_ATOMS.get(a.name, a.name) if name == "HOH" else
                             (name if name in ION.values() else a.name),
                             app.Element.getBySymbol(a.element.symbol), new) for a in residue.atoms]
        index = np.array([a.index for a in residue.atoms])
        if len(index) < 2:
            continue
        radius = np.array([RADIUS[a.element.symbol] for a in residue.atoms])
        for i, j in cKDTree(xyz[index]).query_pairs(0.2):
            close = np.linalg.norm(xyz[index[i]] - xyz[index[j]]) < radius[i] + radius[j] + 0.045
            if close and not (atoms[i].element.symbol == "H" and atoms[j].element.symbol == "H"):
                top.addBond(atoms[i], atoms[j])
    top.setPeriodicBoxVectors(traj.openmm_boxes(0))
    return top


def _script(name: str):
    """A script of ``scripts/`` imported as a module (its functions, not its command line)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def embed_cholesterol(traj, n: int, seed: int):
    """``traj`` with ``n`` POPC (seeded) replaced by CG2AT2's CHARMM36 cholesterol (all atoms), O3 at
    the POPC's glycerol C2 and O3 -> C25 along its P -> tail-ends axis, randomly spun about it
    (as ``scripts/build_lipid_training_set.py``, but water and box kept)."""
    import mdtraj

    conformers, builder = _script("generate_cholesterol_conformers"), _script("build_lipid_training_set")
    chl_top, chl_xyz = conformers.cholesterol_topology(conformers.FRAGMENT)
    chl_atoms = list(chl_top.atoms())
    names = {a.name: k for k, a in enumerate(chl_atoms)}
    own = chl_xyz[names["C25"]] - chl_xyz[names["O3"]]
    own /= np.linalg.norm(own)
    rng = np.random.default_rng(seed)
    popc = [r for r in traj.topology.residues if r.name == "POPC"]
    chosen = {popc[k].index for k in rng.choice(len(popc), size=n, replace=False)}
    xyz = traj.xyz[0].astype(np.float64)
    top, out = mdtraj.Topology(), []
    chain = top.add_chain()
    for res in traj.topology.residues:
        if res.index in chosen:
            a = {x.name: x.index for x in res.atoms}
            axis = 0.5 * (xyz[a["C218"]] + xyz[a["C316"]]) - xyz[a["P"]]
            axis /= np.linalg.norm(axis)
            rot = builder._spin(axis, rng.uniform(0, 2 * np.pi)) @ builder._rotation(own, axis)
            placed = (chl_xyz - chl_xyz[names["O3"]]) @ rot.T + xyz[a["C2"]]
            new = top.add_residue("CHL", chain, resSeq=res.resSeq)
            for atom, p in zip(chl_atoms, placed):
                top.add_atom(atom.name, mdtraj.element.get_by_symbol(atom.element.symbol), new)
                out.append(p)
            continue
        new = top.add_residue(res.name, chain, resSeq=res.resSeq)
        for atom in res.atoms:
            top.add_atom(atom.name, atom.element, new)
            out.append(xyz[atom.index])
    return mdtraj.Trajectory(np.array(out, np.float32)[None], top, unitcell_lengths=traj.unitcell_lengths,
                             unitcell_angles=traj.unitcell_angles)


def relax(top, ff, kwargs: dict, xyz_nm: np.ndarray, ps: float, temperature: float):
    """Minimise (no constraints: OpenMM's minimiser is slow with them), then ``ps`` of free NPT MD
    (membrane barostat, 1 bar, box x = y): a bilayer with new molecules in it settles.  ``ff`` and
    ``kwargs`` make the system (``ForceField.createSystem``).  Returns the positions (nm) and the box
    vectors."""
    import openmm as mm
    import openmm.unit as unit

    loose = ff.createSystem(top, **{**kwargs, "constraints": None, "rigidWater": False, "hydrogenMass": None})
    lennard_jones_in_nonbonded(loose)
    context = mm.Context(loose, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"))
    context.setPositions(xyz_nm)
    mm.LocalEnergyMinimizer.minimize(context, 100.0, 2000)
    xyz = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    system = ff.createSystem(top, **kwargs)
    lennard_jones_in_nonbonded(system)
    system.addForce(mm.MonteCarloMembraneBarostat(1.0 * unit.bar, 0.0, temperature * unit.kelvin,
                                                  mm.MonteCarloMembraneBarostat.XYIsotropic,
                                                  mm.MonteCarloMembraneBarostat.ZFree))
    integrator = mm.LangevinMiddleIntegrator(temperature * unit.kelvin, 1.0 / unit.picosecond, 0.002 * unit.picoseconds)
    integrator.setRandomNumberSeed(2)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("CPU"))
    context.setPositions(xyz)
    context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(temperature * unit.kelvin, 2)
    integrator.setStepSize(0.0005 * unit.picoseconds)  # the minimised contacts still strained: start gently
    integrator.step(2000)
    integrator.setStepSize(0.002 * unit.picoseconds)  # 4 fs is not stable while new molecules settle
    integrator.step(round(ps / 0.002))
    state = context.getState(getPositions=True, enforcePeriodicBox=False)
    return (state.getPositions(asNumpy=True).value_in_unit(unit.nanometer),
            state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(unit.nanometer))


def bead_restraints(weights, xyz_nm: np.ndarray, k: float):
    """One harmonic restraint per bead (the mapping's weighted atom centre) to where it starts:
    the pipeline's openmm-torch bead restraint (a CustomCentroidBondForce is ~10x slower here)."""
    from openmm_herobm.pipeline.restraint import bead_restraint_force

    centres = weights @ xyz_nm
    return bead_restraint_force(weights, np.arange(weights.shape[1]), centres, k), centres


def lennard_jones_in_nonbonded(system) -> float:
    """Move CHARMM36's Lennard-Jones from its CustomNonbondedForce (a pair table, there for NBFIX)
    into the NonbondedForce (Lorentz-Berthelot), 5x faster on the CPU platform; the NBFIX pairs then
    take the combined values.  Returns the largest relative change of a pair's r^-6 coefficient
    among the types present (what is given up)."""
    import openmm as mm

    k = next(i for i, f in enumerate(system.getForces()) if isinstance(f, mm.CustomNonbondedForce))
    custom = system.getForce(k)
    nonbonded = next(f for f in system.getForces() if isinstance(f, mm.NonbondedForce))
    _, _, a = custom.getTabulatedFunction(0).getFunctionParameters()
    n, _, b = custom.getTabulatedFunction(1).getFunctionParameters()
    a, b = np.array(a).reshape(n, n), np.array(b).reshape(n, n)
    diag_a, diag_b = np.diag(a), np.diag(b)
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = np.where(diag_b > 0, (diag_a / diag_b) ** (1 / 6), 0.1)
        epsilon = np.where(diag_a > 0, diag_b ** 2 / (4 * diag_a), 0.0)
    types = np.array([int(custom.getParticleParameters(i)[0]) for i in range(system.getNumParticles())])
    present = np.unique(types)
    s = 0.5 * (sigma[:, None] + sigma[None])
    e = np.sqrt(epsilon[:, None] * epsilon[None])
    combined_b = 4 * e * s ** 6
    sub = np.ix_(present, present)
    change = float(np.max(np.abs(combined_b[sub] - b[sub]) / np.maximum(np.abs(b[sub]), 1e-12)))
    for i, t in enumerate(types):
        charge, _, _ = nonbonded.getParticleParameters(i)
        nonbonded.setParticleParameters(i, charge, sigma[t], epsilon[t])
    nonbonded.setUseSwitchingFunction(True)
    nonbonded.setSwitchingDistance(custom.getSwitchingDistance())
    system.removeForce(k)
    return change


def molecule_rmsd(a: np.ndarray, b: np.ndarray, groups: list) -> tuple[float, float]:
    """Heavy RMSD per name and with equivalent atoms matched (A) of one molecule ``(m, 3)`` A."""
    sq = ((a - b) ** 2).sum(1)
    plain = float(np.sqrt(sq.mean()))
    for g in groups:  # lipid_quality's best assignment, keyed by the atoms' positions in the molecule
        sq[list(g)] = list(best_assignment(a[list(g)], b[list(g)], tuple(g)).values())
    return plain, float(np.sqrt(sq.mean()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bilayer", type=Path, default=BILAYER)
    ap.add_argument("--ps", type=float, default=40.0, help="sampled time after --equilibrate (ps)")
    ap.add_argument("--equilibrate", type=float, default=5.0, help="ps discarded first")
    ap.add_argument("--every", type=float, default=1.0, help="ps between samples")
    ap.add_argument("--k", type=float, default=500000.0, help="bead restraint (kJ/mol/nm^2)")
    ap.add_argument("--step-fs", type=float, default=4.0, help="time step (fs) of the sampling")
    ap.add_argument("--cycles", type=int, default=0,
                    help="instead of one run: N cycles of --hot-ps at --hot K then --cool-ps back, one sample each")
    ap.add_argument("--hot", type=float, default=450.0)
    ap.add_argument("--hot-ps", type=float, default=10.0)
    ap.add_argument("--cool-ps", type=float, default=5.0)
    ap.add_argument("--temperature", type=float, default=303.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--cholesterol", type=int, default=0, help="POPC replaced by cholesterol (then use --free-ps)")
    ap.add_argument("--free-ps", type=float, default=0.0, help="free NPT MD before the beads are held (ps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--frames-out", type=Path, default=None, help=".npz of the sampled lipid heavy atoms (A)")
    args = ap.parse_args(argv)
    os.environ["OPENMM_CPU_THREADS"] = str(args.threads)
    step = args.step_fs / 1000.0
    import openmm as mm
    import openmm.app as app
    import openmm.unit as unit

    import openmm_herobm as hb
    from openmm_herobm.io import load_structure, make_whole
    from openmm_herobm.pipeline.system import load_forcefield, named_templates

    t0 = time.perf_counter()
    traj = make_whole(load_structure(str(args.bilayer)))
    if args.cholesterol:
        traj = embed_cholesterol(traj, args.cholesterol, args.seed)
    mapped = hb.map_structure(traj, "martini3_lipids", unmapped="drop")
    system_map = mapped.system
    top = openmm_topology(traj)
    ff = load_forcefield("charmm36.xml", "explicit")
    kwargs = dict(nonbondedMethod=app.PME, nonbondedCutoff=1.2 * unit.nanometer, switchDistance=1.0 * unit.nanometer,
                  constraints=app.HBonds, rigidWater=True, hydrogenMass=HYDROGEN_MASS * unit.amu,
                  residueTemplates=named_templates(ff, top))  # CHARMM36 has two cholesterols: CHL1 by name
    xyz0 = traj.xyz[0].astype(np.float64)
    if args.free_ps > 0:  # the starting structure (the truth) is where free MD leaves the bilayer
        xyz0, box = relax(top, ff, kwargs, xyz0, args.free_ps, args.temperature)
        top.setPeriodicBoxVectors([mm.Vec3(*v) for v in box] * unit.nanometer)
        print(f"  relaxed: {args.free_ps:.0f} ps of free MD, {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    system = ff.createSystem(top, **kwargs)
    nbfix_change = lennard_jones_in_nonbonded(system)
    force, centres = bead_restraints(system_map.weights, xyz0, args.k)
    system.addForce(force)
    integrator = mm.LangevinMiddleIntegrator(args.temperature * unit.kelvin, 1.0 / unit.picosecond,
                                             step * unit.picoseconds)
    integrator.setRandomNumberSeed(1)
    sim = app.Simulation(top, system, integrator, mm.Platform.getPlatformByName("CPU"))
    sim.context.setPositions(xyz0)
    sim.context.setVelocitiesToTemperature(args.temperature * unit.kelvin, 1)

    # heavy lipid atoms of every mapped residue, in mapping order, and their equivalent groups
    molecules = []
    for res in system_map.residues:
        atoms = res.atoms[res.atoms >= 0]
        heavy = [i for i in atoms if traj.topology.atom(int(i)).element.symbol != "H"]
        name_index = {traj.topology.atom(int(i)).name: n for n, i in enumerate(heavy)}
        groups = [tuple(name_index[res.mapping.atoms[i].name] for i in g) for g in res.mapping.equivalent_atoms
                  if all(res.mapping.atoms[i].name in name_index for i in g)]
        molecules.append((traj.topology.residue(res.aa_residue).name, np.array(heavy), groups))

    steps_per = round(args.every / step)
    sim.step(round(args.equilibrate / step))
    frames, bead_dev = [], []
    n = args.cycles or round(args.ps / args.every)
    for k in range(n):
        if args.cycles:  # heat with the beads held (barriers crossed), cool back, then take the frame
            integrator.setTemperature(args.hot * unit.kelvin)
            sim.step(round(args.hot_ps / step))
            integrator.setTemperature(args.temperature * unit.kelvin)
            sim.step(round(args.cool_ps / step))
        else:
            sim.step(steps_per)
        x = sim.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
        frames.append(np.array(x) * 10.0)  # A
        bead_dev.append(np.linalg.norm(system_map.weights @ (np.array(x)) - centres, axis=1) * 10.0)
        print(f"  sample {k + 1} of {n}, {time.perf_counter() - t0:.0f} s, "
              f"beads within {bead_dev[-1].max():.3f} A", file=sys.stderr, flush=True)
    wall = time.perf_counter() - t0
    frames = np.array(frames)
    start = xyz0 * 10.0
    mean = frames.mean(0)
    per_type: dict[str, dict[str, list]] = {}
    per_atom: dict[str, dict[str, list]] = {}  # type -> atom name -> squared deviations from the mean (A^2)
    for name, heavy, groups in molecules:
        rows = per_type.setdefault(name, {"bound": [], "bound_matched": [], "pair": [], "pair_matched": []})
        sq = ((frames[:, heavy] - mean[heavy]) ** 2).sum(-1).mean(0)
        for atom, value in zip((traj.topology.atom(int(i)).name for i in heavy), sq):
            per_atom.setdefault(name, {}).setdefault(atom, []).append(float(value))
        bound = [molecule_rmsd(f[heavy], mean[heavy], groups) for f in frames]
        pair = [molecule_rmsd(f[heavy], start[heavy], groups) for f in (frames if args.cycles else frames[len(frames) // 2:])]
        rows["bound"].append(np.mean([b[0] for b in bound]))
        rows["bound_matched"].append(np.mean([b[1] for b in bound]))
        rows["pair"].append(np.mean([p[0] for p in pair]) / np.sqrt(2))
        rows["pair_matched"].append(np.mean([p[1] for p in pair]) / np.sqrt(2))
    result = {"bilayer": args.bilayer.name, "ps": args.ps, "equilibrate_ps": args.equilibrate, "every_ps": args.every,
              "k_kJ_mol_nm2": args.k, "temperature_K": args.temperature, "step_fs": args.step_fs,
              "cholesterol_embedded": args.cholesterol,
              "cycles": args.cycles, "hot_K": args.hot, "hot_ps": args.hot_ps, "cool_ps": args.cool_ps, "free_ps": args.free_ps, "seed": args.seed, "threads": args.threads,
              "wall_s": wall, "nbfix_largest_relative_change": nbfix_change, "atoms": traj.n_atoms,
              "bead_deviation_A": {"rms": float(np.sqrt((np.array(bead_dev) ** 2).mean())),
                                   "max": float(np.max(bead_dev))},
              "per_type": {name: {k: float(np.mean(v)) for k, v in rows.items()} | {"n": len(rows["bound"])}
                           for name, rows in per_type.items()},
              "per_atom_rms_A": {name: {atom: float(np.sqrt(np.mean(v))) for atom, v in atoms.items()}
                                 for name, atoms in per_atom.items()}}
    if args.frames_out:  # every sampled frame of the lipids' heavy atoms, to analyse again
        index = np.concatenate([heavy for _, heavy, _ in molecules])
        np.savez_compressed(args.frames_out, frames=frames[:, index].astype(np.float32), index=index,
                            start=start[index].astype(np.float32))
    print(json.dumps(result, indent=1))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
