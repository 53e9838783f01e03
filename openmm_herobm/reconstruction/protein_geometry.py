"""Ideal amino-acid geometry and conformational statistics (``protein_geometry.json``).

One home for the facts the fit builds with and the yardstick measures against, all from the
training split (``scripts/build_protein_geometry.py``):

* :func:`residue` - per residue type: heavy atoms, bonds, angles, rigid dihedrals, chi angles,
  and the z-matrix that builds the side chain from N, CA, C and the chi angles;
* :func:`build_side_chains` - that z-matrix, vectorised (NeRF) over residues and candidates;
* :class:`RamachandranPotential` - ``-log`` of the training-split phi/psi density per class
  (general, GLY, PRO, pre-PRO) as a smooth Fourier series, with its derivatives;
* :func:`rama_density` and :func:`chi_wells` - the densities and rotamer wells the quality
  metrics use (outliers: outside the 99.8% Ramachandran contour; off-rotamer: a chi more than
  30 degrees from every well).

Angles are radians in code and degrees in the JSON.  Residue variants (HID, CYX, ASH, ...) use
their standard residue's entry (:func:`standard_name`).
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..chemistry import MODIFIED_STANDARD, VARIANT_STANDARD
from ..geometry import cross, dihedral
from . import _kernels

DATA_FILE = Path(__file__).with_name("protein_geometry.json")
RAMA_CLASSES = ("general", "GLY", "PRO", "prePRO")
#: A between the BB beads of consecutive residues that the CG input bonds (CA-CA is 3.8 A trans,
#: 2.9 A cis; a Martini 3 BB-BB bond is 0.35 nm): chain breaks come from the beads, never from output
#: geometry.  A bead distance, not chemistry.PEPTIDE_BOND_MAX (C-N between atoms).
PEPTIDE_LINK_MAX = 4.6
FOURIER_ORDER = 10  # terms per angle of the Ramachandran potential
#: grid points per angle of the potential's interpolation table (1 deg: E within 2e-6 kT and its
#: gradient within 2e-4 kT/rad of the series, which reach 10 kT and 15 kT/rad)
RAMA_TABLE = 360
RAMA_FLOOR = 1e-4  # density floor (per rad^2) before the log: a bounded penalty far from any region


@lru_cache(maxsize=1)
def data() -> dict:
    return json.loads(DATA_FILE.read_text())


def standard_name(name: str) -> str:
    """The residue whose geometry ``name`` has: variants (HSD -> HIS) and modified residues (MSE -> MET)."""
    return VARIANT_STANDARD.get(name, MODIFIED_STANDARD.get(name, name))


def network_phi_psi(dihedrals: np.ndarray, ca_bead: np.ndarray) -> np.ndarray:
    """The network's (phi, psi) per residue, radians ``(n, 2)``, from its per-bead ``(n_beads, 4)`` output
    (sin phi, cos phi, sin psi, cos psi), read on the bead that holds each residue's CA."""
    d = np.asarray(dihedrals, np.float64)[ca_bead]
    return np.stack([np.arctan2(d[:, 0], d[:, 1]), np.arctan2(d[:, 2], d[:, 3])], axis=1)


def peptide_links(beads: np.ndarray, ca_bead: np.ndarray, consecutive: np.ndarray) -> np.ndarray:
    """Positions i (in a residue list) bonded to i+1: ``consecutive`` in one chain and their BB beads
    (``beads[ca_bead]``, A) closer than :data:`PEPTIDE_LINK_MAX`."""
    bb = np.asarray(beads)[ca_bead]
    close = np.linalg.norm(bb[1:] - bb[:-1], axis=1) < PEPTIDE_LINK_MAX
    return np.flatnonzero(consecutive & close)


def residue(name: str) -> dict | None:
    """The entry of residue type ``name`` (variants map to their standard residue), or None."""
    return data()["residues"].get(standard_name(name))


# --------------------------------------------------------------------------- building

def place(a: np.ndarray, b: np.ndarray, c: np.ndarray, bond, angle, torsion) -> np.ndarray:
    """NeRF: the atom d with |cd| = bond, angle b-c-d and dihedral a-b-c-d (radians), ``(..., 3)``."""
    bc = c - b
    bc = bc / np.linalg.norm(bc, axis=-1, keepdims=True)
    n = cross(b - a, bc)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    m = cross(n, bc)
    bond, angle, torsion = np.asarray(bond), np.asarray(angle), np.asarray(torsion)
    d0 = -bond * np.cos(angle)
    d1 = bond * np.sin(angle) * np.cos(torsion)
    d2 = bond * np.sin(angle) * np.sin(torsion)
    return c + d0[..., None] * bc + d1[..., None] * m + d2[..., None] * n


