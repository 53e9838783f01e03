"""Ideal geometry and conformational statistics of the 20 amino acids, from the training split.

Writes ``openmm_herobm/reconstruction/protein_geometry.json``, the one home of these facts for
the fit (``reconstruction.geometric_fit``) and the yardstick (``evaluation.protein_quality``):

* per residue type: heavy atoms, bonds (median length), angles (median), the dihedrals that
  are rigid in real structures (circular SD < ``--max-spread``: rings, planar groups, the
  impropers that fix CA / ILE CB / THR CB), the chi angles, and a z-matrix that builds the
  side chain from N, CA, C and its chi angles (``build``: atom, three reference atoms, bond,
  angle, the chi it turns with or None, torsion offset);
* the backbone and peptide terms of Engh & Huber (1991), which crystal refinement restrains to;
* Ramachandran densities (general, GLY, PRO, pre-PRO) on a 5 degree grid, smoothed, with the
  density of the 99.8% contour (the outlier threshold);
* chi densities per residue type with their wells (the rotamer positions).

    python scripts/build_protein_geometry.py ../shared/data/proteins/train --geometry-chains 150 --stats-chains 700

Everything comes from the training split; validation and test chains are never read.
"""

from __future__ import annotations

import argparse
import itertools
import json
from collections import defaultdict
from pathlib import Path

import mdtraj
import numpy as np

from openmm_herobm.geometry import dihedral
from openmm_herobm.reconstruction.protein_geometry import grid_lookup

OUT = Path(__file__).resolve().parents[1] / "openmm_herobm" / "reconstruction" / "protein_geometry.json"
AMINO = ("ALA", "ARG", "ASN", "ASP", "CYS", "GLN", "GLU", "GLY", "HIS", "ILE", "LEU", "LYS", "MET", "PHE",
         "PRO", "SER", "THR", "TRP", "TYR", "VAL")
VARIANT = {"HID": "HIS", "HIE": "HIS", "HIP": "HIS", "HSD": "HIS", "HSE": "HIS", "HSP": "HIS", "CYX": "CYS",
           "CYM": "CYS", "ASH": "ASP", "GLH": "GLU", "LYN": "LYS", "MSE": "MET"}
BACKBONE = ("N", "CA", "C", "O")
# IUPAC chi angles (the last atom of each is the one the chi places)
CHI = {
    "ARG": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "NE"), ("CG", "CD", "NE", "CZ")),
    "ASN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "ASP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "OD1")),
    "CYS": (("N", "CA", "CB", "SG"),),
    "GLN": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "GLU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "OE1")),
    "HIS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "ND1")),
    "ILE": (("N", "CA", "CB", "CG1"), ("CA", "CB", "CG1", "CD1")),
    "LEU": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "LYS": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD"), ("CB", "CG", "CD", "CE"), ("CG", "CD", "CE", "NZ")),
    "MET": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "SD"), ("CB", "CG", "SD", "CE")),
    "PHE": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "PRO": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD")),
    "SER": (("N", "CA", "CB", "OG"),),
    "THR": (("N", "CA", "CB", "OG1"),),
    "TRP": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "TYR": (("N", "CA", "CB", "CG"), ("CA", "CB", "CG", "CD1")),
    "VAL": (("N", "CA", "CB", "CG1"),),
}
# chi angles whose last two atoms are equivalent by symmetry: the chi is defined modulo 180 degrees
SYMMETRIC_CHI = {("ASP", 2), ("GLU", 3), ("PHE", 2), ("TYR", 2), ("ARG", 5)}
# Engh & Huber (1991) backbone: bond lengths (A) and angles (deg); "+" = atom of residue i+1
ENGH_HUBER_BONDS = {("N", "CA"): 1.458, ("CA", "C"): 1.525, ("C", "O"): 1.231, ("C", "+N"): 1.329,
                    ("C", "OXT"): 1.231}
ENGH_HUBER_ANGLES = {("N", "CA", "C"): 111.2, ("CA", "C", "O"): 120.1, ("CA", "C", "+N"): 116.2,
                     ("O", "C", "+N"): 122.7, ("C", "+N", "+CA"): 121.7, ("CA", "C", "OXT"): 120.1,
                     ("O", "C", "OXT"): 119.8}
