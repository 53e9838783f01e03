"""Model files from outside: crafted metadata is refused with one clear error, a carried mapping
set is unpacked only into the private cache (never where the file's metadata points), `herobm
deploy` refuses what is not a checkpoint, and model/ does not import training/.

The crafted files are the shipped lipid model with edited metadata (torch.jit.load with
``_extra_files``, then torch.jit.save), so only the metadata differs from a real model.
"""

import ast
import importlib.metadata
import json
import tempfile
import tomllib
from pathlib import Path

import pytest
import torch

import openmm_herobm
from openmm_herobm.cli.main import main
from openmm_herobm.errors import HeroBMError
from openmm_herobm.mapping import MappingSet
from openmm_herobm.model import METADATA, load_model
from openmm_herobm.resources import mappings_dir, models_dir

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "openmm_herobm"


@pytest.fixture(scope="module")
def lipids():
    """The shipped lipid model: (module, metadata, YAML files of its mapping set by name)."""
    extra = {METADATA: ""}
    module = torch.jit.load(str(models_dir() / "martini3_lipids.pt"), map_location="cpu", _extra_files=extra)
    files = {f.name: f.read_text() for f in sorted((mappings_dir() / "martini3_lipids").glob("*.yaml"))}
    return module, json.loads(extra[METADATA]), files


@pytest.fixture
def sandbox(tmp_path, monkeypatch):
    """The cache, the temporary folder (where unpacking used to go) and the working folder all
    under tmp_path, so any file a load writes can be found."""
    cache, tmp, cwd = tmp_path / "cache", tmp_path / "tmp", tmp_path / "a" / "b" / "cwd"
    for d in (tmp, cwd):
        d.mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    monkeypatch.chdir(cwd)
    return tmp_path


def _save(module, path: Path, metadata) -> Path:
    text = metadata if isinstance(metadata, str) else json.dumps(metadata)
    torch.jit.save(module, str(path), _extra_files={METADATA: text} if text else {})
    return path


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def _embedding(lipids, **changes) -> dict:
    """Metadata of a model carrying its mapping set (as `herobm deploy` writes for a user's set)."""
    _, metadata, files = lipids
    return {**metadata, "mapping_set": "my_lipids", "mapping_files": dict(files), **changes}


def test_carried_mapping_set_is_unpacked_into_the_cache_only(lipids, sandbox):
    module = lipids[0]
    path = _save(module, sandbox / "mine.pt", _embedding(lipids))
    before = _files(sandbox)
    model = load_model(path)
    new = _files(sandbox) - before
    folder = sandbox / "cache" / "openmm-herobm" / "mappings" / lipids[1]["mapping_hash"] / "my_lipids"
    assert new == {folder / name for name in lipids[2]}
    assert model.mapping_set.name == "my_lipids"
    shipped = MappingSet.load("martini3_lipids")
    assert model.mapping_set.files_hash == shipped.files_hash
    assert [(t.residue, t.bead) for t in model.mapping_set.bead_types] == \
        [(t.residue, t.bead) for t in shipped.bead_types]
    # the same weights as the shipped model: the same output
    shipped_state, state = load_model("martini3_lipids").module.state_dict(), model.module.state_dict()
    assert shipped_state.keys() == state.keys()
    assert all(torch.equal(shipped_state[k], state[k]) for k in state)
    assert (folder.stat().st_mode & 0o077) == 0  # private
    # loading again reuses the folder
    assert load_model(path).mapping_set.files_hash == shipped.files_hash
    assert _files(sandbox) - before == new
    # a changed cached copy is not used
    (folder / "POPC.yaml").write_text((folder / "POPC.yaml").read_text() + "\n# edited\n")
    with pytest.raises(HeroBMError, match="cached copy of mapping set my_lipids was changed"):
        load_model(path)


@pytest.mark.parametrize("where", ["../../escaped", "absolute"])
def test_mapping_set_path_in_metadata_writes_nothing(lipids, sandbox, where):
    target = str(sandbox / "escaped") if where == "absolute" else where
    path = _save(lipids[0], sandbox / "crafted.pt", _embedding(lipids, mapping_set=target))
    before = _files(sandbox)
    with pytest.raises(HeroBMError, match=r"crafted\.pt: model metadata has an invalid mapping_set"):
        load_model(path)
    assert _files(sandbox) == before
    assert not (sandbox / "escaped").exists() and not (sandbox / "cache").exists()


@pytest.mark.parametrize("name", ["../../escaped.yaml", "/tmp/escaped.yaml", "..", "", "run.sh", "a/POPC.yaml"])
def test_unsafe_mapping_file_names_write_nothing(lipids, sandbox, name):
    metadata = _embedding(lipids)
    metadata["mapping_files"][name] = "molecule: X\n"
    path = _save(lipids[0], sandbox / "crafted.pt", metadata)
    before = _files(sandbox)
    with pytest.raises(HeroBMError, match=r"crafted\.pt: carried mapping file name .* is not a plain \.yaml"):
        load_model(path)
    assert _files(sandbox) == before and not (sandbox / "cache").exists()


