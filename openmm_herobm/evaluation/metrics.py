"""Evaluation yardstick for backmapped structures.

``evaluate(pred, ref)`` compares a predicted all-atom frame with a reference in the
same coordinate frame (no superposition) and checks the geometry of the prediction
on its own: bond lengths, clashes, aromatic rings pierced by bonds, chirality and cis
peptides.  Everything is in Angstrom and degrees; only heavy atoms are used, so a
prediction without hydrogens can be compared with a reference that has them.

Atoms are matched by (chain index, residue number and insertion code, residue name,
atom name), so residues missing from one of the two structures do not shift the
rest; if residue numbers do not correspond (renumbered files), by residue position
within the chain instead.  Names are normalised first the usual naming variants (HID/HIE/HSD... -> HIS,
ILE CD -> CD1, OT1/OT2 -> O/OXT), never by atom index.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import mdtraj
import numpy as np
from scipy.spatial import cKDTree

from openmm_herobm.chemistry import (AMINO_ACIDS, BACKBONE, CHIRALITY_CHECKS, CHOLESTEROL, CLASH_DISTANCE,
                                     DISULFIDE_MAX, DOUBLE_BOND_CHECKS, NOT_SIDE_CHAIN, PEPTIDE_BOND_MAX,
                                     PROTEIN_CENTRES, RESIDUE_ALIASES, VARIANT_STANDARD)
from openmm_herobm.errors import HeroBMError
from openmm_herobm.geometry import angle_of, dihedral_of, signed_volume_of

__all__ = [
    "CHIRALITY_CHECKS",
    "evaluate",
    "evaluate_files",
    "format_report",
]

# --------------------------------------------------------------------------- names

# Protonation / force-field variants and other names of the same residue, for matching.
RESNAME_ALIASES = {**VARIANT_STANDARD, **RESIDUE_ALIASES}
# (canonical resname or "*" for any protein residue, atom name) -> canonical name.
ATOM_ALIASES = {
    ("ILE", "CD"): "CD1",
    ("*", "OT1"): "O",
    ("*", "OT2"): "OXT",
    ("*", "OC1"): "O",  # GROMACS C-terminus
    ("*", "OC2"): "OXT",
}
# Stereo checks (chemistry.CHIRALITY_CHECKS, DOUBLE_BOND_CHECKS): lipid keys appear in a
# result only when the structure has such a centre; the protein keys always do.
ALWAYS_REPORTED = PROTEIN_CENTRES

# Geometry thresholds (Angstrom / degrees); PEPTIDE_BOND_MAX, DISULFIDE_MAX, CLASH_DISTANCE: chemistry.
BOND_RANGE = (1.1, 2.2)
BOND_RANGE_SS = (1.1, 2.3)
CLOSE_CONTACT_DIST = 2.0  # heavy pairs that are not 1-2 or 1-3
CIS_MAX_DEG = 30.0
MAX_LISTED = 100  # cap for label lists in the result

# Aromatic rings checked for bonds piercing them: canonical resname -> rings, each
# (tag, atom names in cyclic order).  HIS covers its variants (HID, HIE, HSD, ...).
AROMATIC_RINGS: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "PHE": (("", ("CG", "CD1", "CE1", "CZ", "CE2", "CD2")),),
    "TYR": (("", ("CG", "CD1", "CE1", "CZ", "CE2", "CD2")),),
    "TRP": (("6-ring", ("CD2", "CE2", "CZ2", "CH2", "CZ3", "CE3")),
            ("5-ring", ("CG", "CD1", "NE1", "CE2", "CD2"))),
    "HIS": (("", ("CG", "ND1", "CE1", "NE2", "CD2")),),
    # the sterol rings (not aromatic, but a lipid tail through them is the classic backmapping failure)
    **dict.fromkeys(CHOLESTEROL, (("ring A", ("C1", "C2", "C3", "C4", "C5", "C10")),
                                  ("ring B", ("C5", "C6", "C7", "C8", "C9", "C10")),
                                  ("ring C", ("C8", "C9", "C11", "C12", "C13", "C14")),
                                  ("ring D", ("C13", "C14", "C15", "C16", "C17")))),
}
RING_SEARCH_DIST = 3.0  # bonds whose midpoint lies this close to a ring centre are tested


def _canon_resname(name: str) -> str:
    return RESNAME_ALIASES.get(name, name)


def _canon_atomname(resname: str, name: str) -> str:
    if resname not in AMINO_ACIDS:
        return name
    return ATOM_ALIASES.get((resname, name), ATOM_ALIASES.get(("*", name), name))


def _is_heavy(atom) -> bool:
    el = atom.element
    if el is None:  # element unknown (e.g. H3' in a .gro file): go by the name; M* = virtual site
        return atom.name.lstrip("0123456789")[:1].upper() not in ("H", "M", "")
    return el.symbol not in ("H", "D", "VS")


# ----------------------------------------------------------------------- structure


@dataclass
class _Struct:
    """Heavy atoms of one frame, in Angstrom, with canonical names."""

    xyz: np.ndarray  # (n, 3)
    box: np.ndarray | None  # orthorhombic box (3,) in A, or None
    atom_index: np.ndarray  # (n,) index in the topology
    resid: np.ndarray  # (n,) global residue index
    keys: list  # (chain, residue-in-chain, resname, atom name) per heavy atom
    numbered: list  # (chain, resSeq, insertion code, resname, atom name) per heavy atom
    lookup: dict  # (global residue index, canonical atom name) -> heavy index
    res_key: list  # per residue: (chain, residue-in-chain, canonical resname)
    res_name: list  # per residue: canonical resname
    res_label: list  # per residue: "ILE 45 A"
    chains: list  # per chain: list of global residue indices, in order
    element: np.ndarray  # (n,) element symbols ("" when unknown)
    name: np.ndarray  # (n,) canonical atom names
    atom_resname: np.ndarray  # (n,) canonical residue names
    traj: mdtraj.Trajectory


def _prepare(traj: mdtraj.Trajectory, frame: int, periodic: bool | None, what: str) -> _Struct:
    if not -traj.n_frames <= frame < traj.n_frames:
        raise HeroBMError(f"{what}: frame {frame} does not exist (it has {traj.n_frames} frames)")
    top = traj.topology
    res_key, res_name, res_label, chains = [], [], [], []
    for ci, chain in enumerate(top.chains):
        cid = getattr(chain, "chain_id", None) or str(ci)
        chains.append([r.index for r in chain.residues])
        for k, r in enumerate(chain.residues):
            rn = _canon_resname(r.name)
            res_key.append((ci, k, rn, r.resSeq, getattr(r, "insertion_code", "") or ""))
            res_name.append(rn)
            res_label.append(f"{r.name} {r.resSeq} {cid}")
    atoms = [a for a in top.atoms if _is_heavy(a)]
    if not atoms:
        raise HeroBMError(f"{what} has no heavy atoms")
    atom_index = np.array([a.index for a in atoms])
    resid = np.array([a.residue.index for a in atoms])
    names = [_canon_atomname(res_name[a.residue.index], a.name) for a in atoms]
    keys = [res_key[ri][:3] + (nm,) for ri, nm in zip(resid.tolist(), names)]
    # numbered key by chain *id* (a pipeline may split a chain at breaks into pieces with one id)
    chain_ids = [getattr(c, "chain_id", None) or str(i) for i, c in enumerate(top.chains)]
    numbered = [(chain_ids[k[0]], k[3], k[4], k[2], nm)
                for k, nm in ((res_key[ri], nm) for ri, nm in zip(resid.tolist(), names))]
    lookup: dict = {}
    for i, (ri, nm) in enumerate(zip(resid.tolist(), names)):
        lookup.setdefault((ri, nm), i)  # first copy wins for duplicated names
    xyz = traj.xyz[frame][atom_index].astype(np.float64) * 10.0
    element = np.array([a.element.symbol if a.element is not None else "" for a in atoms], dtype=object)
    return _Struct(xyz, _box(traj, frame, periodic, what), atom_index, resid, keys, numbered, lookup,
                   res_key, res_name, res_label, chains, element,
                   np.array(names, dtype=object), np.array([k[2] for k in keys], dtype=object), traj)


def _box(traj, frame, periodic, what):
    """Orthorhombic box in A when periodic images should be used, else None.

    periodic=None (auto) uses the box only when it is orthorhombic and at least
    1 nm on each side (PDB files often carry a CRYST1 1 1 1 placeholder).
    """
    if periodic is False:
        return None
    ok = traj.unitcell_lengths is not None
    if ok:
        lengths = traj.unitcell_lengths[frame].astype(np.float64)
        ok = bool(np.allclose(traj.unitcell_angles[frame], 90.0, atol=1e-3) and np.all(lengths >= 1.0))
    if periodic and not ok:
        raise HeroBMError(f"{what}: periodic=True needs an orthorhombic unit cell of at least 1 nm")
    return lengths * 10.0 if ok else None


def _vec(x: np.ndarray, i, j, box) -> np.ndarray:
    """x[j] - x[i], minimum image when a box is given."""
    d = x[j] - x[i]
    if box is not None:
        d -= box * np.round(d / box)
    return d


def _tree(x: np.ndarray, box) -> cKDTree:
    """KD-tree, periodic when a box is given (cKDTree needs coordinates in [0, box))."""
    if box is None:
        return cKDTree(x)
    x = np.mod(x, box)
    x[x >= box] = 0.0
    return cKDTree(x, boxsize=box)


def _dist(x, i, j, box):
    return np.linalg.norm(_vec(x, i, j, box), axis=-1)


def _idx(s: _Struct, residues, name: str) -> np.ndarray:
    """Heavy index of atom `name` in each residue, -1 where missing."""
    return np.array([s.lookup.get((r, name), -1) for r in residues], dtype=np.int64)


# ------------------------------------------------------------------------ matching


def _match(p: _Struct, r: _Struct) -> tuple[np.ndarray, np.ndarray]:
    by_number = _match_keys(p.numbered, r.numbered)
    by_position = _match_keys(p.keys, r.keys)
    # residue numbers are the robust key (a residue missing in one structure does not
    # shift the others); fall back to positions for renumbered files
    ri = by_number if (by_number >= 0).sum() >= 0.5 * (by_position >= 0).sum() else by_position
    # a duplicated key in pred must not match the same ref atom twice
    ok = ri >= 0
    _, first = np.unique(ri[ok], return_index=True)
    keep = np.zeros(ok.sum(), bool)
    keep[first] = True
    ok[np.flatnonzero(ok)[~keep]] = False
    return np.flatnonzero(ok), ri[ok]


def _match_keys(pred_keys: list, ref_keys: list) -> np.ndarray:
    ref_of = {}
    for i, k in enumerate(ref_keys):
        ref_of.setdefault(k, i)
    return np.array([ref_of.get(k, -1) for k in pred_keys], dtype=np.int64)


def _rmsd(d2: np.ndarray) -> float | None:
    return float(np.sqrt(d2.mean())) if d2.size else None


def _rmsd_metrics(p: _Struct, r: _Struct, pi, ri) -> dict:
    d2 = ((p.xyz[pi] - r.xyz[ri]) ** 2).sum(axis=1)
    names, resn = p.name[pi], p.atom_resname[pi]
    prot = np.isin(resn, list(AMINO_ACIDS))
    bb = prot & np.isin(names, list(BACKBONE))
    sc = prot & ~np.isin(names, list(NOT_SIDE_CHAIN))
    return {
        "rmsd_heavy": _rmsd(d2),
        "rmsd_backbone": _rmsd(d2[bb]),
        "rmsd_sidechain": _rmsd(d2[sc]),
        "rmsd_sidechain_per_residue_type": {
            n: _rmsd(d2[sc & (resn == n)]) for n in sorted(set(resn[sc]))
        },
        "rmsd_heavy_per_residue_type": {n: _rmsd(d2[resn == n]) for n in sorted(set(resn))},
    }


# ---------------------------------------------------------------------- bond graph


def _bonds(p: _Struct, ref_xyz: np.ndarray | None) -> np.ndarray:
    """Heavy-atom bonds of pred as (n, 2) heavy indices, i < j.

    Topology bonds (standard protein templates when there are none), minus bonds
    between two protein residues, which are re-derived from geometry: the peptide
    C(i)-N(i+1) when < 2.0 A and SG-SG when < 2.5 A, in pred OR in ref (so a
    stretched predicted bond still counts as a bond, but a real chain break does
    not).  Heavy atoms left without any bond in a multi-atom residue (e.g. lipids
    read from .gro files, which have no bonds) get bonds from distances.
    ``ref_xyz`` holds ref coordinates in pred order (NaN where unmatched).
    """
    top = p.traj.topology
    if top.n_bonds == 0:
        top = top.copy()
        top.create_standard_bonds()
    n = len(p.xyz)
    heavy_of = np.full(top.n_atoms, -1, dtype=np.int64)
    heavy_of[p.atom_index] = np.arange(n)
    pairs = np.array([(a.index, b.index) for a, b in top.bonds], dtype=np.int64).reshape(-1, 2)
    b = heavy_of[pairs]
    b = b[(b >= 0).all(axis=1)]
    is_prot = np.isin(np.array(p.res_name, dtype=object), list(AMINO_ACIDS))
    r0, r1 = p.resid[b[:, 0]], p.resid[b[:, 1]]
    b = b[(r0 == r1) | ~(is_prot[r0] & is_prot[r1])]
    new = [b]

    c_i, n_j = _peptide_pairs(p)[:2]
    near = _dist(p.xyz, c_i, n_j, p.box) < PEPTIDE_BOND_MAX
    if ref_xyz is not None:
        with np.errstate(invalid="ignore"):  # NaN = atom not in ref
            near |= _dist(ref_xyz, c_i, n_j, p.box) < PEPTIDE_BOND_MAX
    new.append(np.stack([c_i, n_j], 1)[near])
    sg = np.flatnonzero((p.name == "SG") & (p.atom_resname == "CYS"))
    for x in (p.xyz, ref_xyz):
        if x is not None:
            ok = sg[~np.isnan(x[sg, 0])]
            q = _tree(x[ok], p.box).query_pairs(DISULFIDE_MAX, output_type="ndarray").reshape(-1, 2)
            new.append(ok[q])
    b = np.concatenate(new)

    # distance-based bonds for heavy atoms the topology left isolated
    isolated = np.bincount(b.ravel(), minlength=n) == 0
    if isolated.any():
        src = p.xyz if ref_xyz is None else np.where(np.isnan(ref_xyz), p.xyz, ref_xyz)
        q = _tree(src, p.box).query_pairs(2.15, output_type="ndarray").reshape(-1, 2)
        q = q[(p.resid[q[:, 0]] == p.resid[q[:, 1]]) & isolated[q].any(axis=1)]
        d = _dist(src, q[:, 0], q[:, 1], p.box)
        long_ok = np.isin(p.element[q], ["S", "P", "Se"]).any(axis=1)  # C-S, S-S ~1.8-2.05 A
        b = np.concatenate([b, q[d < np.where(long_ok, 2.15, 1.9)]])
    b = np.sort(b, axis=1)
    return np.unique(b, axis=0) if len(b) else b.reshape(0, 2)


def _neighbours(bonds: np.ndarray, n: int) -> np.ndarray:
    """(n, max_degree) neighbour table padded with -1."""
    src = np.concatenate([bonds[:, 0], bonds[:, 1]])
    dst = np.concatenate([bonds[:, 1], bonds[:, 0]])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    deg = np.bincount(src, minlength=n)
    start = np.concatenate([[0], np.cumsum(deg)[:-1]])
    nbr = np.full((n, max(int(deg.max(initial=0)), 1)), -1, dtype=np.int64)
    nbr[src, np.arange(len(src)) - start[src]] = dst
    return nbr


def _topology_pairs(bonds: np.ndarray, n: int):
    """Angles (i, centre, k), and 1-3 and 1-4 pairs, from the bond graph."""
    nbr = _neighbours(bonds, n)
    centre = np.arange(n)
    angles = []
    for a in range(nbr.shape[1]):
        for c in range(a + 1, nbr.shape[1]):
            ok = (nbr[:, a] >= 0) & (nbr[:, c] >= 0)
            angles.append(np.stack([nbr[ok, a], centre[ok], nbr[ok, c]], 1))
    angles = np.concatenate(angles) if angles else np.zeros((0, 3), np.int64)
    p14 = []  # i-j-k-l over every bond j-k; one direction covers each path once
    j, k = bonds[:, 0], bonds[:, 1]
    for a in range(nbr.shape[1]):
        for c in range(nbr.shape[1]):
            i, l = nbr[j, a], nbr[k, c]
            ok = (i >= 0) & (l >= 0) & (i != k) & (l != j) & (i != l)
            p14.append(np.stack([i[ok], l[ok]], 1))
    p14 = np.concatenate(p14) if p14 else np.zeros((0, 2), np.int64)
    return angles, angles[:, [0, 2]], p14


def _pair_code(pairs: np.ndarray, n: int) -> np.ndarray:
    pairs = np.sort(pairs, axis=1).astype(np.int64)
    return pairs[:, 0] * n + pairs[:, 1]


def _angle_deg(x, tri, box) -> np.ndarray:
    return np.degrees(angle_of(_vec(x, tri[:, 1], tri[:, 0], box), _vec(x, tri[:, 1], tri[:, 2], box)))


def _atom_label(s: _Struct, i: int) -> str:
    return f"{s.res_label[s.resid[i]]} {s.keys[i][3]}"


def _geometry(p: _Struct, ref_xyz, ref_box, matched) -> dict:
    n = len(p.xyz)
    bonds = _bonds(p, ref_xyz)
    angles, p13, p14 = _topology_pairs(bonds, n)
    length = _dist(p.xyz, bonds[:, 0], bonds[:, 1], p.box)
    ss = (p.name[bonds[:, 0]] == "SG") & (p.name[bonds[:, 1]] == "SG")
    lo = np.where(ss, BOND_RANGE_SS[0], BOND_RANGE[0])
    hi = np.where(ss, BOND_RANGE_SS[1], BOND_RANGE[1])
    bad = np.flatnonzero((length < lo) | (length > hi))
    out = {
        "n_bonds": len(bonds),
        "n_bonds_out_of_range": len(bad),
        "bonds_out_of_range": [
            f"{_atom_label(p, bonds[b, 0])} - {_atom_label(p, bonds[b, 1])}: {length[b]:.2f}"
            for b in bad[:MAX_LISTED]
        ],
        "n_angles": len(angles),
    }
    if ref_xyz is not None:
        bm = matched[bonds].all(1)
        ref_len = _dist(ref_xyz, bonds[bm, 0], bonds[bm, 1], ref_box)
        am = matched[angles].all(1)
        dang = np.abs(_angle_deg(p.xyz, angles[am], p.box) - _angle_deg(ref_xyz, angles[am], ref_box))
        out["bond_length_mae"] = float(np.abs(length[bm] - ref_len).mean()) if bm.any() else None
        out["bond_length_mean_abs_dev_vs_ref"] = out["bond_length_mae"]
        out["bond_angle_mae"] = float(dang.mean()) if am.any() else None

    # clashes: KD-tree on heavy atoms, minus bonded / 1-3 / 1-4 pairs
    pairs = _tree(p.xyz, p.box).query_pairs(CLASH_DISTANCE, output_type="ndarray").reshape(-1, 2)
    code = _pair_code(pairs, n)
    in12_13 = np.isin(code, np.concatenate([_pair_code(bonds, n), _pair_code(p13, n)]))
    in14 = np.isin(code, _pair_code(p14, n))
    d = _dist(p.xyz, pairs[:, 0], pairs[:, 1], p.box)
    clash = ~in12_13 & ~in14
    close = ~in12_13 & (d < CLOSE_CONTACT_DIST)
    out["n_clashes"] = int(clash.sum())
    out["clashes_per_1000_atoms"] = 1000.0 * out["n_clashes"] / n  # per heavy atom
    out["n_close_contacts"] = int(close.sum())
    if ref_xyz is not None:
        # clashes that the reference has too (e.g. ion coordination, bad input)
        cm = clash & matched[pairs].all(1)
        out["n_clashes_in_ref"] = int((_dist(ref_xyz, pairs[cm, 0], pairs[cm, 1], ref_box) < CLASH_DISTANCE).sum())
    out["clash_pairs"] = [
        f"{_atom_label(p, i)} - {_atom_label(p, j)}: {dd:.2f}"
        for (i, j), dd in zip(pairs[clash][:MAX_LISTED], d[clash][:MAX_LISTED])
    ]
    pierced = _pierced_rings(p, bonds)
    out["n_pierced_rings"] = len(pierced)
    out["pierced_rings"] = pierced[:MAX_LISTED]
    return out


# ------------------------------------------------------------------ ring piercing


def _rings(s: _Struct) -> list[tuple[np.ndarray, np.ndarray, list[str]]]:
    """Complete aromatic rings grouped by size: (ring atoms (m, k), residue (m,), labels)."""
    by_size: dict[int, tuple[list, list, list]] = {}
    for ri, rn in enumerate(s.res_name):
        for tag, names in AROMATIC_RINGS.get(rn, ()):
            idx = [s.lookup.get((ri, nm), -1) for nm in names]
            if min(idx) < 0:
                continue
            atoms, res, labels = by_size.setdefault(len(names), ([], [], []))
            atoms.append(idx)
            res.append(ri)
            labels.append(s.res_label[ri] + (f" ({tag})" if tag else ""))
    return [(np.array(a, np.int64), np.array(r, np.int64), lab) for a, r, lab in by_size.values()]


def _pierced_rings(s: _Struct, bonds: np.ndarray) -> list[str]:
    """Aromatic rings that a heavy-atom bond passes through, as labels.

    A bond pierces a ring when its segment crosses the ring's mean plane at a point
    inside the ring polygon (crossing-number test in the plane).  Bonds with an atom
    in any aromatic ring of the ring's own residue are not tested.  Only bonds whose
    midpoint is within ``RING_SEARCH_DIST`` of the ring centre are candidates (KD-tree).
    """
    rings = _rings(s)
    if not rings or not len(bonds):
        return []
    ring_atom_res = np.full(len(s.xyz), -1, np.int64)  # residue of the aromatic ring an atom belongs to
    for atoms, res, _ in rings:
        ring_atom_res[atoms] = res[:, None]
    a, b = bonds[:, 0], bonds[:, 1]
    bond_vec = _vec(s.xyz, a, b, s.box)
    tree = _tree(s.xyz[a] + 0.5 * bond_vec, s.box)
    found: dict[tuple[int, str], list[str]] = {}
    for atoms, res, labels in rings:
        k = atoms.shape[1]
        # ring atoms unwrapped around their first atom, then relative to the centre
        pts = s.xyz[atoms[:, :1]] + _vec(s.xyz, np.repeat(atoms[:, :1], k, 1), atoms, s.box)
        centre = pts.mean(1)
        rel = pts - centre[:, None]
        normal = np.cross(rel, np.roll(rel, -1, axis=1)).sum(1)  # Newell: normal of the mean plane
        norm = np.linalg.norm(normal, axis=1)
        ok = norm > 1e-6
        normal = normal / np.where(ok, norm, 1.0)[:, None]
        # candidate (ring, bond) pairs
        q = centre
        if s.box is not None:
            q = np.mod(centre, s.box)
            q[q >= s.box] = 0.0
        hits = tree.query_ball_point(q, RING_SEARCH_DIST)
        ring_i = np.repeat(np.arange(len(atoms)), [len(h) for h in hits])
        if not len(ring_i):
            continue
        bond_i = np.concatenate([np.asarray(h, np.int64) for h in hits])
        keep = ok[ring_i] & (ring_atom_res[a[bond_i]] != res[ring_i]) & (ring_atom_res[b[bond_i]] != res[ring_i])
        ring_i, bond_i = ring_i[keep], bond_i[keep]
        # bond end points relative to the ring centre (minimum image)
        ca = centre[ring_i]
        da = s.xyz[a[bond_i]] - ca
        if s.box is not None:
            da -= s.box * np.round(da / s.box)
        db = da + bond_vec[bond_i]
        n = normal[ring_i]
        sa, sb = (da * n).sum(1), (db * n).sum(1)
        cross = sa * sb < 0
        ring_i, bond_i, da, db, sa, sb, n = (x[cross] for x in (ring_i, bond_i, da, db, sa, sb, n))
        point = da + (sa / (sa - sb))[:, None] * (db - da)  # where the bond meets the mean plane
        # in-plane coordinates of the ring polygon and of the crossing point
        u = rel[ring_i, 0]
        u = u - (u * n).sum(1, keepdims=True) * n
        with np.errstate(divide="ignore", invalid="ignore"):  # collapsed ring: NaN, never inside
            u /= np.linalg.norm(u, axis=1, keepdims=True)
        v = np.cross(n, u)
        poly = rel[ring_i]
        px, py = (poly * u[:, None]).sum(2), (poly * v[:, None]).sum(2)  # (c, k)
        x0, y0 = (point * u).sum(1, keepdims=True), (point * v).sum(1, keepdims=True)
        qx, qy = np.roll(px, -1, axis=1), np.roll(py, -1, axis=1)
        straddle = (py > y0) != (qy > y0)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_cross = px + (y0 - py) * (qx - px) / (qy - py)
        inside = ((straddle & (x0 < x_cross)).sum(1) % 2) == 1
        for r, bi in zip(ring_i[inside], bond_i[inside]):
            found.setdefault((int(res[r]), labels[r]), []).append(
                f"{_atom_label(s, a[bi])} - {_atom_label(s, b[bi])}")
    return [f"{label}: {', '.join(by)}" for (_, label), by in sorted(found.items())]


# ------------------------------------------------------------ chirality and omega


def _chirality(s: _Struct) -> dict[str, tuple[int, np.ndarray]]:
    """name -> (number of centres checked, global residue indices in error)."""
    out = {}
    for name, (resnames, centre, a, b, c, sign) in CHIRALITY_CHECKS.items():
        res = [i for i, rn in enumerate(s.res_name) if rn in resnames]
        idx = np.stack([_idx(s, res, nm) for nm in (centre, a, b, c)], 1).reshape(-1, 4)
        ok = (idx >= 0).all(1)
        idx, res = idx[ok], np.asarray(res, dtype=np.int64)[ok]
        va = _vec(s.xyz, idx[:, 0], idx[:, 1], s.box)
        vb = _vec(s.xyz, idx[:, 0], idx[:, 2], s.box)
        vc = _vec(s.xyz, idx[:, 0], idx[:, 3], s.box)
        vol = signed_volume_of(va, vb, vc)
        out[name] = (len(idx), res[vol * sign <= 0])
    return out


def _double_bonds(s: _Struct) -> dict[str, tuple[int, np.ndarray]]:
    """name -> (number of double bonds checked, residue indices in error), for present ones only."""
    out = {}
    for name, (resnames, atoms, kind) in DOUBLE_BOND_CHECKS.items():
        res = [i for i, rn in enumerate(s.res_name) if rn in resnames]
        idx = np.stack([_idx(s, res, nm) for nm in atoms], 1).reshape(-1, 4)
        ok = (idx >= 0).all(1)
        if not ok.any():
            continue
        idx, res = idx[ok], np.asarray(res, dtype=np.int64)[ok]
        b = [_vec(s.xyz, idx[:, k], idx[:, k + 1], s.box) for k in range(3)]
        cis = np.abs(dihedral_of(*b)) < np.pi / 2
        wrong = ~cis if kind == "cis" else cis
        out[name] = (len(idx), res[wrong])
    return out


def _peptide_pairs(s: _Struct):
    """C(i), N(i+1), CA(i), CA(i+1) heavy indices and residue i+1, for consecutive
    protein residues in the same chain that both have the atoms."""
    r0 = np.array([r for ch in s.chains for r in ch[:-1]], dtype=np.int64)
    r1 = np.array([r for ch in s.chains for r in ch[1:]], dtype=np.int64)
    prot = np.array([s.res_name[a] in AMINO_ACIDS and s.res_name[b] in AMINO_ACIDS
                     for a, b in zip(r0, r1)], dtype=bool)
    r0, r1 = r0[prot], r1[prot]
    c, nn, ca0, ca1 = _idx(s, r0, "C"), _idx(s, r1, "N"), _idx(s, r0, "CA"), _idx(s, r1, "CA")
    ok = (c >= 0) & (nn >= 0)
    return c[ok], nn[ok], ca0[ok], ca1[ok], r1[ok]


def _omegas(s: _Struct):
    """(residue i+1 indices, omega in degrees) for peptide bonds with C-N < 2.0 A."""
    c, n, ca0, ca1, r1 = _peptide_pairs(s)
    ok = (ca0 >= 0) & (ca1 >= 0) & (_dist(s.xyz, c, n, s.box) < PEPTIDE_BOND_MAX)
    c, n, ca0, ca1, r1 = c[ok], n[ok], ca0[ok], ca1[ok], r1[ok]
    omega = np.degrees(dihedral_of(_vec(s.xyz, ca0, c, s.box), _vec(s.xyz, c, n, s.box),
                                   _vec(s.xyz, n, ca1, s.box)))
    return r1, omega


def _stereo(p: _Struct, r: _Struct | None) -> dict:
    out: dict = {}
    chir = _chirality(p)
    ref_chir = _chirality(r) if r is not None else None
    chir = {k: v for k, v in chir.items() if k in ALWAYS_REPORTED or v[0] > 0}
    out["chirality_checked"] = {k: n for k, (n, _) in chir.items()}
    for k, (_, err) in chir.items():
        out[f"chirality_errors_{k}"] = len(err)
    out["chirality_error_residues"] = {k: [p.res_label[i] for i in err[:MAX_LISTED]] for k, (_, err) in chir.items()}
    if ref_chir is not None:
        out["chirality_errors_in_ref"] = {
            k: len({p.res_key[i] for i in err} & {r.res_key[i] for i in ref_chir[k][1]})
            for k, (_, err) in chir.items()
        }
    for k, (n, err) in _double_bonds(p).items():
        out[f"double_bond_errors_{k}"] = len(err)
        out.setdefault("double_bond_error_residues", {})[k] = [p.res_label[i] for i in err[:MAX_LISTED]]

    r1, omega = _omegas(p)
    cis = np.abs(omega) < CIS_MAX_DEG
    is_pro = np.array([p.res_name[i] == "PRO" for i in r1], dtype=bool)
    out["n_peptide_bonds"] = len(r1)
    out["cis_peptides_nonpro"] = int((cis & ~is_pro).sum())
    out["cis_peptides_pro"] = int((cis & is_pro).sum())
    # labelled by residue i+1, whose N is in the cis peptide bond
    out["cis_peptide_residues"] = [p.res_label[i] for i in r1[cis][:MAX_LISTED]]
    if r is not None:
        rr1, romega = _omegas(r)
        ref_cis = {r.res_key[i] for i in rr1[np.abs(romega) < CIS_MAX_DEG]}
        both = np.array([p.res_key[i] in ref_cis for i in r1], dtype=bool) & cis
        out["cis_peptides_nonpro_in_ref"] = int((both & ~is_pro).sum())
        out["cis_peptides_pro_in_ref"] = int((both & is_pro).sum())
    return out


# ------------------------------------------------------------------------ public


def evaluate(
    pred: mdtraj.Trajectory,
    ref: mdtraj.Trajectory | None = None,
    *,
    frame: int = 0,
    periodic: bool | None = None,
) -> dict:
    """Compare frame ``frame`` of ``pred`` with ``ref`` and check its geometry.

    ``ref`` uses the same frame index, or frame 0 when it has a single frame.
    ``periodic``: None = use the unit cell when it is orthorhombic and >= 1 nm
    (minimum-image bonds, angles, chirality and clashes), False = never.
    RMSD is never minimum-imaged (pred and ref are in the same frame).
    Returns a JSON-serialisable dict; values that cannot be computed are None.
    """
    p = _prepare(pred, frame, periodic, "prediction")
    result: dict = {"frame": int(frame), "n_atoms_pred_heavy": len(p.xyz)}
    r = ref_xyz = ref_box = matched = None
    if ref is not None:
        r = _prepare(ref, 0 if ref.n_frames == 1 else frame, periodic, "reference")
        pi, ri = _match(p, r)
        if len(pi) == 0:
            raise HeroBMError("prediction and reference have no heavy atoms in common "
                              "(matched by chain, residue position, residue and atom name)")
        result.update(
            n_atoms_ref_heavy=len(r.xyz),
            n_atoms_compared=len(pi),
            n_unmatched_pred=len(p.xyz) - len(pi),
            n_unmatched_ref=len(r.xyz) - len(ri),
        )
        result.update(_rmsd_metrics(p, r, pi, ri))
        ref_xyz = np.full_like(p.xyz, np.nan)
        ref_xyz[pi] = r.xyz[ri]
        ref_box = r.box
        matched = np.zeros(len(p.xyz), bool)
        matched[pi] = True
    result.update(_geometry(p, ref_xyz, ref_box, matched))
    result.update(_stereo(p, r))
    return result


def _load(path) -> mdtraj.Trajectory:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise HeroBMError(f"structure file not found: {path}")
    try:
        from ..io import load_structure  # keeps insertion codes and original residue names

        return load_structure(path)
    except HeroBMError:
        raise
    except Exception as exc:  # mdtraj raises many types for unreadable files
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise HeroBMError(f"cannot read structure {path}: {msg}") from exc


def evaluate_files(pred_path, ref_path=None, frame: int = 0) -> dict:
    """Load ``pred_path`` (and ``ref_path``) with mdtraj and :func:`evaluate` them.

    Supports .pdb, .gro, .cif and their .gz versions.
    """
    pred = _load(pred_path)
    ref = _load(ref_path) if ref_path is not None else None
    try:
        return evaluate(pred, ref, frame=frame)
    except HeroBMError as exc:
        files = f"pred {pred_path}" + (f", ref {ref_path}" if ref_path is not None else "")
        raise HeroBMError(f"{exc} ({files})") from exc


# ------------------------------------------------------------------------ report


def _fmt(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def format_report(result: dict) -> str:
    """A readable multi-line text table of an :func:`evaluate` result."""
    scalars = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
    width = max(map(len, result), default=10) + 2
    lines = ["metric".ljust(width) + "value", "-" * (width + 12)]
    lines += [k.ljust(width) + _fmt(v) for k, v in scalars.items()]
    for k, v in result.items():
        if isinstance(v, dict) and v:
            lines += ["", f"{k}:"]
            for kk, vv in v.items():
                if isinstance(vv, list):
                    vv = ", ".join(vv) if vv else "-"
                lines.append(f"  {str(kk).ljust(width - 2)}{_fmt(vv) if not isinstance(vv, str) else vv}")
        elif isinstance(v, list) and v:
            lines += ["", f"{k} ({len(v)}{'+' if len(v) >= MAX_LISTED else ''}):"]
            lines += [f"  {x}" for x in v]
    return "\n".join(lines)
