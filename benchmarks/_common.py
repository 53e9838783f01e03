"""What the benchmark scripts here share: the data they read, the chains they pick, and how each
writes its JSON result (with the command and the date).  Scripts import it as ``_common``
(``python benchmarks/x.py`` puts this folder first on ``sys.path``)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "proteins"


def write_result(path: Path | None, **payload) -> None:
    """``{"command", "date", **payload}`` as JSON at ``path`` (folders made; nothing when None)."""
    if path is None:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d"), **payload}
    path.write_text(json.dumps(record, indent=1, default=float) + "\n")


def select_chains(test_dir: str, limit: int, sample: str, seed: int) -> list[Path]:
    files = sorted(Path(test_dir).glob("*.pdb.gz"))
    if limit <= 0 or limit >= len(files):
        return files
    if sample == "first":
        return files[:limit]
    rng = np.random.default_rng(seed)
    return sorted(files[i] for i in rng.choice(len(files), size=limit, replace=False))


def chain_name(path: Path) -> str:
    return path.name[:-len(".pdb.gz")] if path.name.endswith(".pdb.gz") else path.stem


def is_hydrogen(atom) -> bool:
    if atom.element is not None and atom.element.symbol not in ("VS",):
        return atom.element.symbol in ("H", "D")
    return atom.name.lstrip("0123456789")[:1].upper() == "H"


def prepare_chain(path: Path, unmapped: str):
    """(all-atom heavy reference of the mapped residues, CG trajectory, forward-map result)."""
    from openmm_herobm import map_structure
    from openmm_herobm.io import atom_slice, load_structure

    traj = load_structure(path)
    heavy = [a.index for a in traj.topology.atoms if not is_hydrogen(a)]
    if len(heavy) < traj.n_atoms:
        traj = atom_slice(traj, heavy)
    result = map_structure(traj, "martini3", incomplete="skip", unmapped=unmapped)
    top = result.system.aa_topology  # the topology of `traj` (make_whole shares it)
    keep = sorted(a.index for r in result.system.residues for a in top.residue(r.aa_residue).atoms)
    ref = atom_slice(traj, keep) if len(keep) < traj.n_atoms else traj
    return ref, result.cg, result


def summarise(values):
    v = np.array([x for x in values if x is not None], np.float64)
    if not v.size:
        return None
    return {"mean": float(v.mean()), "median": float(np.median(v)), "min": float(v.min()),
            "max": float(v.max()), "n": int(v.size)}