def test_mapping_files_are_verified_before_anything_is_written(lipids, sandbox):
    metadata = _embedding(lipids)
    metadata["mapping_files"]["POPC.yaml"] += "\n# altered\n"
    path = _save(lipids[0], sandbox / "altered.pt", metadata)
    before = _files(sandbox)
    with pytest.raises(HeroBMError, match=r"altered\.pt: the mapping files it carries do not match its mapping hash"):
        load_model(path)
    assert _files(sandbox) == before and not (sandbox / "cache").exists()


@pytest.mark.parametrize("metadata, message", [
    ("", "model file has no metadata"),
    ("{not json", "model metadata is not valid JSON"),
    ("[1, 2]", "model metadata is a JSON list, not an object"),
    ({"mapping_set": "martini3_lipids"}, "model metadata lacks mapping_hash, cutoff, molecules"),
    ({"cutoff": "8"}, "model metadata has an invalid cutoff"),
    ({"cutoff": -1.0}, "model metadata has an invalid cutoff"),
    ({"mapping_hash": "../../x"}, "model metadata has an invalid mapping_hash"),
    ({"molecules": "POPC"}, "model metadata has an invalid molecules"),
    ({"mapping_files": ["POPC.yaml"]}, "model metadata has an invalid mapping_files"),
])
def test_incomplete_or_invalid_metadata_is_one_clear_error(lipids, sandbox, metadata, message):
    if isinstance(metadata, dict) and len(metadata) == 1 and "mapping_set" not in metadata:
        metadata = dict(lipids[1], **metadata)  # one field changed in real metadata
    path = _save(lipids[0], sandbox / "bad.pt", metadata)
    with pytest.raises(HeroBMError, match=r"bad\.pt: " + message):
        load_model(path)


def test_checkpoint_and_junk_are_not_models(sandbox):
    checkpoint = sandbox / "best.pt"
    torch.save({"step": 3}, checkpoint)
    with pytest.raises(HeroBMError, match=r"best\.pt: a training checkpoint, not a model file"):
        load_model(checkpoint)
    junk = sandbox / "junk.pt"
    junk.write_bytes(b"\x00" * 64)
    with pytest.raises(HeroBMError, match=r"junk\.pt: not a deployed HEroBM model"):
        load_model(junk)


def test_cli_backmap_with_crafted_model_exits_2_with_one_line(lipids, sandbox, capsys):
    model = _save(lipids[0], sandbox / "crafted.pt", _embedding(lipids, mapping_set="../../escaped"))
    out = sandbox / "out.pdb"
    code = main(["backmap", str(ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"), "-o", str(out),
                 "--model", str(model), "--no-minimize"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "crafted.pt" in err and "mapping_set" in err
    assert not out.exists() and not (sandbox / "escaped").exists()


def test_cli_deploy_refuses_what_is_not_a_checkpoint(sandbox, capsys):
    pdb = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
    junk = sandbox / "random.bin"
    junk.write_bytes(bytes(range(256)) * 8)
    other = sandbox / "other.pt"
    torch.save({"model": {}, "step": "three"}, other)
    cases = [(pdb, "not a training checkpoint"), (junk, "not a training checkpoint"),
             (models_dir() / "martini3_lipids.pt", "already a deployed model file"),
             (other, "not a training checkpoint (missing or invalid config, mapping_hash, step, elapsed, metrics)"),
             (sandbox / "missing.pt", "cannot read checkpoint")]
    for source, message in cases:
        out = sandbox / "model.pt"
        code = main(["deploy", str(source), "-o", str(out)])
        err = capsys.readouterr().err
        assert code == 2, source
        assert err.count("\n") == 1 and err.startswith(f"herobm: error: {source}: {message}"), err
        assert not out.exists()
    assert sorted(p.name for p in sandbox.iterdir()) == ["a", "other.pt", "random.bin", "tmp"]


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth (functions included)."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.add(module)
            names.update(f"{module}.{a.name}" for a in node.names)  # `from .. import training`
    return names


def test_model_does_not_import_training():
    imported = {f.name: _imported_modules(f) for f in sorted((PACKAGE / "model").glob("*.py"))}
    assert "config.py" in imported and "openmm_herobm.mapping" in imported["deploy.py"]
    upward = {f: sorted(n for n in names if n.startswith(("openmm_herobm.training", "openmm_herobm.cli")))
              for f, names in imported.items()}
    assert not any(upward.values()), upward
    # one definition, in the model; training uses it
    from openmm_herobm.model import ModelConfig
    from openmm_herobm.training.trainer import ModelConfig as TrainingModelConfig

    assert TrainingModelConfig is ModelConfig
    assert "openmm_herobm.model.ModelConfig" in _imported_modules(PACKAGE / "training" / "trainer.py")


def test_version_comes_from_package_metadata(monkeypatch):
    assert openmm_herobm.__version__ == importlib.metadata.version("openmm-herobm")
    assert openmm_herobm.deploy.__doc__ and "deploy" in openmm_herobm.__all__

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    with open(ROOT / "pyproject.toml", "rb") as f:
        assert openmm_herobm._version() == tomllib.load(f)["project"]["version"]
