"""Reading structures and trajectories into :class:`mdtraj.Trajectory`, checked on the way in.

Readers
-------
* PDB: OpenMM's low-level parser (``PdbStructure``, the one inside ``PDBFile``)
  keeps chains, TER records, resSeq and insertion codes.  ``PDBFile`` itself is
  not used because it renames residues and atoms (HSD/HIE -> HIS, ASH -> ASP,
  SOL -> HOH, HN -> H, OT1 -> O) and silently drops atoms with repeated names.
* mmCIF: ``openmm.app.PDBxFile``; the names it rewrote are restored from the
  file's own atom_site table.
* GRO: a small fixed-column reader of our own (mdtraj's renames residues too).
* XTC/DCD/TRR: mdtraj, with the topology taken from ``top``.

Elements: an element column (PDB) / type_symbol (mmCIF) is trusted when it
holds a valid symbol.  Atoms without one get an element guessed from the atom
name for atomistic files, and ``mdtraj.element.virtual`` for coarse-grained
files.  A file is coarse-grained when the median nearest-neighbour distance is
above 0.2 nm (bonded atoms sit at 0.1-0.16 nm, Martini beads at >= 0.25 nm), so
"SC1" is never read as sulfur nor "W" as tungsten.  Standard-residue bonds are
added for atomistic files only; coarse-grained files get no bonds.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import re
import shutil
import struct
import tempfile

import mdtraj as md
import numpy as np
import openmm.app as app
from mdtraj.core import element as md_element
from mdtraj.formats.pdb.pdbfile import PDBTrajectoryFile
from openmm import unit
from openmm.app.internal import xtc_utils
from openmm.app.internal.pdbstructure import PdbStructure
from openmm.app.internal.pdbx.reader.PdbxReader import PdbxReader
from scipy.spatial import cKDTree

from ..chemistry import standard_residue
from ..errors import StructureError
from .common import (STRUCTURE_FORMATS, TRAJECTORY_FORMATS, _check_finite, _describe_atom, _one_line, _split_ext,
                     is_coarse_grained)
from .pbc import make_whole

CG_NEIGHBOUR_NM = 0.2  # median nearest-neighbour distance above which a file is CG
#: inputs with a coordinate beyond +-1e5 A (10 um, far beyond any simulation box) are refused:
#: such a value is corruption or wrong units, and would be carried silently into every output
MAX_ABS_COORDINATE_NM = 1e4


def _check_input_coordinates(traj, name):
    """Refuse NaN/inf and coordinates beyond MAX_ABS_COORDINATE_NM, naming frame and atom,
    and a unit cell that is not finite (make_whole would turn every position into NaN)."""
    _check_finite(traj, name, "the file is corrupt; regenerate it")
    if traj.unitcell_vectors is not None:
        bad = ~(np.abs(traj.unitcell_vectors) <= MAX_ABS_COORDINATE_NM).all(axis=(1, 2))
        if bad.any():
            raise StructureError(f"{name}: the unit cell of frame {int(np.argmax(bad))} is not finite or "
                                 f"beyond +-{MAX_ABS_COORDINATE_NM * 10:g} A; fix the box (CRYST1 or the box line)")
    far = (np.abs(traj.xyz) > MAX_ABS_COORDINATE_NM).any(axis=2)
    if far.any():
        frame, index = np.argwhere(far)[0]
        value = float(traj.xyz[frame, index][np.argmax(np.abs(traj.xyz[frame, index]))]) * 10.0
        raise StructureError(
            f"{name}: coordinate {value:.4g} A in frame {frame} at "
            f"{_describe_atom(traj.topology.atom(int(index)))} is beyond +-{MAX_ABS_COORDINATE_NM * 10:g} A; "
            f"the file is corrupt or not in A/nm, fix it")


def load_structure(path, top=None, frames=None) -> md.Trajectory:
    """Read a structure (PDB, GRO, mmCIF, optionally .gz) or a trajectory
    (XTC, DCD, TRR; ``top`` = structure file, Trajectory or Topology).

    ``frames``: an int, slice or index array applied after reading.
    ``top`` is ignored for structure files.  Raises StructureError with a
    one-line message for any problem with the input.
    """
    name = os.fspath(path)
    ext, gz = _split_ext(name)
    if ext not in STRUCTURE_FORMATS + TRAJECTORY_FORMATS or (gz and ext in TRAJECTORY_FORMATS):
        raise StructureError(
            f"{name}: unsupported file type; supported inputs are structures "
            f"{', '.join(STRUCTURE_FORMATS)} (optionally .gz) and trajectories "
            f"{', '.join(TRAJECTORY_FORMATS)} (with a topology)")
    if not os.path.isfile(name):
        raise StructureError(f"{name}: file not found; check the path")
    if os.path.getsize(name) == 0:
        raise StructureError(f"{name}: file is empty; point to a file that holds a structure")
    if ext in TRAJECTORY_FORMATS:
        traj = _read_trajectory(name, ext, top)
    else:
        with _plain_copy(name, gz) as plain:
            traj = _READERS[ext](plain, name)
    if frames is not None:
        if isinstance(frames, (int, np.integer)):
            frames = [frames]
        try:  # copy=False keeps the topology object, hence the insertion codes
            traj = traj.slice(frames, copy=False)
        except IndexError:
            raise StructureError(f"{name}: frame selection {frames!r} is out of range; "
                                 f"the file has {traj.n_frames} frame(s)") from None
    _check_input_coordinates(traj, name)
    return traj


@contextlib.contextmanager
def _plain_copy(name, gz):
    """Yield a path to the uncompressed file (a temp copy for .gz inputs)."""
    if not gz:
        yield name
        return
    with tempfile.TemporaryDirectory() as folder:
        plain = os.path.join(folder, os.path.basename(name)[:-3])
        try:
            with gzip.open(name, "rb") as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
        except (OSError, EOFError) as exc:
            raise StructureError(f"{name}: cannot decompress ({exc}); the .gz file is "
                                 f"truncated or not gzip, re-create it") from None
        if os.path.getsize(plain) == 0:
            raise StructureError(f"{name}: file is empty; point to a file that holds a structure")
        yield plain


def _read_lines(plain, name):
    with open(plain, encoding="utf-8", errors="replace") as fh:
        return fh.read().splitlines()


def _read_pdb(plain, name):
    lines = _read_lines(plain, name)
    n_atoms = 0
    for number, line in enumerate(lines, 1):
        if line.startswith(("ATOM  ", "HETATM")):
            n_atoms += 1
            try:  # x, y, z live in columns 31-54; a shorter line was cut
                ok = len(line) >= 54 and [float(line[i:i + 8]) for i in (30, 38, 46)]
            except ValueError:
                ok = False
            if not ok:
                raise StructureError(
                    f"{name}: line {number} is truncated or malformed (an ATOM/HETATM record "
                    f"needs x, y, z in columns 31-54); re-export the file")
    if n_atoms == 0:
        raise StructureError(f"{name}: no ATOM/HETATM records; this PDB file holds no atoms")
    try:
        pdb = PdbStructure(lines, load_all_models=True)
    except Exception as exc:
        raise StructureError(f"{name}: not a valid PDB file ({_one_line(exc)}); re-export it") from None

    top = app.Topology()
    explicit = []
    models = list(pdb.iter_models(use_all_models=True))
    for chain in models[0].iter_chains():
        c = top.addChain(chain.chain_id.strip())
        for res in chain.iter_residues():
            r = top.addResidue(res.get_name(), c, str(res.number), res.insertion_code.strip())
            for atom in res.iter_atoms():
                el = atom.element
                explicit.append(el is not None)  # 'EP' (extra particle) counts as explicit
                top.addAtom(atom.get_name(), el if isinstance(el, app.Element) else None, r)
    xyz = []
    for k, model in enumerate(models):
        pos = [atom.get_position().value_in_unit(unit.nanometer) for atom in model.iter_atoms()]
        if len(pos) != len(explicit):
            raise StructureError(f"{name}: MODEL {k + 1} has {len(pos)} atoms but MODEL 1 has "
                                 f"{len(explicit)}; all models must hold the same atoms")
        xyz.append(pos)
    box = pdb.get_periodic_box_vectors()
    if box is not None:
        box = np.array(box.value_in_unit(unit.nanometer))
        # CRYST1 1 1 1 is a placeholder (NMR, cryo-EM), not a periodic box
        if np.allclose(np.diag(box), 0.1):
            box = None
    return _finish(_from_openmm(top), np.array(xyz), box, explicit)


def _read_cif(plain, name):
    try:
        cif = app.PDBxFile(plain)
    except Exception as exc:
        raise StructureError(f"{name}: not a valid mmCIF file ({_one_line(exc)}); re-export it") from None
    top = cif.getTopology()
    if top.getNumAtoms() == 0:
        raise StructureError(f"{name}: no atom_site records; this mmCIF file holds no atoms")
    _restore_cif_names(plain, top)
    xyz = [cif.getPositions(asNumpy=True, frame=k).value_in_unit(unit.nanometer) for k in range(cif.getNumFrames())]
    for k, frame in enumerate(xyz):
        if len(frame) != top.getNumAtoms():
            raise StructureError(f"{name}: model {k + 1} has {len(frame)} atoms but model 1 has "
                                 f"{top.getNumAtoms()}; all models must hold the same atoms")
    xyz = np.array(xyz)
    box = top.getPeriodicBoxVectors()
    box = None if box is None else np.array(box.value_in_unit(unit.nanometer))
    explicit = [a.element is not None for a in top.atoms()]
    return _finish(_from_openmm(top), xyz, box, explicit)


def _restore_cif_names(plain, top):
    """Undo PDBxFile's residue/atom renaming (HSD -> HIS, HN -> H, ...) via atom ids."""
    with open(plain) as fh:
        data = []
        PdbxReader(fh).read(data)
    sites = data[0].getObj("atom_site")
    col = {k: sites.getAttributeIndex(k) for k in
           ("id", "auth_atom_id", "label_atom_id", "auth_comp_id", "label_comp_id")}
    if col["id"] < 0:
        return
    atom_col = col["auth_atom_id"] if col["auth_atom_id"] >= 0 else col["label_atom_id"]
    comp_col = col["auth_comp_id"] if col["auth_comp_id"] >= 0 else col["label_comp_id"]
    raw = {}
    for row in sites.getRowList():
        raw.setdefault(row[col["id"]], (row[comp_col], row[atom_col]))
    for atom in top.atoms():
        if atom.id in raw:
            atom.residue.name, atom.name = raw[atom.id]


