"""The pipeline as OpenMM-style stages: one by one or in one call, reporters, units, OpenMM objects in."""

import inspect
import json
from pathlib import Path

import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit
import pytest

import openmm_herobm as hb
from openmm_herobm.units import KELVIN, value_in

ROOT = Path(__file__).resolve().parents[1]
UBQ_CG = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
FRAMES = ROOT / "tests" / "data" / "real_frames" / "test" / "bm5_2X9A_l_b_B" / "elastic"


class Collect:
    """A reporter that keeps every event."""

    def __init__(self):
        self.events = []
        self.finished = None

    def report(self, event):
        self.events.append(event)

    def finish(self, result):
        self.finished = result


def _nm(positions):
    return np.asarray(positions.value_in_unit(unit.nanometer))


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One thread: bit-identical runs (more threads leave ~1e-5 nm of force-order noise,
    openmm_herobm.threads)."""
    import torch

    threads = torch.get_num_threads()
    hb.set_threads(1)
    yield
    hb.set_threads(threads)


@pytest.fixture(scope="module")
def ubiquitin(tmp_path_factory, one_thread):
    """The default pipeline on the bundled ubiquitin, with a collecting reporter and files written."""
    out = tmp_path_factory.mktemp("ubq") / "ubq.pdb"
    collect = Collect()
    result = hb.backmap_and_simulate(str(UBQ_CG), output=out, reporters=[collect])
    return result, collect, out


def test_stages_one_by_one_equal_the_one_call(ubiquitin):
    result, _, _ = ubiquitin
    pipeline = hb.Pipeline(hb.backmap(str(UBQ_CG)))
    modeller = pipeline.prepare_topology(0)
    assert isinstance(modeller, app.Modeller) and all(a.element.symbol != "H" for a in modeller.topology.atoms())
    pipeline.protonate(modeller)
    assert modeller.topology.getNumAtoms() == result.topology.getNumAtoms() == 1231
    simulation = pipeline.create_simulation(modeller)
    assert isinstance(simulation, app.Simulation)
    info = pipeline.minimize(simulation)
    assert info["rms_force"] <= 500.0
    positions = simulation.context.getState(getPositions=True).getPositions()
    # the same stages, the same OpenMM calls: the same coordinates, bit for bit
    assert np.array_equal(_nm(positions), _nm(result.positions))


def test_reporters_hear_every_stage_with_energy_and_json_report(ubiquitin):
    result, collect, out = ubiquitin
    finished = [(e.stage, e.frame) for e in collect.events if e.done]
    assert finished[0] == ("model", None)
    for stage in ("topology", "chirality", "hydrogens", "system", "minimize"):
        assert any(s == stage for s, _ in finished), stage
    minimize = [e for e in collect.events if e.stage == "minimize"]
    assert not minimize[0].done and minimize[-1].done
    assert any(not e.done and "L-BFGS pass" in e.detail for e in minimize)  # progress inside the stage
    assert minimize[-1].energy == pytest.approx(result.energies["minimized"])
    assert collect.finished is result
    report = json.loads(out.with_suffix(".report.json").read_text())
    assert [s["stage"] for s in report["stages"]][:2] == ["model", "topology"]
    assert report["energies_kj_mol"]["minimized"] == pytest.approx(result.energies["minimized"])
    assert str(out.with_suffix(".report.json")) in result.written


def test_progress_reporter_lines(capsys):
    from openmm_herobm.pipeline import StageEvent

    hb.ProgressReporter().report(StageEvent("minimize", 3, True, 12.34, -1234.5, "RMS force 80 kJ/mol/nm"))
    line = capsys.readouterr().err.strip()
    assert line.startswith("herobm: ") and line.endswith(
        "frame 3 minimize 12.3 s, -1234 kJ/mol, RMS force 80 kJ/mol/nm")


def test_quantities_and_openmm_objects_give_the_same_result(ubiquitin):
    result, _, _ = ubiquitin
    pdb = app.PDBFile(str(UBQ_CG))
    again = hb.backmap_and_simulate(
        (pdb.topology, pdb.positions),  # like Modeller(topology, positions)
        platform=mm.Platform.getPlatformByName(result.report["platform"]),
        temperature=300 * unit.kelvin, tolerance=50 * unit.kilojoule_per_mole / unit.angstrom,
        restraint_k=1e3 * unit.kilojoule_per_mole / unit.angstrom ** 2)
    assert np.array_equal(_nm(again.positions), _nm(result.positions))


def test_forcefield_object_is_used_as_given(ubiquitin):
    result, _, _ = ubiquitin
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    again = hb.backmap_and_simulate(str(UBQ_CG), forcefield=forcefield)
    assert again.report["forcefield"] == "ForceField object"
    # the hydrogens are placed with this object too (implicit solvent included), so some polar
    # hydrogens sit elsewhere than with the named force field; the heavy atoms barely move
    heavy = np.array([a.element.symbol != "H" for a in result.topology.atoms()])
    shift = np.linalg.norm(_nm(again.positions) - _nm(result.positions), axis=1)
    assert shift[heavy].max() < 0.05 and again.energies["minimized"] == pytest.approx(result.energies["minimized"], rel=0.01)


def test_units_at_the_boundary():
    assert value_in(25 * unit.angstrom, unit.nanometer, "x") == pytest.approx(2.5)
    assert value_in(7, KELVIN, "temperature") == 7.0 and value_in(None, KELVIN, "t") is None
    with pytest.raises(hb.HeroBMError, match="temperature: .* not compatible"):
        value_in(3 * unit.nanometer, KELVIN, "temperature")
    with pytest.raises(hb.HeroBMError, match="temperature"):
        hb.Pipeline(hb.backmap(str(UBQ_CG)), temperature="hot")


def test_every_frame_has_its_own_report():
    """Frame 1 of a trajectory, refined after frame 0: its report and timings are its own."""
    bm = hb.backmap(str(FRAMES / "md.gro"), trajectory=str(FRAMES / "md.xtc"))
    pipeline = hb.Pipeline(bm)
    first, second = pipeline.run(0), pipeline.run(1)
    assert "topology" in first.timings and "topology" not in second.timings
    assert second.report["minimize"] is not first.report["minimize"]
    assert first.report["n_atoms"] == second.report["n_atoms"]
    assert not np.array_equal(_nm(first.positions), _nm(second.positions))
    # frame 0 again, in a fresh pipeline: the same coordinates (no state carried over from frame 1)
    assert np.array_equal(_nm(hb.Pipeline(bm).run(0).positions), _nm(first.positions))


def test_public_face_shows_real_signatures():
    """Every public function and class of the package face shows its own parameters (no *args
    wrappers), and help() lists the public nouns."""
    import pydoc

    for name in hb.__all__:
        obj = getattr(hb, name)
        if isinstance(obj, type) and issubclass(obj, Exception) or not callable(obj):
            continue
        params = list(inspect.signature(obj).parameters)
        assert params[:1] != ["args"], name
    assert "reporters" in inspect.signature(hb.backmap_and_simulate).parameters
    text = pydoc.render_doc(hb, renderer=pydoc.plaintext)
    for noun in ("Pipeline", "ProgressReporter", "JSONReporter", "MappingSet", "backmap", "backmap_and_simulate",
                 "batch", "load_model", "deploy", "evaluate"):
        assert noun in text, noun


def test_a_long_minimisation_pass_says_it_is_still_running(monkeypatch):
    """OpenMM's minimiser cannot report from inside a pass (a Python MinimizationReporter holds the
    GIL and openmm-torch's force then fails): a heartbeat thread says how long the pass has run."""
    from openmm_herobm import progress

    monkeypatch.setattr(progress, "PROGRESS_SECONDS", 0.01)
    collect = Collect()
    pipeline = hb.Pipeline(hb.backmap(str(UBQ_CG)), reporters=[collect])
    simulation = pipeline.create_simulation(pipeline.protonate(pipeline.prepare_topology(0)))
    pipeline.minimize(simulation)
    beats = [e for e in collect.events if e.stage == "minimize" and not e.done and "running" in e.detail]
    assert beats and all(e.detail.startswith("L-BFGS pass running, ") for e in beats)


