"""Output files: refused before any work when they cannot be written or would overwrite an input;
written to temporaries and put in place together, so neither a failure nor a signal leaves a
temporary or a mix of two runs' files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mdtraj
import numpy as np
import pytest
import yaml

import openmm_herobm.backmapping
import openmm_herobm.io
import openmm_herobm.io.readers
from openmm_herobm.cli.main import main
from openmm_herobm.errors import HeroBMError
from openmm_herobm.io import (
    TEMP_PREFIX,
    atomic_output,
    check_output_folder,
    check_outputs,
    output_files,
)

ROOT = Path(__file__).resolve().parents[1]
UBQ = ROOT / "examples" / "data" / "1ubq.pdb"
UBQ_CG = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"


def _unwritable_folder(tmp_path) -> Path:
    """A folder this process cannot create files in (root ignores permission bits: sysfs then)."""
    if os.geteuid() == 0:
        return Path("/sys")
    folder = tmp_path / "read_only"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.fixture
def no_work(monkeypatch):
    """Any attempt to read a structure, load a model or start a batch fails the test."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the outputs were checked")

    for module, name in ((openmm_herobm.io, "load_input"), (openmm_herobm.io, "load_structure"),
                         (openmm_herobm.io.readers, "load_structure"), (openmm_herobm.backmapping, "load_model"),
                         (sys.modules["openmm_herobm.batch"], "batch")):  # the module (the package's name is the function)
        monkeypatch.setattr(module, name, forbidden)


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


def test_output_problems_fail_first_with_one_line(tmp_path, capsys, no_work):
    cg = tmp_path / "cg.pdb"
    cg.write_bytes(UBQ_CG.read_bytes())
    aa = tmp_path / "aa.pdb"
    aa.write_bytes(UBQ.read_bytes())
    (tmp_path / "folder.pdb").mkdir()
    link = tmp_path / "link.pdb"
    link.symlink_to(cg)
    ro = _unwritable_folder(tmp_path)
    before = _files(tmp_path)
    nope = tmp_path / "nope.pt"  # a model that does not exist: loading it would fail with another message
    cases = [
        (("backmap", cg, "--model", nope, "-o", cg), "is also an input"),
        (("backmap", cg, "--model", nope, "--no-minimize", "-o", link), "is also an input"),  # via a symlink
        (("backmap", cg, "--model", nope, "-o", tmp_path / "folder.pdb"), "is a folder"),
        (("backmap", cg, "--model", nope, "-o", tmp_path / "missing" / "out.pdb"), "does not exist"),
        (("backmap", cg, "--model", nope, "-o", cg / "out.pdb"), "is a file, not a folder"),
        (("backmap", cg, "--model", nope, "-o", ro / "out.pdb"), "cannot write"),
        (("backmap", cg, "--model", nope, "-o", tmp_path / "o.pdb", "--traj-out", tmp_path / "o.pdb"), "twice"),
        # a companion of the pipeline's output (x.state.xml beside x.pdb) is an input
        (("backmap", cg, "--model", nope, "-o", tmp_path / "x.pdb", "--forcefield", tmp_path / "x.state.xml"),
         "is also an input"),
        (("map", aa, "-o", aa), "is also an input"),
        (("map", aa, "-o", tmp_path / "cg_new.pdb", "--traj-out", ro / "cg.xtc"), "cannot write"),
        (("evaluate", aa, cg, "--json", cg), "is also an input"),
        (("evaluate", aa, "--json", tmp_path / "folder.pdb"), "is a folder"),
        (("mapping", "import", tmp_path / "phe.map", "-s", aa, "-o", aa), "is also an input"),
        (("mapping", "complete", tmp_path / "m.yaml", "-s", aa, "-o", aa), "is also an input"),
        (("ligand-params", aa, "--name", "LIG", "-o", aa), "is also an input"),
        (("ligand-params", aa, "--name", "LIG", "-o", ro / "lig.xml"), "cannot write"),
        (("deploy", aa, "-o", aa), "is also an input"),
        (("deploy", aa, "-o", tmp_path / "missing" / "m.pt"), "does not exist"),
        (("batch", cg, "-o", cg), "is a file, not a folder"),
        (("batch", cg, "-o", cg / "sub"), "cannot be created"),
        (("batch", cg, "-o", ro / "out"), "cannot write"),
        (("batch", cg, "--no-minimize", "-o", tmp_path), "is also an input"),  # OUTDIR/cg.pdb is the input
    ]
    for args, expected in cases:
        code = main([str(a) for a in args])
        err = capsys.readouterr().err
        assert code == 2, (args, err)
        assert err.startswith("herobm: error:") and len(err.strip().splitlines()) == 1, (args, err)
        assert expected in err and "Traceback" not in err, (args, err)
        assert _files(tmp_path) == before, args  # inputs unchanged, nothing written, no temporary
    assert not (tmp_path / "missing").exists()