_GRO_TIME = re.compile(r"t=\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")  # in the title line


def _read_gro(plain, name):
    lines = _read_lines(plain, name)
    while lines and not lines[-1].strip():
        lines.pop()
    try:
        n = int(lines[1])
    except (IndexError, ValueError):
        raise StructureError(f"{name}: line 2 must hold the atom count; this is not a valid "
                             f"GRO file") from None
    if n <= 0:
        raise StructureError(f"{name}: atom count is {n}; this GRO file holds no atoms")
    block = n + 3  # title, count, n atoms, box
    if len(lines) < block:
        raise StructureError(
            f"{name}: truncated: the header says {n} atoms but only {max(len(lines) - 2, 0)} "
            f"lines follow (need {n} atom lines and a box line); re-export the file")
    n_frames, extra = divmod(len(lines), block)
    if extra:
        raise StructureError(f"{name}: truncated: frame {n_frames + 1} is incomplete "
                             f"({extra} of {block} lines); re-export the file")
    atom_lines = lines[2:2 + n]
    # coordinate width from the decimal points (GROMACS writes %8.3f by default)
    first = atom_lines[0].find(".", 20)
    width = atom_lines[0].find(".", first + 1) - first if first >= 0 else -1
    if width <= 0:
        raise StructureError(f"{name}: line 3 has no coordinates; this is not a valid GRO file")

    xyz, boxes, times = [], [], []
    for k in range(n_frames):
        start = k * block
        frame_lines = lines[start + 2:start + 2 + n]
        fields = [(s[20:20 + width], s[20 + width:20 + 2 * width], s[20 + 2 * width:20 + 3 * width])
                  for s in frame_lines]
        try:
            xyz.append(np.array(fields).astype(float))
        except ValueError:
            bad = next(i for i, f in enumerate(fields) if not all(_is_float(v) for v in f))
            raise StructureError(f"{name}: line {start + 3 + bad} is truncated or has bad "
                                 f"coordinates; re-export the file") from None
        try:
            values = [float(v) for v in lines[start + block - 1].split()]
            assert len(values) in (3, 9)
        except (ValueError, AssertionError):
            raise StructureError(f"{name}: line {start + block} is not a box line (3 or 9 "
                                 f"numbers); the file is truncated or the atom count is wrong") from None
        v = values + [0.0] * (9 - len(values))  # v1x v2y v3z v1y v1z v2x v2z v3x v3y
        boxes.append([[v[0], v[3], v[4]], [v[5], v[1], v[6]], [v[7], v[8], v[2]]])
        t = _GRO_TIME.search(lines[start])
        times.append(float(t.group(1)) if t else k)

    top = md.Topology()
    chain = top.add_chain(chain_id="")
    residue, key = None, None
    for s in atom_lines:  # a new residue whenever (number, name) changes, as GROMACS does
        if (s[0:5], s[5:10]) != key:
            key = (s[0:5], s[5:10])
            try:
                resseq = int(s[0:5])
            except ValueError:
                resseq = 0
            residue = top.add_residue(s[5:10].strip(), chain, resSeq=resseq)
            residue.insertion_code = ""
        top.add_atom(s[10:15].strip(), md_element.virtual, residue)
    boxes = np.array(boxes)
    box = boxes if np.any(boxes) else None
    return _finish(top, np.array(xyz), box, [False] * n, time=np.array(times, dtype=float))


