"""Ideal geometry and conformational statistics of the amino acids (protein_geometry.json, from
the training split), checked on real held-out structures."""

from __future__ import annotations

from pathlib import Path

import mdtraj
import numpy as np
import pytest

from openmm_herobm.evaluation.protein_quality import _heavy_map, protein_quality
from openmm_herobm.reconstruction import protein_geometry as pg

FIXTURE = Path(__file__).resolve().parent / "data" / "real_frames" / "test"
CRYSTALS = sorted(FIXTURE.glob("*/elastic/aa.pdb"))


@pytest.mark.parametrize("path", CRYSTALS, ids=[p.parent.parent.name for p in CRYSTALS])
def test_crystal_structures_score_as_real_proteins(path):
    """The yardstick on the crystal chains the fixture's simulations started from."""
    q = protein_quality(mdtraj.load(str(path)))
    assert q["bond_rmsd"] < 0.03 and q["bonds_off"] == 0
    assert q["angle_rmsd"] < 3.0
    assert q["rama_outlier_pct"] < 2.0
    assert q["chi1_off_pct"] < 15.0
    assert q.get("cis_nonpro", 0) == 0 and q.get("inserted_breaks", 0) == 0


def test_side_chains_rebuilt_from_their_own_chi_angles():
    """The z-matrix, fed a crystal side chain's chi angles on its own backbone, gives it back with
    ideal bonds and angles (rigid groups and rings included): 0.23 A mean measured, 0.05-0.4 A per type."""
    errors = {}
    for path in CRYSTALS:
        traj = mdtraj.load(str(path))
        x = traj.xyz[0] * 10.0
        for res in traj.topology.residues:
            name = pg.standard_name(res.name)
            side = pg.side_chain_atoms(name)
            atoms = _heavy_map(res)
            if not side or not all(n in atoms for n in side + ["N", "CA", "C"]):
                continue
            at = {n: x[i] for n, i in atoms.items()}
            chis = pg.chi_angles(name, at) if pg.residue(name)["chis"] else np.zeros(0)
            built = pg.build_side_chains(name, at["N"], at["CA"], at["C"], chis)
            truth = np.stack([at[n] for n in side])
            errors.setdefault(name, []).append(np.sqrt(((built - truth) ** 2).sum(1).mean()))
    assert len(errors) >= 15
    assert np.mean(np.concatenate(list(errors.values()))) < 0.25
    assert max(np.mean(v) for v in errors.values()) < 0.45  # the longest (ARG, LYS, TYR, TRP)


def test_rotamer_wells_and_ramachandran_classes():
    wells, symmetric = pg.chi_wells("LYS", 1)
    assert symmetric is False and np.allclose(np.sort(np.degrees(wells)), [-177.5, -67.5, 62.5], atol=10)
    assert pg.chi_wells("PHE", 2)[1] is True  # the ring: chi2 modulo 180
    assert pg.chi_wells("GLY", 1) is None
    assert pg.rama_class("GLY", "ALA") == 1 and pg.rama_class("PRO", None) == 2 and pg.rama_class("ALA", "PRO") == 3
    # a D-like left-handed phi for a proline is an outlier; an alpha helix is not
    assert pg.rama_outliers(np.array([2, 0]), np.radians([60.0, -63.0]), np.radians([-120.0, -43.0])).tolist() == \
        [True, False]
    assert pg.nearest_well("VAL", 1, np.radians(70.0)) == pytest.approx(np.radians(62.5), abs=np.radians(10))
