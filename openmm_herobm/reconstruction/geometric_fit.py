"""Geometry-first protein fit: the closest chemically sound structure to the beads.

Beads of a CG *simulation* are not the beads of any real structure (Martini bonds, the elastic
network, thermal motion), so a fit that treats them as exact trades chemistry for bead
fidelity.  Here chemistry is (nearly) hard and beads are soft, each term a negative log
likelihood in units of its tolerance:

* ideal bonds (0.01 A), angles (1.5 deg), rigid dihedrals (rings, planar groups, the impropers
  of CA / ILE CB / THR CB), planar peptides, trans (cis only for an X-Pro peptide that a first
  solve with its omega free ends near cis):
  :mod:`~openmm_herobm.reconstruction.protein_geometry`, from the training split;
* the Ramachandran statistical potential of the training split (per class) and the network's
  predicted phi/psi (``SIGMA_NET``);
* beads: ``(mapped - input) / sigma_bead`` with a tolerance per bead (``BEAD_SIGMA``);
* heavy-atom clashes beyond 1-4 (contact radii, hydrogen bonds allowed);
* side chains are real rotamers: candidates are bead-conditioned library neighbours (real
  training side chains) or, for types without library, the rotamer wells of the training
  split; each residue takes the candidate that best explains its beads, stays near the
  library's conditional mean and does not clash, then neighbours are re-chosen against each
  other (two sweeps); the chosen chi angles become soft targets (``SIGMA_CHI``).

Three Levenberg-Marquardt solves (:mod:`~openmm_herobm.reconstruction.least_squares`): the
backbone with CB, then (after the rotamer choice) everything.  Peptide bonds are only made
between consecutive residues whose BB beads are closer than ``PEPTIDE_LINK_MAX`` in the CG input, so
chain breaks come from the beads, never from stretched output geometry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from scipy.spatial import cKDTree

from ..chemistry import BACKBONE_ANGLES, BACKBONE_BONDS, BOND_OFF, CLASH_DISTANCE
from . import least_squares as ls
from . import protein_geometry as pg

#: A between the SC1 beads of two cysteines: a disulfide (a bead distance; SG-SG is chemistry.DISULFIDE_MAX)
DISULFIDE_BEADS = 3.0
DISULFIDE_BOND = 2.04  # A, SG-SG
PRO_PHI = (-65.0, 15.0)  # deg: median and spread of proline phi in the training split
#: ideal peptide bond (A, degrees): chemistry's Engh & Huber backbone, and proline's C-N-CD
PEPTIDE = {"C-N": BACKBONE_BONDS[("C", "+N")], "CA-C-N": BACKBONE_ANGLES[("CA", "C", "+N")],
           "O-C-N": BACKBONE_ANGLES[("O", "C", "+N")], "C-N-CA": BACKBONE_ANGLES[("C", "+N", "+CA")],
           "C-N-CD": 125.0}
# tolerances: the spread of each term in the training structures, at least these floors
SIGMA_BOND, SIGMA_ANGLE, SIGMA_DIHEDRAL = 0.01, math.radians(1.0), math.radians(2.0)
GEOMETRY_SCALE = 3.0  # multiplies every geometric tolerance
#: omega's tolerance is GEOMETRY_SCALE's divided by the frame's looseness up to this: at GEOMETRY_SCALE a
#: simulation frame's beads bent a few peptides per frame 30-40 deg out of plane (chosen on 60 validation
#: frames: 0.28 such peptides per frame -> 0, angle RMSD +0.1 deg); mapped beads keep GEOMETRY_SCALE
OMEGA_TIGHTENING = 1.5
SIGMA_NET, SIGMA_NET_MAX = math.radians(30.0), math.radians(90.0)  # the network's phi/psi (x looseness)
SIGMA_CHI = math.radians(15.0)  # chosen rotamer's chi angles
SIGMA_PRIOR, SIGMA_PRIOR_O = 2.0, 0.4  # A, to the network's backbone (x the frame's looseness)
RAMA_WEIGHT, RAMA_ALLOWED = 20.0, 0.98  # the potential is zero inside the region holding RAMA_ALLOWED
BEAD_SIGMA = {"BB": 0.03, "default": 0.06}  # A
BEAD_ROBUST = 3.0  # Cauchy scale (in sigmas) of the bead term
CLASH_SIGMA = 0.05
RADIUS = {"C": 1.5, "N": 1.4, "O": 1.35, "S": 1.7}
HBOND_RELIEF = 0.35
MEAN_WEIGHT = 10.0  # rotamer choice: squared RMS distance (A^2) to the library mean, per sigma^2 of 0.5 A
WELL_PRIOR = 1.0  # rotamer choice: -log(population) weight for well-built candidates
ITERATIONS_BACKBONE, ITERATIONS_ALL = 15, 12
OMEGA_SWITCH = math.radians(45.0)  # an X-Pro peptide this far from its isomer after a solve: take the other
#: an X-Pro peptide the first solve (omega free) leaves closer than this to cis is held cis: Martini 3 keeps
#: no omega, and most X-Pro peptides are trans (chosen on 380 X-Pro peptides of 60 validation frames:
#: isomer right in 325, against 303 at 90 deg and 313, 40 of them half-way, with omega held from the start)
CIS_OMEGA = math.radians(45.0)
TOLERANCE = 1e-4  # stop a solve when an accepted step lowers the cost by less than this fraction
EXTRA_SOLVES = 3  # more final solves for a frame that ends them unsound (a bond broken, atoms overlapping)
WELL_OFFSETS = np.radians([-15.0, 0.0, 15.0])
LIBRARY_NEIGHBOURS = 64
SIGMA_TARGET = 0.5  # A: pull of the rebuilt side chains towards the RMSD-optimal estimate (0 = none)
SCALE_START, SCALE_FACTOR, SCALE_MAX, ITERATIONS_SCALE = 0.1, 1.0, 0.6, 8  # per-frame bead tolerance (A)
CHOICE_CLASH_WEIGHT = 0.0
TANGLE_CLASH_WEIGHT = 1.0  # the rotamer choice's clash weight before the last extra solve
ROTAMER_WEIGHT, ROTAMER_FREE, ROTAMER_SIGMA = 1.0, math.radians(10.0), math.radians(10.0)
CHOICE_BEAD_SIGMA = 0.1  # A, least bead tolerance when rotamers are compared (else the frame's own)


@dataclass
class _Group:
    """Residues of one type whose side chains are rebuilt."""
    name: str
    residue: np.ndarray  # (q,) topology residue index
    frame: np.ndarray  # (q, 3) N, CA, C atom indices
    atoms: np.ndarray  # (q, m) side-chain atom indices, build order
    beads: np.ndarray  # (q, b) side-chain bead indices
    weights: np.ndarray  # (q, b, m) bead weights of the side-chain atoms
    library: object | None = None  # ResidueLibrary
    library_order: np.ndarray | None = None  # library atom j -> build-order column


class GeometricFit:
    """The fit for one :class:`~openmm_herobm.mapping.SystemMapping`; call it per frame.

    Proteins only (residues with N, CA, C and a bead holding CA); everything else is returned
    as given.  ``library`` is the model's :class:`~openmm_herobm.reconstruction.side_chain_library.SideChainLibrary`
    (bead-conditioned rotamer candidates) or None (rotamer wells only)."""

    def __init__(self, system, library=None, bead_sigma: dict | None = None):
        top = system.aa_topology
        self.n_atoms = top.n_atoms
        self.element = np.array([a.element.symbol if a.element is not None else "C" for a in top.atoms])
        weights = system.weights.tocsr()
        self.weights = weights
        coo = weights.tocoo()
        bead_of_atom = {}
        for row, col in zip(coo.row, coo.col):
            bead_of_atom.setdefault(col, row)
        per_res = [{a.name: a.index for a in r.atoms} for r in top.residues]
        names = [pg.standard_name(r.name) for r in top.residues]
        keep = [r for r, at in enumerate(per_res)
                if pg.residue(names[r]) is not None and {"N", "CA", "C"} <= set(at) and at["CA"] in bead_of_atom]
        self.empty = not keep
        if self.empty:
            return
        self.keep = np.array(keep)
        self.per_res, self.names = per_res, names
        chain = np.array([top.residue(r).chain.index for r in keep])
        self.consecutive = (chain[1:] == chain[:-1]) & (np.diff(self.keep) == 1)
        self.ca_bead = np.array([bead_of_atom[per_res[r]["CA"]] for r in keep])
        idx = lambda r, n: per_res[r].get(n, -1)  # noqa: E731
        self.N, self.CA, self.C, self.O, self.CB = (np.array([idx(r, n) for r in keep])
                                                    for n in ("N", "CA", "C", "O", "CB"))
        self.is_pro = np.array([names[r] == "PRO" for r in keep])
        self.rama_cls = np.array([pg.rama_class(names[r], names[keep[k + 1]] if k + 1 < len(keep) else None)
                                  for k, r in enumerate(keep)])
        # bead tolerances
        sigma = dict(BEAD_SIGMA, **(bead_sigma or {}))
        self.bead_name = np.array([a.name for a in system.cg_topology.atoms])
        self.bead_sigma = np.array([sigma.get(n, sigma["default"]) for n in self.bead_name])
        # static intra-residue geometry
        self._intra_terms(top)
        backbone_atoms = np.concatenate([v[v >= 0] for v in (self.N, self.CA, self.C, self.O, self.CB)])
        self.backbone_atoms = np.sort(backbone_atoms)
        is_bb = np.zeros(self.n_atoms, bool)
        is_bb[self.backbone_atoms] = True
        self.is_backbone = is_bb
        protein_atoms = np.concatenate([np.fromiter(per_res[r].values(), np.int64) for r in keep])
        self.protein_atoms = np.sort(protein_atoms)
        # beads: BB beads (N CA C O) for the backbone stage; all beads of protein atoms at the end
        rows = coo.row
        on_protein = np.zeros(self.n_atoms, bool)
        on_protein[self.protein_atoms] = True
        protein_beads = np.unique(rows[on_protein[coo.col]])
        atom_bb = np.zeros(self.n_atoms, bool)
        atom_bb[np.concatenate([v[v >= 0] for v in (self.N, self.CA, self.C, self.O)])] = True
        off_bb = np.bincount(rows, weights=~atom_bb[coo.col], minlength=weights.shape[0])  # non-BB atoms per bead
        bb_only = off_bb[protein_beads] == 0
        self.bb_beads = protein_beads[bb_only]
        self.all_beads = protein_beads
        self.radius = np.array([RADIUS.get(e, 1.5) for e in self.element])
        self.polar = np.isin(self.element, ("N", "O"))
        self.residue_of = np.array([a.residue.index for a in top.atoms])
        self.chain_of = np.array([a.residue.chain.index for a in top.atoms])
        self.groups = self._groups(system, library)

    # ------------------------------------------------------------------ setup
    def _intra_terms(self, top) -> None:
        bonds, angles, dihedrals = [], [], []
        for r in self.keep:
            entry, at = pg.residue(self.names[r]), self.per_res[r]
            for a, b, d0, sd in entry["bonds"]:
                if a in at and b in at:
                    bonds.append((at[a], at[b], d0, max(sd, SIGMA_BOND)))
            for a, b, c, t0, sd in entry["angles"]:
                if a in at and b in at and c in at:
                    angles.append((at[a], at[b], at[c], math.radians(t0), max(math.radians(sd), SIGMA_ANGLE)))
            for a, b, c, d, t0, sd in entry["dihedrals"]:
                if all(n in at for n in (a, b, c, d)):
                    dihedrals.append((at[a], at[b], at[c], at[d], math.radians(t0),
                                      max(math.radians(sd), SIGMA_DIHEDRAL)))
        self.intra_bonds = np.array([b[:2] for b in bonds], np.int64).reshape(-1, 2)
        self.intra_bond_d0 = np.array([b[2] for b in bonds])
        self.intra_bond_sd = np.array([b[3] for b in bonds])
        self.intra_angles = np.array([a[:3] for a in angles], np.int64).reshape(-1, 3)
        self.intra_angle_t0 = np.array([a[3] for a in angles])
        self.intra_angle_sd = np.array([a[4] for a in angles])
        self.intra_dihedrals = np.array([d[:4] for d in dihedrals], np.int64).reshape(-1, 4)
        self.intra_dihedral_t0 = np.array([d[4] for d in dihedrals])
        self.intra_dihedral_sd = np.array([d[5] for d in dihedrals])
        spread = pg.data()["peptide_spread"]
        self.peptide_sd = {"C-N": max(spread["C-+N"], SIGMA_BOND),
                           "CA-C-N": max(math.radians(spread["CA-C-+N"]), SIGMA_ANGLE),
                           "O-C-N": max(math.radians(spread["O-C-+N"]), SIGMA_ANGLE),
                           "C-N-CA": max(math.radians(spread["C-+N-+CA"]), SIGMA_ANGLE),
                           "C-N-CD": max(math.radians(spread["C-+N-+CA"]), SIGMA_ANGLE),
                           "omega": max(math.radians(spread["omega"]), SIGMA_DIHEDRAL),
                           "plane": max(math.radians(spread["O-C-+N-+CA"]), SIGMA_DIHEDRAL)}

    def _groups(self, system, library) -> list[_Group]:
        by_atom = self.weights.tocsc()  # column slices of a CSR matrix cost O(nnz) each
        beads_of = lambda a: by_atom.indices[by_atom.indptr[a]:by_atom.indptr[a + 1]].tolist()  # noqa: E731
        bb_beads = set(self.bb_beads.tolist())
        groups: dict[str, dict] = {}
        for k, r in enumerate(self.keep):
            name = self.names[r]
            side = pg.side_chain_atoms(name)
            at = self.per_res[r]
            if name in ("GLY", "ALA") or not side or not all(n in at for n in side):
                continue
            atoms = np.array([at[n] for n in side])
            # the side-chain beads: every bead any side-chain atom beyond CB weighs in (Python sets:
            # numpy's unique and setdiff1d per residue were 1.4 s of a 10k-bead frame)
            beads = set().union(*(beads_of(a) for a in (atoms[1:] if len(atoms) > 1 else atoms[:1])))
            beads = np.array(sorted(beads - bb_beads), np.int64)
            if len(beads) == 0:
                continue
            g = groups.setdefault(name, {"residue": [], "frame": [], "atoms": [], "beads": []})
            g["residue"].append(r)
            g["frame"].append((at["N"], at["CA"], at["C"]))
            g["atoms"].append(atoms)
            g["beads"].append(beads)
        out = []
        for name, g in groups.items():
            nb = {len(b) for b in g["beads"]}
            if len(nb) != 1:  # an odd residue (a bead missing): leave the type to the polish
                continue
            atoms = np.array(g["atoms"])
            beads = np.array(g["beads"])
            # dense (q, b, m) weights: each bead's row of the CSR matrix, looked up at the atoms
            w = self.weights
            dense = np.zeros(beads.shape + (atoms.shape[1],))
            for q in range(len(atoms)):
                for k, bead in enumerate(beads[q]):
                    cols, vals = w.indices[w.indptr[bead]:w.indptr[bead + 1]], w.data[w.indptr[bead]:w.indptr[bead + 1]]
                    hit = cols[:, None] == atoms[q][None]
                    dense[q, k] = (vals[:, None] * hit).sum(0)
            group = _Group(name, np.array(g["residue"]), np.array(g["frame"]), atoms, beads, dense)
            if library is not None and name in library.residues and library.residues[name].weight >= 0:
                lib = library.residues[name]
                side = pg.side_chain_atoms(name)
                if set(lib.atom_names) == set(side):
                    group.library = lib
                    group.library_order = np.array([side.index(n) for n in lib.atom_names])
            out.append(group)
        return out

    # ------------------------------------------------------------------ per frame
    def phi_psi(self, dihedrals: np.ndarray) -> np.ndarray:
        return pg.network_phi_psi(dihedrals, self.ca_bead)

    def links(self, beads: np.ndarray) -> np.ndarray:
        """Fitted-residue positions i bonded to i+1 (chain breaks from the beads)."""
        return pg.peptide_links(beads, self.ca_bead, self.consecutive)

    def _cis_prolines(self, x: np.ndarray, link: np.ndarray, before: np.ndarray | None = None) -> np.ndarray:
        """Which peptide bonds ``link`` -> ``link + 1`` are held cis (X-Pro only): those ``x`` has within
        :data:`CIS_OMEGA` of cis, or, given the choice ``before`` a solve, that choice unless the solve
        ended more than :data:`OMEGA_SWITCH` from it.  A proline whose isomer the beads do not tell
        apart can otherwise stick half-way: 28% of the X-Pro peptides of 40 real frames were
        30-150 deg, neither cis nor trans."""
        i, j = link, link + 1
        omega = ls.dihedrals(x, self.CA[i], self.C[i], self.N[j], self.CA[j])[0]
        if before is None:
            return self.is_pro[j] & (np.abs(omega) < CIS_OMEGA)
        stuck = np.abs(ls.wrap(omega - np.where(before, 0.0, math.pi))) > OMEGA_SWITCH
        return before ^ (stuck & self.is_pro[j])

    def _peptide_terms(self, link: np.ndarray, cis: np.ndarray | None, looseness: float):
        """The peptide bonds ``link`` -> ``link + 1``, those of ``cis`` held cis; ``cis`` None: X-Pro
        peptides free to turn (no omega, no O in plane), the others trans."""
        i, j = link, link + 1
        held = np.ones(len(i), bool) if cis is not None else ~self.is_pro[j]
        cis = np.zeros(len(i), bool) if cis is None else cis
        ok_o = (self.O[i] >= 0) & held
        sd = {k: v * GEOMETRY_SCALE for k, v in self.peptide_sd.items()}
        sd["omega"] /= min(looseness, OMEGA_TIGHTENING)
        terms = [ls.Bonds(self.C[i], self.N[j], np.full(len(i), PEPTIDE["C-N"]), sd["C-N"]),
                 ls.Angles(self.CA[i], self.C[i], self.N[j], np.full(len(i), math.radians(PEPTIDE["CA-C-N"])),
                           sd["CA-C-N"]),
                 ls.Angles(self.C[i], self.N[j], self.CA[j], np.full(len(i), math.radians(PEPTIDE["C-N-CA"])),
                           sd["C-N-CA"]),
                 ls.Angles(self.O[i][ok_o], self.C[i][ok_o], self.N[j][ok_o],
                           np.full(int(ok_o.sum()), math.radians(PEPTIDE["O-C-N"])), sd["O-C-N"]),
                 # O in the peptide plane, on CA(i+1)'s side in a trans peptide (opposite CA(i)), on the
                 # other side in a cis one: a trans target here held cis prolines 30-40 deg off planar
                 ls.Dihedrals(self.O[i][ok_o], self.C[i][ok_o], self.N[j][ok_o], self.CA[j][ok_o],
                              np.where(cis[ok_o], math.pi, 0.0), sd["plane"])]
        # omega: trans, or cis for a proline held cis (_cis_prolines)
        terms.append(ls.Dihedrals(self.CA[i][held], self.C[i][held], self.N[j][held], self.CA[j][held],
                                  np.where(cis[held], 0.0, math.pi), sd["omega"]))
        pro = self.is_pro[j]
        cd = np.array([self.per_res[self.keep[k]].get("CD", -1) for k in j[pro]], np.int64)
        ok = cd >= 0
        if ok.any():
            terms.append(ls.Angles(self.C[i][pro][ok], self.N[j][pro][ok], cd[ok],
                                   np.full(int(ok.sum()), math.radians(PEPTIDE["C-N-CD"])), sd["C-N-CD"]))
            # proline N is planar (C-1, CA, CD): without it the ring can close on the wrong side
            # of the peptide plane (phi > 0, impossible for proline)
            terms.append(ls.Dihedrals(self.C[i][pro][ok], self.CA[j][pro][ok], cd[ok], self.N[j][pro][ok],
                                      np.zeros(int(ok.sum())), sd["plane"]))
        # the ring holds proline's phi near -65 deg (training prolines: 1st-99th percentile -113 to -33)
        if pro.any():
            terms.append(ls.Dihedrals(self.C[i][pro], self.N[j][pro], self.CA[j][pro], self.C[j][pro],
                                      np.full(int(pro.sum()), math.radians(PRO_PHI[0])), math.radians(PRO_PHI[1])))
        return terms

    def _bond_graph(self, link: np.ndarray, disulfides: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """This frame's bonds ``(k, 2)`` (residues, peptide links, disulfides) and their ideal lengths ``(k,)`` A."""
        pep = np.stack([self.C[link], self.N[link + 1]], 1)
        bonds = np.concatenate([self.intra_bonds, pep, disulfides.reshape(-1, 2)])
        ideal = np.concatenate([self.intra_bond_d0, np.full(len(link), PEPTIDE["C-N"]),
                                np.full(len(disulfides), DISULFIDE_BOND)])
        return bonds, ideal

    def _disulfides(self, beads: np.ndarray) -> np.ndarray:
        """SG pairs of cysteines whose side-chain beads are close: mapped disulfides have their SC1 beads
        2.3-2.8 A apart (264 in the training split), Martini 3 bonds them at 2.4 A."""
        sg = [(k, self.per_res[r].get("SG", -1)) for k, r in enumerate(self.keep) if self.names[r] == "CYS"]
        sg = [(k, a) for k, a in sg if a >= 0]
        if len(sg) < 2:
            return np.zeros((0, 2), np.int64)
        atoms = np.array([a for _, a in sg])
        by_atom = self.weights[:, atoms].tocsc()  # one column slice, not one per cysteine
        bead = by_atom.indices[by_atom.indptr[:-1]]
        pairs = cKDTree(beads[bead]).query_pairs(DISULFIDE_BEADS, output_type="ndarray")
        distance = np.linalg.norm(beads[bead[pairs[:, 0]]] - beads[bead[pairs[:, 1]]], axis=1) if len(pairs) else []
        used, out = set(), []
        for p, q in pairs[np.argsort(distance)]:  # the closest pairs first: three cysteines near each other
            if p not in used and q not in used:
                used.update((p, q))
                out.append((atoms[p], atoms[q]))
        return np.array(out, np.int64).reshape(-1, 2)

    def _bead_term(self, beads_xyz: np.ndarray, rows: np.ndarray, sigma: np.ndarray) -> ls.Linear:
        return ls.Linear(self.weights[rows], beads_xyz[rows], sigma[rows], BEAD_ROBUST)

    def _geometry_terms(self, cis, link, disulfides, looseness: float = 1.0, atoms_mask=None):
        """Bonds, angles, rigid dihedrals (restricted to terms whose atoms are all in ``atoms_mask``);
        the peptide bonds of ``cis`` (:meth:`_cis_prolines`; None: X-Pro free) held cis, planar as
        tight as the frame's ``looseness`` (:meth:`looseness`) needs."""
        def pick(index):
            return np.ones(len(index), bool) if atoms_mask is None else atoms_mask[index].all(1)
        b, a, d = pick(self.intra_bonds), pick(self.intra_angles), pick(self.intra_dihedrals)
        # bonds and angles get the slack of GEOMETRY_SCALE; rigid dihedrals (chirality impropers,
        # rings, planar groups) keep their real spread: a stereocentre must not flip
        k = GEOMETRY_SCALE
        terms = [ls.Bonds(self.intra_bonds[b, 0], self.intra_bonds[b, 1], self.intra_bond_d0[b],
                          k * self.intra_bond_sd[b]),
                 ls.Angles(*self.intra_angles[a].T, self.intra_angle_t0[a], k * self.intra_angle_sd[a]),
                 ls.Dihedrals(*self.intra_dihedrals[d].T, self.intra_dihedral_t0[d], self.intra_dihedral_sd[d])]
        terms += self._peptide_terms(link, cis, looseness)
        if len(disulfides):
            i, j = disulfides.T
            terms.append(ls.Bonds(i, j, np.full(len(i), DISULFIDE_BOND), 0.02))
            cb_of = {self.per_res[r].get("SG", -2): self.per_res[r].get("CB", -1) for r in self.keep}
            cbi, cbj = np.array([cb_of[a] for a in i]), np.array([cb_of[a] for a in j])
            terms.append(ls.Angles(np.r_[cbi, cbj], np.r_[i, j], np.r_[j, i], np.full(2 * len(i), math.radians(104.0)),
                                   math.radians(3.0)))
        return terms

    def _rama_terms(self, link: np.ndarray, phi_psi: np.ndarray | None, looseness: float = 1.0):
        linked = np.zeros(len(self.keep) + 1, bool)
        linked[link] = True  # i bonded to i+1
        mid = np.flatnonzero(linked[:-1][1:] & linked[1:-1]) + 1 if len(self.keep) > 2 else np.zeros(0, np.int64)
        mid = mid[(mid >= 1) & (mid < len(self.keep) - 1)]
        mid = mid[linked[mid - 1] & linked[mid]]
        terms = []
        if len(mid):
            terms.append(ls.Ramachandran(self.C[mid - 1], self.N[mid], self.CA[mid], self.C[mid], self.N[mid + 1],
                                         self.rama_cls[mid], _rama_potential(), RAMA_WEIGHT))
        # the network reads phi/psi well from mapped beads, less so from a simulation frame
        sigma_net = min(SIGMA_NET * looseness, SIGMA_NET_MAX)
        if phi_psi is not None:
            phi_ok = linked[np.maximum(np.arange(len(self.keep)) - 1, 0)] & (np.arange(len(self.keep)) > 0)
            r = np.flatnonzero(phi_ok & np.isfinite(phi_psi[:, 0]))
            if len(r):
                terms.append(ls.Dihedrals(self.C[r - 1], self.N[r], self.CA[r], self.C[r], phi_psi[r, 0], sigma_net))
            r = np.flatnonzero(linked[:len(self.keep)] & np.isfinite(phi_psi[:, 1]))
            if len(r):
                terms.append(ls.Dihedrals(self.N[r], self.CA[r], self.C[r], self.N[r + 1], phi_psi[r, 1], sigma_net))
        return terms

    def _clash_term(self, atoms: np.ndarray, moving_mask: np.ndarray, excluded: np.ndarray) -> ls.Clashes:
        return ls.Clashes(atoms, self.radius, self.polar, excluded, moving_mask, CLASH_SIGMA, HBOND_RELIEF)

    def __call__(self, xyz: np.ndarray, beads: np.ndarray, dihedrals: np.ndarray | None = None) -> np.ndarray:
        """Fitted copy of ``xyz`` ``(n_atoms, 3)`` (Angstrom) for ``beads`` ``(n_beads, 3)`` (A) and the
        network's per-bead dihedral output ``(n_beads, 4)`` (or None)."""
        if self.empty:
            return xyz
        x = np.array(xyz, np.float64)
        b = np.asarray(beads, np.float64)
        link = self.links(b)
        disulfides = self._disulfides(b)
        phi_psi = None if dihedrals is None else self.phi_psi(dihedrals)
        graph = self._bond_graph(link, disulfides)
        excluded = ls.exclusions(graph[0], self.n_atoms)
        moving = self.protein_atoms
        mask = np.zeros(self.n_atoms, bool)
        mask[moving] = True
        # the network's backbone, its carbonyl O closer: the O says which way a peptide plane faces,
        # which a BB bead (the centre of N, CA, C, O) hardly does
        prior_sigma = np.where(np.isin(self.backbone_atoms, self.O), SIGMA_PRIOR_O, SIGMA_PRIOR)
        prior = ls.Linear(scipy.sparse.identity(self.n_atoms, format="csr")[self.backbone_atoms],
                          x[self.backbone_atoms], prior_sigma)
        geometry = self._geometry_terms(None, link, disulfides)  # X-Pro isomers: the beads' choice
        common = geometry + self._rama_terms(link, phi_psi, looseness=SIGMA_NET_MAX / SIGMA_NET)
        clash = self._clash_term(moving, mask, excluded)
        # 1. the network's structure made sound: every atom, every bead (side-chain beads orient
        #    the backbone of termini), the network's side chains as they are.  First with loose
        #    beads, which measures how far this frame's beads are from any sound structure
        #    (mapped beads: hardly; a CG simulation frame: a few tenths of an A), then with each
        #    bead's tolerance set from that
        self._ideal_cb(x)
        loose = np.full(len(b), SCALE_START)
        x = ls.solve(common + [prior, clash, self._bead_term(b, self.all_beads, loose)], x, moving,
                     ITERATIONS_SCALE, tolerance=TOLERANCE).x
        sigma = self.bead_scale(x, b)
        looseness = self.looseness(sigma)
        cis = self._cis_prolines(x, link)
        geometry = self._geometry_terms(cis, link, disulfides, looseness)
        common = geometry + self._rama_terms(link, phi_psi, looseness)
        prior = ls.Linear(prior.matrix, prior.target, prior.sigma * looseness)  # the network's backbone
        x = ls.solve(common + [prior, clash, self._bead_term(b, self.all_beads, sigma)], x, moving,
                     ITERATIONS_BACKBONE, tolerance=TOLERANCE).x
        again = self._cis_prolines(x, link, cis)  # one stuck half-way takes the other isomer
        if (again != cis).any():
            common = (self._geometry_terms(again, link, disulfides, looseness)
                      + self._rama_terms(link, phi_psi, looseness))
        # 2. rotamers
        x, chi_terms = self._rotamers(x, b, excluded, x.copy(), sigma)
        # 3. everything, the chosen chi angles as soft targets
        final = common + chi_terms + [clash, self._bead_term(b, self.all_beads, sigma)]
        x = ls.solve(final, x, moving, ITERATIONS_ALL, tolerance=TOLERANCE).x
        # a hard frame (beads no sound structure meets, a tangle) can end the steps with a bond
        # broken or atoms overlapping: the chains where that happened get more steps, at most
        # EXTRA_SOLVES more solves; before the last, their rotamers are chosen again, each against
        # the others' clashes (a side chain threaded through a ring is a minimum that steps do not leave)
        for attempt in range(EXTRA_SOLVES):
            bad = self._unsound(x, graph, excluded) if np.isfinite(x).all() else None
            if bad is None or not bad.any():
                break
            region = np.isin(self.chain_of, np.unique(self.chain_of[bad]))
            if attempt == EXTRA_SOLVES - 1:
                chosen, chi_terms = self._rotamers(x.copy(), b, excluded, x.copy(), sigma,
                                                   clash_weight=TANGLE_CLASH_WEIGHT)
                x = np.where(region[:, None], chosen, x)
                final = common + chi_terms + [clash, self._bead_term(b, self.all_beads, sigma)]
            x = ls.solve(final, x, moving[region[moving]], ITERATIONS_ALL, tolerance=TOLERANCE).x
        if not np.isfinite(x).all():
            return np.asarray(xyz)
        return x.astype(np.asarray(xyz).dtype)

    def _unsound(self, x: np.ndarray, graph: tuple, excluded: np.ndarray) -> np.ndarray:
        """``(n_atoms,)`` True at the atoms of a bond (``graph``: :meth:`_bond_graph`) more than
        :data:`~openmm_herobm.chemistry.BOND_OFF` from its ideal length and of two protein heavy
        atoms beyond 1-4 (``excluded`` codes) closer than :data:`~openmm_herobm.chemistry.CLASH_DISTANCE`."""
        bad = np.zeros(self.n_atoms, bool)
        bonds, ideal = graph
        off = np.abs(np.linalg.norm(x[bonds[:, 0]] - x[bonds[:, 1]], axis=1) - ideal) > BOND_OFF
        bad[bonds[off].ravel()] = True
        atoms = self.protein_atoms
        pairs = cKDTree(x[atoms]).query_pairs(CLASH_DISTANCE, output_type="ndarray")
        i, j = atoms[pairs[:, 0]], atoms[pairs[:, 1]]
        code = np.minimum(i, j).astype(np.int64) * self.n_atoms + np.maximum(i, j)
        clash = ~np.isin(code, excluded)
        bad[i[clash]] = bad[j[clash]] = True
        return bad

    def looseness(self, sigma: np.ndarray) -> float:
        """How loose this frame's beads are: 1 for mapped beads, ~3-5 for a CG simulation frame.
        The looser, the more the fit trusts real-protein statistics (rotamers, phi/psi) over the
        beads and the network's reading of them."""
        return max(1.0, float(np.median(sigma[self.all_beads])) / CHOICE_BEAD_SIGMA)

    def bead_scale(self, x: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Per-bead tolerance ``(n_beads,)`` (A) of this frame: ``SCALE_FACTOR`` x the median misfit of
        the beads of the same name (BB, SC1, ...) in ``x``, within ``[BEAD_SIGMA, SCALE_MAX]``."""
        rows = self.all_beads
        misfit = np.linalg.norm(self.weights[rows] @ x - b[rows], axis=1)
        sigma = self.bead_sigma.copy()
        names = self.bead_name[rows]
        for name in np.unique(names):
            on = names == name
            sigma[rows[on]] = np.clip(SCALE_FACTOR * np.median(misfit[on]), self.bead_sigma[rows[on]], SCALE_MAX)
        return sigma

    def _ideal_cb(self, x: np.ndarray) -> None:
        """CB on its ideal (L) place from N, CA, C: the network's CB may be on the wrong side."""
        has = self.CB >= 0
        entry_rows = [pg.residue(self.names[r])["build"][0] for r in self.keep[has]]
        bond = np.array([row[4] for row in entry_rows])
        angle = np.radians([row[5] for row in entry_rows])
        torsion = np.radians([row[7] for row in entry_rows])
        x[self.CB[has]] = pg.place(x[self.C[has]], x[self.N[has]], x[self.CA[has]], bond, angle, torsion)

    # ------------------------------------------------------------------ rotamers
    def _candidates(self, g: _Group, x: np.ndarray, b: np.ndarray, start: np.ndarray):
        """Candidate side chains ``(q, K, m, 3)``, their prior cost ``(q, K)`` and the target ``(q, m, 3)``
        (the side chain the candidates should resemble).

        Candidates: the side chain of ``start`` rebuilt with ideal geometry; every combination of
        chi1 x chi2 rotamer wells of the training split (and +-15 deg), further chi angles those of
        ``start`` moved to their nearest well; and the library's neighbours (real training side
        chains whose keys are close to this residue's beads).  The target is the library's blend
        of its conditional mean with ``start`` (the RMSD-optimal estimate), else ``start``."""
        n, ca, c = (x[g.frame[:, k]] for k in range(3))
        side = pg.side_chain_atoms(g.name)
        own = {a: start[g.atoms[:, side.index(a)]] if a in side else start[g.frame[:, ("N", "CA", "C").index(a)]]
               for q in pg.residue(g.name)["chis"] for a in q}
        start_chis = pg.chi_angles(g.name, own)  # (q, n_chi)
        n_chi = start_chis.shape[1]
        parts = [pg.build_side_chains(g.name, n, ca, c, start_chis)[:, None]]
        grid, grid_prior = _well_grid(g.name)
        chis = np.empty((len(n), len(grid), n_chi))
        chis[:, :, :grid.shape[1]] = grid
        for k in range(grid.shape[1], n_chi):
            chis[:, :, k] = pg.nearest_well(g.name, k + 1, start_chis[:, k])[:, None]
        parts.append(pg.build_side_chains(g.name, n[:, None], ca[:, None], c[:, None], chis))
        priors = [np.zeros(1), WELL_PRIOR * grid_prior]
        target = start[g.atoms]
        if g.library is not None:
            from .side_chain_library import backbone_frame

            rot = backbone_frame(n, ca, c)
            keys = np.einsum("qbi,qji->qbj", b[g.beads] - ca[:, None], rot).reshape(len(rot), -1)
            lib = g.library
            k = min(LIBRARY_NEIGHBOURS, len(lib.keys))
            if lib._tree is None:
                lib.predict(keys[:1], k)  # builds the tree
            dist, idx = lib._tree.query(keys, k=k)
            dist, idx = dist.reshape(len(keys), k), idx.reshape(len(keys), k)
            h = 0.5 * dist[:, -1:] + 1e-3
            w = np.exp(-0.5 * (dist / h) ** 2)
            w /= w.sum(1, keepdims=True)
            local = np.empty(idx.shape + (len(side), 3))
            local[:, :, g.library_order] = lib.atoms[idx].astype(np.float64)  # library order -> build order
            neighbours = np.einsum("qkai,qij->qkaj", local, rot) + ca[:, None, None]
            mean = (w[:, :, None, None] * neighbours).sum(1)
            target = lib.weight * mean + (1.0 - lib.weight) * target
            parts.append(neighbours)
            priors.append(np.zeros(k))
        cand = np.concatenate(parts, axis=1)
        return cand, np.broadcast_to(np.concatenate(priors), cand.shape[:2]), target

    def _rotamers(self, x: np.ndarray, b: np.ndarray, excluded: np.ndarray, start: np.ndarray, sigma: np.ndarray,
                  clash_weight: float = CHOICE_CLASH_WEIGHT):
        """Choose a rotamer per rebuilt residue; returns new coordinates and chi target terms.
        ``clash_weight`` > 0: then two sweeps re-choose each against the others' clashes."""
        if not self.groups:
            return x, []
        looseness = self.looseness(sigma)
        cands, costs, targets = [], [], []
        for g in self.groups:
            cand, prior, mean = self._candidates(g, x, b, start)
            targets.append(mean)
            # bead misfit: side-chain beads with the share of atoms outside the rebuilt side chain fixed
            full = self.weights[g.beads.ravel()]
            fixed_share = (full @ x).reshape(g.beads.shape + (3,)) - np.einsum("qbm,qmi->qbi", g.weights, x[g.atoms])
            mapped = np.einsum("qbm,qkmi->qkbi", g.weights, cand) + fixed_share[:, None]
            tolerance = np.maximum(sigma[g.beads], CHOICE_BEAD_SIGMA)[:, None]
            cost = (((mapped - b[g.beads][:, None]) ** 2).sum(-1) / tolerance ** 2).sum(-1) + prior
            msd = ((cand - mean[:, None]) ** 2).sum(-1).mean(-1)
            cost = cost + MEAN_WEIGHT * msd / 0.25 + ROTAMER_WEIGHT * looseness ** 2 * self._off_well(g, x, cand)
            cands.append(cand)
            costs.append(cost)
        # first choice without side chain - side chain clashes, then two sweeps against each other
        choice = [np.argmin(c, axis=1) for c in costs]
        for sweep in range(3 if clash_weight > 0 else 1):
            for gi, g in enumerate(self.groups):
                x[g.atoms] = cands[gi][np.arange(len(g.atoms)), choice[gi]]
            if sweep == 2 or clash_weight <= 0:
                break
            env = np.flatnonzero(np.isin(np.arange(self.n_atoms), self.protein_atoms))
            tree = cKDTree(x[env])
            for gi, g in enumerate(self.groups):
                clash = self._candidate_clashes(g, cands[gi], x, env, tree, excluded)
                choice[gi] = np.argmin(costs[gi] + clash_weight * clash, axis=1)
        # the chosen chi angles become soft targets of the final polish; chi1 and chi2 at most
        # ROTAMER_FREE from the centre of their rotamer well (a real rotamer stays one when beads pull)
        terms = []
        for g in self.groups:
            for k, (i, j, kk, m) in enumerate(self._chi_atoms(g)):
                chi = ls.dihedrals(x, i, j, kk, m)[0]
                found = pg.chi_wells(g.name, k + 1) if k < 2 else None
                if found is not None:
                    wells, symmetric = found
                    period = 2 if symmetric else 1
                    delta = ls.wrap(period * (chi[:, None] - wells[None])) / period
                    nearest = delta[np.arange(len(chi)), np.abs(delta).argmin(1)]
                    chi = chi - nearest + np.clip(nearest, -ROTAMER_FREE, ROTAMER_FREE)
                terms.append(ls.Dihedrals(i, j, kk, m, chi, SIGMA_CHI / looseness))
        if SIGMA_TARGET > 0:
            # a weak pull towards the RMSD-optimal estimate, within the rotamer; weaker still when the
            # frame's beads are loose (a simulation frame: the estimate is worth less)
            atoms = np.concatenate([g.atoms.ravel() for g in self.groups])
            where = np.concatenate([t.reshape(-1, 3) for t in targets])
            terms.append(ls.Linear(scipy.sparse.identity(self.n_atoms, format="csr")[atoms], where,
                                   np.full(len(atoms), SIGMA_TARGET * looseness)))
        return x, terms

    def _chi_atoms(self, g: _Group) -> list:
        """Per chi of the type: four ``(q,)`` atom index arrays."""
        side = pg.side_chain_atoms(g.name)
        return [[g.atoms[:, side.index(a)] if a in side else g.frame[:, ("N", "CA", "C").index(a)] for a in q]
                for q in pg.residue(g.name)["chis"]]

    def _off_well(self, g: _Group, x: np.ndarray, cand: np.ndarray) -> np.ndarray:
        """``(q, K)``: sum over chi1, chi2 of ((distance to the nearest well - dead zone) / sigma)^2."""
        side = pg.side_chain_atoms(g.name)
        pos = {a: cand[:, :, side.index(a)] for a in side}
        pos.update({a: np.broadcast_to(x[g.frame[:, k]][:, None], cand.shape[:2] + (3,))
                    for k, a in enumerate(("N", "CA", "C"))})
        chis = pg.chi_angles(g.name, pos)
        out = np.zeros(cand.shape[:2])
        for k in range(min(2, chis.shape[-1])):
            if pg.chi_wells(g.name, k + 1) is None:
                continue
            d = np.clip(pg.distance_to_wells(g.name, k + 1, chis[..., k]) - ROTAMER_FREE, 0.0, None)
            out += (d / ROTAMER_SIGMA) ** 2
        return out

    def _candidate_clashes(self, g: _Group, cand: np.ndarray, x: np.ndarray, env: np.ndarray, tree: cKDTree,
                           excluded: np.ndarray) -> np.ndarray:
        q, k, m, _ = cand.shape
        pts = cand.reshape(-1, 3)
        pairs = cKDTree(pts).sparse_distance_matrix(tree, 3.2, output_type="ndarray")
        out = np.zeros(q * k)
        if len(pairs) == 0:
            return out.reshape(q, k)
        p, e, d = pairs["i"], env[pairs["j"]], pairs["v"]
        atom = g.atoms[np.repeat(np.arange(q), k * m), np.tile(np.arange(m), q * k)][p]
        # the residue's own side chain is the candidate itself; its backbone counts beyond 1-4
        own = (self.residue_of[e] == self.residue_of[atom]) & ~self.is_backbone[e]
        lo, hi = np.minimum(atom, e), np.maximum(atom, e)
        excl = np.isin(lo.astype(np.int64) * self.n_atoms + hi, excluded)
        keep = ~own & ~excl
        d0 = self.radius[atom] + self.radius[e] - HBOND_RELIEF * (self.polar[atom] & self.polar[e])
        over = np.clip(d0 - d, 0.0, None) * keep
        np.add.at(out, p // m, (over / CLASH_SIGMA) ** 2)
        return out.reshape(q, k)


_RAMA: dict = {}


def _well_grid(name: str) -> tuple[np.ndarray, np.ndarray]:
    """``(K, min(2, n_chi))`` chi1 x chi2 values (rotamer wells of the training split, each also
    +-15 deg; symmetric ring flips both ways, the two halves sit in different beads) and their
    prior ``-log(population)`` relative to the most common."""
    options, pops = [], []
    n_chi = min(2, len(pg.residue(name)["chis"]))
    for k in range(1, n_chi + 1):
        found = pg.chi_wells(name, k)
        if found is None:
            options.append(np.zeros(1))
            pops.append(np.ones(1))
            continue
        wells, symmetric = found
        mass = pg.well_populations(name, k)
        if symmetric:
            wells, mass = np.r_[wells, wells + math.pi], np.r_[mass, mass] / 2
        options.append((wells[:, None] + WELL_OFFSETS[None]).ravel())
        pops.append(np.repeat(mass, len(WELL_OFFSETS)))
    if not options:
        return np.zeros((1, 0)), np.zeros(1)
    grid = np.array(np.meshgrid(*options, indexing="ij")).reshape(n_chi, -1).T
    prior = -np.log(np.array(np.meshgrid(*pops, indexing="ij")).reshape(n_chi, -1).prod(0))
    return grid, prior - prior.min()


def _rama_potential():
    if RAMA_ALLOWED not in _RAMA:
        _RAMA[RAMA_ALLOWED] = pg.RamachandranPotential(allowed=RAMA_ALLOWED)
    return _RAMA[RAMA_ALLOWED]