def test_the_model_stage_reports_frames_of_a_trajectory(monkeypatch):
    import openmm_herobm.backmapping as backmapping

    monkeypatch.setattr(backmapping, "FRAME_PROGRESS_SECONDS", 0.0)
    collect = Collect()
    hb.backmap_and_simulate(str(FRAMES / "md.gro"), trajectory=str(FRAMES / "md.xtc"), minimize=False,
                            reporters=[collect])
    lines = [e.detail for e in collect.events if e.stage == "model" and not e.done and e.detail]
    assert lines == [f"frame {k} of 10" for k in range(1, 11)]


def test_raw_output_has_the_refined_names_and_the_pipeline_keeps_the_inputs_variant(tmp_path):
    """A CG input naming HIS 68 HSD (CHARMM's N-delta tautomer): the raw heavy atoms are written as
    HIS, like the refined output, whose HIS 68 carries HD1 (the variant survives in the hydrogens)."""
    cg = tmp_path / "hsd.pdb"
    cg.write_text(UBQ_CG.read_text().replace(" HIS A  68", " HSD A  68"))
    raw = tmp_path / "raw.pdb"
    hb.backmap(str(cg), output=raw)
    names = {line[17:21].strip() for line in raw.read_text().splitlines() if line[22:26] == "  68"}
    assert names == {"HIS"}
    result = hb.backmap_and_simulate(str(cg), minimize=False)
    his = [r for r in result.topology.residues() if r.id == "68"][0]
    assert his.name == "HIS" and {"HD1"} <= {a.name for a in his.atoms()} and "HE2" not in {a.name for a in his.atoms()}