def side_chain_atoms(name: str) -> list[str]:
    """Side-chain heavy atoms of ``name`` in build order (empty for GLY)."""
    entry = residue(name)
    return [row[0] for row in entry.get("build", [])] if entry else []


def build_side_chains(name: str, n: np.ndarray, ca: np.ndarray, c: np.ndarray, chis: np.ndarray) -> np.ndarray:
    """Side-chain atoms ``(..., m, 3)`` of residues of type ``name`` with ideal geometry.

    ``n, ca, c`` ``(..., 3)`` (any unit of length consistent with Angstrom), ``chis`` ``(..., n_chi)``
    radians; the order of atoms is :func:`side_chain_atoms`."""
    rows = residue(name)["build"]
    shape = np.broadcast_shapes(np.shape(n)[:-1], np.shape(chis)[:-1]) + (3,)
    pos = {"N": np.broadcast_to(n, shape), "CA": np.broadcast_to(ca, shape), "C": np.broadcast_to(c, shape)}
    out = []
    for atom, a, b, cc, bond, angle, chi, offset in rows:
        torsion = math.radians(offset) + (chis[..., chi] if chi is not None else 0.0)
        pos[atom] = place(pos[a], pos[b], pos[cc], bond, math.radians(angle), torsion)
        out.append(pos[atom])
    return np.stack(out, axis=-2)


def chi_angles(name: str, atoms: dict) -> np.ndarray:
    """Chi angles ``(..., n_chi)`` (radians) from ``{atom name: (..., 3)}``."""
    from .least_squares import wrap

    entry = residue(name)
    out = []
    for q in entry["chis"]:
        out.append(wrap(dihedral(*(atoms[a] for a in q))))
    return np.stack(out, axis=-1)


# --------------------------------------------------------------------------- Ramachandran

def rama_class(name: str, next_name: str | None) -> int:
    """Index into :data:`RAMA_CLASSES` of a residue followed by ``next_name``."""
    name = standard_name(name)
    if name in ("GLY", "PRO"):
        return RAMA_CLASSES.index(name)
    return RAMA_CLASSES.index("prePRO" if next_name is not None and standard_name(next_name) == "PRO" else "general")


@lru_cache(maxsize=1)
def rama_density() -> tuple[np.ndarray, np.ndarray]:
    """(densities ``(4, G, G)`` per rad^2 on the phi x psi grid from -180 deg, thresholds ``(4,)`` at
    the 99.8% contour), classes in :data:`RAMA_CLASSES` order."""
    d = data()["rama"]
    return (np.array([d[c]["density"] for c in RAMA_CLASSES]), np.array([d[c]["threshold"] for c in RAMA_CLASSES]))