def _is_float(text):
    try:
        float(text)
        return True
    except ValueError:
        return False


def _from_openmm(top):
    """OpenMM topology -> mdtraj topology, keeping insertion codes and chain ids."""
    out = md.Topology.from_openmm(top)
    for new, old in zip(out.residues, top.residues()):
        new.insertion_code = (old.insertionCode or "").strip()
    return out


def _finish(top, xyz, box, explicit, time=None):
    """Assign elements (CG -> virtual), bonds, and build the Trajectory."""
    xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, top.n_atoms, 3)
    explicit = np.asarray(explicit, dtype=bool)
    coarse = _looks_coarse_grained(xyz[0])
    for atom, known in zip(top.atoms, explicit):
        if known:
            continue
        if coarse:
            atom.element = md_element.virtual
        else:
            guess = PDBTrajectoryFile._guess_element(atom.name, atom.residue.name, atom.residue.n_atoms)
            atom.element = guess or md_element.virtual
    # one bond rule for every format: mdtraj's standard-residue templates for
    # atomistic files; none for CG files (template/CONECT bonds between beads mean nothing)
    top._bonds = []
    if not (coarse or is_coarse_grained(top)):
        # mdtraj's templates match exact residue names: give protonation/CHARMM variants
        # their standard name while bonding, then restore it
        names = [r.name for r in top.residues]
        for r in top.residues:
            r.name = standard_residue(r.name)
        top.create_standard_bonds()
        for r, name in zip(top.residues, names):
            r.name = name
        if np.isfinite(xyz[0]).all():
            top.create_disulfide_bonds(xyz[0])
    traj = md.Trajectory(xyz.astype(np.float32), top, time=time)
    if box is not None:
        box = np.asarray(box, dtype=np.float64).reshape(-1, 3, 3)
        traj.unitcell_vectors = np.repeat(box, traj.n_frames, axis=0) if len(box) == 1 else box
    return traj


