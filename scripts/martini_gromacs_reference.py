"""GROMACS reference energies and forces for ``openmm_herobm.martini.MartiniTopFile`` (tests/data/martini).

GROMACS is the oracle here, not a dependency: this script builds small Martini 3 systems, runs
``gmx_d grompp`` + ``gmx_d mdrun -rerun`` (GROMACS 2022.5, double precision) on a few frames
and stores per-term energies (``gmx_d energy``) and forces (the rerun .trr)
in ``reference.npz``, which ``tests/test_martini.py`` compares OpenMM against without GROMACS.

Systems (each written with its ``.top`` into ``--out``):

* ``protein_elastic`` / ``protein_plain``: martinize2's bm5_2X9A_l_b_B (the real-frame fixture,
  ``tests/data/real_frames``) with and without its elastic network, first MD frame, in Martini 3
  water + 0.15 M NaCl (``gmx solvate``/``genion``), minimised, then 2 frames 10 ps apart of MD at
  20 fs (single-precision ``gmx``, the Martini 3 mdp of ``scripts/make_real_frames.py``);
* ``features_comb1``/``2``/``3``: a made-up molecule (27 copies) with every other form the reader
  supports, under each combination rule, as a zero-step MD (GROMACS builds the virtual sites);
* ``membrane``: the real mstool membrane frame (``shared/data/cg_real/mstool_mix8_419lipids.gro.gz``)
  with only the lipids whose Martini 3.0.0 topology (mstool's ``phospholipids.itp``) has the
  frame's beads: POPC and POPE, + W + ions.  Removed: CHOL, SSM, SAP6 (no Martini 3 .itp here),
  DLPE (the frame's has 12 beads, di-C18:2; Martini 3.0.0's is di-C12, 10 beads), PAPC and PAPS
  (the frame's chain A is C1A D2A D3A D4A C5A, Martini 3.0.0's D1A D2A D3A D4A C4A: other types).

Inputs written next to the tops: ``martini_v3.0.0_subset.itp`` (the official Martini 3.0.0
``[ atomtypes ]`` and ``[ nonbond_params ]`` restricted to the bead types used: the full file is
16 MB), ``martini_v3.0.0_phospholipids_subset.itp`` (POPC and POPE from mstool), and the W/NA/CL
definitions of ``scripts/make_real_frames.py``.  Positions are stored as the float32 values of
GROMACS' single-precision frames, exactly what gmx_d read, so both programs see identical inputs.

    python scripts/martini_gromacs_reference.py \
        --martini-itp /tmp/mstool/mstool-0.3.9/src/mstool/FF/martini3.0.0/martini.itp \
        --lipids-itp /tmp/mstool/mstool-0.3.9/src/mstool/FF/martini3.0.0/phospholipids.itp \
        --water-box out/real_frames/forcefield/w_box.gro --out tests/data/martini

``--check`` compares the stored references with OpenMM (``MartiniTopFile``) and prints the
per-term relative errors as a Markdown table (BENCHMARKS.md); ``--extra-chains
out/real_frames/test`` (with ``--martini-itp``) adds a table for every martinize2 chain there,
protein alone, all frames, against gmx_d live (not stored).
"""

from __future__ import annotations

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]  # this checkout, not an installed copy
from make_real_frames import MARTINI_LINES, MDP_COMMON, SOLVENT_ITP

FIXTURE_CHAIN = ROOT / "tests" / "data" / "real_frames" / "test" / "bm5_2X9A_l_b_B"
MEMBRANE = ROOT.parent / "shared" / "data" / "cg_real" / "mstool_mix8_419lipids.gro.gz"
LIPIDS = ("POPC", "POPE")
#: GROMACS energy terms compared (those a system lacks are skipped)
TERMS = ("Bond", "Harmonic Pot.", "Angle", "G96Angle", "Restr. Angles", "Proper Dih.", "Improper Dih.",
         "Per. Imp. Dih.", "Restr. Dih.", "CBT Dih.", "LJ-14", "Coulomb-14",
         "LJ (SR)", "Coulomb (SR)", "Potential")
