"""Explicit solvent around a refined solute: keep water out of bilayers, hold the solute while water relaxes.

``Modeller.addSolvent`` fills every void of the box, the hydrophobic core of a lipid
bilayer included (there are always a few, and more where a lipid without a model was
left out).  :func:`clear_bilayer_core` removes those waters and moves any ion that landed
there into bulk water, so the system is neutral as built.
"""

from __future__ import annotations

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

HOLD_FORCE = "HEroBM solute hold"
HOLD_PARAMETER = "k_solute_hold"
HOLD_K = 1.0e4  # kJ/mol/nm^2 on every solute atom while the water relaxes
SOLVENT_ITERATIONS = 1000  # L-BFGS iterations per pass over a solvated system (bounded cost)

#: head-group atoms whose mean height per leaflet defines a bilayer (phosphate P of
#: phospholipids, hydroxyl O3 of sterols in CHARMM36 naming)
HEADGROUP_ATOMS = {"P", "O3"}
ION_RESIDUES = {"NA", "CL", "K", "MG", "CA", "ZN", "SOD", "CLA", "POT", "CAL"}
#: distance (nm) from the mean head-group plane towards the centre that still counts as
#: interface: only waters deeper than this are removed (P-P ~ 3.9 nm for POPC: core ~2.7 nm)
INTERFACE_NM = 0.6


def solute_hold_force(positions, n_solute: int) -> mm.CustomExternalForce:
    """Harmonic hold of particles ``0..n_solute-1`` on ``positions`` (strength: global ``k_solute_hold``)."""
    force = mm.CustomExternalForce(f"0.5*{HOLD_PARAMETER}*periodicdistance(x, y, z, x0, y0, z0)^2")
    force.setName(HOLD_FORCE)
    force.addGlobalParameter(HOLD_PARAMETER, HOLD_K)
    for name in ("x0", "y0", "z0"):
        force.addPerParticleParameter(name)
    xyz = np.asarray(positions.value_in_unit(unit.nanometer) if unit.is_quantity(positions) else positions)
    for i in range(n_solute):
        force.addParticle(i, [float(v) for v in xyz[i]])
    return force


def bilayer_core(topology: app.Topology, xyz_nm: np.ndarray) -> tuple[float, float] | None:
    """``(lower, upper)`` z (nm) of the hydrophobic core of a bilayer normal to z, or None without one.

    The head-group atoms of lipid residues split into two leaflets around their median
    height; each leaflet's mean height minus :data:`INTERFACE_NM` bounds the core.
    """
    heads = [a.index for a in topology.atoms() if a.name in HEADGROUP_ATOMS and _is_lipid(a.residue)]
    if len(heads) < 8:
        return None
    z = xyz_nm[heads, 2]
    mid = np.median(z)
    low, high = z[z < mid], z[z >= mid]
    if not len(low) or not len(high) or high.mean() - low.mean() < 2.5:  # not a bilayer (micelle, few lipids)
        return None
    return float(low.mean() + INTERFACE_NM), float(high.mean() - INTERFACE_NM)


def _is_lipid(residue) -> bool:
    # lipids are the big residues (POPC: 134 atoms with hydrogens, CHL1: 74; an amino acid <= 24)
    return residue.name not in ION_RESIDUES and residue.name != "HOH" and len(residue) > 40


def clear_bilayer_core(modeller: app.Modeller) -> list[float] | None:
    """Delete waters and move ions out of a bilayer's core (see :func:`bilayer_core`); returns the core's z range."""
    xyz = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    core = bilayer_core(modeller.topology, xyz)
    if core is None:
        return None
    lower, upper = core
    residues = list(modeller.topology.residues())
    first = np.array([next(r.atoms()).index for r in residues])
    inside = (xyz[first, 2] > lower) & (xyz[first, 2] < upper)
    water = np.array([r.name == "HOH" for r in residues])
    ion = np.array([r.name in ION_RESIDUES and len(r) == 1 for r in residues])
    # an ion in the core takes the place of a bulk water (the charge balance stays as built)
    bulk = list(np.nonzero(water & ~inside)[0])
    positions = list(modeller.positions.value_in_unit(unit.nanometer))
    remove = list(np.nonzero(water & inside)[0])
    for k in np.nonzero(ion & inside)[0]:
        w = bulk.pop()
        positions[first[k]] = mm.Vec3(*xyz[first[w]])
        remove.append(w)
    modeller.positions = unit.Quantity(positions, unit.nanometer)
    modeller.delete([residues[k] for k in remove])
    return [round(lower, 3), round(upper, 3)]