def test_checks_as_functions(tmp_path):
    """The checks themselves, where the CLI cases above do not reach: hard links, None, objects,
    folders that may be created."""
    src = tmp_path / "in.pdb"
    src.write_text("x")
    os.link(src, tmp_path / "hard.pdb")
    with pytest.raises(HeroBMError, match="is also an input"):
        check_outputs([tmp_path / "hard.pdb"], [src])
    check_outputs([None, tmp_path / "new.pdb"], [None, mdtraj.load(str(UBQ_CG)), src])
    check_output_folder(tmp_path / "a" / "b")  # creatable
    check_outputs([tmp_path / "a" / "b" / "x.pdb"], [src], create_folders=True)
    with pytest.raises(HeroBMError, match="does not exist"):
        check_outputs([tmp_path / "a" / "b" / "x.pdb"], [src])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hard.pdb", "in.pdb"]  # the probes are gone


def test_mapping_complete_in_place_stays_allowed(tmp_path, capsys):
    """README: ``herobm mapping complete X.yaml -s struct.pdb -o X.yaml`` completes the file in place."""
    spec = {"molecule": "TYR", "atoms": {n: b for n, b in [
        ("N", "BB"), ("CA", "BB"), ("C", "BB"), ("O", "BB"), ("CB", "SC1"), ("CG", "SC1"),
        ("CD1", "SC2"), ("CE1", "SC2"), ("CD2", "SC3"), ("CE2", "SC3"), ("CZ", "SC4"), ("OH", "SC4")]}}
    path = tmp_path / "TYR.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["mapping", "complete", str(path), "-s", str(UBQ), "-o", str(path)]) == 0
    done = yaml.safe_load(path.read_text())
    assert done["molecule"] == "TYR" and len(done["bonds"]) == 12
    assert [p.name for p in tmp_path.iterdir()] == ["TYR.yaml"]
    capsys.readouterr()


# ---------------------------------------------------------------- one set, committed together
def test_a_failing_writer_leaves_the_previous_set(tmp_path):
    old = {"a.pdb": b"old a", "a.state.xml": b"old state", "a.dcd": b"old dcd"}
    for name, data in old.items():
        (tmp_path / name).write_bytes(data)
    with pytest.raises(RuntimeError, match="disk full"):
        with output_files() as files:
            for name in old:
                with files.file(tmp_path / name) as tmp:
                    Path(tmp).write_bytes(b"new " + name.encode())
                    assert Path(tmp).parent == tmp_path and Path(tmp).name.startswith(TEMP_PREFIX)
                    if name == "a.dcd":
                        raise RuntimeError("disk full")
    assert _files(tmp_path) == old
    with output_files() as files:
        for name in old:
            with files.file(tmp_path / name) as tmp:
                Path(tmp).write_bytes(b"new " + name.encode())
        assert _files(tmp_path).keys() > old.keys()  # temporaries only, until the block ends
        assert _files(tmp_path)["a.pdb"] == b"old a"
    assert _files(tmp_path) == {n: b"new " + n.encode() for n in old}


def test_a_failed_rename_leaves_no_mix(tmp_path, monkeypatch):
    """If the second rename fails, the first new file must not sit beside the second old one."""
    for name in ("a.pdb", "a.dcd"):
        (tmp_path / name).write_text("old")
    real = os.replace
    calls = []

    def replace(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise OSError(5, "Input/output error")
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError), output_files() as files:
        for name in ("a.pdb", "a.dcd"):
            with files.file(tmp_path / name) as tmp:
                Path(tmp).write_text("new")
    assert len(calls) == 2 and list(tmp_path.iterdir()) == []


