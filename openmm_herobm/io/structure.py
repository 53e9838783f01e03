"""Structure and trajectory I/O shared by all commands.

The in-memory type is :class:`mdtraj.Trajectory` (positions in nm).  On top of
mdtraj each residue carries a plain attribute ``residue.insertion_code`` ('' when
none), which our PDB/mmCIF readers fill and our writers put back.

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
from openmm.app.internal.unitcell import computePeriodicBoxVectors
from scipy.spatial import cKDTree

from ..chemistry import standard_residue
from ..errors import StructureError
from .files import OutputFiles, atomic_output, check_outputs, output_files

STRUCTURE_FORMATS = (".pdb", ".gro", ".cif", ".mmcif")  # also readable gzipped
TRAJECTORY_FORMATS = (".xtc", ".dcd", ".trr")
CG_NEIGHBOUR_NM = 0.2  # median nearest-neighbour distance above which a file is CG
#: inputs with a coordinate beyond +-1e5 A (10 um, far beyond any simulation box) are refused:
#: such a value is corruption or wrong units, and would be carried silently into every output
MAX_ABS_COORDINATE_NM = 1e4
POLYMER_LINK_NM = 0.6  # BB/CA of consecutive residues closer than this: one molecule

__all__ = [
    "STRUCTURE_FORMATS", "TRAJECTORY_FORMATS", "load_structure", "make_whole",
    "save_structure", "save_trajectory", "check_output_path", "atomic_output",
    "atom_slice", "insertion_code", "is_coarse_grained",
]


# ---------------------------------------------------------------- helpers
def _split_ext(path):
    """('.pdb', True) for 'x.pdb.gz'."""
    name = os.path.basename(os.fspath(path)).lower()
    gz = name.endswith(".gz")
    if gz:
        name = name[:-3]
    return os.path.splitext(name)[1], gz


def insertion_code(residue) -> str:
    """The residue's insertion code ('' when none or when mdtraj made the residue)."""
    return getattr(residue, "insertion_code", "") or ""


def is_coarse_grained(topology: md.Topology) -> bool:
    """True when every particle has the virtual element (how CG files are loaded)."""
    return topology.n_atoms > 0 and all(a.element is md_element.virtual for a in topology.atoms)


def _describe_atom(atom) -> str:
    res = atom.residue
    chain = getattr(res.chain, "chain_id", None) or "-"
    return f"atom {atom.name} of residue {res.name} {res.resSeq}{insertion_code(res)} chain {chain}"


def _check_finite(traj, name, action):
    bad = ~np.isfinite(traj.xyz).all(axis=2)
    if bad.any():
        frame, index = np.argwhere(bad)[0]
        raise StructureError(
            f"{name}: non-finite coordinate (NaN or inf) in frame {frame} at "
            f"{_describe_atom(traj.topology.atom(int(index)))}; {action}")


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


def atom_slice(traj: md.Trajectory, atom_indices) -> md.Trajectory:
    """``traj.atom_slice`` that keeps ``residue.insertion_code`` (mdtraj drops it)."""
    atom_indices = np.asarray(atom_indices, dtype=int)
    out = traj.atom_slice(atom_indices)
    # mdtraj keeps, in order, every residue that still has an atom
    kept = np.unique([traj.topology.atom(int(i)).residue.index for i in atom_indices])
    for new, old in zip(out.topology.residues, kept):
        new.insertion_code = insertion_code(traj.topology.residue(int(old)))
    return out


# ---------------------------------------------------------------- reading
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


def _one_line(exc):
    return " ".join(str(exc).split())[:200] or type(exc).__name__


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


# ---------------------------------------------------------------- make_whole
def _min_image(d, box, inv_box):
    """Minimum image of displacements d (F, M, 3) via fractional coordinates.

    Exact for orthorhombic boxes; for triclinic boxes rounding the fractional
    coordinates is an approximation that is exact for displacements shorter than
    half the smallest box height (always true for bonded neighbours).
    """
    frac = np.einsum("fmi,fij->fmj", d, inv_box)
    frac -= np.round(frac)
    return np.einsum("fmj,fjk->fmk", frac, box)


