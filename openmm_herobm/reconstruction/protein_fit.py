"""Protein fit: make a reconstructed protein agree with its beads and with ideal geometry.

The network places each residue's atoms from the beads around it, one bead at a time, so
nothing forces neighbouring residues to agree on the peptide plane they share; and a
Martini 3 BB bead is the mass centre of exactly N, CA, C and O, a constraint the network
only learns approximately.  Two fits follow it, per frame (L-BFGS in torch, Angstrom):

1. :class:`BackboneFit` moves N, CA, C, O to minimise

   * ``K_BEAD * sum |W_b x - b|^2`` over every bead that holds backbone atoms (the CG input),
   * ``K_BOND * (d - d0)^2`` and ``K_ANGLE * (theta - theta0)^2`` (Engh & Huber, peptide bond included),
   * ``K_OMEGA * (1 + cos omega)`` (trans; cis kept only for a proline the network predicts cis),
   * ``K_RAMA * (1 - cos(phi - phi_net))`` and the same for psi (the network's predicted dihedrals),
   * ``K_PRIOR * |x - x_net|^2`` (stay in the network's basin),

   with CB at its ideal tetrahedral (L) position on N, CA, C; then the side-chain atoms are
   shifted so that their beads coincide with the input again.  Peptide bonds are only
   assumed between consecutive residues of a chain whose BB beads are closer than
   ``protein_geometry.PEPTIDE_LINK_MAX``, so real chain breaks stay open.
2. :class:`SideChainFit` refits the side chains whose beads pin them down to their beads,
   ideal bonds, angles and rigid dihedrals (``side_chain_geometry.json``).

Both stop after a few dozen iterations: on validation chains that measured better than
running to convergence (the network's prior keeps more weight).  Test split numbers are in
BENCHMARKS.md.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ..chemistry import BACKBONE, BACKBONE_ANGLES, BACKBONE_BONDS
from ..geometry_torch import angle, dihedral, ideal_cb, signed_volume
from .hierarchical import bead_subset, recenter
from .protein_geometry import network_phi_psi, peptide_links

# Engh & Huber ideal bond lengths (A) and angles (degrees), keyed "N-CA"; "+" = atom of residue i+1
BOND = {"-".join(k): v for k, v in BACKBONE_BONDS.items()}
ANGLE = {"-".join(k): v for k, v in BACKBONE_ANGLES.items()}
K_BEAD, K_PRIOR, K_BOND, K_ANGLE, K_OMEGA, K_RAMA = 1000.0, 0.3, 100.0, 50.0, 20.0, 3.0
ITERATIONS = 80


def _minimise(energy, variable: torch.Tensor, iterations: int) -> None:
    """At most ``iterations`` L-BFGS steps (strong Wolfe line search) on ``energy(variable)``, in place."""
    optimiser = torch.optim.LBFGS([variable], lr=1.0, max_iter=iterations, line_search_fn="strong_wolfe",
                                  tolerance_grad=1e-6, tolerance_change=1e-10, history_size=20)

    def closure():
        optimiser.zero_grad()
        e = energy(variable)
        e.backward()
        return e

    with torch.enable_grad():
        optimiser.step(closure)


class BackboneFit:
    """The fit for one system (a :class:`~openmm_herobm.mapping.SystemMapping`); call it per frame.

    Only residues with N, CA and C atoms and a bead holding CA take part; a system without
    any (lipids, ligands) makes an empty fit that returns its input unchanged.
    """

    def __init__(self, system):
        top = system.aa_topology
        names = [a.name for a in top.atoms]
        residue_of = np.array([a.residue.index for a in top.atoms])
        per_res = [dict() for _ in range(top.n_residues)]
        for i, (name, r) in enumerate(zip(names, residue_of)):
            per_res[r].setdefault(name, i)
        weights = system.weights.tocoo()
        bead_of_atom = {}
        for row, col in zip(weights.row, weights.col):
            bead_of_atom.setdefault(col, row)
        keep = [r for r, atoms in enumerate(per_res)
                if all(n in atoms for n in ("N", "CA", "C")) and atoms["CA"] in bead_of_atom]
        self.n_atoms = len(names)
        self.n_fitted = len(keep)
        self.empty = not keep
        if self.empty:
            return
        chain = np.array([top.residue(r).chain.index for r in keep])
        index = {n: np.array([per_res[r].get(n, -1) for r in keep]) for n in BACKBONE + ("CB",)}
        self.ca_bead = np.array([bead_of_atom[per_res[r]["CA"]] for r in keep])
        self.consecutive = (chain[1:] == chain[:-1]) & (np.diff(np.array(keep)) == 1)
        self.index = {n: torch.as_tensor(v) for n, v in index.items()}

        backbone = np.concatenate([v[v >= 0] for n, v in index.items() if n != "CB"])
        self.moving = torch.as_tensor(np.sort(backbone))
        has_cb = index["CB"] >= 0
        self.cb_res = torch.as_tensor(np.flatnonzero(has_cb))
        self.cb_atom = torch.as_tensor(index["CB"][has_cb])
        # other atoms of beads that hold backbone atoms (e.g. OXT) ride along with their C
        is_backbone = np.zeros(self.n_atoms, bool)
        is_backbone[backbone] = True
        backbone_bead = np.zeros(system.weights.shape[0], bool)
        backbone_bead[weights.row[is_backbone[weights.col]]] = True
        placed = is_backbone.copy()  # by the fit: backbone atoms and the ideal CB
        placed[index["CB"][has_cb]] = True
        res_pos = {r: k for k, r in enumerate(keep)}
        riders = sorted({c for row, c in zip(weights.row, weights.col)
                         if backbone_bead[row] and not placed[c] and residue_of[c] in res_pos})
        self.rider_atom = torch.as_tensor(np.array(riders, np.int64))
        self.rider_c = torch.as_tensor(np.array([index["C"][res_pos[residue_of[c]]] for c in riders], np.int64))

        rows = weights.row
        on_bb = backbone_bead[rows]
        self.bead_rows = torch.as_tensor(np.searchsorted(np.flatnonzero(backbone_bead), rows[on_bb]))
        self.bead_cols = torch.as_tensor(weights.col[on_bb])
        self.bead_vals = torch.as_tensor(weights.data[on_bb], dtype=torch.float64)
        self.backbone_beads = torch.as_tensor(np.flatnonzero(backbone_bead))
        self.n_backbone_beads = int(backbone_bead.sum())
        # side-chain beads: shifted afterwards with the backbone atoms' share held fixed
        side = ~on_bb
        self.side_rows = torch.as_tensor(rows[side])
        self.side_cols = torch.as_tensor(weights.col[side])
        self.side_vals = torch.as_tensor(weights.data[side], dtype=torch.float64)
        self.side_atoms = torch.as_tensor(np.unique(weights.col[side]))
        self.n_beads = system.weights.shape[0]
        self.is_pro = np.array([top.residue(r).name == "PRO" for r in keep])
        # side-chain atoms (not N, CA, C, O) of the fitted residues and their residue position
        side_atom = np.flatnonzero(np.isin(residue_of, keep) & ~is_backbone)
        self.side_atom_index = torch.as_tensor(side_atom)
        self.side_atom_residue = torch.as_tensor(np.searchsorted(np.array(keep), residue_of[side_atom]))

    def keep_l(self, xyz: np.ndarray) -> np.ndarray:
        """``xyz`` with the side chain shifted so that CB sits on its ideal place wherever the
        side-chain bead dragged CB through the N-CA-C plane (a D centre: the backbone is wrong
        there, not the bead; a later stereo repair by reflection would throw the side chain away)."""
        x = torch.as_tensor(np.asarray(xyz, np.float64))
        n, ca, c = (x[self.index[k][self.cb_res]] for k in ("N", "CA", "C"))
        cb = x[self.cb_atom]
        ideal = ideal_cb(n, ca, c)
        wrong = torch.sign(signed_volume(ca, cb, n, c)) != torch.sign(signed_volume(ca, ideal, n, c))
        if not wrong.any():
            return xyz
        # the whole side chain moves with its CB, so ILE/THR CB centres keep their handedness
        shift = torch.zeros(self.n_fitted, 3, dtype=x.dtype)
        shift[self.cb_res[wrong]] = (ideal - cb)[wrong]
        atoms = self.side_atom_index
        x = x.index_put((atoms,), x[atoms] + shift[self.side_atom_residue])
        return x.numpy().astype(np.asarray(xyz).dtype)

    def phi_psi(self, dihedrals: np.ndarray) -> np.ndarray:
        """The network's (phi, psi) per fitted residue, radians."""
        return network_phi_psi(dihedrals, self.ca_bead)

    def links(self, beads: np.ndarray) -> np.ndarray:
        """Residue positions i (in the fitted residues) bonded to i+1 in this frame."""
        return peptide_links(beads, self.ca_bead, self.consecutive)

    def __call__(self, xyz: np.ndarray, beads: np.ndarray, phi_psi: np.ndarray | None = None,
                 iterations: int = ITERATIONS) -> np.ndarray:
        """Fitted copy of ``xyz`` ``(n_atoms, 3)``, Angstrom; ``beads`` ``(n_beads, 3)`` A;
        ``phi_psi`` ``(n_fitted_residues, 2)`` radians from the network, NaN where unknown."""
        if self.empty:
            return xyz
        x0 = torch.as_tensor(np.asarray(xyz, np.float64))
        b = torch.as_tensor(np.asarray(beads, np.float64))
        link = torch.as_tensor(self.links(np.asarray(beads)))
        ix = self.index
        N, CA, C, O = ix["N"], ix["CA"], ix["C"], ix["O"]

        def at(name: str, shift: int) -> torch.Tensor:
            return ix[name][link + shift]

        omega0 = dihedral(x0[at("CA", 0)], x0[at("C", 0)], x0[at("N", 1)], x0[at("CA", 1)])
        cis = torch.as_tensor(self.is_pro)[link + 1] & (omega0.abs() < math.pi / 2)
        omega_sign = torch.where(cis, -1.0, 1.0).to(torch.float64)  # energy 1 + sign * cos(omega)
        has_o = O >= 0
        o_res = torch.nonzero(has_o).squeeze(-1)
        o_link = link[has_o[link]]  # peptides whose residue i has its O
        rad = {k: math.radians(v) for k, v in ANGLE.items()}
        rama = None
        if phi_psi is not None:
            target = torch.as_tensor(np.asarray(phi_psi, np.float64))
            rama = (target[link + 1, 0], target[link, 1])

        moving = self.moving
        start = x0[moving].clone()
        variable = start.clone().requires_grad_(True)

        def assemble(v: torch.Tensor) -> torch.Tensor:
            x = x0.index_put((moving,), v)
            cb = ideal_cb(x[N[self.cb_res]], x[CA[self.cb_res]], x[C[self.cb_res]])
            x = x.index_put((self.cb_atom,), cb)
            if self.rider_atom.numel():
                x = x.index_put((self.rider_atom,), x0[self.rider_atom] + (x - x0)[self.rider_c])
            return x

        def energy(v: torch.Tensor) -> torch.Tensor:
            x = assemble(v)
            mapped = torch.zeros(self.n_backbone_beads, 3, dtype=x.dtype).index_add_(
                0, self.bead_rows, x[self.bead_cols] * self.bead_vals.unsqueeze(1))
            e = K_BEAD * (mapped - b[self.backbone_beads]).pow(2).sum()
            e = e + K_PRIOR * (v - start).pow(2).sum()
            e = e + K_BOND * ((x[N] - x[CA]).norm(dim=-1) - BOND["N-CA"]).pow(2).sum()
            e = e + K_BOND * ((x[CA] - x[C]).norm(dim=-1) - BOND["CA-C"]).pow(2).sum()
            e = e + K_BOND * ((x[C[o_res]] - x[O[o_res]]).norm(dim=-1) - BOND["C-O"]).pow(2).sum()
            e = e + K_ANGLE * (angle(x[N], x[CA], x[C]) - rad["N-CA-C"]).pow(2).sum()
            e = e + K_ANGLE * (angle(x[CA[o_res]], x[C[o_res]], x[O[o_res]]) - rad["CA-C-O"]).pow(2).sum()
            if link.numel():
                e = e + K_BOND * ((x[at("C", 0)] - x[at("N", 1)]).norm(dim=-1) - BOND["C-+N"]).pow(2).sum()
                e = e + K_ANGLE * (angle(x[at("CA", 0)], x[at("C", 0)], x[at("N", 1)]) - rad["CA-C-+N"]).pow(2).sum()
                e = e + K_ANGLE * (angle(x[at("C", 0)], x[at("N", 1)], x[at("CA", 1)]) - rad["C-+N-+CA"]).pow(2).sum()
                e = e + K_ANGLE * (angle(x[O[o_link]], x[C[o_link]], x[N[o_link + 1]]) - rad["O-C-+N"]).pow(2).sum()
                omega = dihedral(x[at("CA", 0)], x[at("C", 0)], x[at("N", 1)], x[at("CA", 1)])
                e = e + K_OMEGA * (1.0 + omega_sign * torch.cos(omega)).sum()
                if rama is not None:
                    phi = dihedral(x[at("C", 0)], x[at("N", 1)], x[at("CA", 1)], x[at("C", 1)])
                    psi = dihedral(x[at("N", 0)], x[at("CA", 0)], x[at("C", 0)], x[at("N", 1)])
                    for value, want in ((phi, rama[0]), (psi, rama[1])):
                        known = torch.isfinite(want)
                        e = e + K_RAMA * (1.0 - torch.cos(value[known] - want[known])).sum()
            return e

        _minimise(energy, variable, iterations)
        x = assemble(variable.detach())
        if not torch.isfinite(x).all():  # never hand back a broken frame: keep the network's
            return np.asarray(xyz)
        if self.side_atoms.numel():
            fixed = torch.isin(self.side_cols, moving)  # backbone atoms that a side bead shares
            share = torch.zeros(self.n_beads, 3, dtype=x.dtype).index_add_(
                0, self.side_rows[fixed], x[self.side_cols[fixed]] * self.side_vals[fixed].unsqueeze(1))
            free = ~fixed
            shifted = recenter(x.unsqueeze(0), (b - share).unsqueeze(0), self.side_rows[free],
                               self.side_cols[free], self.side_vals[free], 30)[0]
            side = self.side_atoms[~torch.isin(self.side_atoms, moving)]
            x = x.index_put((side,), shifted[side])
        return x.numpy().astype(np.asarray(xyz).dtype)