ENGH_HUBER_GLY = {("N", "CA"): 1.451, ("CA", "C"): 1.516}  # glycine's own values
ENGH_HUBER_PRO_ANGLES = {("C", "+N", "+CA"): 122.6, ("C", "+N", "+CD"): 125.0}
RAMA_CLASSES = ("general", "GLY", "PRO", "prePRO")
GRID = 72  # 5 degree bins
CONTOUR = 0.998  # Ramachandran outlier: outside the region holding this fraction of training residues


def robust_sd(v: np.ndarray) -> float:
    """Standard deviation from the interquartile range (outliers and mis-built residues ignored)."""
    q1, q3 = np.percentile(v, [25, 75])
    return float((q3 - q1) / 1.349)


def circular_median(t: np.ndarray) -> float:
    """Robust circular centre (radians): the circular mean of the values within 60 deg of the mean."""
    mean = np.angle(np.exp(1j * t).mean())
    near = np.abs(np.angle(np.exp(1j * (t - mean)))) < np.radians(60)
    return float(np.angle(np.exp(1j * t[near]).mean())) if near.any() else float(mean)


def smooth_periodic(hist: np.ndarray, sigma_bins: float) -> np.ndarray:
    """Gaussian smoothing of a periodic 1-D or 2-D histogram (FFT)."""
    out = np.fft.fftn(hist)
    for axis, n in enumerate(hist.shape):
        k = np.fft.fftfreq(n) * n
        shape = [1] * hist.ndim
        shape[axis] = n
        out = out * np.exp(-0.5 * (2 * np.pi * k / n * sigma_bins) ** 2).reshape(shape)
    return np.clip(np.fft.ifftn(out).real, 0.0, None)


def read_chain(path: Path):
    traj = mdtraj.load(str(path))
    top = traj.topology
    xyz = traj.xyz[0] * 10.0
    residues = []
    for chain in top.chains:
        prev = None
        for res in chain.residues:
            name = VARIANT.get(res.name, res.name)
            if name not in AMINO:
                prev = None
                continue
            heavy = {a.name if not (name == "ILE" and a.name == "CD") else "CD1": a.index
                     for a in res.atoms if a.element.symbol != "H"}
            if name == "MET" and "SE" in heavy:
                heavy["SD"] = heavy.pop("SE")
            item = {"name": name, "atoms": {k: xyz[v] for k, v in heavy.items()}, "prev": None}
            if prev is not None and "C" in prev["atoms"] and "N" in item["atoms"] \
                    and np.linalg.norm(prev["atoms"]["C"] - item["atoms"]["N"]) < 2.0:
                item["prev"] = prev
                prev["next"] = item
            residues.append(item)
            prev = item
    return residues, top


def template_bonds(top) -> dict[str, set]:
    bonds = defaultdict(set)
    for a, b in top.bonds:
        if a.residue is b.residue and a.element.symbol != "H" and b.element.symbol != "H":
            name = VARIANT.get(a.residue.name, a.residue.name)
            fix = lambda n: "CD1" if name == "ILE" and n == "CD" else ("SD" if n == "SE" else n)  # noqa: E731
            bonds[name].add(tuple(sorted((fix(a.name), fix(b.name)))))
    return bonds


def residue_terms(bonds: set):
    nbr = defaultdict(set)
    for a, b in bonds:
        nbr[a].add(b)
        nbr[b].add(a)
    angles = sorted({(a, b, c) for b in nbr for a, c in itertools.combinations(sorted(nbr[b]), 2)})
    propers = sorted({(a, b, c, d) for b, c in bonds for a in nbr[b] - {c} for d in nbr[c] - {b, a}}
                     | {(a, c, b, d) for b, c in bonds for a in nbr[c] - {b} for d in nbr[b] - {c, a}})
    impropers = sorted({(a, b, c, d) for b in nbr if len(nbr[b]) >= 3 for a, c, d in [sorted(nbr[b])[:3]]})
    return angles, propers, impropers, nbr


