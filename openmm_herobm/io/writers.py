"""Writing structures and trajectories (PDB, GRO, mmCIF, XTC, DCD, TRR), each file atomically.

Output paths are checked before any work; the file is written to a temporary and put in
place only when complete (:mod:`openmm_herobm.io.files`).  CG beads are written as
martinize2 does (blank element column); insertion codes and chain ids are kept.
"""

from __future__ import annotations

import os
from pathlib import Path as _Path

import mdtraj as md
import numpy as np
import openmm.app as app
from mdtraj.core import element as md_element
from openmm import unit
from openmm.app.internal.unitcell import computePeriodicBoxVectors

from ..errors import StructureError
from .common import TRAJECTORY_FORMATS, _check_finite, _describe_atom, _split_ext, insertion_code
from .files import OutputFiles, atomic_output, check_outputs, output_files

_STRUCTURE_WRITE = (".pdb", ".gro", ".cif", ".mmcif")


def check_output_path(path, kind="structure") -> str:
    """Check an output path before any work is done; return its extension.

    kind='structure': .pdb .gro .cif .mmcif; kind='trajectory': those plus
    .xtc .dcd .trr.  Raises StructureError for an unknown extension or a
    missing output folder, HeroBMError for a path that is a folder or a
    folder that cannot be written (:func:`~openmm_herobm.io.check_outputs`).
    """
    if kind not in ("structure", "trajectory"):
        raise ValueError(f"kind must be 'structure' or 'trajectory', not {kind!r}")
    name = os.fspath(path)
    ext, gz = _split_ext(name)
    allowed = _STRUCTURE_WRITE + (TRAJECTORY_FORMATS if kind == "trajectory" else ())
    if gz or ext not in allowed:
        raise StructureError(f"{name}: cannot write this file type as a {kind}; supported "
                             f"output formats: {', '.join(allowed)}")
    folder = os.path.dirname(os.path.abspath(name))
    if not os.path.isdir(folder):
        raise StructureError(f"{name}: output folder {folder} does not exist; create it first")
    check_outputs([name])  # not a folder itself, its folder writable
    return ext


def save_structure(traj: md.Trajectory, path, frame=None, files: OutputFiles | None = None) -> None:
    """Write a structure (.pdb, .gro, .cif/.mmcif) atomically.

    ``frame``: index of the one frame to write; None writes every frame (as
    MODELs in PDB/mmCIF, concatenated frames in GRO).  ``files``: the
    :func:`~openmm_herobm.io.output_files` set the file joins (committed with it).
    """
    ext = check_output_path(path, "structure")
    if frame is not None:
        traj = traj.slice([frame], copy=False)
    _write(traj, os.fspath(path), ext, files)


def save_trajectory(traj: md.Trajectory, path, files: OutputFiles | None = None) -> None:
    """Write all frames atomically: .xtc, .dcd, .trr, or a multi-model .pdb/.gro/.cif."""
    _write(traj, os.fspath(path), check_output_path(path, "trajectory"), files)


def _write(traj, name, ext, files=None):
    _check_finite(traj, name, "refusing to write it")
    with atomic_output(name, files) as tmp:
        _WRITERS[ext](traj, tmp, name)


def _pdb_lines(traj, name):
    """Yield PDB records.  Virtual-element (CG) atoms get a blank element column
    and names starting in column 13, like martinize2's cg.pdb."""
    rows = []  # (atom index or -1 for TER, text between serial and x, text after z)
    for chain in traj.topology.chains:
        cid = (getattr(chain, "chain_id", None) or " ")[:1]
        last = None
        for res in chain.residues:
            if len(res.name) > 4:
                raise StructureError(f"{name}: residue name {res.name!r} is longer than PDB "
                                     f"allows (4); write .gro or .cif instead")
            rname = res.name if len(res.name) == 4 else f"{res.name:>3} "
            resid = f"{cid}{res.resSeq % 10000 if res.resSeq > 9999 else res.resSeq:4d}"
            resid += (insertion_code(res) or " ")[:1]
            for atom in res.atoms:
                if len(atom.name) > 4:
                    raise StructureError(f"{name}: atom name {atom.name!r} is longer than PDB "
                                         f"allows (4); write .gro or .cif instead")
                virtual = atom.element is None or atom.element is md_element.virtual
                symbol = "" if virtual else atom.element.symbol.upper()
                aname = atom.name
                if len(symbol) == 1 and len(aname) < 4:  # PDB convention: 1-letter elements start in column 14
                    aname = " " + aname
                rows.append((atom.index, f" {aname:<4} {rname}{resid}   ", f"  1.00  0.00          {symbol:>2}  "))
            last = f"      {rname}{resid}"
        if last is not None:
            rows.append((-1, last, ""))

    if traj.unitcell_lengths is not None:
        (a, b, c), (al, be, ga) = traj.unitcell_lengths[0] * 10, traj.unitcell_angles[0]
        yield f"CRYST1{a:9.3f}{b:9.3f}{c:9.3f}{al:7.2f}{be:7.2f}{ga:7.2f} P 1           1"
    multi = traj.n_frames > 1
    for f in range(traj.n_frames):
        xyz = traj.xyz[f].astype(np.float64) * 10.0
        if xyz.max(initial=0) >= 9999.9995 or xyz.min(initial=0) <= -999.9995:
            raise StructureError(f"{name}: coordinates do not fit the PDB columns "
                                 f"(-999.999..9999.999 A); write .gro or .cif instead")
        if multi:
            yield f"MODEL     {f + 1:4d}"
        for serial, (index, middle, tail) in enumerate(rows, 1):
            if index < 0:
                yield f"TER   {serial % 100000:5d}{middle}"
            else:
                x, y, z = xyz[index]
                yield f"ATOM  {serial % 100000:5d}{middle}{x:8.3f}{y:8.3f}{z:8.3f}{tail}"
        if multi:
            yield "ENDMDL"
    yield "END"