def _looks_coarse_grained(xyz0):
    finite = xyz0[np.isfinite(xyz0).all(axis=1)]
    if len(finite) < 2:
        return False
    dist, _ = cKDTree(finite).query(finite, k=2)
    return float(np.median(dist[:, 1])) > CG_NEIGHBOUR_NM


def _read_trajectory(name, ext, top, start=0, stop=None):
    """Frames ``start:stop`` of a trajectory over ``top`` (a structure path, Trajectory or Topology).

    The file is checked before it is read (its atom count against ``top``; a cut or damaged
    file is refused saying after which frame it breaks, never read short).
    """
    if top is None:
        raise StructureError(f"{name}: a {ext} trajectory holds no topology; also give the "
                             f"structure file it belongs to (PDB, GRO or mmCIF)")
    if isinstance(top, md.Topology):
        topology, top_name = top, "the given topology"
    elif isinstance(top, md.Trajectory):
        topology, top_name = top.topology, "the given topology"
    else:
        topology, top_name = load_structure(top).topology, os.fspath(top)
    n_frames, n_atoms, offsets = _trajectory_index(name, ext)
    if n_atoms != topology.n_atoms:
        raise StructureError(f"{name}: the trajectory has {n_atoms} atoms per frame but "
                             f"{top_name} has {topology.n_atoms}; use the structure the "
                             f"trajectory was written with")
    if start >= n_frames:
        raise StructureError(f"{name}: frames {start}:{stop} are out of range; the file has "
                             f"{n_frames} frame(s)")
    stop = n_frames if stop is None else min(stop, n_frames)
    if offsets is not None:
        return _read_xtc(name, topology, offsets, start, stop)
    try:  # the traj shares the topology, so insertion codes survive
        if start == 0 and stop == n_frames:
            return md.load(name, top=topology)
        return next(md.iterload(name, top=topology, chunk=stop - start, skip=start))
    except _READ_ERRORS as exc:
        raise _unreadable(name, ext, exc) from None