# Side chains whose beads and ideal geometry pin the conformation down (one Martini bead
# over <= 2 free torsions, or rings): fitted.  Carboxylates, amides, MET and ARG keep the
# network's positions (shifted onto their beads): a bead is blind to their last torsion,
# and a fitted, physical conformer is further from the truth on average than the
# network's mean (measured on validation chains, BENCHMARKS.md).
FITTED_SIDE_CHAINS = ("CYS", "HIS", "ILE", "LEU", "LYS", "PHE", "PRO", "SER", "THR", "TRP", "TYR", "VAL")
# starts of the side-chain fit: the network's side chain turned about CA-CB by these (chi1 wells)
CHI1_STARTS = (0.0, 120.0, 240.0)
K_SIDE_BEAD, K_SIDE_PRIOR, K_SIDE_DIHEDRAL = 1000.0, 0.3, 50.0
SIDE_ITERATIONS = 40
POLISH_ITERATIONS = 20  # after the per-residue choice of start
BLEND_POLISH_ITERATIONS, BLEND_POLISH_PRIOR = 20, 30.0  # geometry after the library blend (chosen on validation)
GEOMETRY_FILE = Path(__file__).with_name("side_chain_geometry.json")


@lru_cache(maxsize=1)
def side_chain_geometry() -> dict:
    """Ideal side-chain bonds, angles and rigid dihedrals (``scripts/build_side_chain_geometry.py``)."""
    return json.loads(GEOMETRY_FILE.read_text())["residues"]


