"""Backbone optimisation (paper, Appendix A) as OpenMM custom forces.

Flat-bottom terms: ``E = k * max(0, |x - x0| - tol)^2`` on backbone bond lengths, bond
angles and the peptide torsion omega (180 deg; 0 deg kept only for a proline whose
predicted omega is already cis), then, in a second pass, on phi and psi steered to the
network's predicted dihedrals.  CA atoms and side chains are held fixed (zero mass), so
only N, C and O move: the secondary structure is repaired without touching the CA trace
that the CG input pins down.  O is kept in the peptide plane by O-C-N-CA(i+1) = 0 deg.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from ..chemistry import BACKBONE_ANGLES, BACKBONE_BONDS, CB_ANGLES
from ..geometry import dihedral

# Engh & Huber ideal values (nm, degrees) and the tolerances of the flat bottom.  round(): the
# nm values are the decimal ones (1.458 / 10 is not the double nearest 0.1458)
BONDS = {k: round(v / 10, 4) for k, v in BACKBONE_BONDS.items()}
# the CB angles keep N and C on their side of the (fixed) CB: no CA inversion
ANGLES = {**BACKBONE_ANGLES, **CB_ANGLES}
BOND_TOL, ANGLE_TOL, OMEGA_TOL, RAMA_TOL = 0.002, 3.0, 5.0, 15.0
K_BOND, K_ANGLE, K_TORSION, K_RAMA = 2.0e5, 500.0, 200.0, 50.0

_FLAT_TORSION = ("k * step(d - tol) * (d - tol)^2; d = abs(atan2(sin(theta - theta0), cos(theta - theta0)))")


@dataclass
class BackboneResult:
    positions: np.ndarray  # (n_atoms, 3) nm
    n_omega_fixed: int
    energy_before: float
    energy_after: float


def _backbone_index(topology: app.Topology):
    """Per residue: dict atom name -> index, and whether residue i+1 follows across a peptide bond."""
    residues = list(topology.residues())
    atoms = [{a.name: a.index for a in r.atoms()} for r in residues]
    bonded = set()
    for a, b in topology.bonds():
        if {a.name, b.name} == {"C", "N"} and a.residue.index != b.residue.index:
            i, j = sorted((a.residue.index, b.residue.index))
            bonded.add(i)
    return residues, atoms, bonded


def optimise_backbone(topology: app.Topology, positions_nm: np.ndarray, phi_psi: np.ndarray | None,
                      platform: mm.Platform | None = None, iterations: int = 500) -> BackboneResult:
    """Optimised positions (nm) of the backbone N, C, O; everything else fixed.

    ``phi_psi`` ``(n_residues, 2)`` radians (NaN where unknown) steers the second pass;
    None skips it.
    """
    residues, atoms, bonded = _backbone_index(topology)
    n = topology.getNumAtoms()
    system = mm.System()
    movable = np.zeros(n, bool)
    for res in atoms:
        for name in ("N", "C", "O"):
            if name in res:
                movable[res[name]] = True
    for i in range(n):
        system.addParticle(1.0 if movable[i] else 0.0)  # zero mass = fixed

    bond = mm.CustomBondForce("k * step(d - tol) * (d - tol)^2; d = abs(r - r0)")
    angle = mm.CustomAngleForce("k * step(d - tol) * (d - tol)^2; d = abs(theta - theta0)")
    for p in ("r0", "tol", "k"):
        bond.addPerBondParameter(p)
    for p in ("theta0", "tol", "k"):
        angle.addPerAngleParameter(p)
    torsion = mm.CustomTorsionForce(_FLAT_TORSION)
    for p in ("theta0", "tol", "k"):
        torsion.addPerTorsionParameter(p)
    rama = mm.CustomTorsionForce(_FLAT_TORSION.replace("k *", "k_rama * k *"))
    rama.addGlobalParameter("k_rama", 0.0)
    for p in ("theta0", "tol", "k"):
        rama.addPerTorsionParameter(p)

    def index(i: int, name: str):
        if name.startswith("+"):
            return atoms[i + 1].get(name[1:]) if i in bonded else None
        return atoms[i].get(name)

    pos = np.asarray(positions_nm, dtype=np.float64)
    n_omega_fixed = 0
    for i in range(len(residues)):
        for names, r0 in BONDS.items():
            idx = [index(i, nm) for nm in names]
            if None not in idx:
                bond.addBond(*idx, [r0, BOND_TOL, K_BOND])
        for names, theta0 in ANGLES.items():
            idx = [index(i, nm) for nm in names]
            if None not in idx:
                angle.addAngle(*idx, [math.radians(theta0), math.radians(ANGLE_TOL), K_ANGLE])
        omega_idx = [index(i, nm) for nm in ("CA", "C", "+N", "+CA")]
        if None not in omega_idx:
            current = float(dihedral(*pos[omega_idx]))
            cis_pro = residues[i + 1].name == "PRO" and abs(current) < math.pi / 2
            target = 0.0 if cis_pro else math.pi
            n_omega_fixed += int(not cis_pro and abs(current) < math.pi / 2)
            torsion.addTorsion(*omega_idx, [target, math.radians(OMEGA_TOL), K_TORSION])
            o_idx = [index(i, nm) for nm in ("O", "C", "+N", "+CA")]
            if None not in o_idx:
                torsion.addTorsion(*o_idx, [math.pi if cis_pro else 0.0, math.radians(OMEGA_TOL), K_TORSION])
        if phi_psi is not None:
            phi_idx = [index(i - 1, "C") if i - 1 in bonded else None, index(i, "N"), index(i, "CA"), index(i, "C")]
            psi_idx = [index(i, "N"), index(i, "CA"), index(i, "C"), index(i, "+N")]
            for idx, target in ((phi_idx, phi_psi[i, 0]), (psi_idx, phi_psi[i, 1])):
                if None not in idx and np.isfinite(target):
                    rama.addTorsion(*idx, [float(target), math.radians(RAMA_TOL), K_RAMA])
    for force in (bond, angle, torsion, rama):
        system.addForce(force)

    integrator = mm.VerletIntegrator(0.001)
    context = mm.Context(system, integrator, platform or mm.Platform.getPlatformByName("Reference"))
    context.setPositions(pos)
    before = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    mm.LocalEnergyMinimizer.minimize(context, 1.0, iterations)  # pass 1: bonds, angles, omega
    if phi_psi is not None and rama.getNumTorsions():
        context.setParameter("k_rama", 1.0)
        mm.LocalEnergyMinimizer.minimize(context, 1.0, iterations)  # pass 2: steer phi/psi
        context.setParameter("k_rama", 0.0)
    state = context.getState(getPositions=True, getEnergy=True)
    after = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    new = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    new[~movable] = pos[~movable]  # exact: fixed atoms never move
    return BackboneResult(new, n_omega_fixed, before, after)