def grid_lookup(density: np.ndarray, phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """Bilinear periodic lookup of ``(..., G, G)`` grids (first index phi) at radians; ``density``
    may be one grid or one per point (``(k, G, G)`` with ``phi`` ``(k,)``)."""
    g = density.shape[-1]
    u = (np.asarray(phi) + np.pi) / (2 * np.pi) * g - 0.5
    v = (np.asarray(psi) + np.pi) / (2 * np.pi) * g - 0.5
    i0, j0 = np.floor(u).astype(int), np.floor(v).astype(int)
    fu, fv = u - i0, v - j0
    i0, j0 = i0 % g, j0 % g
    i1, j1 = (i0 + 1) % g, (j0 + 1) % g
    if density.ndim == 2:
        pick = lambda i, j: density[i, j]  # noqa: E731
    else:
        k = np.arange(len(density))
        pick = lambda i, j: density[k, i, j]  # noqa: E731
    return ((1 - fu) * (1 - fv) * pick(i0, j0) + fu * (1 - fv) * pick(i1, j0)
            + (1 - fu) * fv * pick(i0, j1) + fu * fv * pick(i1, j1))


def rama_outliers(cls: np.ndarray, phi: np.ndarray, psi: np.ndarray) -> np.ndarray:
    """True where (phi, psi) lies outside the 99.8% contour of its class's training density."""
    density, threshold = rama_density()
    return grid_lookup(density[cls], phi, psi) < threshold[cls]


class RamachandranPotential:
    """``E(phi, psi) = max(0, -log(p + floor) - level)`` per class (kT): a truncated 2-D Fourier series
    of the smoothed training density, zero inside the region that holds ``allowed`` of the training
    residues (so it never bends a backbone that real proteins have), rising outside it; callable as
    ``(cls, phi, psi) -> (E, dE/dphi, dE/dpsi)``."""

    def __init__(self, order: int = FOURIER_ORDER, allowed: float = 0.98):
        density, _ = rama_density()
        g = density.shape[-1]
        energy = -np.log(density + RAMA_FLOOR)
        coef = np.fft.fft2(energy) / (g * g)
        k = np.fft.fftfreq(g) * g
        keep = np.abs(k) <= order
        self.m = k[keep].astype(int)  # frequencies (the same for phi and psi)
        # grid index i sits at -pi + (i + 1/2) 2 pi / g: E(t) = sum_k c_k exp(-i pi k / g) exp(i k (t + pi))
        phase = np.exp(-1j * np.pi * self.m / g)
        self.coef = coef[:, keep][:, :, keep] * phase[:, None] * phase[None, :]  # (4, M, M)
        # sample on the grid centres to set the minimum to 0
        centres = -np.pi + (np.arange(g) + 0.5) * 2 * np.pi / g
        pp, ss = np.meshgrid(centres, centres, indexing="ij")
        self.offset = np.zeros(len(density))
        cell = (2 * np.pi / g) ** 2
        for c in range(len(density)):
            # the density level that encloses `allowed` of the probability mass
            p = np.sort(density[c].ravel())[::-1]
            level = p[min(np.searchsorted(np.cumsum(p) * cell, allowed), len(p) - 1)]
            self.offset[c] = -np.log(level + RAMA_FLOOR)
        # the series and its derivatives tabulated, interpolated bicubically (Hermite) per call: a fit
        # evaluates the potential ~70 times per frame, and the series' 21 x 21 complex terms per
        # residue were 7% of a frame's fit
        self.table = self._table(RAMA_TABLE)

    def _table(self, n: int) -> np.ndarray:
        """``(classes, n, n, 4)``: E, dE/dphi, dE/dpsi, d2E/dphi dpsi of the series at phi, psi =
        -pi + (i, j) 2 pi / n."""
        t = -np.pi + np.arange(n) * 2 * np.pi / n
        wave = np.exp(1j * np.outer(t + np.pi, self.m))  # exp(i m (t + pi)) (n, M)
        slope = wave * (1j * self.m)
        out = np.empty((len(self.coef), n, n, 4))
        for c, coef in enumerate(self.coef):
            along, turned = wave @ coef, slope @ coef
            out[c, :, :, 0] = (along @ wave.T).real
            out[c, :, :, 1] = (turned @ wave.T).real
            out[c, :, :, 2] = (along @ slope.T).real
            out[c, :, :, 3] = (turned @ slope.T).real
        return out

    def __call__(self, cls, phi, psi):
        cls = np.asarray(cls)
        e, dphi, dpsi = _kernels.periodic_bicubic(self.table, np.ascontiguousarray(cls, np.int64),
                                                  np.ascontiguousarray(phi, float), np.ascontiguousarray(psi, float))
        e = e - self.offset[cls]
        inside = e <= 0.0
        return np.where(inside, 0.0, e), np.where(inside, 0.0, dphi), np.where(inside, 0.0, dpsi)


# --------------------------------------------------------------------------- rotamers

@lru_cache(maxsize=None)
def chi_wells(name: str, k: int) -> tuple[np.ndarray, bool] | None:
    """(well centres of chi ``k`` (1 or 2) in radians, symmetric) for residue ``name``; None if it has none."""
    entry = data()["rotamers"].get(standard_name(name))
    if entry is None or f"chi{k}_wells" not in entry:
        return None
    return np.radians([w[0] for w in entry[f"chi{k}_wells"]]), bool(entry[f"chi{k}_symmetric"])


def well_populations(name: str, k: int) -> np.ndarray:
    """Population (fraction within +-30 deg) of each well of chi ``k``, in :func:`chi_wells` order."""
    return np.array([w[1] for w in data()["rotamers"][standard_name(name)][f"chi{k}_wells"]])


def nearest_well(name: str, k: int, chi: np.ndarray) -> np.ndarray:
    """``chi`` (radians) moved to the centre of its nearest well of chi ``k`` (unchanged without wells)."""
    from .least_squares import wrap

    found = chi_wells(name, k)
    if found is None:
        return np.asarray(chi)
    wells, symmetric = found
    period = 2 if symmetric else 1
    delta = wrap(period * (np.asarray(chi)[..., None] - wells)) / period
    pick = np.take_along_axis(delta, np.abs(delta).argmin(-1)[..., None], -1)[..., 0]
    return np.asarray(chi) - pick


def distance_to_wells(name: str, k: int, chi: np.ndarray) -> np.ndarray:
    """Smallest angular distance (radians) of ``chi`` values to the wells of chi ``k``."""
    from .least_squares import wrap

    wells, symmetric = chi_wells(name, k)
    d = np.asarray(chi)[..., None] - wells
    d = np.abs(wrap(2 * d)) / 2 if symmetric else np.abs(wrap(d))
    return d.min(-1)