class SideChainFit:
    """Fit side chains of :data:`FITTED_SIDE_CHAINS` to their beads with ideal geometry; backbone fixed.

    Energy (Angstrom): ``K_SIDE_BEAD * |W_b x - b|^2`` over the side-chain beads, ideal bonds and
    angles, ``K_SIDE_DIHEDRAL * (1 - cos(t - t0))`` over rigid dihedrals (rings, planar groups,
    and the impropers that fix the handedness at CA, ILE CB and THR CB), and
    ``K_SIDE_PRIOR * |x - x_net|^2``.  Run from each of :data:`CHI1_STARTS`; every residue
    keeps the start whose fit matches its beads best, then one more fit polishes the choice.
    """

    def __init__(self, system, residues: tuple[str, ...] = FITTED_SIDE_CHAINS):
        top = system.aa_topology
        table = side_chain_geometry()
        bonds, angles, dihedrals, moving, axes, rotating, rotating_axis = [], [], [], [], [], [], []
        for res in top.residues:
            geometry = table.get(res.name)
            if geometry is None or res.name not in residues:
                continue
            atom = {a.name: a.index for a in res.atoms}
            if not {"N", "CA", "C", "CB"} <= set(atom):
                continue
            side = [i for n, i in atom.items() if n not in BACKBONE]
            moving.extend(side)
            turned = [i for n, i in atom.items() if n not in BACKBONE and n != "CB"]
            rotating.extend(turned)
            rotating_axis.extend([len(axes)] * len(turned))
            axes.append((atom["CA"], atom["CB"]))
            for *names, value in geometry["bonds"]:
                if all(n in atom for n in names):
                    bonds.append(([atom[n] for n in names], value))
            for *names, value in geometry["angles"]:
                if all(n in atom for n in names):
                    angles.append(([atom[n] for n in names], math.radians(value)))
            for *names, value, _spread in geometry["dihedrals"]:
                if all(n in atom for n in names):
                    dihedrals.append(([atom[n] for n in names], math.radians(value)))
        self.empty = not moving
        if self.empty:
            return
        self.moving = torch.as_tensor(np.array(sorted(moving)))
        self.bond_atoms = torch.as_tensor(np.array([b for b, _ in bonds]).reshape(-1, 2))
        self.bond_length = torch.as_tensor([v for _, v in bonds], dtype=torch.float64)
        self.angle_atoms = torch.as_tensor(np.array([a for a, _ in angles]).reshape(-1, 3))
        self.angle_value = torch.as_tensor([v for _, v in angles], dtype=torch.float64)
        self.dihedral_atoms = torch.as_tensor(np.array([d for d, _ in dihedrals]).reshape(-1, 4))
        self.dihedral_value = torch.as_tensor([v for _, v in dihedrals], dtype=torch.float64)
        self.axes = np.array(axes)  # (n_residues_fitted, 2): CA, CB
        self.rotating = np.array(rotating, np.int64)  # atoms beyond CB ...
        self.rotating_axis = np.array(rotating_axis, np.int64)  # ... and the row of self.axes they turn about
        weights = system.weights.tocoo()
        is_moving = np.zeros(top.n_atoms, bool)
        is_moving[self.moving.numpy()] = True
        beads = np.unique(weights.row[is_moving[weights.col]])
        self.bead_index, self.rows, self.cols, self.vals = bead_subset(weights, beads)
        residue_of = np.array([a.residue.index for a in top.atoms])
        self.bead_residue = torch.as_tensor(residue_of[self.cols.numpy()][np.unique(self.rows.numpy(), return_index=True)[1]])
        self.atom_residue = residue_of
        self.n_residues = top.n_residues

    def _rotated(self, xyz: np.ndarray, degrees: float) -> np.ndarray:
        """``xyz`` with every fitted side chain turned about its CA-CB axis (Rodrigues)."""
        if degrees == 0.0:
            return xyz
        out = xyz.copy()
        t = math.radians(degrees)
        k = xyz[self.axes[:, 1]] - xyz[self.axes[:, 0]]
        k = (k / np.linalg.norm(k, axis=1, keepdims=True))[self.rotating_axis]
        cb = xyz[self.axes[self.rotating_axis, 1]]
        v = xyz[self.rotating] - cb
        out[self.rotating] = (cb + v * math.cos(t) + np.cross(k, v) * math.sin(t)
                              + k * (v * k).sum(1, keepdims=True) * (1.0 - math.cos(t)))
        return out

    def _fit(self, x0: torch.Tensor, starts: torch.Tensor, b: torch.Tensor, iterations: int,
             prior: float = K_SIDE_PRIOR):
        """Fit ``S`` starting structures ``(S, n_atoms, 3)`` at once (their energies add, and no
        term couples two of them); returns them fitted and the bead misfit per start and residue."""
        moving = self.moving
        x_prior = x0[moving]
        variable = starts[:, moving].clone().requires_grad_(True)
        base = x0.expand(starts.shape[0], -1, -1)

        def place(v: torch.Tensor) -> torch.Tensor:
            return base.index_put((torch.arange(v.shape[0]).unsqueeze(1), moving.unsqueeze(0)), v)

        def mapped_beads(x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], len(self.bead_index), 3, dtype=x.dtype).index_add_(
                1, self.rows, x[:, self.cols] * self.vals.unsqueeze(1))

        def energy(v: torch.Tensor) -> torch.Tensor:
            x = place(v)
            e = K_SIDE_BEAD * (mapped_beads(x) - b).pow(2).sum() + prior * (v - x_prior).pow(2).sum()
            i, j = self.bond_atoms.unbind(1)
            e = e + K_BOND * ((x[:, i] - x[:, j]).norm(dim=-1) - self.bond_length).pow(2).sum()
            i, j, k = self.angle_atoms.unbind(1)
            e = e + K_ANGLE * (angle(x[:, i], x[:, j], x[:, k]) - self.angle_value).pow(2).sum()
            i, j, k, m = self.dihedral_atoms.unbind(1)
            twist = dihedral(x[:, i], x[:, j], x[:, k], x[:, m]) - self.dihedral_value
            return e + K_SIDE_DIHEDRAL * (1.0 - torch.cos(twist)).sum()

        _minimise(energy, variable, iterations)
        x = place(variable.detach())
        per_bead = (mapped_beads(x) - b).pow(2).sum(-1)
        misfit = torch.zeros(x.shape[0], self.n_residues, dtype=x.dtype).index_add_(1, self.bead_residue, per_bead)
        return x, misfit.numpy()

    def __call__(self, xyz: np.ndarray, beads: np.ndarray, iterations: int = SIDE_ITERATIONS) -> np.ndarray:
        """Fitted copy of ``xyz`` ``(n_atoms, 3)`` A; ``beads`` ``(n_beads, 3)`` A."""
        if self.empty:
            return xyz
        x0 = torch.as_tensor(np.asarray(xyz, np.float64))
        b = torch.as_tensor(np.asarray(beads, np.float64))[self.bead_index]
        starts = torch.as_tensor(np.stack([self._rotated(x0.numpy(), d) for d in CHI1_STARTS]))
        fitted, misfit = self._fit(x0, starts, b, iterations)
        best = misfit.argmin(axis=0)  # per residue: the start that matches its beads best
        chosen = fitted[torch.as_tensor(best[self.atom_residue]), torch.arange(x0.shape[0])]
        return self.polish(xyz, beads, POLISH_ITERATIONS, start=chosen)

    def polish(self, xyz: np.ndarray, beads: np.ndarray, iterations: int = POLISH_ITERATIONS,
               prior: float = K_SIDE_PRIOR, start: torch.Tensor | None = None) -> np.ndarray:
        """``xyz`` fitted from ``start`` (default: where it is; no chi1 starts), ``prior`` the
        weight that keeps it near ``xyz``; ``xyz`` itself if the fit goes non-finite."""
        if self.empty:
            return xyz
        x0 = torch.as_tensor(np.asarray(xyz, np.float64))
        b = torch.as_tensor(np.asarray(beads, np.float64))[self.bead_index]
        x = self._fit(x0, (x0 if start is None else start).unsqueeze(0), b, iterations, prior)[0][0]
        if not torch.isfinite(x).all():
            return np.asarray(xyz)
        return x.numpy().astype(np.asarray(xyz).dtype)