def test_a_signal_during_the_renames_waits_for_the_whole_set(tmp_path, monkeypatch):
    real = os.replace
    done = []

    def replace(src, dst):
        if not done:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C between the renames
            time.sleep(0.05)
        real(src, dst)
        done.append(dst)

    monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(KeyboardInterrupt), output_files() as files:
        for name in ("a.pdb", "a.dcd", "a.json"):
            with files.file(tmp_path / name) as tmp:
                Path(tmp).write_text("new")
    assert len(done) == 3 and _files(tmp_path) == {n: b"new" for n in ("a.dcd", "a.json", "a.pdb")}
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_atomic_output_keeps_the_file_mode_and_extension(tmp_path):
    with atomic_output(tmp_path / "x.npy") as tmp:
        assert tmp.endswith(".npy")  # np.save appends .npy to other names
        np.save(tmp, np.arange(3))
    assert np.load(tmp_path / "x.npy").tolist() == [0, 1, 2]
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "x.npy").stat().st_mode & 0o777 == 0o666 & ~umask


# ---------------------------------------------------------------- SIGTERM to a real run
_PAUSE = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import openmm_herobm.io
    import openmm_herobm.io.writers as writers

    real = writers._WRITERS[".dcd"]

    def paused(traj, tmp, name):  # the trajectory is the last file: pause with the others written
        real(traj, tmp, name)
        Path(sys.argv[1]).write_text("writing")
        time.sleep(120)

    writers._WRITERS[".dcd"] = paused
    from openmm_herobm.cli.main import main
    sys.exit(main(sys.argv[2:]))
""")


def _cg_trajectory(tmp_path, residues=None, frames=3) -> tuple[Path, Path]:
    cg = mdtraj.load(str(UBQ_CG))
    if residues is not None:
        cg = cg.atom_slice([a.index for a in cg.topology.atoms if a.residue.index < residues])
    rng = np.random.default_rng(0)
    xyz = cg.xyz + rng.normal(0, 0.005, (frames,) + cg.xyz.shape[1:]).astype(np.float32)
    cg.save_pdb(str(tmp_path / "cg.pdb"))
    mdtraj.Trajectory(xyz, cg.topology).save_dcd(str(tmp_path / "cg.dcd"))
    return tmp_path / "cg.pdb", tmp_path / "cg.dcd"


def _sigterm_while_writing(tmp_path, args) -> subprocess.CompletedProcess:
    marker = tmp_path / "marker"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p]),
               OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-c", _PAUSE, str(marker), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the run never reached its writer"
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_sigterm_in_a_no_minimize_trajectory_backmap(tmp_path):
    cg, dcd = _cg_trajectory(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    old = {"aa.pdb": b"previous run's structure", "aa.dcd": b"previous run's trajectory"}
    for name, data in old.items():
        (out / name).write_bytes(data)
    run = _sigterm_while_writing(tmp_path, ["backmap", cg, "-t", dcd, "--no-minimize", "--no-progress",
                                            "-o", out / "aa.pdb", "--traj-out", out / "aa.dcd"])
    assert run.returncode == 128 + signal.SIGTERM, run.stderr
    assert run.stderr.strip().splitlines()[-1] == "herobm: interrupted (SIGTERM)" and "Traceback" not in run.stderr
    assert _files(out) == old  # the structure was written too, to its temporary: both gone, no mix


def test_sigterm_in_the_pipeline_leaves_the_previous_set(tmp_path):
    """The full pipeline's five files (structure, trajectory, system, state, report) land together."""
    cg, dcd = _cg_trajectory(tmp_path, residues=4, frames=2)
    out = tmp_path / "out"
    out.mkdir()
    names = ("aa.pdb", "aa.system.xml", "aa.state.xml", "aa.report.json", "aa.dcd")
    old = {n: f"previous {n}".encode() for n in names}
    for name, data in old.items():
        (out / name).write_bytes(data)
    run = _sigterm_while_writing(tmp_path, ["backmap", cg, "-t", dcd, "--no-progress", "--platform", "CPU",
                                            "-o", out / "aa.pdb", "--traj-out", out / "aa.dcd"])
    assert run.returncode == 128 + signal.SIGTERM, run.stderr
    assert "herobm: interrupted (SIGTERM)" in run.stderr and "Traceback" not in run.stderr
    assert _files(out) == old
