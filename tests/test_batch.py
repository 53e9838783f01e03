"""``herobm batch`` on a real 2-worker Dask LocalCluster: planning, manifest, failure isolation,
kill -9 and resume, the full pipeline's one topology, determinism and the state.xml frame."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from openmm_herobm.batch import MANIFEST, done_tasks, plan, read_manifest
from openmm_herobm.errors import HeroBMError

FRAMES = Path(__file__).parent / "data" / "real_frames" / "test"
MD = FRAMES / "bm5_2X9A_l_b_B" / "elastic"  # 61 residues, 10 frames of Martini 3 MD
OTHER = FRAMES / "bm5_4IZ7_l_u_B" / "plain" / "cg.pdb"


def herobm(*args, **kw):
    return [sys.executable, "-m", "openmm_herobm.cli.main", *map(str, args)]


def test_plan_inputs(tmp_path):
    spec = f"{MD / 'md.gro'},{MD / 'md.xtc'}"
    tasks = plan([spec], frames_per_task=4)
    assert [t.frames for t in tasks] == [(0, 4, 1), (4, 8, 1), (8, 10, 1)]
    assert [t.first for t in tasks] == [True, False, False] and {t.stem for t in tasks} == {"md"}
    tasks = plan([spec + "@1:9:3", str(OTHER)], frames_per_task=2)
    assert [t.frames for t in tasks[:2]] == [(1, 5, 3), (7, 8, 3)]  # frames 1, 4 | 7
    assert sum(t.n_frames for t in tasks[:2]) == 3 and tasks[0].stem == "md_1-9"
    assert tasks[2].stem == "cg" and tasks[2].trajectory is None
    # same file names in other folders: the folders go into the output names
    assert [t.stem for t in plan([str(FRAMES / "*" / "plain" / "cg.pdb")])] == [
        "bm5_2X9A_l_b_B_plain_cg", "bm5_4IZ7_l_u_B_plain_cg"]
    other = FRAMES / "bm5_4IZ7_l_u_B" / "plain"
    assert {t.stem for t in plan([spec, f"{other / 'md.gro'},{other / 'md.xtc'}"])} == {
        "elastic_md", "plain_md"}
    with pytest.raises(HeroBMError, match="no file matches"):
        plan([str(tmp_path / "*.gro")])
    with pytest.raises(HeroBMError, match="START:STOP"):
        plan([spec + "@oops"])
    with pytest.raises(HeroBMError, match="selects no frame"):
        plan([spec + "@20:30"])
    with pytest.raises(HeroBMError, match="not a structure file"):
        plan([str(MD / "md.xtc")])


def test_manifest_ignores_a_line_cut_by_a_kill(tmp_path):
    path = tmp_path / MANIFEST
    path.write_text('{"options": {"minimize": false}}\n{"task": "a", "status": "done"}\n'
                    '{"task": "b", "status": "failed", "error": "x"}\n{"task": "c", "sta')
    header, records = read_manifest(path)
    assert header == {"options": {"minimize": False}}
    assert set(records) == {"a", "b"} and records["b"]["status"] == "failed"


def test_batch_kill_resume_and_failure_isolation(tmp_path):
    """kill -9 of the whole batch (client, scheduler, workers) mid-run, then the same command:
    every frame exactly once, the same coordinates as one uninterrupted backmap, the broken input
    recorded with its error while the rest completes."""
    import mdtraj

    from openmm_herobm import backmap

    broken = tmp_path / "broken.pdb"
    broken.write_text("ATOM      1  BB  ALA A   1       0.000   0.000\nEND\n")
    out = tmp_path / "out"
    command = herobm("batch", f"{MD / 'md.gro'},{MD / 'md.xtc'}@0:8", OTHER, broken, "-o", out, "--no-minimize",
                     "--workers", 2, "--frames-per-task", 1, "--no-progress")
    run = subprocess.Popen(command, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    manifest = out / MANIFEST
    deadline = time.time() + 240
    while time.time() < deadline and run.poll() is None:
        if manifest.exists() and len(done_tasks(manifest)) >= 2:
            break
        time.sleep(0.2)
    assert run.poll() is None, "the batch finished before it could be killed: " + run.stdout.read().decode()[-500:]
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    killed_done = done_tasks(manifest)
    assert 2 <= len(killed_done) < 10 and not (out / "md_0-8.dcd").exists()

    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stdout + done.stderr  # one input failed
    report = json.loads((out / "herobm_batch_report.json").read_text())
    assert report["tasks"] == 10 and report["failed"] == 1
    assert report["skipped"] == len(killed_done) and report["done"] + report["skipped"] == 9
    (failure,) = report["failures"]
    assert failure["task"] == "broken" and "broken.pdb" in failure["error"] and "\n" not in failure["error"]
    keys = done_tasks(manifest)
    assert len(keys) == len(set(keys)) == 10  # 8 frames, cg, the join: each recorded once
    joined = mdtraj.load(str(out / "md_0-8.dcd"), top=str(out / "md_0-8.pdb"))
    assert joined.n_frames == 8 and not (out / ".herobm_parts" / "md_0-8").exists()
    reference = backmap(mdtraj.load(str(MD / "md.xtc"), top=str(MD / "md.gro"))[:8]).trajectory
    assert np.abs(joined.xyz - reference.xyz).max() < 1e-4  # nm: frames in order, none lost or doubled
    assert (out / "cg.pdb").exists() and not (out / "broken.pdb").exists()

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 1 and "skipped (done before) 9" in again.stdout
    assert done_tasks(manifest) == keys  # nothing redone


def test_batch_refuses_other_options_in_the_same_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / MANIFEST).write_text(json.dumps({"options": {"minimize": True, "model": None, "options": {}}}) + "\n")
    done = subprocess.run(herobm("batch", OTHER, "-o", out, "--no-minimize", "--no-progress"),
                          capture_output=True, text=True)
    assert done.returncode == 2 and "other options" in done.stderr and len(done.stderr.splitlines()) == 1


def test_pipeline_trajectory_blocks_share_one_topology(tmp_path):
    """Full pipeline, 4 frames in 2 blocks on 2 workers: one topology (the second block takes the
    first block's protonation), frames in order, frame 0's state.xml."""
    import mdtraj
    import openmm as mm
    import openmm.unit as unit

    out = tmp_path / "out"
    done = subprocess.run(herobm("batch", f"{MD / 'md.gro'},{MD / 'md.xtc'}@0:4", "-o", out, "--workers", 2,
                                 "--frames-per-task", 2, "--no-progress"), capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    first = mdtraj.load(str(out / "md_0-4.pdb"))
    joined = mdtraj.load(str(out / "md_0-4.dcd"), top=str(out / "md_0-4.pdb"))
    assert joined.n_frames == 4 and any(a.element.symbol == "H" for a in first.topology.atoms)
    assert np.abs(joined.xyz[0] - first.xyz[0]).max() < 2e-4
    state = mm.XmlSerializer.deserialize((out / "md_0-4.state.xml").read_text())
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.abs(positions - first.xyz[0]).max() < 2e-4  # frame 0's, not the block's last frame
    _, records = read_manifest(out / MANIFEST)
    variants = records["md_0-4[0:2:1]"]["variants"]  # handed to the second block
    assert len(variants) == first.topology.n_residues and "CYX" in variants
    # frames 2-3 refined in their own worker: bonded like frame 0 (no atom jumped residue or name)
    bonds = np.array([[b[0].index, b[1].index] for b in first.topology.bonds])
    length = np.linalg.norm(joined.xyz[:, bonds[:, 0]] - joined.xyz[:, bonds[:, 1]], axis=2)
    assert np.abs(length - length[0]).max() < 0.02  # a hydrogen on another atom would be > 0.1 nm off


def test_pipeline_is_deterministic_and_state_is_frame_zero(tmp_path):
    """The same input, options and thread count give the same coordinates (one thread: bit-identical);
    <out>.state.xml holds frame 0."""
    import mdtraj
    import openmm as mm
    import openmm.unit as unit
    import torch

    from openmm_herobm import backmap_and_simulate, set_threads

    cg = mdtraj.load(str(MD / "md.xtc"), top=str(MD / "md.gro"))[:2]
    runs, threads = [], torch.get_num_threads()
    set_threads(1)
    try:
        for k in range(2):
            result = backmap_and_simulate(cg, output=tmp_path / f"run{k}.pdb",
                                          trajectory_output=tmp_path / f"run{k}.dcd")
            runs.append(np.asarray(result.positions.value_in_unit(unit.nanometer)))
    finally:
        set_threads(threads)
    assert np.array_equal(runs[0], runs[1])
    a, b = (mdtraj.load(str(tmp_path / f"run{k}.dcd"), top=str(tmp_path / f"run{k}.pdb")) for k in range(2))
    assert np.array_equal(a.xyz, b.xyz)
    # each frame keeps its own periodic cell (an NPT run's; the dodecahedron, reduced by OpenMM)
    assert cg.unitcell_volumes[0] != cg.unitcell_volumes[1]
    assert a.unitcell_volumes is not None and np.allclose(a.unitcell_volumes, cg.unitcell_volumes, rtol=1e-5)
    state = mm.XmlSerializer.deserialize((tmp_path / "run0.state.xml").read_text())
    positions = state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.abs(positions - a.xyz[0]).max() < 1e-4 and np.abs(positions - a.xyz[1]).max() > 0.05
