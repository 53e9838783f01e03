"""Residue names as users' setups write them: protonation names of CHARMM/Martini tools, renamed copies."""

import gzip
from pathlib import Path

import numpy as np
import pytest

import openmm_herobm as hb
from openmm_herobm.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
UBQ_CG = ROOT / "examples" / "data" / "1ubq_martinize2_cg.pdb"
MEMBRANE = ROOT / "examples" / "data" / "tm_helix_popc_chol_cg.gro.gz"


def test_glup_is_read_as_protonated_glutamate(tmp_path):
    """GLUP (CHARMM-GUI / Martini's protonated GLU) was dropped with --unmapped drop, leaving a hole in
    the protein; now it is GLH: written GLU, with the carboxyl hydrogen HE2 after the pipeline."""
    cg = tmp_path / "glup.pdb"
    cg.write_text(UBQ_CG.read_text().replace(" GLU A  16", " GLUPA  16"))
    assert "GLUPA  16" in cg.read_text()  # the PDB's 4-character residue name column (17-20)
    raw = hb.backmap(str(cg))
    plain = hb.backmap(str(UBQ_CG))
    names = [r.name for r in raw.trajectory.topology.residues]
    assert len(names) == 76 and names[15] == "GLH"
    glh = [a.name for a in raw.trajectory.topology.residue(15).atoms]
    assert glh == [a.name for a in plain.trajectory.topology.residue(15).atoms]  # the same heavy atoms
    # its own bead types (a separate mapping) move the fit a little, nothing more.  The fit's choices
    # (rotamers, a carbonyl flipped) are chaotic: 0.002 A of noise on ubiquitin's beads alone moves
    # the output 0.005-0.016 nm RMS; GLUP against GLU under six such draws 0.016-0.038 nm, CA 0.002-0.010
    moved = np.sqrt(((raw.trajectory.xyz - plain.trajectory.xyz) ** 2).sum(-1))[0]
    ca = raw.trajectory.topology.select("name CA")
    assert np.sqrt((moved ** 2).mean()) < 0.05 and np.sqrt((moved[ca] ** 2).mean()) < 0.02  # nm
    result = hb.backmap_and_simulate(str(cg), minimize=False)
    glu = [r for r in result.topology.residues() if r.id == "16"][0]
    assert glu.name == "GLU" and "HE2" in {a.name for a in glu.atoms()}


def test_alias_reads_a_renamed_lipid_copy(tmp_path, capsys):
    """A setup that renamed one leaflet's POPC POPX: refused by name without an alias, read as POPC with one."""
    lines = gzip.open(MEMBRANE, "rt").read().splitlines()
    popc = [i for i, line in enumerate(lines[2:-1], 2) if line[5:10].strip() == "POPC"]
    two = {lines[i][:5] for i in popc[:1]} | {lines[popc[-1]][:5]}  # the first and the last POPC molecule
    for i in (i for i in popc if lines[i][:5] in two):
        lines[i] = lines[i][:5] + "POPX " + lines[i][10:]
    cg = tmp_path / "renamed.gro"
    cg.write_text("\n".join(lines) + "\n")
    assert main(["backmap", str(cg), "-o", str(tmp_path / "no.pdb"), "--no-minimize"]) == 2
    assert "POPX" in capsys.readouterr().err
    out = tmp_path / "yes.pdb"
    assert main(["backmap", str(cg), "-o", str(out), "--no-minimize", "--alias", "POPX=POPC"]) == 0
    reference = hb.backmap(str(MEMBRANE))
    renamed = hb.backmap(str(cg), aliases={"POPX": "POPC"})
    assert np.array_equal(renamed.trajectory.xyz, reference.trajectory.xyz)
    assert "POPX" not in out.read_text()


def test_alias_refuses_what_is_not_name_equals_name():
    with pytest.raises(hb.HeroBMError, match="NEW=KNOWN"):
        hb.backmap(str(UBQ_CG), aliases=["POPX"])