MDP_RERUN = MDP_COMMON + "integrator = md\nnsteps = 0\nnstcalcenergy = 1\nnstenergy = 1\nnstxout = 1\nnstfout = 1\n"
MDP_MD = MDP_COMMON + """integrator = md
dt = 0.02
nsteps = 1000
nstxout = 500
nstcalcenergy = 100
nstenergy = 500
tcoupl = v-rescale
tc-grps = System
tau-t = 1.0
ref-t = 310
gen-vel = yes
gen-temp = 310
gen-seed = 7
"""


def run(cmd: list[str], cwd: Path, stdin: str | None = None) -> str:
    # mdrun's -nt alone sets its threads: an OMP_NUM_THREADS set by a caller (a test run) contradicts it
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    done = subprocess.run(cmd, cwd=cwd, input=stdin, text=True, capture_output=True, check=False, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed in {cwd}:\n{done.stderr[-3000:]}")
    return done.stdout


# -- inputs --------------------------------------------------------------------------------------

def _moleculetypes(text: str) -> dict[str, str]:
    """name -> its block (header comment and [ moleculetype ]) of mstool's phospholipids.itp, whose
    molecules each start with a ``;;;;;; Martini lipid topology`` line."""
    blocks = re.split(r"(?m)^(?=;;;;;; Martini lipid topology)", text)[1:]
    out = {}
    for block in blocks:
        after = block.split("moleculetype", 1)[1].splitlines()[1:]
        name = next(l.split()[0] for l in after if l.split(";")[0].strip())
        out[name] = block
    return out


def _atom_types(itp_text: str) -> set[str]:
    types, section = set(), None
    for line in itp_text.splitlines():
        s = line.split(";")[0].strip()
        if s.startswith("["):
            section = s.strip("[] ").lower()
        elif s and not s.startswith("#") and section == "atoms":
            types.add(s.split()[1])
    return types


def write_inputs(out: Path, martini_itp: Path, lipids_itp: Path) -> None:
    """The force-field subset, the five lipids, the solvent, and the tops of the three systems."""
    out.mkdir(parents=True, exist_ok=True)
    lipids = _moleculetypes(lipids_itp.read_text())
    lipid_text = "".join(lipids[name] for name in LIPIDS)
    (out / "martini_v3.0.0_phospholipids_subset.itp").write_text(
        "; POPC and POPE of the Martini 3.0.0 phospholipids (Souza et al., Nat. Methods 2021),\n"
        "; copied unchanged from the PyPI sdist mstool==0.3.9, src/mstool/FF/martini3.0.0/phospholipids.itp\n"
        "; (GPL-3.0, ../../../LICENSES/mstool.GPL-3.0.txt) by scripts/martini_gromacs_reference.py\n\n" + lipid_text)
    (out / "martini_v3.0.0_solvents_ions.itp").write_text(SOLVENT_ITP)
    used = set().union(*(_atom_types(p.read_text()) for p in FIXTURE_CHAIN.glob("*/molecule_0.itp")),
                       _atom_types(lipid_text), _atom_types(SOLVENT_ITP))
    header, atomtypes, nonbond, section = [], [], [], None
    with martini_itp.open() as src:
        for k, line in enumerate(src):
            if k >= MARTINI_LINES:
                break
            s = line.split(";")[0].strip()
            if s.startswith("["):
                section = s.strip("[] ").lower()
                continue
            if section is None:
                header.append(line)
            elif s and section == "defaults":
                defaults = line
            elif s and section == "atomtypes" and s.split()[0] in used:
                atomtypes.append(line)
            elif s and section == "nonbond_params" and set(s.split()[:2]) <= used:
                nonbond.append(line)
    (out / "martini_v3.0.0_subset.itp").write_text(
        "".join(header) + f";;;;; Subset: the {len(atomtypes)} bead types of the test systems, written by\n"
        ";;;;; scripts/martini_gromacs_reference.py from the official martini_v3.0.0.itp (the first 356,605\n"
        ";;;;; lines of martini.itp in the PyPI sdist mstool==0.3.9; GPL-3.0, ../../../LICENSES/mstool.GPL-3.0.txt)\n\n"
        "[ defaults ]\n" + defaults + "\n[ atomtypes ]\n" + "".join(atomtypes)
        + "\n[ nonbond_params ]\n" + "".join(nonbond))


def _top(includes: list[str], molecules: list[tuple[str, int]], name: str) -> str:
    return ("".join(f'#include "{i}"\n' for i in includes) + f"\n[ system ]\n{name}\n\n[ molecules ]\n"
            + "".join(f"{m} {n}\n" for m, n in molecules))


def _read_gro(path: Path):
    lines = path.read_text().splitlines()
    n = int(lines[1])
    return lines[2:2 + n], lines[2 + n]


def build_protein(out: Path, mode: str, work: Path, water_box: Path) -> tuple[str, Path]:
    """A solvated, neutralised, minimised protein and a short MD; returns (top name, trr of frames)."""
    work.mkdir(parents=True)
    itp = os.path.relpath(FIXTURE_CHAIN / mode / "molecule_0.itp", out)  # the fixture's .itp, not a copy
    ff = ["martini_v3.0.0_subset.itp", "martini_v3.0.0_solvents_ions.itp", itp]
    for name in ff:
        (work / Path(name).name).write_text((out / name).read_text())
    shutil.copy(FIXTURE_CHAIN / mode / "md.gro", work / "protein.gro")
    run(["gmx", "solvate", "-cp", "protein.gro", "-cs", str(water_box), "-radius", "0.21", "-o", "solv.gro"],
        work)
    atoms, _ = _read_gro(work / "solv.gro")
    n_w = sum(1 for a in atoms if a[5:10].strip() == "W")
    local = [Path(n).name for n in ff]
    (work / "topol.top").write_text(_top(local, [("molecule_0", 1), ("W", n_w)], f"{FIXTURE_CHAIN.name} {mode}"))
    (work / "em.mdp").write_text(MDP_COMMON + "integrator = steep\nnsteps = 500\nemtol = 100\n")
    run(["gmx", "grompp", "-f", "em.mdp", "-c", "solv.gro", "-p", "topol.top", "-o", "ions.tpr", "-maxwarn", "2"],
        work)
    run(["gmx", "genion", "-s", "ions.tpr", "-o", "ions.gro", "-p", "topol.top", "-pname", "NA", "-nname", "CL",
         "-neutral", "-conc", "0.15", "-seed", "7"], work, stdin="W\n")
    run(["gmx", "grompp", "-f", "em.mdp", "-c", "ions.gro", "-p", "topol.top", "-o", "em.tpr", "-maxwarn", "2"], work)
    run(["gmx", "mdrun", "-deffnm", "em", "-nt", "2"], work)
    (work / "md.mdp").write_text(MDP_MD)
    run(["gmx", "grompp", "-f", "md.mdp", "-c", "em.gro", "-p", "topol.top", "-o", "md.tpr", "-maxwarn", "2"], work)
    run(["gmx", "mdrun", "-deffnm", "md", "-nt", "2"], work)
    # molecules whole: OpenMM builds a virtual site from its atoms' positions as given
    run(["gmx", "trjconv", "-f", "md.trr", "-s", "md.tpr", "-o", "frames.trr", "-b", "10", "-pbc", "mol"], work,
        stdin="System\n")
    shutil.copy(work / "em.gro", work / "start.gro")
    molecules = re.findall(r"(?m)^(\S+)\s+(\d+)\s*$", (work / "topol.top").read_text().split("[ molecules ]")[1])
    top = f"protein_{mode}.top"
    (out / top).write_text(_top(ff, [(m, int(c)) for m, c in molecules], f"{FIXTURE_CHAIN.name} {mode}"))
    return top, work / "frames.trr"


def build_membrane(out: Path, work: Path) -> tuple[str, Path]:
    """The mstool frame without CHOL, SSM and SAP6; returns (top name, trr of the frame)."""
    work.mkdir(parents=True)
    with gzip.open(MEMBRANE, "rt") as f:
        lines = f.read().splitlines()
    n = int(lines[1])
    kept, molecules, last = [], [], None
    for line in lines[2:2 + n]:
        res, resid = line[5:10].strip(), line[:5]
        if res not in LIPIDS + ("W", "ION"):
            continue
        name = line[10:15].strip() if res == "ION" else res
        key = (resid, res, name if res == "ION" else "")
        if key != last or res in ("W", "ION"):
            if molecules and molecules[-1][0] == name:
                molecules[-1][1] += 1
            else:
                molecules.append([name, 1])
        last = key
        kept.append(line)
    (work / "membrane.gro").write_text(f"{lines[0]}\n{len(kept)}\n" + "\n".join(kept) + "\n" + lines[2 + n] + "\n")
    ff = ["martini_v3.0.0_subset.itp", "martini_v3.0.0_solvents_ions.itp", "martini_v3.0.0_phospholipids_subset.itp"]
    (out / "membrane.top").write_text(_top(ff, [tuple(m) for m in molecules],
                                           "mstool mix8 membrane, POPC and POPE only"))
    for name in ff + ["membrane.top"]:
        shutil.copy(out / name, work / name)
    (work / "em.mdp").write_text(MDP_COMMON + "integrator = steep\nnsteps = 0\n")
    run(["gmx", "grompp", "-f", "em.mdp", "-c", "membrane.gro", "-p", "membrane.top", "-o", "conv.tpr",
         "-maxwarn", "5"], work)
    run(["gmx", "trjconv", "-f", "membrane.gro", "-s", "conv.tpr", "-o", "frames.trr", "-pbc", "mol"], work,
        stdin="System\n")
    shutil.copy(work / "membrane.gro", work / "start.gro")
    return "membrane.top", work / "frames.trr"


FEATURES_ITP = """; A made-up molecule with every GROMACS term MartiniTopFile reads (none of martinize2's
; outputs has them all), written by scripts/martini_gromacs_reference.py
[ moleculetype ]
FEAT 2

[ atoms ]
 1 A 1 FEA A1 1  1.0 72
 2 B 1 FEA B2 2  0.0 54
 3 C 1 FEA C3 3 -1.0 36
 4 A 1 FEA A4 4  0.5
 5 B 1 FEA B5 5  0.0 45
 6 C 1 FEA C6 6 -0.5 72
 7 V 1 FEA V7 7  0.2 0
 8 V 1 FEA V8 8 -0.2 0
 9 V 1 FEA V9 9  0.0 0
10 V 1 FEA V10 10 0.1 0
11 V 1 FEA V11 11 -0.1 0
12 V 1 FEA V12 12 0.0 0

[ bonds ]
1 2 1 0.35 5000
2 3 1 0.40 4000
3 4 1 0.38 3000
4 5 6 0.45 2000 ; type 6: no exclusion
5 6 1 0.42 2500

[ constraints ]
1 5 2 0.90 ; type 2: no exclusion
2 6 1 0.80

[ pairs ]
1 4 1 PAIR_V PAIR_W
2 5 1 PAIR2_V PAIR2_W

[ angles ]
1 2 3 1 110 50
2 3 4 2 120 25
3 4 5 10 130 30
4 5 6 1 100 40

[ dihedrals ]
1 2 3 4 1 30 5 2
2 3 4 5 9 0 3 1
2 3 4 5 9 60 2 3
3 4 5 6 4 180 4 2
1 2 3 5 2 20 60
2 3 4 5 10 -60 10
1 2 3 4 11 2.0 1.5 -0.5 0.3 0.1 0.2

[ exclusions ]
1 6
7 1 2 3 4 5 6 8 9 10 11 12
8 1 2 3 4 5 6 9 10 11 12
9 1 2 3 4 5 6 10 11 12
10 1 2 3 4 5 6 11 12
11 1 2 3 4 5 6 12
12 1 2 3 4 5 6

[ virtual_sites2 ]
7 1 2 1 0.3

[ virtual_sites3 ]
8 2 3 4 1 0.2 0.3
9 3 4 5 4 0.3 0.3 1.5

[ virtual_sitesn ]
10 1 1 2 3 4
11 3 4 1.0 5 2.0 6 3.0
12 2 1 3 5 6
"""
#: combination rule -> ([ defaults ], [ atomtypes ] V W of A B C V, [ nonbond_params ] A C, the two pairs' V W)
FEATURES_FF = {1: ("1 1 no 1.0 0.8", {"A": (0.0077, 1.3e-5), "B": (0.0058, 8.0e-6), "C": (0.0069, 1.0e-5),
                                     "V": (0.0040, 3.0e-6)}, (0.0090, 1.6e-5), (0.0060, 9.0e-6, 0.0050, 7.0e-6)),
               2: ("1 2 no 1.0 0.8", {"A": (0.47, 3.5), "B": (0.43, 3.0), "C": (0.41, 4.0), "V": (0.35, 1.0)},
                   (0.45, 2.5), (0.42, 1.5, 0.40, 1.2)),
               3: ("1 3 no 1.0 0.8", {"A": (0.47, 3.5), "B": (0.43, 3.0), "C": (0.41, 4.0), "V": (0.35, 1.0)},
                   (0.45, 2.5), (0.42, 1.5, 0.40, 1.2))}
FEATURE_NAMES = ["A1", "B2", "C3", "A4", "B5", "C6", "V7", "V8", "V9", "V10", "V11", "V12"]


def write_features(out: Path, n_side: int = 3, seed: int = 2026) -> list[str]:
    """features_comb{1,2,3}.top (one per combination rule) of n_side^3 FEAT molecules, and features.gro:
    chains of sensible geometry (angles 50-160 degrees, |sin| of dihedrals > 0.3, beads three bonds
    apart > 0.5 nm, other molecules > 0.6 nm away), virtual sites at 0
    (GROMACS builds them)."""
    tops = []
    mass = {"A": 72.0, "B": 54.0, "C": 36.0, "V": 0.0}
    for comb, (defaults, types, ac, pair) in FEATURES_FF.items():
        itp = FEATURES_ITP
        for name, value in zip(("PAIR_V", "PAIR_W", "PAIR2_V", "PAIR2_W"), pair):
            itp = itp.replace(name, repr(value))
        text = (f"[ defaults ]\n{defaults}\n\n[ atomtypes ]\n"
                + "".join(f"{t} {mass[t]} 0.0 A {v!r} {w!r}\n" for t, (v, w) in types.items())
                + f"\n[ nonbond_params ]\nA C 1 {ac[0]!r} {ac[1]!r}\n\n" + itp
                + f"\n[ system ]\nfeatures, combination rule {comb}\n\n[ molecules ]\nFEAT {n_side ** 3}\n")
        (out / f"features_comb{comb}.top").write_text(text)
        tops.append(f"features_comb{comb}.top")
    rng = np.random.default_rng(seed)
    spacing, lines, placed = 2.0, [], np.zeros((0, 3))
    edge = n_side * spacing
    for m, cell in enumerate(np.ndindex(n_side, n_side, n_side)):
        while True:
            x = [np.array(cell) * spacing + 0.4]
            for b in (0.35, 0.40, 0.38, 0.45, 0.42):  # the bonds' lengths, stretched or compressed
                d = rng.normal(size=3)
                x.append(x[-1] + b * (1 + 0.1 * rng.normal()) * d / np.linalg.norm(d))
            x = np.array(x)
            gap = x[:, None] - placed[None]
            gap -= edge * np.round(gap / edge)
            if _sensible(x) and (not len(placed) or np.linalg.norm(gap, axis=-1).min() > 0.6):
                placed = np.vstack([placed, x])
                break
        for name, p in zip(FEATURE_NAMES, np.vstack([x, np.zeros((6, 3))])):
            lines.append(f"{m + 1:5d}FEA  {name:>5s}{len(lines) + 1:5d}{p[0]:13.8f}{p[1]:13.8f}{p[2]:13.8f}")
    (out / "features.gro").write_text(f"FEAT molecules\n{len(lines)}\n" + "\n".join(lines)
                                      + f"\n{edge:.8f} {edge:.8f} {edge:.8f}\n")
    return tops


def _whole(gro: Path, built: np.ndarray, box: np.ndarray) -> np.ndarray:
    """The .gro's positions with GROMACS' virtual sites (``built`` (1, N, 3), wrapped into its cubic
    ``box``) taken to the image next to their molecule's first bead: (1, N, 3) nm, molecules whole."""
    lines = gro.read_text().splitlines()[2:-1]
    x = np.array([[float(line[20 + 13 * k:33 + 13 * k]) for k in range(3)] for line in lines])
    sites = np.arange(len(x)) % len(FEATURE_NAMES) >= 6
    first = x[np.arange(len(x)) // len(FEATURE_NAMES) * len(FEATURE_NAMES)]
    edge = np.diag(box[0])
    x[sites] = built[0, sites] + edge * np.round((first[sites] - built[0, sites]) / edge)
    return x[None]


def _sensible(x: np.ndarray) -> bool:
    def angle(a, b, c):
        u, v = a - b, c - b
        return np.degrees(np.arccos(u @ v / np.linalg.norm(u) / np.linalg.norm(v)))

    def sin_dihedral(a, b, c, d):
        n1, n2 = np.cross(b - a, c - b), np.cross(c - b, d - c)
        return np.linalg.norm(np.cross(n1, n2)) / np.linalg.norm(n1) / np.linalg.norm(n2)

    angles = [angle(*x[i:i + 3]) for i in range(4)]
    dihedrals = [sin_dihedral(*x[i:i + 4]) for i in range(3)] + [sin_dihedral(x[0], x[1], x[2], x[4])]
    apart = [np.linalg.norm(x[i] - x[j]) for i in range(6) for j in range(i + 3, 6)]
    return all(50 < a < 160 for a in angles) and all(s > 0.3 for s in dihedrals) and min(apart) > 0.5


# -- the oracle ----------------------------------------------------------------------------------

def read_trr(path: Path) -> dict:
    """Every frame of a GROMACS .trr (XDR, single or double precision): box (F, 3, 3), x, f (F, N, 3)
    as float64, exact; a small reader because mdtraj's skips forces and ``gmx dump`` prints 6 digits."""
    data, at, frames = path.read_bytes(), 0, {"box": [], "x": [], "f": []}
    while at < len(data):
        header = np.frombuffer(data, ">i4", 19, at)  # magic, 13, 12, "GMX_trn_file", 13 sizes and counts
        assert header[0] == 1993, f"{path}: not a .trr frame at byte {at}"
        sizes = dict(zip(("ir", "e", "box", "vir", "pres", "top", "sym", "x", "v", "f", "natoms"), header[6:17]))
        natoms = int(sizes["natoms"])
        real = (sizes["box"] // 9) if sizes["box"] else (sizes["x"] or sizes["f"]) // (3 * natoms)
        dtype = ">f8" if real == 8 else ">f4"
        at += 19 * 4 + 2 * real  # header, t, lambda
        for name in ("box", "vir", "pres", "x", "v", "f"):
            size = int(sizes[name])
            if size:
                values = np.frombuffer(data, dtype, size // real, at).astype(np.float64)
                if name in frames:
                    frames[name].append(values.reshape(-1, 3))
            at += size
    return {k: np.array(v) for k, v in frames.items()}


def rerun(top: Path, frames: Path, work: Path, gmx: str = "gmx_d", construct: bool = False,
          start: Path | None = None) -> dict:
    """``gmx`` (double precision by default) rerun of ``frames`` (.trr or .gro; start.gro next to it
    or ``start`` gives grompp the names) with ``top``, or with ``construct`` a zero-step MD from ``frames`` (a .gro)
    that builds the virtual sites (a rerun takes them as given).  Returns positions (F, N, 3) as
    GROMACS wrote them back (possibly shifted by box vectors), box (F, 3, 3) nm, forces (F, N, 3)
    kJ/mol/nm, and ``energy:<term>`` (F,) kJ/mol."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "rerun.mdp").write_text(MDP_RERUN + ("continuation = yes\n" if construct else ""))
    start = frames if construct else start or frames.parent / "start.gro"
    run([gmx, "grompp", "-f", "rerun.mdp", "-p", str(top), "-c", str(start), "-o", "rerun.tpr", "-maxwarn", "5"],
        work)
    run([gmx, "mdrun", "-s", "rerun.tpr", "-deffnm", "rerun", "-nt", "1"]
        + ([] if construct else ["-rerun", str(frames)]), work)
    out = read_trr(work / "rerun.trr")
    return {"positions": out["x"], "box": out["box"], "forces": out["f"], **_energies(work, gmx)}


def _energies(work: Path, gmx: str) -> dict:
    """(F,) per GROMACS energy term of TERMS in rerun.edr (``gmx energy`` lists them with '-' for ' ')."""
    probe = subprocess.run([gmx, "energy", "-f", "rerun.edr", "-o", "probe.xvg"], cwd=work, input="\n",
                           text=True, capture_output=True, check=False)  # it fails, having listed the terms
    listing = probe.stdout + probe.stderr
    listed = re.findall(r"(?m)(?:^|\s)(\d+)\s+(\S+)", listing)
    available = {term: num for num, name in listed for term in (name, name.replace("-", " ")) if term in TERMS}
    terms = [t for t in TERMS if t in available]
    run([gmx, "energy", "-f", "rerun.edr", "-o", "energy.xvg", "-dp"], work,
        stdin="\n".join(available[t] for t in terms) + "\n0\n")
    xvg = (work / "energy.xvg").read_text()
    legends = re.findall(r'(?m)^@ s(\d+) legend "(.*)"$', xvg)  # columns in GROMACS' order, not ours
    rows = np.array([[float(v) for v in l.split()] for l in xvg.splitlines()
                     if l and l[0] not in "#@"]).reshape(-1, len(legends) + 1)
    return {f"energy:{name}": rows[:, int(k) + 1] for k, name in legends}


# -- OpenMM vs the stored numbers -----------------------------------------------------------------

def openmm_terms(top: Path, positions: np.ndarray, box: np.ndarray, terms: list[str], build_sites: bool = False):
    """OpenMM (Reference platform, double) energies per GROMACS term (F,), total forces (F, N, 3) and
    which particles are not virtual sites (N,)."""
    import openmm
    from openmm import unit

    from openmm_herobm.martini import MartiniTopFile, gromacs_box

    topfile = MartiniTopFile(top, periodicBoxVectors=gromacs_box(box[0]))
    system = topfile.createSystem()
    groups = {}
    for force in system.getForces():
        groups.setdefault(force.getName(), len(groups) + 1)
        force.setForceGroup(min(groups[force.getName()], 31))
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    energies, forces = {t: [] for t in terms}, []
    for x, b in zip(positions, box):
        context.setPeriodicBoxVectors(*gromacs_box(b))
        # virtual sites as in the frame (mdrun -rerun takes them as given) unless ``build_sites``
        context.setPositions(x.astype(np.float64))
        if build_sites:
            context.computeVirtualSites()
        for t in terms:
            group = {groups[t]} if t in groups else set(range(1, 32)) if t == "Potential" else set()
            e = context.getState(getEnergy=True, groups=group).getPotentialEnergy() if group else None
            energies[t].append(e.value_in_unit(unit.kilojoule_per_mole) if group else 0.0)
        forces.append(context.getState(getForces=True).getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer))
    # GROMACS reports a virtual site's force as zero once spread onto its atoms; OpenMM leaves it there
    real = np.array([not system.isVirtualSite(i) for i in range(system.getNumParticles())])
    return {t: np.array(v) for t, v in energies.items()}, np.array(forces), real


def compare(reference: dict, system: str, top: Path) -> dict:
    """Relative errors: per term max |E_openmm - E_gmx| / |E_gmx| over frames; forces max |dF| / rms |F|
    and rms |dF| / rms |F| over atoms and frames."""
    terms = [k.split(":", 2)[2] for k in reference if k.startswith(f"{system}:energy:")]
    energies, forces, real = openmm_terms(top, reference[f"{system}:positions"], reference[f"{system}:box"], terms)
    errors = {t: float(np.max(np.abs(energies[t] - reference[f"{system}:energy:{t}"])
                              / np.abs(reference[f"{system}:energy:{t}"]))) for t in terms}
    f_ref = reference[f"{system}:forces"][:, real]
    scale = np.sqrt(np.mean(np.sum(f_ref ** 2, axis=-1)))
    diff = np.linalg.norm(forces[:, real] - f_ref, axis=-1)
    errors["forces max"] = float(diff.max() / scale)
    errors["forces rms"] = float(np.sqrt(np.mean(diff ** 2)) / scale)
    return errors


def extra_chains(folder: Path, martini_itp: Path, work: Path) -> tuple[dict, dict]:
    """Every ``<chain>/<mode>`` of ``folder`` (``scripts/make_real_frames.py``'s output: martinize2's
    ``molecule_0.itp``, ``md.gro``, ``md.xtc``), the protein alone in its MD box, all frames rerun by
    gmx_d: (system name -> relative errors (as :func:`compare`), name -> positions' shape).  Nothing is
    stored."""
    from make_real_frames import write_forcefield

    write_forcefield(martini_itp, work / "forcefield")
    rows, shapes = {}, {}
    for itp in sorted(folder.glob("*/*/molecule_0.itp")):
        name = f"{itp.parent.parent.name} {itp.parent.name}"
        top = work / f"{itp.parent.parent.name}_{itp.parent.name}.top"
        top.write_text(_top([str(work / "forcefield" / "martini_v3.0.0.itp"), str(itp)], [("molecule_0", 1)], name))
        result = rerun(top, itp.parent / "md.xtc", work / top.stem, start=itp.parent / "md.gro")
        # the positions GROMACS used, in double (a box vector may have been added: bonded terms are periodic)
        reference = {f"{name}:{key}": value for key, value in result.items()}
        rows[name], shapes[name] = compare(reference, name, top), result["positions"].shape
        print(name, f"{len(result['positions'])} frames", {k: f"{v:.1e}" for k, v in rows[name].items()}, flush=True)
    return rows, shapes


def table(rows: dict, shapes: dict) -> str:
    """The Markdown table of relative errors, one row per system (BENCHMARKS.md)."""
    columns = [c for c in (*TERMS, "forces max", "forces rms") if any(c in r for r in rows.values())]
    lines = ["| system | beads x frames | " + " | ".join(columns) + " |", "|---|---|" + "---|" * len(columns)]
    for s, r in rows.items():
        lines.append(f"| {s} | {shapes[s][1]} x {shapes[s][0]} | "
                     + " | ".join(f"{r[c]:.1e}" if c in r else "-" for c in columns) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--martini-itp", type=Path, help="mstool's FF/martini3.0.0/martini.itp (its first 356,605 lines)")
    p.add_argument("--lipids-itp", type=Path, help="mstool's FF/martini3.0.0/phospholipids.itp")
    p.add_argument("--out", type=Path, default=ROOT / "tests" / "data" / "martini")
    p.add_argument("--water-box", type=Path, default=ROOT / "out" / "real_frames" / "forcefield" / "w_box.gro",
                   help="equilibrated Martini 3 W (scripts/make_real_frames.py writes it; default: its --out)")
    p.add_argument("--check", action="store_true", help="only compare the stored references with OpenMM")
    p.add_argument("--extra-chains", type=Path, help="also rerun every <chain>/<mode> of this folder "
                   "(scripts/make_real_frames.py output, e.g. out/real_frames/test), protein alone; nothing stored")
    args = p.parse_args(argv)
    args.out = args.out.resolve()
    if not args.check:
        if args.martini_itp is None or args.lipids_itp is None:
            p.error("--martini-itp and --lipids-itp are needed to build the references")
        if not args.water_box.is_file():
            p.error(f"{args.water_box}: no W box; run scripts/make_real_frames.py first or pass --water-box")
        write_inputs(args.out, args.martini_itp, args.lipids_itp)
        stored = {}
        with tempfile.TemporaryDirectory() as tmp:
            builds = [("protein_elastic", lambda w: build_protein(args.out, "elastic", w, args.water_box)),
                      ("protein_plain", lambda w: build_protein(args.out, "plain", w, args.water_box)),
                      ("membrane", lambda w: build_membrane(args.out, w))]
            for system, build in builds:
                top, frames = build(Path(tmp) / system)
                result = rerun(args.out / top, frames, Path(tmp) / system / "rerun")
                # the frames as gmx_d read them: float32 values (its output x may be shifted by a box vector)
                result["positions"] = read_trr(frames)["x"]
                for key, value in result.items():
                    stored[f"{system}:{key}"] = value.astype(np.float32) if key in ("positions", "forces") else value
                print(f"{system}: {len(stored[f'{system}:positions'])} frames, "
                      f"{stored[f'{system}:positions'].shape[1]} beads", flush=True)
            for top in write_features(args.out):
                system = top.removesuffix(".top")
                result = rerun(args.out / top, args.out / "features.gro", Path(tmp) / system, construct=True)
                result["positions"] = _whole(args.out / "features.gro", result["positions"], result["box"])
                stored.update({f"{system}:{key}": value for key, value in result.items()})  # float64: small
                print(f"{system}: 1 frame, {result['positions'].shape[1]} beads", flush=True)
        np.savez_compressed(args.out / "reference.npz", **stored)
    reference = dict(np.load(args.out / "reference.npz"))
    systems = sorted({k.split(":")[0] for k in reference})
    rows = {s: compare(reference, s, args.out / f"{s}.top") for s in systems}
    print(table(rows, {s: reference[f"{s}:positions"].shape for s in systems}))
    if args.extra_chains:
        if args.martini_itp is None:
            p.error("--extra-chains needs --martini-itp (the chains use every Martini 3 bead type)")
        with tempfile.TemporaryDirectory() as tmp:
            print(table(*extra_chains(args.extra_chains.resolve(), args.martini_itp, Path(tmp))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
