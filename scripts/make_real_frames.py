"""Real Martini 3 simulation frames of protein chains: martinize2 -> GROMACS MD -> frames.

For each chain: ``martinize2 -ff martini3001 -dssp`` (with ``-elastic``, or without it),
a rhombic dodecahedron with 1.0 nm of Martini 3 water, 0.15 M NaCl (neutralised), steepest
descent, 0.2 ns at 10 fs, then ``--ns`` ns at 20 fs (reaction field, eps_r 15, 1.1 nm
cut-offs, v-rescale 310 K, c-rescale 1 bar: the Martini 3 defaults).  The protein beads are
saved every ``--every`` ns.  Per chain and mode the output folder holds:

* ``cg.pdb``: martinize2's beads of the crystal structure (the mapped starting point),
* ``md.xtc`` + ``md.gro``: the protein's beads along the MD (``md.gro`` = first saved frame),
* ``aa.pdb``: the all-atom chain it started from (heavy atoms), ``topol.top`` + ``molecule_0.itp``,
* ``run.json``: the commands' settings and timings.

Tools (not run-time dependencies of openmm-herobm): GROMACS (``apt-get install gromacs``),
``vermouth`` (martinize2, in the ``test`` extra) and the Martini 3.0.0 force field: the
official ``martini_v3.0.0.itp`` is the first 356,605 lines of ``martini.itp`` in the PyPI
sdist of ``mstool`` (``src/mstool/FF/martini3.0.0/``; pass that file as ``--martini-itp``).
Water and ions are the Martini 3.0.0 W, NA and CL (TQ5) definitions, written here.

    python scripts/make_real_frames.py --martini-itp .../martini.itp --split val --limit 10 \
        --out out/real_frames --modes elastic plain

The chains are picked deterministically: per split, the complete (no chain break, all side
chains) chains of 60-160 residues (``--max-residues``), one per PDB entry / BM5 complex, sorted
by name.  The validation split has nine such chains of at most 160 residues, and martinize2
refuses one of them (bm5_1HE1_r_u_A, a PTM assertion): ``--max-residues 200`` adds more.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MARTINI_LINES = 356605  # the official martini_v3.0.0.itp inside mstool's martini.itp
W_DENSITY = 8.36  # Martini W beads per nm^3 (4 waters each, 1 g/cm^3)

SOLVENT_ITP = """; Martini 3.0.0 water and ions (martini_v3.0.0_solvents_v1.itp, martini_v3.0.0_ions_v1.itp)
[ moleculetype ]
W 1
[ atoms ]
1 W 1 W W 1 0

[ moleculetype ]
NA 1
[ atoms ]
1 TQ5 1 ION NA 1 1.0