def _default_molecules(traj, box, inv_box):
    """Per-atom molecule id: one residue = one molecule, except consecutive
    residues of a chain whose BB/CA are within POLYMER_LINK_NM (minimum image)."""
    top = traj.topology
    res_of_atom = np.array([a.residue.index for a in top.atoms])
    anchor = np.full(top.n_residues, -1)
    chain_of_res = np.empty(top.n_residues, dtype=int)
    for res in top.residues:
        chain_of_res[res.index] = res.chain.index
        anchor[res.index] = next((a.index for a in res.atoms if a.name in ("BB", "CA")), -1)
    link = (anchor[:-1] >= 0) & (anchor[1:] >= 0) & (chain_of_res[:-1] == chain_of_res[1:])
    if link.any():
        # the decision uses frame 0 so that all frames share one molecule definition
        d = traj.xyz[:1, anchor[1:], :].astype(np.float64) - traj.xyz[:1, anchor[:-1], :]
        d = _min_image(d, box[:1], inv_box[:1])
        link &= np.linalg.norm(d[0], axis=1) < POLYMER_LINK_NM
    mol_of_res = np.concatenate([[0], np.cumsum(~link)])
    return mol_of_res[res_of_atom]


def make_whole(traj: md.Trajectory, molecules=None) -> md.Trajectory:
    """Return a copy of ``traj`` whose molecules are whole across periodic boundaries.

    ``molecules``: optional list of atom-index sequences, one per molecule, in
    walking order; atoms in none of them are left untouched.  Default: every
    residue is a molecule, except that consecutive residues of one chain whose
    BB/CA particles are within 0.6 nm (minimum image, frame 0) are joined into
    one polymer molecule.  Each molecule is unwrapped by walking its atoms
    in order; atom i+1 goes to the minimum image of its displacement from atom i
    (a cumulative sum over all molecules and frames at once).  The first atom of
    each molecule keeps its position.  No bonds are needed.  Without a unit cell
    the trajectory is returned unchanged (as a copy).  The topology object is
    shared with the input (so insertion codes are kept); positions are new.
    """
    xyz = traj.xyz.astype(np.float64)
    out = md.Trajectory(xyz.astype(np.float32), traj.topology, time=traj.time.copy())
    if traj.unitcell_vectors is None:
        return out
    out.unitcell_vectors = traj.unitcell_vectors.copy()
    box = traj.unitcell_vectors.astype(np.float64)
    if np.any(np.abs(np.linalg.det(box)) < 1e-9):
        return out  # a degenerate (zero) box means no periodicity
    inv_box = np.linalg.inv(box)

    if molecules is None:
        mol = _default_molecules(traj, box, inv_box)
        order = np.argsort(mol, kind="stable")  # molecule by molecule, file order inside
        is_start = np.r_[True, mol[order][1:] != mol[order][:-1]]
    else:
        parts = [np.asarray(m, dtype=int).ravel() for m in molecules if len(m)]
        if not parts:
            return out
        order = np.concatenate(parts)
        if order.min() < 0 or order.max() >= traj.n_atoms:
            raise StructureError(f"make_whole: molecule atom index out of range "
                                 f"(the structure has {traj.n_atoms} atoms)")
        is_start = np.zeros(len(order), dtype=bool)
        is_start[np.cumsum([0] + [len(p) for p in parts[:-1]])] = True

    pos = xyz[:, order, :]
    steps = np.zeros_like(pos)
    steps[:, 1:] = _min_image(pos[:, 1:] - pos[:, :-1], box, inv_box)
    steps[:, is_start] = 0.0
    walk = np.cumsum(steps, axis=1)
    start_of = np.maximum.accumulate(np.where(is_start, np.arange(len(order)), 0))
    # position = first atom of the molecule + walked displacement since that atom
    new = pos[:, start_of] + walk - walk[:, start_of]
    xyz[:, order, :] = new
    out.xyz = xyz.astype(np.float32)
    return out


# ---------------------------------------------------------------- writing
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