class ProteinFit:
    """:class:`BackboneFit`, :class:`SideChainFit`, then (with a library) :class:`SideChainBlend`:
    what ``backmap(..., fit=True)`` runs per frame."""

    def __init__(self, system, library=None):
        from .side_chain_library import SideChainBlend

        self.backbone = BackboneFit(system)
        self.side_chains = SideChainFit(system)
        blend = SideChainBlend(system, library) if library is not None else None
        self.blend = None if blend is None or blend.empty else blend
        if self.blend is not None:
            # the blend averages conformers (bonds come out short): restore ideal geometry near it
            self.blend_polish = SideChainFit(system, residues=tuple(self.blend.groups))
        self.empty = self.backbone.empty and self.side_chains.empty and self.blend is None

    def __call__(self, xyz: np.ndarray, beads: np.ndarray, dihedrals: np.ndarray | None = None) -> np.ndarray:
        """Fitted ``xyz`` ``(n_atoms, 3)`` A from the network's atoms, the beads (A) and its dihedrals."""
        if not self.backbone.empty:
            phi_psi = None if dihedrals is None else self.backbone.phi_psi(dihedrals)
            xyz = self.backbone(xyz, beads, phi_psi)
        xyz = self.side_chains(xyz, beads)
        if self.blend is not None:
            xyz = self.blend_polish.polish(self.blend(xyz, beads), beads, BLEND_POLISH_ITERATIONS, BLEND_POLISH_PRIOR)
        return xyz if self.backbone.empty else self.backbone.keep_l(xyz)