[ moleculetype ]
CL 1
[ atoms ]
1 TQ5 1 ION CL 1 -1.0
"""

MDP_COMMON = """cutoff-scheme = Verlet
nstlist = 20
verlet-buffer-tolerance = 0.005
coulombtype = reaction-field
rcoulomb = 1.1
epsilon_r = 15
epsilon_rf = 0
vdw-type = cutoff
vdw-modifier = Potential-shift-verlet
rvdw = 1.1
"""
MDP_EM = MDP_COMMON + "integrator = steep\nnsteps = {steps}\nemtol = 100\n"
MDP_MD = MDP_COMMON + """integrator = md
dt = {dt}
nsteps = {steps}
nstxout = 0
nstvout = 0
nstfout = 0
nstlog = 5000
nstenergy = 5000
nstxout-compressed = {every}
compressed-x-grps = Protein
compressed-x-precision = 1000
tcoupl = v-rescale
tc-grps = System
tau-t = 1.0
ref-t = 310
pcoupl = {pcoupl}
pcoupltype = isotropic
tau-p = 12.0
compressibility = 3e-4
ref-p = 1.0
gen-vel = {gen_vel}
gen-temp = 310
gen-seed = {seed}
ld-seed = {seed}
continuation = {continuation}
"""


def run(cmd: list[str], cwd: Path, stdin: str | None = None) -> None:
    done = subprocess.run(cmd, cwd=cwd, input=stdin, text=True, capture_output=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{done.stderr[-3000:]}")


def pick_chains(split: str, limit: int, min_res: int = 60, max_res: int = 160) -> list[Path]:
    """Complete chains of ``min_res``-``max_res`` residues, one per PDB entry / BM5 complex."""
    rows = [line.rstrip("\n").split("\t") for line in (DATA / "manifest.tsv").open()][1:]
    seen, chosen = set(), []
    for path, _source, pdb_id, _chain, n_res, breaks, complete, row_split, _origin in sorted(rows):
        if row_split != split or breaks != "0" or float(complete) < 1.0 or not min_res <= int(n_res) <= max_res:
            continue
        if pdb_id in seen:
            continue
        seen.add(pdb_id)
        chosen.append(DATA / path)
    return chosen[:limit]


def write_forcefield(martini_itp: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "martini_v3.0.0.itp"
    if not target.exists():
        with martini_itp.open() as src, target.open("w") as dst:
            for k, line in enumerate(src):
                if k >= MARTINI_LINES:
                    break
                dst.write(line)
    (folder / "martini_v3.0.0_solvents_ions.itp").write_text(SOLVENT_ITP)


def water_box(ff: Path, work: Path, size: float = 4.0) -> Path:
    """An equilibrated cube of Martini W (made once, then tiled by ``gmx solvate``)."""
    box = ff / "w_box.gro"
    if box.exists():
        return box
    work.mkdir(parents=True, exist_ok=True)
    (work / "w.gro").write_text("W\n1\n    1W        W    1   0.000   0.000   0.000\n   1.0 1.0 1.0\n")
    n = int(W_DENSITY * size**3 * 0.95)
    run(["gmx", "insert-molecules", "-ci", "w.gro", "-nmol", str(n), "-box", str(size), str(size), str(size),
         "-radius", "0.21", "-try", "200", "-o", "ins.gro"], work)
    n_in = int((work / "ins.gro").read_text().splitlines()[1])
    top = f'#include "{ff}/martini_v3.0.0.itp"\n#include "{ff}/martini_v3.0.0_solvents_ions.itp"\n' \
          f"[ system ]\nW\n[ molecules ]\nW {n_in}\n"
    (work / "topol.top").write_text(top)
    _minimise_and_equilibrate(work, "ins.gro", index=False, ns=0.5)
    shutil.copy(work / "eq.gro", box)
    return box


def _minimise_and_equilibrate(work: Path, start: str, index: bool, ns: float = 0.2, seed: int = 1) -> None:
    (work / "em.mdp").write_text(MDP_EM.format(steps=2000))
    run(["gmx", "grompp", "-f", "em.mdp", "-c", start, "-p", "topol.top", "-o", "em.tpr", "-maxwarn", "2"], work)
    run(["gmx", "mdrun", "-deffnm", "em", "-nt", "2"], work)
    md = MDP_MD.format(dt=0.01, steps=int(ns * 1000 / 0.01), every=0, pcoupl="c-rescale", gen_vel="yes", seed=seed,
                       continuation="no")
    if not index:
        md = md.replace("compressed-x-grps = Protein\n", "")
    (work / "eq.mdp").write_text(md)
    run(["gmx", "grompp", "-f", "eq.mdp", "-c", "em.gro", "-p", "topol.top", "-o", "eq.tpr", "-maxwarn", "2"], work)
    run(["gmx", "mdrun", "-deffnm", "eq", "-nt", "2"], work)


def simulate(chain: Path, out: Path, ff: Path, elastic: bool, ns: float, every: float, seed: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work = out / "work"
    work.mkdir(exist_ok=True)
    times = {}
    t0 = time.time()
    with gzip.open(chain, "rt") as f:
        atoms = [line for line in f if line.startswith(("ATOM", "TER"))]
    (out / "aa.pdb").write_text("".join(atoms) + "END\n")
    cmd = ["martinize2", "-f", "../aa.pdb", "-o", "topol.top", "-x", "cg.pdb", "-ff", "martini3001", "-dssp",
           "-ignh", "-maxwarn", "100"] + (["-elastic"] if elastic else [])
    run(cmd, work)
    shutil.copy(work / "cg.pdb", out / "cg.pdb")
    shutil.copy(work / "molecule_0.itp", out / "molecule_0.itp")
    times["martinize2"] = time.time() - t0
    run(["gmx", "editconf", "-f", "cg.pdb", "-o", "box.gro", "-bt", "dodecahedron", "-d", "1.0"], work)
    run(["gmx", "solvate", "-cp", "box.gro", "-cs", str(ff / "w_box.gro"), "-radius", "0.21", "-o", "solv.gro"], work)
    n_w = sum(1 for line in (work / "solv.gro").read_text().splitlines()[2:-1] if line[5:10].strip() == "W")
    top = (f'#include "{ff}/martini_v3.0.0.itp"\n#include "{ff}/martini_v3.0.0_solvents_ions.itp"\n'
           f'#include "molecule_0.itp"\n[ system ]\n{chain.name}\n[ molecules ]\nmolecule_0 1\nW {n_w}\n')
    (work / "topol.top").write_text(top)
    (work / "em.mdp").write_text(MDP_EM.format(steps=10))
    run(["gmx", "grompp", "-f", "em.mdp", "-c", "solv.gro", "-p", "topol.top", "-o", "ions.tpr", "-maxwarn", "2"],
        work)
    run(["gmx", "genion", "-s", "ions.tpr", "-o", "ions.gro", "-p", "topol.top", "-pname", "NA", "-nname", "CL",
         "-neutral", "-conc", "0.15", "-seed", str(seed)], work, stdin="W\n")
    times["setup"] = time.time() - t0
    _minimise_and_equilibrate(work, "ions.gro", index=True, seed=seed)
    times["equilibrate"] = time.time() - t0
    every_steps = int(round(every * 1000 / 0.02))
    (work / "md.mdp").write_text(MDP_MD.format(dt=0.02, steps=int(round(ns * 1000 / 0.02)), every=every_steps,
                                               pcoupl="c-rescale", gen_vel="no", seed=seed, continuation="yes"))
    run(["gmx", "grompp", "-f", "md.mdp", "-c", "eq.gro", "-t", "eq.cpt", "-p", "topol.top", "-o", "md.tpr",
         "-maxwarn", "2"], work)
    run(["gmx", "mdrun", "-deffnm", "md", "-nt", "2"], work)
    times["md"] = time.time() - t0
    # the protein's beads, whole, frames after t = 0 (the start is cg.pdb)
    run(["gmx", "trjconv", "-s", "md.tpr", "-f", "md.xtc", "-o", "whole.xtc", "-pbc", "mol",
         "-b", str(every * 1000 / 2)], work, stdin="Protein\n")
    run(["gmx", "trjconv", "-s", "md.tpr", "-f", "whole.xtc", "-o", "../md.gro", "-dump", "0"], work, stdin="Protein\n")
    shutil.move(work / "whole.xtc", out / "md.xtc")
    shutil.copy(work / "topol.top", out / "topol.top")
    info = {"chain": chain.name, "elastic": elastic, "ns": ns, "every_ns": every, "seed": seed,
            "n_water_beads": n_w, "seconds": {k: round(v, 1) for k, v in times.items()},
            "martinize2": " ".join(cmd)}
    (out / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    shutil.rmtree(work)
    return info


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--martini-itp", type=Path, required=True, help="mstool's FF/martini3.0.0/martini.itp")
    p.add_argument("--split", default="test", choices=("train", "val", "test"))
    p.add_argument("--chains", nargs="*", help="chain files (default: picked from --split)")
    p.add_argument("--limit", type=int, default=10)
    p.add_argument("--max-residues", type=int, default=160, help="largest chain picked (default 160)")
    p.add_argument("--skip", type=int, default=0, help="skip the first N picked chains")
    p.add_argument("--modes", nargs="+", default=["elastic", "plain"], choices=("elastic", "plain"))
    p.add_argument("--ns", type=float, default=5.0)
    p.add_argument("--every", type=float, default=0.5, help="ns between saved frames")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--out", type=Path, default=Path("out/real_frames"))
    args = p.parse_args(argv)
    ff = (args.out / "forcefield").resolve()
    write_forcefield(args.martini_itp, ff)
    water_box(ff, args.out / "forcefield_work")
    chains = ([Path(c) for c in args.chains] if args.chains
              else pick_chains(args.split, args.limit + args.skip, max_res=args.max_residues))
    for chain in chains[args.skip:]:
        name = chain.name.replace(".pdb.gz", "")
        for mode in args.modes:
            folder = args.out / args.split / name / mode
            if (folder / "run.json").exists():
                continue
            t = time.time()
            try:
                simulate(chain, folder, ff, mode == "elastic", args.ns, args.every, args.seed)
            except RuntimeError as err:
                print(f"{name} {mode}: FAILED {str(err).splitlines()[0]}", file=sys.stderr)
                shutil.rmtree(folder, ignore_errors=True)  # nothing half-written is left to be mistaken for data
                continue
            print(f"{name} {mode}: {time.time() - t:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