def build_table(name: str, atoms: list[str], nbr: dict, samples: np.ndarray, col: dict) -> list:
    """z-matrix rows [atom, a, b, c, bond, angle, chi index or None, torsion offset (deg)] for the side chain."""
    chis = CHI.get(name, ())
    chi_of_last = {c[3]: k for k, c in enumerate(chis)}
    parent = {"CB": "CA", "CA": "N"}
    order, queue, seen = [], ["CB"], {"N", "CA", "C", "O", "OXT"}
    while queue:
        atom = queue.pop(0)
        if atom in seen or atom not in atoms:
            continue
        seen.add(atom)
        order.append(atom)
        for other in sorted(nbr[atom], key=lambda n: (n not in chi_of_last, n)):
            if other not in seen:
                parent.setdefault(other, atom)
                queue.append(other)
    rows = []
    for atom in order:
        c = parent[atom]
        if atom == "CB":
            a, b = "C", "N"
        else:
            b = parent[c]
            a = parent[b] if b != "CA" else "N"
        if c == "CA" and atom != "CB":
            raise ValueError(f"{name}: {atom} hangs on CA")
        x = {k: samples[:, col[k]] for k in (a, b, c, atom)}
        bond = float(np.median(np.linalg.norm(x[atom] - x[c], axis=1)))
        u, v = x[b] - x[c], x[atom] - x[c]
        angle = float(np.degrees(np.median(np.arctan2(np.linalg.norm(np.cross(u, v), axis=1), (u * v).sum(1)))))
        torsion = dihedral(x[a], x[b], x[c], x[atom])
        chi = None
        if atom in chi_of_last and tuple(chis[chi_of_last[atom]][:3]) == (a, b, c):
            chi, offset = chi_of_last[atom], 0.0
        else:
            # turns with the chi about the same bond b-c, if there is one
            same = [k for k, q in enumerate(chis) if (q[1], q[2]) == (b, c)]
            if same:
                chi = same[0]
                q = chis[chi]
                ref = dihedral(*(samples[:, col[n]] for n in q))
                offset = float(np.degrees(circular_median(torsion - ref)))
            else:
                offset = float(np.degrees(circular_median(torsion)))
        rows.append([atom, a, b, c, round(bond, 4), round(angle, 2), chi, round(offset, 2)])
    return rows


def chi_values(name: str, res: dict) -> list[float] | None:
    try:
        return [float(dihedral(*(res["atoms"][n] for n in q))) for q in CHI[name]]
    except KeyError:
        return None


