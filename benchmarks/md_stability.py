#!/usr/bin/env python
"""Do refined structures run?  Short unrestrained MD of ``backmap_and_simulate`` outputs.

For every test chain (``--test-dir``, ``*.pdb.gz``; ``--limit``, ``--sample``, ``--seed``):

1. CG input by forward mapping, exactly as ``evaluate_model.py`` (``map_structure(chain,
   "martini3", incomplete="skip")``);
2. ``backmap_and_simulate(cg, model, output=DIR/<chain>.pdb)`` with the default options
   (timed); it writes the structure, ``<chain>.system.xml`` (without the bead restraint)
   and ``<chain>.state.xml``;
3. ``--source files`` (default): the simulation is rebuilt from what a user gets - topology
   from the written PDB (``openmm.app.PDBFile``), positions from the State XML - with
   amber14-all + implicit/obc2, HBonds constraints, CutoffNonPeriodic 1 nm,
   LangevinMiddleIntegrator 300 K, 1/ps, 2 fs (``--source result``: from
   ``result.topology`` / ``result.positions`` instead).  As a consistency check the
   written System XML's potential energy at the same positions is compared with the
   rebuilt System's (``energy_check``);
4. velocities at 300 K (seeded), ``--ps`` picoseconds of dynamics, one frame every
   ``--frame-ps`` (frame 0 = the start, after the HBonds constraints are applied).

Checks per chain: no NaN/inf energy or position; maximum displacement of any atom from
its start (raw, and after superposing each frame on the start, which removes the free
rotation/translation of a protein in implicit solvent); heavy-atom RMSD from the start at
the end and at its largest (A, raw and superposed); potential energy and temperature of
every frame.  ``stable`` = no blow-up: no NaN, mean temperature of the second half within
30 K of 300 K and never above 400 K, potential energy at the end not above that of the first
frame after the start (heating a minimised structure raises it once) by more than 2%, and
superposed heavy-atom RMSD at the end below ``--max-rmsd`` A (default 5).  A surface side
chain of a small protein in implicit solvent can move more than 1 nm in 50 ps (the
reference chain does too, see ``--control``), so displacement is reported, not judged.
``--rescore FILE`` re-applies this criterion to a saved JSON and prints the table.  Time of the refinement and of the MD
(and ns/day) is reported.  ``--control`` runs the same MD from the reference chain
(protonated and minimised like the pipeline, without restraint) for comparison: how much
a real structure drifts under the same protocol.

Examples::

    python benchmarks/md_stability.py --model models/martini3_protein.pt --limit 5 --ps 50 \\
        --threads 2 --out benchmarks/results/md_stability.json --markdown
    OMP_NUM_THREADS=1 python benchmarks/md_stability.py --model /tmp/m.pt --limit 1 --ps 1 --threads 1 --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
import _common as em  # noqa: E402  (select_chains, chain_name, prepare_chain)

TIMESTEP_PS = 0.002
TEMPERATURE_K = 300.0
FRICTION_PER_PS = 1.0
BOLTZMANN_KJ_MOL_K = 0.00831446261815324


def kabsch_rmsd_and_displacement(x: np.ndarray, ref: np.ndarray, heavy: np.ndarray):
    """x superposed on ref using the heavy atoms: (heavy RMSD in nm, per-atom displacement in nm)."""
    xc, rc = x[heavy].mean(0), ref[heavy].mean(0)
    a, b = x[heavy] - xc, ref[heavy] - rc
    u, _, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    rot = u @ np.diag([1.0, 1.0, d]) @ vt
    fitted = (x - xc) @ rot + rc
    disp = np.linalg.norm(fitted - ref, axis=1)
    return float(np.sqrt((disp[heavy] ** 2).mean())), disp


def create_system(topology, constraints, app, unit):
    from openmm_herobm.pipeline.system import native_obc2

    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    system = forcefield.createSystem(topology, nonbondedMethod=app.CutoffNonPeriodic,
                                     nonbondedCutoff=1.0 * unit.nanometer, constraints=constraints)
    native_obc2(system, topology)  # the same OBC2 model as the pipeline writes, 4x cheaper than the custom force
    return system


def build_simulation(topology, positions, args, mm, app, unit):
    system = create_system(topology, app.HBonds, app, unit)
    integrator = mm.LangevinMiddleIntegrator(TEMPERATURE_K * unit.kelvin, FRICTION_PER_PS / unit.picosecond,
                                             TIMESTEP_PS * unit.picoseconds)
    integrator.setRandomNumberSeed(args.seed + 1)
    if args.platform:
        platform = mm.Platform.getPlatformByName(args.platform)
    else:
        from openmm_herobm.pipeline.platform import choose_platform

        platform = choose_platform(None)
    simulation = app.Simulation(topology, system, integrator, platform)
    simulation.context.setPositions(positions)
    return system, simulation


def potential_of(system, positions, mm, unit) -> float:
    integrator = mm.VerletIntegrator(0.001)
    context = mm.Context(system, integrator, mm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    e = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    del context, integrator
    return float(e)


def protonated_reference(ref, app, unit, tolerance: float = 500.0):
    """The reference chain through the pipeline's own topology and hydrogen steps, minimised like
    the pipeline (same tolerance, no restraint): the control structure for ``--control``."""
    import openmm as mm

    from openmm_herobm.pipeline.hydrogens import add_hydrogens
    from openmm_herobm.pipeline.topology import prepare_topology

    prepared = prepare_topology(ref)
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    modeller = app.Modeller(prepared.topology, prepared.positions)
    add_hydrogens(modeller, forcefield, 7.0, list(prepared.variants))
    system = create_system(modeller.topology, None, app, unit)
    context = mm.Context(system, mm.VerletIntegrator(0.001))
    context.setPositions(modeller.positions)
    mm.LocalEnergyMinimizer.minimize(context, tolerance, 0)
    positions = context.getState(getPositions=True).getPositions()
    del context
    return modeller.topology, positions


def run_md(topology, positions, args, workdir, name, mm, app, unit) -> dict:
    """--ps of Langevin dynamics from ``positions``; the stability checks of one structure."""
    system, simulation = build_simulation(topology, positions, args, mm, app, unit)
    row = {}
    row["n_atoms"] = system.getNumParticles()
    row["n_constraints"] = system.getNumConstraints()
    row["platform"] = simulation.context.getPlatform().getName()
    ctx = simulation.context
    ctx.applyConstraints(1e-6)
    ctx.setVelocitiesToTemperature(TEMPERATURE_K * unit.kelvin, args.seed + 1)
    heavy = np.array([a.index for a in topology.atoms()
                      if a.element is not None and a.element.symbol not in ("H", "D")], np.int64)
    st0 = ctx.getState(getPositions=True, getEnergy=True)
    start = st0.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    dof = 3 * system.getNumParticles() - system.getNumConstraints()
    if any(isinstance(system.getForce(i), mm.CMMotionRemover) for i in range(system.getNumForces())):
        dof -= 3
    steps_per_frame = max(1, int(round(args.frame_ps / TIMESTEP_PS)))
    n_frames = max(1, int(round(args.ps / (steps_per_frame * TIMESTEP_PS))))
    ke0 = st0.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
    frames = [{"time_ps": 0.0, "potential_kj_mol": st0.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole),
               "kinetic_kj_mol": ke0, "temperature_k": 2 * ke0 / (dof * BOLTZMANN_KJ_MOL_K),
               "max_displacement_nm": 0.0, "heavy_rmsd_A": 0.0, "heavy_rmsd_fitted_A": 0.0}]
    max_disp = max_disp_fit = max_rmsd = max_rmsd_fit = 0.0
    max_atom = -1
    atoms = list(topology.atoms())
    nan_frame = None
    dcd = None
    if workdir is not None:
        dcd_file = open(workdir / f"{name}.md.dcd", "wb")
        dcd = app.DCDFile(dcd_file, topology, TIMESTEP_PS * steps_per_frame)
    t0 = time.perf_counter()
    try:
        for f in range(1, n_frames + 1):
            try:
                simulation.step(steps_per_frame)
                st = ctx.getState(getEnergy=True, getPositions=True)
            except Exception as exc:  # OpenMM raises on NaN coordinates ("Particle coordinate is NaN")
                nan_frame = f
                row["md_error"] = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                break
            pe = st.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
            ke = st.getKineticEnergy().value_in_unit(unit.kilojoule_per_mole)
            x = st.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
            if not (np.isfinite(pe) and np.isfinite(ke) and np.isfinite(x).all()):
                nan_frame = f
                break
            disp = np.linalg.norm(x - start, axis=1)
            rmsd = float(np.sqrt((disp[heavy] ** 2).mean()))
            rmsd_fit, disp_fit = kabsch_rmsd_and_displacement(x, start, heavy)
            if disp.max() > max_disp:
                max_disp, max_atom = float(disp.max()), int(disp.argmax())
            max_disp_fit = max(max_disp_fit, float(disp_fit.max()))
            max_rmsd, max_rmsd_fit = max(max_rmsd, rmsd), max(max_rmsd_fit, rmsd_fit)
            frames.append({"time_ps": f * steps_per_frame * TIMESTEP_PS, "potential_kj_mol": pe,
                           "kinetic_kj_mol": ke, "temperature_k": 2 * ke / (dof * BOLTZMANN_KJ_MOL_K),
                           "max_displacement_nm": float(disp.max()), "heavy_rmsd_A": rmsd * 10,
                           "heavy_rmsd_fitted_A": rmsd_fit * 10})
            if dcd is not None:
                dcd.writeModel(st.getPositions())
    finally:
        if dcd is not None:
            dcd_file.close()
    md_seconds = time.perf_counter() - t0
    simulated_ps = (len(frames) - 1) * steps_per_frame * TIMESTEP_PS
    temps = [fr["temperature_k"] for fr in frames[1:]]
    second_half = temps[len(temps) // 2:] or temps
    row.update({
        "ps_requested": args.ps, "ps_simulated": simulated_ps, "n_frames": len(frames) - 1,
        "md_seconds": md_seconds, "ns_per_day": (simulated_ps / 1000.0) / (md_seconds / 86400.0) if md_seconds else None,
        "nan": nan_frame is not None, "nan_at_frame": nan_frame,
        "max_displacement_nm": max_disp, "max_displacement_fitted_nm": max_disp_fit,
        "max_displacement_atom": (f"{atoms[max_atom].residue.name} {atoms[max_atom].residue.id} "
                                  f"{atoms[max_atom].residue.chain.id} {atoms[max_atom].name}" if max_atom >= 0 else None),
        "heavy_rmsd_end_A": frames[-1]["heavy_rmsd_A"] if len(frames) > 1 else None,
        "heavy_rmsd_fitted_end_A": frames[-1]["heavy_rmsd_fitted_A"] if len(frames) > 1 else None,
        "heavy_rmsd_max_A": max_rmsd * 10, "heavy_rmsd_fitted_max_A": max_rmsd_fit * 10,
        "potential_start_kj_mol": frames[0]["potential_kj_mol"],
        "potential_end_kj_mol": frames[-1]["potential_kj_mol"] if len(frames) > 1 else None,
        "temperature_mean_second_half_k": float(np.mean(second_half)) if second_half else None,
        "temperature_max_k": float(max(temps)) if temps else None,
        "frames": frames,
    })
    row["stable"] = no_blowup(row, args.max_rmsd)
    return row


def no_blowup(row: dict, max_rmsd: float) -> bool:
    t_mean, t_max = row.get("temperature_mean_second_half_k"), row.get("temperature_max_k")
    e0, e1 = row.get("potential_start_kj_mol"), row.get("potential_end_kj_mol")
    frames = row.get("frames") or []
    # heating a well-minimised start to 300 K raises its potential energy within the first
    # frame (equipartition); a blow-up keeps rising after that: compare with the first frame
    # after the start, with 2% of |E| for fluctuations
    thermalised = frames[1]["potential_kj_mol"] if len(frames) > 1 else e0
    rmsd = row.get("heavy_rmsd_fitted_end_A")
    return bool(not row.get("nan") and row.get("n_frames", 0) > 0 and t_mean is not None
                and abs(t_mean - TEMPERATURE_K) <= 30 and t_max < 400 and e1 is not None
                and e1 <= max(e0, thermalised) + 0.02 * abs(e0)
                and rmsd is not None and rmsd < max_rmsd)


def run_chain(path: Path, model, args, workdir: Path, backmap_and_simulate, mm, app, unit) -> dict:
    name = em.chain_name(path)
    ref, cg, fwd = em.prepare_chain(path, args.unmapped)
    row = {"chain": name, "n_residues": len(fwd.system.residues)}
    output = workdir / f"{name}.pdb"
    t0 = time.perf_counter()
    res = backmap_and_simulate(cg, model, platform=args.platform, unmapped=args.unmapped, output=output)
    row["refine_seconds"] = time.perf_counter() - t0
    row["refine_timings_s"] = {k: float(v) for k, v in res.timings.items()}
    row["refine_energies_kj_mol"] = dict(res.energies)

    if args.source == "files":
        pdb = app.PDBFile(str(output))
        topology = pdb.topology
        state = mm.XmlSerializer.deserialize(Path(str(output.with_suffix("")) + ".state.xml").read_text())
        positions = state.getPositions()
        written = mm.XmlSerializer.deserialize(Path(str(output.with_suffix("")) + ".system.xml").read_text())
    else:
        topology, positions, written = res.topology, res.positions, None
    if topology.getNumAtoms() != res.topology.getNumAtoms():
        raise RuntimeError(f"the written PDB has {topology.getNumAtoms()} atoms, the result "
                           f"{res.topology.getNumAtoms()}")
    if written is not None:
        # the same force field without constraints (HBonds drops the X-H bond terms from the energy)
        a = potential_of(written, positions, mm, unit)
        b = potential_of(create_system(topology, None, app, unit), positions, mm, unit)
        row["energy_check"] = {"system_xml_kj_mol": a, "rebuilt_kj_mol": b, "difference_kj_mol": a - b}

    row.update(run_md(topology, positions, args, workdir if args.keep else None, name, mm, app, unit))
    if args.control:
        try:
            ctop, cpos = protonated_reference(ref, app, unit)
            row["control"] = run_md(ctop, cpos, args, None, name + ".control", mm, app, unit)
        except Exception as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            row["control"] = {"error": f"{type(exc).__name__}: {msg}"}
    return row


def _f(v, nd=2):
    if v is None:
        return "-"
    if isinstance(v, (bool, np.bool_)):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    return f"{v:.{nd}f}"


def markdown(result: dict) -> str:
    cfg = result["config"]
    out = ["| chain | residues | atoms | ps | NaN | max displacement, raw / fitted (nm) | heavy RMSD drift at end, "
           "raw / fitted (A) | potential start -> end (kJ/mol) | T max / 2nd half (K) | refine (s) | MD (s) | ns/day "
           "| stable |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["per_chain"]:
        out.append(
            f"| {r['chain']} | {r['n_residues']} | {r.get('n_atoms', '-')} | {_f(r.get('ps_simulated'), 1)} | "
            f"{_f(r.get('nan'))} | {_f(r.get('max_displacement_nm'), 3)} / {_f(r.get('max_displacement_fitted_nm'), 3)}"
            f" | {_f(r.get('heavy_rmsd_end_A'))} / {_f(r.get('heavy_rmsd_fitted_end_A'))} | "
            f"{_f(r.get('potential_start_kj_mol'), 0)} -> {_f(r.get('potential_end_kj_mol'), 0)} | "
            f"{_f(r.get('temperature_max_k'), 0)} / {_f(r.get('temperature_mean_second_half_k'), 0)} | "
            f"{_f(r.get('refine_seconds'), 1)} | "
            f"{_f(r.get('md_seconds'), 1)} | {_f(r.get('ns_per_day'), 1)} | {_f(r.get('stable'))} |")
        c = r.get("control")
        if c and not c.get("error"):
            out.append(
                f"| control: reference {r['chain']} | {r['n_residues']} | {c.get('n_atoms', '-')} | "
                f"{_f(c.get('ps_simulated'), 1)} | {_f(c.get('nan'))} | {_f(c.get('max_displacement_nm'), 3)} / "
                f"{_f(c.get('max_displacement_fitted_nm'), 3)} | {_f(c.get('heavy_rmsd_end_A'))} / "
                f"{_f(c.get('heavy_rmsd_fitted_end_A'))} | {_f(c.get('potential_start_kj_mol'), 0)} -> "
                f"{_f(c.get('potential_end_kj_mol'), 0)} | {_f(c.get('temperature_max_k'), 0)} / "
                f"{_f(c.get('temperature_mean_second_half_k'), 0)} | - | {_f(c.get('md_seconds'), 1)} | "
                f"{_f(c.get('ns_per_day'), 1)} | {_f(c.get('stable'))} |")
        elif c:
            out.append(f"| control: reference {r['chain']} | - | - | - | - | - | - | - | - | - | - | - | "
                       f"failed: {c['error']} |")
    for f in result["failed"]:
        out.append(f"| {f['chain']} | - | - | - | - | - | - | - | - | - | - | - | failed: {f['error']} |")
    s = result["summary"]
    out += ["", f"{s['n_stable']} of {s['n_chains']} chains without blow-up ({cfg['ps']} ps each; "
            f"{cfg.get('criterion', 'no NaN, T within 30 K of 300 K, E not rising after the first frame, fitted RMSD < 5 A')}). Model `{cfg['model']}`; refined with "
            "`backmap_and_simulate` defaults; MD rebuilt from the "
            + ("written PDB + State XML" if cfg["source"] == "files" else "in-memory result")
            + f" with amber14-all + OBC2, HBonds, 2 fs, Langevin 300 K; platform {cfg.get('platform') or '-'}, "
            f"{cfg['threads']} thread(s)."]
    if cfg.get("control"):
        out.append("Control rows: the same MD from the reference chain (hydrogens and minimisation as in the "
                   "pipeline, tolerance 500 kJ/mol/nm, no restraint) - the drift of a real structure under this "
                   "protocol.")
    if s.get("energy_check_max_abs_difference_kj_mol") is not None:
        out.append(f"Written System XML vs rebuilt System, potential energy: largest difference "
                   f"{s['energy_check_max_abs_difference_kj_mol']:.3g} kJ/mol.")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="martini3_protein", help="deployed model file or shipped model name")
    ap.add_argument("--test-dir", default=str(em.DATA / "test"))
    ap.add_argument("--limit", type=int, default=5, help="N chains (0 = all)")
    ap.add_argument("--sample", choices=("first", "random"), default="first")
    ap.add_argument("--seed", type=int, default=0, help="seed of --sample random and of the velocities")
    ap.add_argument("--ps", type=float, default=50.0, help="picoseconds of MD per chain")
    ap.add_argument("--frame-ps", type=float, default=1.0, help="one frame (energy, displacement) every this many ps")
    ap.add_argument("--max-displacement", type=float, default=1.0, help="nm; reported (not judged)")
    ap.add_argument("--max-rmsd", type=float, default=5.0, help="A: superposed heavy RMSD at the end above this = blow-up")
    ap.add_argument("--rescore", metavar="JSON", help="re-apply the criterion to a saved result and print the table")
    ap.add_argument("--source", choices=("files", "result"), default="files",
                    help="rebuild from the written PDB + State XML (default) or from the in-memory result")
    ap.add_argument("--control", action="store_true",
                    help="also run the same MD from the reference chain (protonated and minimised like the "
                         "pipeline, no restraint): the drift a real structure shows under this protocol")
    ap.add_argument("--threads", type=int, default=2, help="torch threads and OpenMM CPU threads")
    ap.add_argument("--platform", default=None, help="OpenMM platform (default: the fastest available)")
    ap.add_argument("--unmapped", choices=("fail", "drop"), default="fail")
    ap.add_argument("--keep", metavar="DIR", help="keep the refined outputs and an MD trajectory (DCD) here")
    ap.add_argument("--out", default=None, help="JSON output")
    ap.add_argument("--markdown", action="store_true", help="print a table for BENCHMARKS.md")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)

    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OPENMM_CPU_THREADS"] = str(args.threads)
    import openmm as mm
    import openmm.app as app
    import openmm.unit as unit
    import torch

    torch.set_num_threads(args.threads)
    import openmm_herobm as hb
    from openmm_herobm.pipeline import backmap_and_simulate

    def log(*a):
        if not args.quiet:
            print(*a, flush=True)

    if args.rescore:
        result = json.loads(Path(args.rescore).read_text())
        for r in result["per_chain"] + [r["control"] for r in result["per_chain"] if r.get("control")]:
            r["stable"] = no_blowup(r, args.max_rmsd)
        result["summary"]["n_stable"] = sum(r["stable"] for r in result["per_chain"])
        result["config"]["criterion"] = (f"no NaN; |T - 300 K| <= 30 K (2nd half), T < 400 K; E_end <= max(E_start, "
                                         f"E_first_frame) + 2% |E_start|; fitted RMSD < {args.max_rmsd} A")
        Path(args.out or args.rescore).write_text(json.dumps(result, indent=1) + "\n")
        print(markdown(result))
        return 0
    files = em.select_chains(args.test_dir, args.limit, args.sample, args.seed)
    if not files:
        print(f"no *.pdb.gz files in {args.test_dir}", file=sys.stderr)
        return 2
    model = hb.load_model(args.model)
    log(f"model {model.path}; {len(files)} chains; {args.ps:g} ps each; threads {args.threads}")
    tmp = None
    if args.keep:
        workdir = Path(args.keep)
        workdir.mkdir(parents=True, exist_ok=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="md_stability_")
        workdir = Path(tmp.name)
    rows, failed = [], []
    t_all = time.perf_counter()
    try:
        for i, path in enumerate(files):
            name = em.chain_name(path)
            try:
                r = run_chain(path, model, args, workdir, backmap_and_simulate, mm, app, unit)
            except Exception as exc:
                msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failed.append({"chain": name, "error": f"{type(exc).__name__}: {msg}"})
                log(f"  [{i + 1}/{len(files)}] {name} FAILED: {type(exc).__name__}: {msg}")
                continue
            rows.append(r)
            log(f"  [{i + 1}/{len(files)}] {name:24s} {r['n_residues']:5d} res {r['n_atoms']:6d} atoms  "
                f"{r['ps_simulated']:.1f} ps  NaN {r['nan']}  max disp {r['max_displacement_nm']:.3f} nm "
                f"(fitted {r['max_displacement_fitted_nm']:.3f}; {r['max_displacement_atom']})  RMSD end {_f(r['heavy_rmsd_end_A'])} A "
                f"(fitted {_f(r['heavy_rmsd_fitted_end_A'])})  E {_f(r['potential_start_kj_mol'], 0)} -> "
                f"{_f(r['potential_end_kj_mol'], 0)}  refine {r['refine_seconds']:.1f} s  MD {r['md_seconds']:.1f} s  "
                f"{'stable' if r['stable'] else 'UNSTABLE'}")
            c = r.get("control")
            if c:
                log("      control (reference): " + (c["error"] if c.get("error") else
                    f"max disp {c['max_displacement_nm']:.3f} nm (fitted {c['max_displacement_fitted_nm']:.3f})  "
                    f"RMSD end {_f(c['heavy_rmsd_end_A'])} A (fitted {_f(c['heavy_rmsd_fitted_end_A'])})  "
                    f"T max {_f(c['temperature_max_k'], 0)} K  MD {c['md_seconds']:.1f} s"))
    finally:
        if tmp is not None:
            tmp.cleanup()
    checks = [abs(r["energy_check"]["difference_kj_mol"]) for r in rows if r.get("energy_check")]
    result = {
        "method": "backmap_and_simulate (defaults) -> rebuild amber14-all + OBC2, HBonds, 2 fs, Langevin 300 K -> MD",
        "command": " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]),
        "config": {"model": str(model.path), "test_dir": os.path.abspath(args.test_dir), "limit": args.limit,
                   "sample": args.sample, "seed": args.seed, "ps": args.ps, "frame_ps": args.frame_ps,
                   "max_displacement_nm": args.max_displacement, "source": args.source, "threads": args.threads,
                   "control": args.control,
                   "platform": next((r["platform"] for r in rows), None), "openmm": mm.__version__,
                   "timestep_ps": TIMESTEP_PS, "temperature_k": TEMPERATURE_K, "friction_per_ps": FRICTION_PER_PS},
        "summary": {"n_chains": len(rows) + len(failed), "n_run": len(rows), "n_failed": len(failed),
                    "n_stable": sum(r["stable"] for r in rows), "n_nan": sum(r["nan"] for r in rows),
                    "max_displacement_nm": max((r["max_displacement_nm"] for r in rows), default=None),
                    "heavy_rmsd_fitted_end_A_mean": (float(np.mean([r["heavy_rmsd_fitted_end_A"] for r in rows
                                                                    if r["heavy_rmsd_fitted_end_A"] is not None]))
                                                     if rows else None),
                    "energy_check_max_abs_difference_kj_mol": max(checks) if checks else None,
                    "seconds_total": time.perf_counter() - t_all},
        "failed": failed,
        "per_chain": rows,
    }
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        tmp_out = args.out + ".tmp"
        with open(tmp_out, "w") as fh:
            json.dump(result, fh, indent=1, default=float)
        os.replace(tmp_out, args.out)
        log(f"wrote {args.out}")
    s = result["summary"]
    print(f"\n{s['n_stable']} of {s['n_chains']} chains stable, {s['n_nan']} with NaN, {s['n_failed']} failed; "
          f"{s['seconds_total']:.1f} s")
    if args.markdown:
        print()
        print(markdown(result))
    return 0 if rows and s["n_stable"] == len(rows) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