# what mdtraj's readers raise on a damaged file
_READ_ERRORS = (OSError, EOFError, RuntimeError, ValueError, IndexError, OverflowError)


def _unreadable(name, ext, exc):
    """The StructureError for a trajectory mdtraj cannot read, with the frame where it breaks."""
    good = 0
    try:
        with md.open(name) as fh:
            while len(fh.read(n_frames=1)[0]):
                good += 1
    except _READ_ERRORS:
        pass
    if good:
        return StructureError(f"{name}: truncated or corrupt after frame {good} ({_one_line(exc)}); "
                              f"re-copy or regenerate the file")
    return StructureError(f"{name}: cannot be read as {ext} ({_one_line(exc)}); the file is "
                          f"corrupt or not a {ext} trajectory")


def _truncated(name, complete, detail=""):
    return StructureError(f"{name}: truncated after frame {complete} ({complete} complete frame(s)"
                          f"{detail}); re-copy or regenerate the file")


def _trajectory_index(name, ext):
    """``(frames, atoms per frame, XTC frame offsets or None)`` of a checked trajectory file."""
    if ext == ".xtc":
        offsets, n_atoms = _xtc_frames(name)
        return len(offsets) - 1, n_atoms, offsets
    shape = _dcd_frames(name) if ext == ".dcd" else None
    if shape is None:  # TRR, or a DCD layout the header check does not know: ask mdtraj
        try:
            with md.open(name) as fh:
                n_atoms = fh.read(n_frames=1)[0].shape[1]
            with md.open(name) as fh:
                shape = len(fh), n_atoms
        except _READ_ERRORS as exc:
            raise _unreadable(name, ext, exc) from None
    if shape[0] == 0:
        raise StructureError(f"{name}: the trajectory holds no frames")
    return shape[0], shape[1], None


def _dcd_frames(name):
    """``(complete frames, atoms)`` of a DCD file from its header and size, or None for a layout
    this check does not know (64-bit record markers, fixed atoms).  A file that ends inside a
    frame, or holds fewer frames than its header says, is refused: mdtraj reads it short silently."""
    size = os.path.getsize(name)
    with open(name, "rb") as fh:
        head = fh.read(96)
        if len(head) < 96:
            return None
        for order in "<>":  # the first record is 84 bytes long, in the writer's byte order
            if struct.unpack(order + "i", head[:4])[0] == 84 and head[4:8] == b"CORD":
                break
        else:
            return None
        icntrl = struct.unpack(order + "20i", head[8:88])
        title = struct.unpack(order + "i", head[92:96])[0]
        header = 92 + 4 + title + 4 + 12  # CORD record, title record, atom-count record
        if title < 4 or header > size:
            return None
        fh.seek(header - 12)
        marker, n_atoms, end = struct.unpack(order + "3i", fh.read(12))
        if (marker, end) != (4, 4) or n_atoms <= 0 or icntrl[8] != 0:
            return None
        charmm = icntrl[19] != 0
        frame = (4 if charmm and icntrl[11] == 1 else 3) * (8 + 4 * n_atoms)
        if charmm and icntrl[10] != 0:  # a unit-cell record before the coordinates of each frame
            cell = fh.read(4)  # its length (48: six doubles); a file cut before it holds no frame
            cell = struct.unpack(order + "i", cell)[0] if len(cell) == 4 else 48
            if cell <= 0:
                return None
            frame += 8 + cell
    complete, rest = divmod(size - header, frame)
    if rest:
        raise _truncated(name, complete, ", then a partial one")
    if icntrl[0] > complete:
        raise _truncated(name, complete, f"; its header says {icntrl[0]}")
    return complete, n_atoms