def wells(density: np.ndarray, min_mass: float = 0.03) -> list[list[float]]:
    """Local maxima (deg) of a periodic 1-D density holding >= ``min_mass`` within +-30 deg, with that mass."""
    n = len(density)
    p = density / density.sum()
    out = []
    for i in range(n):
        if p[i] >= p[i - 1] and p[i] > p[(i + 1) % n]:
            width = int(round(30 / (360 / n)))
            mass = float(sum(p[(i + k) % n] for k in range(-width, width + 1)))
            if mass >= min_mass:
                out.append([round(-180 + (i + 0.5) * 360 / n, 1), round(mass, 3)])
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("folder", help="folder of training all-atom PDB(.gz) chains")
    ap.add_argument("--geometry-chains", type=int, default=150)
    ap.add_argument("--stats-chains", type=int, default=700)
    ap.add_argument("--max-spread", type=float, default=15.0)
    ap.add_argument("-o", "--output", default=str(OUT))
    args = ap.parse_args()

    files = sorted(Path(args.folder).glob("*.pdb*"))
    rng = np.random.default_rng(0)
    stats_files = [files[i] for i in sorted(rng.choice(len(files), min(args.stats_chains, len(files)), replace=False))]
    geometry_files = stats_files[:args.geometry_chains]
    bonds_of: dict[str, set] = {}
    samples: dict[str, list] = defaultdict(list)
    rama: dict[str, list] = defaultdict(list)
    chis: dict[str, list] = defaultdict(list)
    peptide: dict[str, list] = defaultdict(list)
    for k, path in enumerate(stats_files):
        residues, top = read_chain(path)
        for name, b in template_bonds(top).items():
            bonds_of.setdefault(name, b)
        for res in residues:
            name, at = res["name"], res["atoms"]
            prev, nxt = res["prev"], res.get("next")
            if prev is not None and nxt is not None and all(n in at for n in ("N", "CA", "C")) \
                    and "C" in prev["atoms"] and "N" in nxt["atoms"]:
                phi = dihedral(prev["atoms"]["C"], at["N"], at["CA"], at["C"])
                psi = dihedral(at["N"], at["CA"], at["C"], nxt["atoms"]["N"])
                cls = name if name in ("GLY", "PRO") else ("prePRO" if nxt["name"] == "PRO" else "general")
                rama[cls].append((float(phi), float(psi)))
            if name in CHI:
                values = chi_values(name, res)
                if values is not None:
                    chis[name].append(values)
            if k < len(geometry_files):
                want = {a for pair in bonds_of.get(name, ()) for a in pair}
                if want and set(at) == want:
                    samples[name].append(np.stack([at[n] for n in sorted(want)]))
                if nxt is not None and all(n in at for n in ("CA", "C", "O")) \
                        and all(n in nxt["atoms"] for n in ("N", "CA")):
                    x = {"CA": at["CA"], "C": at["C"], "O": at["O"], "+N": nxt["atoms"]["N"],
                         "+CA": nxt["atoms"]["CA"]}
                    peptide["omega"].append(float(dihedral(x["CA"], x["C"], x["+N"], x["+CA"])))
                    peptide["O-C-+N-+CA"].append(float(dihedral(x["O"], x["C"], x["+N"], x["+CA"])))
                    peptide["C-+N"].append(float(np.linalg.norm(x["C"] - x["+N"])))
                    for key in (("CA", "C", "+N"), ("O", "C", "+N"), ("C", "+N", "+CA")):
                        u, v = x[key[0]] - x[key[1]], x[key[2]] - x[key[1]]
                        peptide["-".join(key)].append(float(np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v)),
                                                                                     u @ v))))
        if (k + 1) % 100 == 0:
            print(f"{k + 1} chains read", flush=True)

    table = {}
    for name in AMINO:
        xyz = np.stack(samples[name])
        atoms = sorted({a for pair in bonds_of[name] for a in pair})
        col = {n: i for i, n in enumerate(atoms)}
        angles, propers, impropers, nbr = residue_terms(bonds_of[name])
        entry = {"n": len(xyz), "atoms": atoms, "bonds": [], "angles": [], "dihedrals": [],
                 "chis": [list(q) for q in CHI.get(name, ())]}
        for a, b in sorted(bonds_of[name]):
            d = np.linalg.norm(xyz[:, col[a]] - xyz[:, col[b]], axis=1)
            entry["bonds"].append([a, b, round(float(np.median(d)), 4), round(robust_sd(d), 4)])
        for a, b, c in angles:
            u, v = xyz[:, col[a]] - xyz[:, col[b]], xyz[:, col[c]] - xyz[:, col[b]]
            t = np.degrees(np.arctan2(np.linalg.norm(np.cross(u, v), axis=1), (u * v).sum(1)))
            entry["angles"].append([a, b, c, round(float(np.median(t)), 2), round(robust_sd(t), 2)])
        seen = set()
        for quad in propers + impropers:
            key = tuple(quad) if quad[1] < quad[2] or quad in impropers else tuple(reversed(quad))
            if key in seen:
                continue
            seen.add(key)
            t = dihedral(*(xyz[:, col[q]] for q in quad))
            r = abs(np.exp(1j * t).mean())
            spread = np.degrees(np.sqrt(-2.0 * np.log(max(r, 1e-12))))
            if spread < args.max_spread:
                entry["dihedrals"].append([*quad, round(float(np.degrees(np.angle(np.exp(1j * t).mean()))), 2),
                                           round(float(spread), 1)])
        # Engh & Huber for the backbone: crystal structures are refined to these
        for row in entry["bonds"]:
            key = (row[0], row[1]) if (row[0], row[1]) in ENGH_HUBER_BONDS else (row[1], row[0])
            if key in ENGH_HUBER_BONDS:
                row[2] = (ENGH_HUBER_GLY if name == "GLY" else {}).get(key, ENGH_HUBER_BONDS[key])
        for row in entry["angles"]:
            for key in ((row[0], row[1], row[2]), (row[2], row[1], row[0])):
                if key in ENGH_HUBER_ANGLES:
                    row[3] = ENGH_HUBER_ANGLES[key]
        if name != "GLY":
            entry["build"] = build_table(name, atoms, nbr, xyz, col)
        table[name] = entry
        print(f"{name}: {len(xyz)} residues, {len(entry['bonds'])} bonds, {len(entry['dihedrals'])} rigid dihedrals")

    # Ramachandran densities
    edges = np.linspace(-np.pi, np.pi, GRID + 1)
    rama_out = {}
    for cls in RAMA_CLASSES:
        pts = np.array(rama[cls])
        hist = np.histogram2d(pts[:, 0], pts[:, 1], bins=[edges, edges])[0]
        density = smooth_periodic(hist, 1.0 if cls == "general" else 1.6)
        density /= density.sum() * (2 * np.pi / GRID) ** 2  # per rad^2
        at = grid_lookup(density, pts[:, 0], pts[:, 1])
        threshold = float(np.quantile(at, 1.0 - CONTOUR))
        rama_out[cls] = {"n": len(pts), "threshold": threshold,
                         "density": np.round(density, 6).tolist()}
        print(f"rama {cls}: {len(pts)} residues, 99.8% contour at density {threshold:.4g}")
    # chi1 / chi2 densities and wells
    rotamers = {}
    for name, values in sorted(chis.items()):
        v = np.array(values)
        entry = {"n": len(v)}
        for k in range(v.shape[1]):
            t = v[:, k]
            symmetric = (name, k + 1) in SYMMETRIC_CHI
            if symmetric:
                t = np.angle(np.exp(2j * t))  # 2 chi: the well search runs on the doubled circle
            hist = np.histogram(t, bins=edges)[0].astype(float)
            density = smooth_periodic(hist, 2.0)
            found = wells(density)
            entry[f"chi{k + 1}_wells"] = [[round(w / 2, 2), m] for w, m in found] if symmetric else found
            entry[f"chi{k + 1}_symmetric"] = (name, k + 1) in SYMMETRIC_CHI
        rotamers[name] = entry
        print(f"{name}: chi1 wells {[w[0] for w in entry['chi1_wells']]}"
              + (f", chi2 wells {[w[0] for w in entry['chi2_wells']]}" if "chi2_wells" in entry else ""))
    omega = np.array(peptide["omega"])
    trans = np.abs(omega) > np.pi / 2
    spread = {"C-+N": robust_sd(np.array(peptide["C-+N"]))}
    for key in ("CA-C-+N", "O-C-+N", "C-+N-+CA"):
        spread[key] = robust_sd(np.array(peptide[key]))
    spread["omega"] = float(np.degrees(robust_sd(np.angle(np.exp(1j * (omega[trans] - np.pi))))))
    plane = np.array(peptide["O-C-+N-+CA"])[trans]
    spread["O-C-+N-+CA"] = float(np.degrees(robust_sd(plane)))
    out = {
        "source": f"{args.folder}: {len(stats_files)} chains (seed 0) for statistics, the first "
                  f"{len(geometry_files)} of them for geometry",
        "max_spread_deg": args.max_spread,
        "peptide_spread": {k: round(v, 4) for k, v in spread.items()},
        "engh_huber": {"bonds": [[*k, v] for k, v in ENGH_HUBER_BONDS.items()],
                       "angles": [[*k, v] for k, v in ENGH_HUBER_ANGLES.items()],
                       "gly_bonds": [[*k, v] for k, v in ENGH_HUBER_GLY.items()],
                       "pro_angles": [[*k, v] for k, v in ENGH_HUBER_PRO_ANGLES.items()]},
        "trans_fraction": float((np.abs(omega) > np.pi / 2).mean()),
        "residues": table,
        "rama": rama_out,
        "rama_grid": GRID,
        "rama_contour": CONTOUR,
        "rotamers": rotamers,
    }
    Path(args.output).write_text(json.dumps(out, separators=(",", ":")) + "\n")
    print(f"wrote {args.output} ({Path(args.output).stat().st_size / 1e3:.0f} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
