#!/usr/bin/env python
"""Backmapping real Martini 3 simulation frames: is the output a sound protein, and does it keep its beads?

Input: the folders written by ``scripts/make_real_frames.py`` (``<frames-dir>/<split>/<chain>/<mode>/``
with ``cg.pdb`` = martinize2 beads of the crystal structure, ``md.gro`` + ``md.xtc`` = the
protein's beads along GROMACS Martini 3 MD, ``aa.pdb`` = the crystal chain); the repository's
fixture is ``tests/data/real_frames``.

Methods, each on every MD frame of every chain and mode:

* ``raw``: ``backmap(frames, model)`` (heavy atoms, the default fit; no force field), one call per
  trajectory, seconds per frame = call time / frames;
* ``pipeline``: ``backmap_and_simulate(md.gro, trajectory=md.xtc, trajectory_output=...)`` (hydrogens,
  amber14 + OBC2, bead restraint, minimisation), one call per trajectory;
* ``cg2at2``: CG2AT2 de novo (``cg2at -ff charmm36-cg2at -fg martini_3-0_charmm36 -o none``) on the
  frames ``--cg2at2-frames`` of each trajectory (it takes minutes per frame), needs ``--cg2at2 EXE``
  and GROMACS;
* ``previous``: an earlier checkout of this project (``--previous DIR``, e.g. a ``git worktree`` of the
  commit before a change) through its own CLI, ``herobm backmap frame.gro`` with and without
  ``--no-minimize``, on the frames ``--previous-frames``: "today's" numbers on the same frames;
* ``mapped``: ``backmap(cg.pdb)``, the beads of the crystal structure (the control);
* ``crystal``: the crystal chain itself under the same metrics (what real proteins score).

Per frame (:mod:`openmm_herobm.evaluation.protein_quality` and :func:`~openmm_herobm.evaluation.evaluate`):
bond and angle RMSD against ideal geometry and bonds off by > 0.15 A, heavy-atom clashes per 1000
heavy atoms (pairs < 2.2 A beyond 1-4), Ramachandran outliers (99.8% contour of the training
split), chi1 / chi2 more than 30 deg from every rotamer well, mean |omega - 180|, cis non-Pro,
X-Pro peptides whose isomer is not the crystal's, chirality errors (CA, ILE CB, THR CB), CA-CA >
4.0 A and inserted chain breaks between residues
the CG input links (BB beads < 4.6 A), bead fidelity (output forward-mapped vs the frame's beads,
RMS and max; and vs the frame's beads with the systematic Martini 3 deformation undone,
:mod:`openmm_herobm.mapping.deformation`, which is what a real structure can meet), and for
the earliest frame the heavy-atom RMSD to the crystal chain after
superposition.  Means per frame are printed per method, side by side; ``--out`` keeps every row.

    python benchmarks/real_frames.py --frames-dir out/real_frames --split test --methods raw pipeline \\
        --out benchmarks/results/real_frames_test.json --markdown
    python benchmarks/real_frames.py --frames-dir tests/data/real_frames --split test --methods raw   # fixture
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_result

METRICS = [  # (key, label, format)
    ("bond_rmsd", "bond RMSD vs ideal (A)", "{:.3f}"),
    ("bonds_off", "bonds off by > 0.15 A", "{:.1f}"),
    ("angle_rmsd", "angle RMSD vs ideal (deg)", "{:.2f}"),
    ("clashes_per_1000", "heavy-atom clashes per 1000 atoms", "{:.2f}"),
    ("rama_outlier_pct", "Ramachandran outliers (%)", "{:.2f}"),
    ("chi1_off_pct", "chi1 off-rotamer (%)", "{:.1f}"),
    ("chi2_off_pct", "chi2 off-rotamer (%)", "{:.1f}"),
    ("omega_dev_mean", "mean abs(omega - 180) (deg)", "{:.2f}"),
    ("cis_nonpro", "cis non-Pro peptides", "{:.2f}"),
    ("nonplanar", "peptides neither cis nor trans (|omega| 30-150 deg)", "{:.2f}"),
    ("x_pro_wrong", "X-Pro peptides not the crystal's isomer", "{:.2f}"),
    ("chirality_errors", "chirality errors (CA, ILE/THR CB)", "{:.2f}"),
    ("ca_ca_long", "CA-CA > 4.0 A", "{:.2f}"),
    ("inserted_breaks", "inserted chain breaks", "{:.2f}"),
    ("bead_rms", "bead fidelity RMS (A)", "{:.3f}"),
    ("bead_max", "bead fidelity max (A)", "{:.2f}"),
    ("bead_rms_realisable", "bead fidelity RMS, deformation undone (A)", "{:.3f}"),
    ("bead_max_realisable", "bead fidelity max, deformation undone (A)", "{:.2f}"),
    ("rmsd_to_start", "earliest frame: heavy RMSD to the crystal (A)", "{:.2f}"),
    ("seconds_per_frame", "seconds per frame", "{:.2f}"),
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def realisable(cg):
    """``cg`` with the systematic Martini 3 deformation undone per frame (the beads a real structure has)."""
    from openmm_herobm.mapping import MappingSet, SystemMapping
    from openmm_herobm.mapping import BeadDeformation

    system = SystemMapping.from_cg(cg.topology, MappingSet.load("martini3"))
    undo = BeadDeformation(system)
    out = cg.atom_slice(system.cg_input_index)
    out.xyz = np.stack([undo(f * 10.0)[0] / 10.0 for f in out.xyz]).astype(np.float32)
    return out


def frame_metrics(traj, frame: int, cg, cg_frame: int, targets=None) -> dict:
    from openmm_herobm.evaluation import evaluate
    from openmm_herobm.evaluation.protein_quality import bead_fidelity, cg_links, protein_quality

    q = protein_quality(traj, frame, links=cg_links(cg, cg_frame))
    e = evaluate(traj, frame=frame, periodic=False)
    q["clashes_per_1000"] = e["clashes_per_1000_atoms"]
    q["n_clashes"] = e["n_clashes"]
    q["chirality_errors"] = e["chirality_errors_ca"] + e["chirality_errors_ile_cb"] + e["chirality_errors_thr_cb"]
    q["cis_nonpro"] = e["cis_peptides_nonpro"] if "cis_nonpro" not in q else q["cis_nonpro"]
    q.update(bead_fidelity(traj, cg, frame=frame, cg_frame=cg_frame))
    if targets is not None:
        t = bead_fidelity(traj, targets, frame=frame, cg_frame=cg_frame)
        q.update(bead_rms_realisable=t["bead_rms"], bead_max_realisable=t["bead_max"])
    return q


def rmsd_to_crystal(traj, frame: int, crystal) -> float:
    """Heavy-atom RMSD (A) after superposition, atoms matched by residue position and name
    (martinize2 renumbers residues from 1)."""
    import mdtraj

    def index(t):
        out = {}
        for a in t.topology.atoms:
            if a.element is not None and a.element.symbol in ("H", "D"):
                continue
            name = "CD1" if a.residue.name == "ILE" and a.name == "CD" else a.name
            out.setdefault((a.residue.index, name), a.index)
        return out

    p, r = index(traj), index(crystal)
    common = sorted(set(p) & set(r))
    pi, ri = [p[k] for k in common], [r[k] for k in common]
    a = mdtraj.Trajectory(traj.xyz[frame][pi][None], None)
    b = mdtraj.Trajectory(crystal.xyz[0][ri][None], None)
    return float(mdtraj.rmsd(a, b)[0] * 10.0)


def x_pro_wrong(traj, frame: int, crystal) -> int:
    """X-Pro peptides cis (|omega| < 90 deg) in ``traj`` and trans in the crystal or the other way,
    residues matched by position (martinize2 renumbers residues from 1)."""
    import mdtraj

    def quads(t):
        out = {}
        for r in t.topology.residues:
            if r.name != "PRO" or r.index == 0 or t.topology.residue(r.index - 1).chain != r.chain:
                continue
            prev = t.topology.residue(r.index - 1)
            names = {a.name: a.index for a in prev.atoms} | {"+" + a.name: a.index for a in r.atoms}
            if all(n in names for n in ("CA", "C", "+N", "+CA")):
                out[r.index] = [names["CA"], names["C"], names["+N"], names["+CA"]]
        return out

    p, c = quads(traj), quads(crystal)
    common = sorted(set(p) & set(c))
    if not common:
        return 0
    cis_p = np.abs(mdtraj.compute_dihedrals(traj[frame], [p[k] for k in common])[0]) < np.pi / 2
    cis_c = np.abs(mdtraj.compute_dihedrals(crystal[0], [c[k] for k in common])[0]) < np.pi / 2
    return int((cis_p != cis_c).sum())


def heavy(traj):
    keep = [a.index for a in traj.topology.atoms if a.element is None or a.element.symbol not in ("H", "D")]
    return traj.atom_slice(keep)


def run_raw(model, md, **kw):
    from openmm_herobm import backmap

    t = time.perf_counter()
    result = backmap(md, model, **kw)
    return result.trajectory, (time.perf_counter() - t) / md.n_frames


def run_pipeline(model, folder: Path, tmp: Path, **kw):
    import mdtraj

    from openmm_herobm import backmap_and_simulate

    out, dcd = tmp / "pipeline.pdb", tmp / "pipeline.dcd"
    for f in (out, dcd):
        if f.exists():
            f.unlink()
    t = time.perf_counter()
    backmap_and_simulate(str(folder / "md.gro"), model, trajectory=str(folder / "md.xtc"), output=str(out),
                         trajectory_output=str(dcd), **kw)
    seconds = time.perf_counter() - t
    traj = heavy(mdtraj.load(str(dcd), top=str(out)))
    return traj, seconds / traj.n_frames


def run_cg2at2(exe: str, md, frame: int, tmp: Path, cache: Path | None = None):
    """CG2AT2 de novo on one frame; (heavy-atom trajectory, seconds) or (None, seconds) on failure.
    With ``cache``, the result (``final.pdb`` + ``seconds``) is kept there and reused."""

    if cache is not None and (cache / "seconds").exists():
        seconds = float((cache / "seconds").read_text())
        if not (cache / "final.pdb").exists():
            return None, seconds
        return _cg2at2_protein(cache / "final.pdb", md, frame), seconds
    work = tmp / f"cg2at_{frame}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    md[frame].save_pdb(str(work / "frame.pdb"))  # with CRYST1 (CG2AT2 needs the box)
    t = time.perf_counter()
    done = subprocess.run([exe, "-c", "frame.pdb", "-ff", "charmm36-cg2at", "-fg", "martini_3-0_charmm36", "-w",
                           "tip3p", "-o", "none", "-loc", "run", "-silent"], cwd=work, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    final = work / "run" / "FINAL" / "final_cg2at_de_novo.pdb"
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        if final.exists() and done.returncode == 0:
            shutil.copy(final, cache / "final.pdb")
        (cache / "seconds").write_text(f"{seconds:.1f}\n")
    if done.returncode != 0 or not final.exists():
        log(f"  cg2at2 frame {frame} failed: {done.stdout[-300:]} {done.stderr[-300:]}")
        return None, seconds
    return _cg2at2_protein(final, md, frame), seconds


def run_previous(checkout: Path, md, frame: int, tmp: Path, minimize: bool):
    """An earlier checkout's CLI on one frame: (heavy-atom trajectory, seconds) or (None, seconds)."""
    import mdtraj

    work = tmp / f"previous_{frame}_{int(minimize)}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    md[frame].save_gro(str(work / "frame.gro"))
    command = [sys.executable, "-m", "openmm_herobm.cli.main", "backmap", "frame.gro", "-o", "out.pdb"]
    env = dict(os.environ, PYTHONPATH=str(checkout.resolve()))
    t = time.perf_counter()
    done = subprocess.run(command + ([] if minimize else ["--no-minimize"]), cwd=work, env=env,
                          capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if done.returncode != 0 or not (work / "out.pdb").exists():
        log(f"  previous frame {frame} failed: {done.stderr[-300:]}")
        return None, seconds
    return heavy(mdtraj.load(str(work / "out.pdb"))), seconds


def _cg2at2_protein(path: Path, md, frame: int):
    """CG2AT2's protein, whole (it writes atoms wrapped into the box), numbered like the CG input
    (it renumbers residues from 0) and moved back onto the frame: it writes the system shifted in
    its box (by up to a box edge), so its mapped beads are translated onto the frame's centre
    (a translation only: nothing else of the comparison changes)."""
    import mdtraj

    from openmm_herobm import map_structure

    traj = mdtraj.load(str(path))
    traj = heavy(traj.atom_slice([a.index for a in traj.topology.atoms if a.residue.is_protein]))
    traj.make_molecules_whole(inplace=True)
    residues = list(traj.topology.residues)
    numbers = [r.resSeq for r in md.topology.residues]
    if len(residues) == len(numbers):
        for res, number in zip(residues, numbers):
            res.resSeq = number
    beads = map_structure(traj, "martini3", incomplete="skip").cg
    traj.xyz += md.xyz[frame].mean(0) - beads.xyz[0].mean(0)
    return traj


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key, _, _ in METRICS:
        values = [r[key] for r in rows if r.get(key) is not None]
        out[key] = float(np.mean(values)) if values else None
    out["n_frames"] = len(rows)
    return out


def markdown(summary: dict, methods: list[str]) -> str:
    head = "| metric (mean per frame) | " + " | ".join(f"{m} ({summary[m]['n_frames']} frames)" for m in methods) + " |"
    lines = [head, "|---|" + "---|" * len(methods)]
    for key, label, fmt in METRICS:
        cells = []
        for m in methods:
            v = summary[m].get(key)
            cells.append("-" if v is None else fmt.format(v))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames-dir", type=Path, default=Path("out/real_frames"))
    ap.add_argument("--split", default="test")
    ap.add_argument("--modes", nargs="+", default=["elastic", "plain"])
    ap.add_argument("--chains", nargs="*", help="chain names (default: every chain of the split)")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--max-frames", type=int, default=0, help="use at most this many frames per trajectory")
    ap.add_argument("--methods", nargs="+", default=["raw"], choices=("raw", "pipeline", "cg2at2", "previous"))
    ap.add_argument("--cg2at2", help="the cg2at executable (e.g. a venv's bin/cg2at)")
    ap.add_argument("--cg2at2-frames", type=int, nargs="+", default=[0, 4, 9])
    ap.add_argument("--cg2at2-cache", type=Path, help="keep CG2AT2's outputs here and reuse them")
    ap.add_argument("--previous", type=Path, help="an earlier checkout of this project (method 'previous')")
    ap.add_argument("--previous-frames", type=int, nargs="+", default=[0])
    ap.add_argument("--model", default=None)
    ap.add_argument("--fit-options", default="{}", help="JSON of backmap() keyword arguments for raw")
    ap.add_argument("--pipeline-options", default="{}", help="JSON of backmap_and_simulate() keyword arguments")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    os.environ.setdefault("OPENMM_CPU_THREADS", str(args.threads))
    import mdtraj
    import torch

    from openmm_herobm.evaluation.protein_quality import protein_quality
    from openmm_herobm.model import load_model

    torch.set_num_threads(args.threads)
    model = load_model(args.model or "martini3_protein")
    root = args.frames_dir / args.split
    # chains with at least one simulated trajectory (martinize2 refuses a few crystal chains)
    chains = args.chains or sorted({p.parent.parent.name for p in root.glob("*/*/md.xtc")})
    if args.limit:
        chains = chains[:args.limit]
    fit_options = json.loads(args.fit_options)
    pipeline_options = json.loads(args.pipeline_options)
    rows: list[dict] = []
    tmp = Path(tempfile.mkdtemp(prefix="real_frames_"))
    for chain in chains:
        first = next(root / chain / m for m in args.modes if (root / chain / m / "md.xtc").exists())
        crystal = heavy(mdtraj.load(str(first / "aa.pdb")))
        rows.append(dict(chain=chain, mode="-", method="crystal", frame=0, **protein_quality(crystal)))
        mapped_cg = mdtraj.load(str(first / "cg.pdb"))
        traj, sec = run_raw(model, mapped_cg, **fit_options)
        row = dict(chain=chain, mode="-", method="mapped", frame=0, seconds_per_frame=sec,
                   **frame_metrics(traj, 0, mapped_cg, 0))
        row["rmsd_to_start"] = rmsd_to_crystal(traj, 0, crystal)
        row["x_pro_wrong"] = x_pro_wrong(traj, 0, crystal)
        rows.append(row)
        for mode in args.modes:
            folder = root / chain / mode
            if not (folder / "md.xtc").exists():
                continue
            md = mdtraj.load(str(folder / "md.xtc"), top=str(folder / "md.gro"))
            if args.max_frames:
                md = md[:args.max_frames]
            targets = realisable(md)
            outputs = {}
            if "raw" in args.methods or "cg2at2" in args.methods:  # CG2AT2 is compared with raw on its frames
                outputs["raw"] = run_raw(model, md, **fit_options)
            if "pipeline" in args.methods:
                outputs["pipeline"] = run_pipeline(model, folder, tmp, **pipeline_options)
            for method, (traj, sec) in outputs.items():
                for f in range(min(traj.n_frames, md.n_frames)):
                    row = dict(chain=chain, mode=mode, method=method, frame=f, seconds_per_frame=sec,
                               x_pro_wrong=x_pro_wrong(traj, f, crystal), **frame_metrics(traj, f, md, f, targets))
                    if f == 0:
                        row["rmsd_to_start"] = rmsd_to_crystal(traj, f, crystal)
                    rows.append(row)
            if "cg2at2" in args.methods:
                for f in args.cg2at2_frames:
                    if f >= md.n_frames:
                        continue
                    cache = (None if args.cg2at2_cache is None
                             else args.cg2at2_cache / args.split / chain / mode / str(f))
                    traj, sec = run_cg2at2(args.cg2at2, md, f, tmp, cache)
                    if traj is None:
                        rows.append(dict(chain=chain, mode=mode, method="cg2at2", frame=f, failed=True,
                                         seconds_per_frame=sec))
                        continue
                    row = dict(chain=chain, mode=mode, method="cg2at2", frame=f, seconds_per_frame=sec,
                               **frame_metrics(traj, 0, md, f, targets))
                    if f == 0:
                        row["rmsd_to_start"] = rmsd_to_crystal(traj, 0, crystal)
                    rows.append(row)
            if "previous" in args.methods:
                for f in args.previous_frames:
                    for method, minimize in (("previous raw", False), ("previous pipeline", True)):
                        if f >= md.n_frames:
                            continue
                        traj, sec = run_previous(args.previous, md, f, tmp, minimize)
                        if traj is None:
                            rows.append(dict(chain=chain, mode=mode, method=method, frame=f, failed=True))
                            continue
                        row = dict(chain=chain, mode=mode, method=method, frame=f, seconds_per_frame=sec,
                                   **frame_metrics(traj, 0, md, f, targets))
                        if f == 0:
                            row["rmsd_to_start"] = rmsd_to_crystal(traj, 0, crystal)
                        rows.append(row)
            done = [r for r in rows if r["chain"] == chain and r["mode"] == mode]
            log(f"{chain} {mode}: " + "; ".join(
                f"{m} bond {np.mean([r['bond_rmsd'] for r in done if r['method'] == m and 'bond_rmsd' in r]):.3f} "
                f"rama {np.mean([r['rama_outlier_pct'] for r in done if r['method'] == m and 'bond_rmsd' in r]):.1f}% "
                f"chi1 {np.mean([r['chi1_off_pct'] for r in done if r['method'] == m and 'bond_rmsd' in r]):.1f}% "
                f"clash {np.mean([r['clashes_per_1000'] for r in done if r['method'] == m and 'bond_rmsd' in r]):.2f}"
                for m in ("raw", "pipeline", "cg2at2", "previous raw", "previous pipeline")
                if any(r["method"] == m and "bond_rmsd" in r for r in done)))
    shutil.rmtree(tmp, ignore_errors=True)
    methods = ["crystal", "mapped"] + [m for m in ("raw", "pipeline", "cg2at2") if m in args.methods]
    if "previous" in args.methods:
        methods += ["previous raw", "previous pipeline"]
    summary = {m: summarise([r for r in rows if r["method"] == m and "bond_rmsd" in r]) for m in methods}
    # the same frames as CG2AT2, for a like-for-like comparison
    if "cg2at2" in args.methods:
        frames = {(r["chain"], r["mode"], r["frame"]) for r in rows if r["method"] == "cg2at2" and "bond_rmsd" in r}
        for m in ("raw", "pipeline"):
            if m in args.methods:
                summary[f"{m} (CG2AT2 frames)"] = summarise([r for r in rows if r["method"] == m and "bond_rmsd" in r
                                                             and (r["chain"], r["mode"], r["frame"]) in frames])
        methods += [f"{m} (CG2AT2 frames)" for m in ("raw", "pipeline") if m in args.methods]
        failed = [r for r in rows if r.get("failed") and r["method"] == "cg2at2"]
        summary["cg2at2"]["failed_frames"] = len(failed)
    table = markdown(summary, methods)
    print(table)
    write_result(args.out, chains=chains, modes=args.modes, summary=summary, rows=rows)
    if args.out:
        if args.markdown:
            args.out.with_suffix(".md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