# XTC frame header: magic, atoms, step, time, box, atoms again; for more than 9 atoms
# (compressed) precision, min and max integer coordinates, small-run index, payload bytes
_XTC_MAGIC = 1995
_XTC_HEAD = struct.Struct(">iiif9fi")
_XTC_COMPRESSED = struct.Struct(">f3i3iii")
_XTC_SMALLIDX = (9, 73)  # the decoder's table of run sizes has 73 entries, the first 9 unused


def _xtc_frames(name):
    """Byte offsets of the frames of an XTC file (plus its end) and its atom count.

    Every frame header is checked before the C decoder sees it: a bad run-size index,
    coordinate range or payload size in a damaged file makes it read or write out of
    bounds and crash the process, which no exception handler can turn into a message.
    """
    size = os.path.getsize(name)
    offsets, n_atoms, pos = [0], None, 0
    with open(name, "rb") as fh:
        while pos < size:
            frame = len(offsets)  # 1-based number of the frame at ``pos``
            fh.seek(pos)
            raw = fh.read(_XTC_HEAD.size + _XTC_COMPRESSED.size)
            if len(raw) < _XTC_HEAD.size:
                raise _truncated(name, frame - 1, ", then a partial one")
            magic, natoms, _, _, *box, lsize = _XTC_HEAD.unpack_from(raw)
            problem = None
            if magic != _XTC_MAGIC:
                problem = "no XTC frame starts here"
            elif natoms <= 0 or lsize != natoms or natoms != (n_atoms or natoms):
                problem = f"atom count {natoms}"
            elif not np.isfinite(box).all():
                problem = "box is not finite"
            if problem is None and natoms <= 9:  # up to 9 atoms are stored as plain floats
                end = pos + _XTC_HEAD.size + 12 * natoms
            elif problem is None:
                if len(raw) < _XTC_HEAD.size + _XTC_COMPRESSED.size:
                    raise _truncated(name, frame - 1, ", then a partial one")
                precision, *ints, smallidx, nbytes = _XTC_COMPRESSED.unpack_from(raw, _XTC_HEAD.size)
                spans = [hi - lo for lo, hi in zip(ints[:3], ints[3:])]  # max - min integer coordinate
                if not (np.isfinite(precision) and precision > 0):
                    problem = f"precision {precision}"
                elif min(spans) < 0 or max(spans) >= 2**31 - 2:  # the writer's own limit
                    problem = "coordinate range"
                elif not _XTC_SMALLIDX[0] <= smallidx < _XTC_SMALLIDX[1]:
                    problem = f"run-size index {smallidx}"
                elif not 0 <= nbytes <= 4 * (int(3 * natoms * 1.2) - 3):  # the decoder's buffer
                    problem = f"payload size {nbytes}"
                end = pos + _XTC_HEAD.size + _XTC_COMPRESSED.size + (nbytes + 3) // 4 * 4
            if problem is not None:
                raise StructureError(f"{name}: frame {frame} is corrupt ({problem}, at byte {pos}); "
                                     f"the file is damaged, regenerate it")
            if end > size:
                raise _truncated(name, frame - 1, ", then a partial one")
            n_atoms, pos = natoms, end
            offsets.append(pos)
    if n_atoms is None:
        raise StructureError(f"{name}: the trajectory holds no frames")
    return np.array(offsets, dtype=np.int64), n_atoms


