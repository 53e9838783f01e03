"""Explicit solvent around membranes, and output hygiene for lipid systems, on real structures.

Reference: the CHARMM36 POPC bilayer ``charmm36_POPCchol-0pct`` (128 POPC, CHARMM names,
hydrogens, a periodic box that matches its atoms).
"""

from pathlib import Path

import numpy as np
import openmm.app as app
import openmm.unit as unit
import pytest

from openmm_herobm.io import load_structure
from openmm_herobm.pipeline.chirality import stretch_collapsed_bonds
from openmm_herobm.pipeline.system import load_forcefield, named_templates
from openmm_herobm.io import restore_residue_names
from openmm_herobm.pipeline.solvent import ION_RESIDUES, bilayer_core, clear_bilayer_core

ROOT = Path(__file__).resolve().parents[1]
BILAYER = ROOT.parent / "shared" / "data" / "lipids" / "charmm36_POPCchol-0pct.gro.gz"
UBQ = ROOT / "examples" / "data" / "1ubq.pdb"


@pytest.fixture(scope="module")
def bilayer():
    """The bilayer without its water, as an OpenMM (topology with CHARMM36 bonds, positions nm, box nm)."""
    traj = load_structure(str(BILAYER))
    traj = traj.atom_slice(traj.topology.select("resname POPC"))
    topology = traj.topology.to_openmm()
    template = load_forcefield("charmm36.xml", None)._templates["POPC"]
    for residue in topology.residues():
        atoms = {a.name: a for a in residue.atoms()}
        for i, j in template.bonds:
            topology.addBond(atoms[template.atoms[i].name], atoms[template.atoms[j].name])
    return topology, traj.xyz[0].astype(np.float64), traj.unitcell_lengths[0]


def test_solvating_a_bilayer_with_holes_keeps_water_and_ions_out_of_its_core(bilayer):
    """Four lipids left out (as for lipids without a model): addSolvent fills their holes; the core is cleared."""
    topology, xyz, box = bilayer
    modeller = app.Modeller(topology, xyz * unit.nanometer)
    modeller.delete(list(modeller.topology.residues())[:4])
    forcefield = load_forcefield("charmm36.xml", "explicit")
    modeller.addSolvent(forcefield, boxVectors=(np.diag(box) * unit.nanometer), neutralize=True,
                        ionicStrength=0.5 * unit.molar, residueTemplates=named_templates(forcefield, modeller.topology))
    pos = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    lower, upper = bilayer_core(modeller.topology, pos)
    assert 2.0 < upper - lower < 3.2  # POPC: P-P ~3.9 nm minus 2 x 0.6 nm interface

    def in_core(top, xyz):
        first = [next(r.atoms()).index for r in top.residues() if r.name == "HOH" or r.name in ION_RESIDUES]
        z = xyz[first, 2]
        return int(((z > lower) & (z < upper)).sum())

    assert in_core(modeller.topology, pos) > 0  # the holes did get water (else this test proves nothing)
    charge_before = _ion_charge(modeller.topology)
    n_ions = sum(r.name in ION_RESIDUES for r in modeller.topology.residues())
    assert clear_bilayer_core(modeller) == [round(lower, 3), round(upper, 3)]
    pos = np.asarray(modeller.positions.value_in_unit(unit.nanometer))
    assert in_core(modeller.topology, pos) == 0
    assert sum(r.name in ION_RESIDUES for r in modeller.topology.residues()) == n_ions
    assert _ion_charge(modeller.topology) == charge_before  # still neutral as built


def _ion_charge(topology) -> int:
    return sum({"NA": 1, "CL": -1}.get(r.name, 0) for r in topology.residues())


def test_no_bilayer_no_core(bilayer):
    topology, xyz, _ = bilayer
    modeller = app.Modeller(topology, xyz * unit.nanometer)
    modeller.delete([r for r in modeller.topology.residues() if r.index >= 6])  # a few lipids: no bilayer
    assert bilayer_core(modeller.topology, np.asarray(modeller.positions.value_in_unit(unit.nanometer))) is None


def test_written_pdb_keeps_four_letter_lipid_names(bilayer, tmp_path):
    """OpenMM's PDB writer cuts POPC to POP; the written file must read back as POPC (templates match)."""
    topology, xyz, _ = bilayer
    path = tmp_path / "out.pdb"
    with open(path, "w") as f:
        app.PDBFile.writeFile(topology, xyz * unit.nanometer, f, keepIds=True)
    assert {r.name for r in app.PDBFile(str(path)).topology.residues()} == {"POP"}
    restore_residue_names(path, topology)
    back = app.PDBFile(str(path))
    assert {r.name for r in back.topology.residues()} == {"POPC"}
    assert np.allclose(back.positions.value_in_unit(unit.nanometer), xyz, atol=1e-3)


def test_collapsed_bond_is_stretched_and_nothing_else_moves():
    pdb = app.PDBFile(str(UBQ))
    xyz = np.asarray(pdb.positions.value_in_unit(unit.nanometer))
    atoms = {(a.residue.index, a.name): a.index for a in pdb.topology.atoms()}
    leu = next(r for r in pdb.topology.residues() if r.name == "LEU")
    cg, cd1 = atoms[(leu.index, "CG")], atoms[(leu.index, "CD1")]
    broken = xyz.copy()
    broken[cd1] = broken[cg] + 0.3 * (xyz[cd1] - xyz[cg])  # 0.46 A: what an averaged methyl can look like
    fixed, n = stretch_collapsed_bonds(pdb.topology, broken)
    assert n == 1
    assert np.linalg.norm(fixed[cd1] - fixed[cg]) == pytest.approx(0.152, abs=1e-6)  # a methyl: C-C single bond
    others = np.ones(len(xyz), bool)
    others[cd1] = False
    assert np.array_equal(fixed[others], broken[others])
    assert stretch_collapsed_bonds(pdb.topology, xyz)[1] == 0  # a real structure has no such bond
