#!/usr/bin/env python
"""Ideal heavy-atom geometry of the lipids the shipped lipid model builds, from CHARMM36 itself.

Writes ``openmm_herobm/reconstruction/lipid_geometry.json``: for every residue of the mapping set
``martini3_lipids`` (POPC, CHL1, POPE, ...), its heavy-atom bonds with CHARMM36's equilibrium
length (Urey-Bradley 1-3 terms left out) and its heavy-atom angles with CHARMM36's equilibrium angle, and its heavy-atom
impropers (planar esters, amides, phosphates) with their equilibrium value.  The values are read from
the OpenMM System that ``charmm36.xml`` (+ the project's extra lipid templates) builds for one
molecule of each residue template, so they are the force field's own numbers, not statistics::

    python scripts/build_lipid_geometry.py
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import openmm
import openmm.app as app

from openmm_herobm.chemistry import FORCEFIELD_NAMES
from openmm_herobm.mapping import MappingSet

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "openmm_herobm" / "reconstruction" / "lipid_geometry.json"
EXTRA_LIPIDS = ROOT / "openmm_herobm" / "pipeline" / "charmm36_lipids_extra.xml"


def template_system(ff: app.ForceField, name: str):
    """(topology, system) of one molecule of the force field's residue template ``name``."""
    template = ff._templates[name]
    top = app.Topology()
    residue = top.addResidue(name, top.addChain())
    atoms = [top.addAtom(a.name, a.element, residue) for a in template.atoms]
    for i, j in template.bonds:
        top.addBond(atoms[i], atoms[j])
    return top, ff.createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None, residueTemplates={residue: name})


def heavy_geometry(top: app.Topology, system: openmm.System) -> dict:
    names = [a.name for a in top.atoms()]
    heavy = [a.element is not None and a.element.symbol != "H" for a in top.atoms()]
    bonded = {frozenset((a.index, b.index)) for a, b in top.bonds()}  # not Urey-Bradley 1-3 terms
    bonds, angles, impropers = [], [], []
    for force in system.getForces():
        if isinstance(force, openmm.HarmonicBondForce):
            for k in range(force.getNumBonds()):
                i, j, length, _ = force.getBondParameters(k)
                if heavy[i] and heavy[j] and frozenset((i, j)) in bonded:
                    bonds.append([names[i], names[j], round(length.value_in_unit(openmm.unit.angstrom), 4)])
        elif isinstance(force, openmm.HarmonicAngleForce):
            for k in range(force.getNumAngles()):
                i, j, m, theta, _ = force.getAngleParameters(k)
                if heavy[i] and heavy[j] and heavy[m]:
                    angles.append([names[i], names[j], names[m],
                                   round(math.degrees(theta.value_in_unit(openmm.unit.radian)), 3)])
        elif isinstance(force, openmm.CustomTorsionForce):  # CHARMM's harmonic impropers
            for k in range(force.getNumTorsions()):
                i, j, m, n, (_, theta0) = force.getTorsionParameters(k)
                if heavy[i] and heavy[j] and heavy[m] and heavy[n]:
                    impropers.append([names[i], names[j], names[m], names[n], round(math.degrees(theta0), 3)])
    return {"bonds": bonds, "angles": angles, "impropers": impropers}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mapping", default="martini3_lipids")
    parser.add_argument("-o", "--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    ff = app.ForceField("charmm36.xml", str(EXTRA_LIPIDS))
    residues = sorted(m.name for m in MappingSet.load(args.mapping).molecules)
    table = {}
    for name in residues:
        name = FORCEFIELD_NAMES.get(name, name)  # keyed by the force field's name: CHL is CHL1
        top, system = template_system(ff, name)
        table[name] = heavy_geometry(top, system)
        print(f"{name}: " + ", ".join(f"{len(v)} {k}" for k, v in table[name].items()))
    args.out.write_text(json.dumps({"source": "CHARMM36 (OpenMM charmm36.xml + pipeline/charmm36_lipids_extra.xml),"
                                              " equilibrium values of HarmonicBondForce / HarmonicAngleForce",
                                    "residues": table}, indent=0))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