def _read_xtc(name, topology, offsets, start, stop):
    """Frames ``start:stop`` of a checked XTC file, decoded by OpenMM's reader.

    mdtraj's decoder writes past its buffers on some damaged payloads (heap corruption);
    OpenMM's checks them and reports the frame as corrupt.  Both give the same numbers.
    """
    with contextlib.ExitStack() as stack:
        path = name
        if (start, stop) != (0, len(offsets) - 1):  # a block: decode only its bytes
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            path = os.path.join(folder, "frames.xtc")
            with open(name, "rb") as src, open(path, "wb") as dst:
                src.seek(offsets[start])
                dst.write(src.read(int(offsets[stop] - offsets[start])))
        try:
            coords, box, time, _ = xtc_utils.read_xtc(os.fsencode(path))
        except RuntimeError as exc:
            raise StructureError(f"{name}: cannot be read as .xtc ({_one_line(exc)}); the file is "
                                 f"corrupt, regenerate it") from None
    traj = md.Trajectory(np.ascontiguousarray(coords.transpose(2, 0, 1)), topology, time=time)
    if np.any(np.abs(box) >= 1e-10):  # an all-zero box means none (as mdtraj reads it)
        traj.unitcell_vectors = np.ascontiguousarray(box.transpose(2, 0, 1))
    return traj


_READERS = {".pdb": _read_pdb, ".cif": _read_cif, ".mmcif": _read_cif, ".gro": _read_gro}


def count_frames(trajectory) -> int:
    """Frames in a trajectory file (XTC, DCD, TRR) without reading its coordinates into memory."""
    name = os.fspath(trajectory)
    ext, _ = _split_ext(name)
    if ext not in TRAJECTORY_FORMATS:
        raise StructureError(f"{name}: not a trajectory ({', '.join(TRAJECTORY_FORMATS)})")
    if not os.path.isfile(name):
        raise StructureError(f"{name}: file not found; check the path")
    return _trajectory_index(name, ext)[0]


def load_frames(structure, trajectory, start: int, stop: int, step: int = 1) -> md.Trajectory:
    """Frames ``start:stop:step`` of ``trajectory`` over ``structure``, reading only those frames
    (a block of a long trajectory for one batch task)."""
    top = load_structure(structure)
    name = os.fspath(trajectory)
    if not os.path.isfile(name):
        raise StructureError(f"{name}: file not found; check the path")
    traj = _read_trajectory(name, _split_ext(name)[0], top.topology, start, max(stop, start + 1))
    traj = traj[::step] if step > 1 else traj
    _check_input_coordinates(traj, name)
    return traj


def from_openmm(topology, positions) -> md.Trajectory:
    """An OpenMM ``(topology, positions)`` pair (as a ``Modeller`` or ``PDBFile`` holds them;
    positions a Quantity, or plain numbers in nm) as a one-frame Trajectory, its periodic box kept."""
    from openmm import unit

    if unit.is_quantity(positions):
        positions = positions.value_in_unit(unit.nanometer)
    xyz = np.asarray(positions, dtype=np.float64)
    if xyz.shape != (topology.getNumAtoms(), 3):
        raise StructureError(f"(topology, positions): {xyz.shape[0] if xyz.ndim else 0} positions for "
                             f"{topology.getNumAtoms()} atoms; give one (x, y, z) per atom")
    box = topology.getPeriodicBoxVectors()
    if box is not None:
        box = np.array([[v.value_in_unit(unit.nanometer) if unit.is_quantity(v) else v for v in row]
                        for row in box], dtype=np.float64)
    # elements of beads from an OpenMM reader are guesses ('BB' as boron): decided again here
    traj = _finish(_from_openmm(topology), xyz, box, np.zeros(topology.getNumAtoms(), dtype=bool))
    _check_finite(traj, "(topology, positions)", "give finite positions")
    return traj


def load_input(structure, trajectory=None) -> tuple[md.Trajectory, str]:
    """A structure (path, Trajectory, or OpenMM ``(topology, positions)``, e.g. a ``Modeller``), or a
    trajectory over it, made whole; and its name for messages."""
    if isinstance(structure, md.Trajectory):
        _check_input_coordinates(structure, "the input trajectory")
        return make_whole(structure), ""
    if isinstance(structure, tuple) and len(structure) == 2 or hasattr(structure, "positions"):
        if trajectory is not None:
            raise StructureError("a trajectory goes with a structure file, not with (topology, positions)")
        topology, positions = structure if isinstance(structure, tuple) else (structure.topology, structure.positions)
        return make_whole(from_openmm(topology, positions)), "(topology, positions)"
    traj = load_structure(structure) if trajectory is None else load_structure(trajectory, top=structure)
    return make_whole(traj), str(structure)