def _write_pdb(traj, tmp, name):
    with open(tmp, "w") as fh:
        for line in _pdb_lines(traj, name):
            fh.write(line + "\n")


def _write_gro(traj, tmp, name):
    top = traj.topology
    for atom in top.atoms:
        if len(atom.name) > 5 or len(atom.residue.name) > 5:
            raise StructureError(f"{name}: {_describe_atom(atom)} has a name longer than GRO "
                                 f"allows (5); write .pdb or .cif instead")
    if np.abs(traj.xyz).max(initial=0) >= 9999.9995:
        raise StructureError(f"{name}: coordinates do not fit the GRO columns; write .cif instead")
    head = [f"{a.residue.resSeq % 100000:5d}{a.residue.name:<5}{a.name:>5}{(a.index + 1) % 100000:5d}"
            for a in top.atoms]
    with open(tmp, "w") as fh:
        for f in range(traj.n_frames):
            fh.write(f"written by openmm-herobm t= {float(traj.time[f]):.5f}\n{top.n_atoms:5d}\n")
            fh.writelines(f"{h}{x:8.3f}{y:8.3f}{z:8.3f}\n" for h, (x, y, z) in zip(head, traj.xyz[f]))
            v = np.zeros((3, 3)) if traj.unitcell_vectors is None else traj.unitcell_vectors[f]
            values = [v[0, 0], v[1, 1], v[2, 2], v[0, 1], v[0, 2], v[1, 0], v[1, 2], v[2, 0], v[2, 1]]
            if not np.any(values[3:]):
                values = values[:3]
            fh.write("".join(f"{x:10.5f}" for x in values) + "\n")


def _to_openmm(traj):
    """mdtraj -> OpenMM topology with chain ids, resSeq and insertion codes."""
    top = app.Topology()
    for k, chain in enumerate(traj.topology.chains):
        cid = (getattr(chain, "chain_id", None) or "").strip() or chr(ord("A") + k % 26)
        c = top.addChain(cid)
        for res in chain.residues:
            r = top.addResidue(res.name, c, str(res.resSeq), insertion_code(res))
            for atom in res.atoms:
                virtual = atom.element is None or atom.element is md_element.virtual
                top.addAtom(atom.name, None if virtual else app.Element.getBySymbol(atom.element.symbol), r)
    if traj.unitcell_vectors is not None:
        # from lengths/angles in float64: OpenMM wants the reduced form, which
        # float32 box vectors can miss by rounding
        lengths = traj.unitcell_lengths[0].astype(float)
        angles = np.radians(traj.unitcell_angles[0].astype(float))
        top.setPeriodicBoxVectors(computePeriodicBoxVectors(*lengths, *angles))
    return top


def _write_cif(traj, tmp, name):
    top = _to_openmm(traj)
    with open(tmp, "w") as fh:
        app.PDBxFile.writeHeader(top, fh, keepIds=True)
        for f in range(traj.n_frames):
            positions = traj.xyz[f].astype(float) * unit.nanometer
            app.PDBxFile.writeModel(top, positions, fh, modelIndex=f + 1, keepIds=True)


def _mdtraj_writer(method):
    def write(traj, tmp, name):
        getattr(traj, method)(tmp, force_overwrite=True)
    return write


_WRITERS = {".pdb": _write_pdb, ".gro": _write_gro, ".cif": _write_cif, ".mmcif": _write_cif,
            ".xtc": _mdtraj_writer("save_xtc"), ".dcd": _mdtraj_writer("save_dcd"),
            ".trr": _mdtraj_writer("save_trr")}


def save_openmm_structure(topology: app.Topology, positions, path, files: OutputFiles | None = None) -> None:
    """An OpenMM (topology, positions) as PDB or mmCIF (by extension), atomically (or into ``files``,
    a set of one run's outputs), with OpenMM's writers: the refined structure's file."""
    path = os.fspath(path)
    cif = path.lower().endswith((".cif", ".mmcif"))
    with atomic_output(path, files) as tmp:
        with open(tmp, "w") as f:
            if cif:
                app.PDBxFile.writeFile(topology, positions, f, keepIds=True)
            else:
                app.PDBFile.writeFile(topology, positions, f, keepIds=True)
        if not cif:
            restore_residue_names(tmp, topology)


def restore_residue_names(pdb_path, topology: app.Topology) -> None:
    """Put back 4-character residue names (POPC, CHL1) that OpenMM's PDB writer cuts to 3.

    Columns 18-21 hold the name, as CHARMM-GUI and GROMACS write it and OpenMM and mdtraj
    read it; without this a written membrane reads back as 'POP'/'CHL' and matches no template.
    """
    names = [atom.residue.name for atom in topology.atoms()]
    if all(len(n) <= 3 for n in names):
        return
    lines = _Path(pdb_path).read_text().splitlines(keepends=True)
    k = 0
    for i, line in enumerate(lines):
        if line.startswith(("ATOM  ", "HETATM")):
            lines[i] = line[:17] + f"{names[k]:<4.4}" + line[21:]
            k += 1
    _Path(pdb_path).write_text("".join(lines))



def write_outputs(traj: md.Trajectory, output=None, trajectory_output=None) -> list[str]:
    """Frame 0 to ``output`` and every frame to ``trajectory_output`` (each optional; both or neither
    put in place)."""
    written = []
    with output_files() as files:
        if output is not None:
            save_structure(traj, output, frame=0, files=files)
            written.append(str(output))
        if trajectory_output is not None:
            save_trajectory(traj, trajectory_output, files=files)
            written.append(str(trajectory_output))
    return written
