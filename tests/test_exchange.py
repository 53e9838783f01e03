"""Resolution exchange (``openmm_herobm.exchange``) on real structures.

Serial switching: martinize2's bm5_2X9A_l_b_B (61 residues) in Martini 3 without solvent ->
HEroBM + Amber14/OBC2 -> Martini 3 again (examples/resolution_cycle.py, shortened).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import openmm.unit as unit
import pytest

from openmm_herobm import HeroBMError
from openmm_herobm.exchange import cg_positions, to_all_atom, to_coarse_grained
from openmm_herobm.martini import MartiniTopFile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _example():
    spec = importlib.util.spec_from_file_location("resolution_cycle", ROOT / "examples" / "resolution_cycle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cycle():
    """One CG -> AA -> CG round: 100 Martini steps (2 ps), backmap, 100 all-atom steps (0.2 ps), back."""
    ex = _example()
    top = MartiniTopFile(ex.TOP)
    import openmm.app as app

    cg = ex.cg_simulation(top, app.GromacsGroFile(str(ex.START)).getPositions())
    cg.step(100)
    beads = cg_positions(cg)
    aa = to_all_atom(cg, platform="CPU")
    mapped = ex.mapped_beads(aa, top)
    e_aa0 = ex.energy(aa)
    aa.step(100)
    back = to_coarse_grained(aa, top, platform="CPU")
    return dict(ex=ex, top=top, beads=beads, aa=aa, mapped=mapped, e_aa0=e_aa0, back=back)


def test_backmapped_frame_keeps_the_beads(cycle):
    """The forward-mapped all-atom frame lies on the CG frame it came from (measured 0.10 nm RMS over
    147 beads; a wrong bead order or a broken backmapping gives > 0.5 nm)."""
    rms = cycle["ex"].hb_rms(cycle["beads"], cycle["mapped"])
    assert rms < 0.15
    # and not trivially: beads of one residue swapped are far off
    swapped = cycle["mapped"].copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert cycle["ex"].hb_rms(cycle["beads"], swapped) > rms


def test_all_atom_simulation_is_sound(cycle):
    aa, report = cycle["aa"], cycle["aa"].herobm_report
    assert aa.topology.getNumAtoms() == 900  # the 61 residues with hydrogens (Amber14 names)
    assert report["chirality_errors_ca"] == 0 and report["chirality_errors_ile_cb"] == 0
    assert report["chirality_errors_thr_cb"] == 0 and report["cis_peptides_nonpro"] == 0
    assert aa.system.getNumConstraints() > 0  # HBonds for 2 fs steps
    names = {aa.system.getForce(i).getName() for i in range(aa.system.getNumForces())}
    assert not any("HEroBM" in n or "guard" in n.lower() for n in names), names  # production System, no restraint
    state = aa.context.getState(getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(cycle["e_aa0"]) and cycle["e_aa0"] < 0 and np.isfinite(energy) and energy < 0
    dof = 3 * aa.system.getNumParticles() - aa.system.getNumConstraints() - 3
    temperature = 2 * state.getKineticEnergy() / (dof * unit.MOLAR_GAS_CONSTANT_R)
    assert 200 < temperature.value_in_unit(unit.kelvin) < 400  # velocities drawn at 300 K


def test_back_in_martini_runs(cycle):
    back, top = cycle["back"], cycle["top"]
    assert back.topology.getNumAtoms() == top.topology.getNumAtoms() == 147
    e0 = cycle["ex"].energy(back)
    back.step(200)
    x = cg_positions(back)
    assert np.isfinite(x).all() and np.isfinite(e0) and e0 < 0
    assert cycle["ex"].hb_rms(x, cycle["mapped"]) < 0.5  # 4 ps of Martini from the mapped frame: still the fold


def test_a_topology_of_another_molecule_is_refused(cycle, tmp_path):
    other = tmp_path / "other.top"
    other.write_text(f'#include "{DATA}/martini/martini_v3.0.0_subset.itp"\n'
                     f'#include "{DATA}/real_frames/test/bm5_4IZ7_l_u_B/plain/molecule_0.itp"\n'
                     "[ system ]\nother\n[ molecules ]\nmolecule_0 1\n")
    with pytest.raises(HeroBMError, match="residue|bead"):
        to_coarse_grained(cycle["aa"], MartiniTopFile(other))
