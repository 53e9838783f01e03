"""``openmm_herobm.backmap``: CG structure or trajectory -> all-atom heavy atoms with HEroBM models.

A whole CG simulation frame (proteins + lipids + water + ions) is split by molecule type:
each residue name goes to the model whose mapping knows it (``model=None``: the shipped
models, proteins first), the parts are backmapped separately and stacked into one
all-atom trajectory.  Martini water and ion beads (``SOLVENT_RESIDUES``) are not
backmapped: they are counted in ``BackmapResult.solvent`` and rebuilt by the OpenMM
pipeline (explicit solvent) or left out with a warning.  Molecules no model knows are
reported by name and count: ``unmapped='fail'`` stops, ``'drop'`` leaves them out.
"""

from __future__ import annotations

import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import mdtraj
import numpy as np
import scipy.sparse
import torch
from scipy.spatial import cKDTree

from .chemistry import CG_RESIDUE_ALIASES, PROTEIN_RESIDUES, SOLVENT_RESIDUES, standard_residue
from .errors import HeroBMError
from .geometry import repair_stereo
from .mapping import BeadDeformation, SystemMapping, residue_label
from .model import LoadedModel, load_model, model_metadata, plain_execution, predict_chunked, shipped_models
from .progress import say
from .reconstruction import PEPTIDE_LINK_MAX, GeometricFit, LipidFit, LipidFrameRegression, ProteinFit

#: ``side_chains`` choices of :func:`backmap`: real rotamers chosen with the model's library (the
#: default), the library's RMSD-optimal conditional mean (an average of rotamers, for analysis), or
#: rotamers without the library (wells of the training split and the network's own side chain)
SIDE_CHAIN_MODES = ("rotamers", "mean", "network")
LIPID_FIT_ROUNDS = 3  # lipid geometry fit + stereo check rounds per frame
FRAME_PROGRESS_SECONDS = 15.0  # s between "frame k of n" lines while the model runs over a trajectory


@dataclass
class BackmapPart:
    """The molecules of one model: its mapping of them and its predictions."""
    system: SystemMapping
    model: LoadedModel
    dihedrals: np.ndarray  # (frames, beads of this part, 4): predicted sin/cos phi, psi per bead
    bead_index: np.ndarray  # (beads of this part,) index of each bead in the input CG trajectory
    targets: np.ndarray | None = None  # (frames, beads, 3) nm: the beads a real structure has (deformation undone)
    simulation_likeness: np.ndarray | None = None  # (frames,) alpha of the deformation model, 0 = mapped beads
    misfit: np.ndarray | None = None  # (frames, beads) nm: distance of the reconstruction's beads from ``targets``
    stereo_repaired: dict = field(default_factory=dict)  # lipid centres / double bonds put right, all frames


@dataclass
class BackmapResult:
    trajectory: mdtraj.Trajectory  # all-atom (nm), the atoms the models reconstruct, part after part
    parts: list[BackmapPart]
    solvent: dict = field(default_factory=dict)  # CG solvent left to the pipeline: {"W": n, "NA": n, ...}
    box: np.ndarray | None = None  # (frames, 3, 3) nm, the CG unit cell
    written: list[str] = field(default_factory=list)
    cg_xyz: np.ndarray | None = None  # (frames, beads, 3) nm, the input beads in the row order of ``weights``

    @property
    def bead_targets(self) -> np.ndarray | None:
        """``(frames, beads, 3)`` nm in the row order of ``weights``: the input beads with the
        systematic deformation of a CG simulation undone (:mod:`openmm_herobm.mapping.deformation`);
        what the reconstruction was fitted to, and what the pipeline's bead restraint holds."""
        if self.cg_xyz is None or any(p.targets is None for p in self.parts):
            return self.cg_xyz
        return np.concatenate([p.targets for p in self.parts], axis=1)

    @property
    def bead_misfit(self) -> np.ndarray | None:
        """``(frames, beads)`` nm: how far the reconstructed structure's own beads are from
        :attr:`bead_targets` (what a sound structure could not meet)."""
        if any(p.misfit is None for p in self.parts):
            return None
        return np.concatenate([p.misfit for p in self.parts], axis=1)

    def links(self, frame: int = 0) -> np.ndarray:
        """``(n_residues,)`` bool: residue k of ``trajectory`` is bonded to residue k-1 in the CG input
        (same chain, both with a BB bead, the BB beads closer than ``PEPTIDE_LINK_MAX``).  Chain
        breaks come from here, never from the reconstructed geometry."""
        pair, close = self._bb_neighbours(frame)
        return pair & close

    def breaks(self, frame: int = 0) -> np.ndarray:
        """``(n_residues,)`` bool: residue k starts a new piece of its chain: it and residue k-1 are
        amino acids of one chain (both with a BB bead) that the CG input does not bond (separate
        molecules of a GROMACS frame, which has no chains, or a gap in a chain)."""
        pair, close = self._bb_neighbours(frame)
        return pair & ~close

    def _bb_neighbours(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """Per residue k: (k and k-1 both have a BB bead in one chain, their BB beads closer than
        ``PEPTIDE_LINK_MAX``)."""
        pair = np.zeros(self.trajectory.n_residues, bool)
        close = np.zeros(self.trajectory.n_residues, bool)
        if self.cg_xyz is None:
            return pair, close
        x = self.cg_xyz[frame] * 10.0
        residue0, row0 = 0, 0
        for part in self.parts:
            top = part.system.aa_topology
            prev = None
            for res in part.system.residues:
                bb = row0 + res.beads[res.mapping.beads.index("BB")] if "BB" in res.mapping.beads else None
                chain = top.residue(res.aa_residue).chain.index
                if bb is not None and prev is not None and prev[1] == chain:
                    pair[residue0 + res.aa_residue] = True
                    close[residue0 + res.aa_residue] = np.linalg.norm(x[bb] - x[prev[0]]) < PEPTIDE_LINK_MAX
                prev = (bb, chain) if bb is not None else None
            residue0 += top.n_residues
            row0 += part.system.n_beads
        return pair, close

    # a single-model result reads like before: .system, .model, .dihedrals
    @property
    def system(self) -> SystemMapping:
        return self.parts[0].system

    @property
    def model(self) -> LoadedModel:
        return self.parts[0].model

    @property
    def dihedrals(self) -> np.ndarray:
        return self.parts[0].dihedrals if len(self.parts) == 1 else np.concatenate([p.dihedrals for p in self.parts], 1)

    @property
    def weights(self) -> scipy.sparse.csr_matrix:
        """Sparse (beads, atoms of ``trajectory``): bead positions = weights @ atom positions."""
        if len(self.parts) == 1:
            return self.parts[0].system.weights
        return scipy.sparse.block_diag([p.system.weights for p in self.parts], format="csr")

    @property
    def bead_index(self) -> np.ndarray:
        """Index in the input CG trajectory of every bead, in the row order of ``weights``."""
        return np.concatenate([p.bead_index for p in self.parts])

    def phi_psi(self, frame: int = 0) -> np.ndarray:
        """Predicted (phi, psi) per residue of ``trajectory`` (radians; NaN without a BB bead)."""
        out = []
        for part in self.parts:
            values = np.full((len(part.system.residues), 2), np.nan)
            dih = part.dihedrals[frame]
            for r, res in enumerate(part.system.residues):
                if "BB" in res.mapping.beads:
                    d = dih[res.beads[res.mapping.beads.index("BB")]]
                    values[r] = np.arctan2(d[0], d[1]), np.arctan2(d[2], d[3])
            out.append(values)
        return np.concatenate(out)

    def summary(self) -> str:
        atoms = self.trajectory.n_atoms
        beads = sum(p.system.n_beads for p in self.parts)
        residues = sum(len(p.system.residues) for p in self.parts)
        models = ", ".join(p.model.path.name for p in self.parts)
        return (f"backmapped {beads} beads in {residues} residues to {atoms} heavy atoms "
                f"({self.trajectory.n_frames} frame(s)) with {models}")


#: models loaded in this process by file (path, mtime, size): a script or an exchange workflow that
#: calls backmap per frame loads each once (0.3-0.5 s per model and call otherwise)
_LOADED: dict = {}
LOADED_MAX = 8


def _load(path: Path) -> LoadedModel:
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _LOADED:
        if len(_LOADED) >= LOADED_MAX:
            _LOADED.pop(next(iter(_LOADED)))
        _LOADED[key] = load_model(path)
    return _LOADED[key]


def assign_models(cg_topology: mdtraj.Topology, models: list | None = None) -> tuple[list, Counter]:
    """[(model, residue indices)] for the non-solvent residues some model knows, and the names no model knows.

    ``models`` (paths, names or LoadedModels) are tried in order; default: the shipped
    models, the one that knows most residue names of the input first.  A model is loaded only
    when it gets residues (its metadata says what it knows), and once per process and file.
    """
    given = list(models or shipped_models())
    found = [(None, m.metadata) if isinstance(m, LoadedModel) else model_metadata(m) for m in given]
    known = [metadata for _, metadata in found]
    names = Counter(r.name for r in cg_topology.residues if r.name not in SOLVENT_RESIDUES)
    order = list(range(len(given)))
    if models is None:
        order.sort(key=lambda i: -len(set(names) & set(known[i]["molecules"])))
    owner = {name: next((i for i in order if name in known[i]["molecules"]), None) for name in names}
    plan: dict = {}  # position in `given` -> residue indices
    for res in cg_topology.residues:
        i = owner.get(res.name)
        if i is not None:
            plan.setdefault(i, []).append(res.index)
    unknown = Counter({n: c for n, c in names.items() if owner[n] is None})
    loaded = {i: given[i] if isinstance(given[i], LoadedModel) else _load(found[i][0]) for i in plan}
    return [(loaded[i], plan[i]) for i in sorted(plan, key=order.index)], unknown


def backmap(cg, model: str | Path | LoadedModel | list | None = None, *, trajectory: str | Path | None = None,
            output: str | Path | None = None, trajectory_output: str | Path | None = None,
            unmapped: str = "fail", chunk: float = 40.0, fit: bool = True,
            side_chains: str | bool = "rotamers", deformation: bool = True,
            aliases: dict[str, str] | None = None) -> BackmapResult:
    """Reconstruct the heavy atoms of a CG structure (and optionally every frame of a trajectory).

    ``cg`` is a file path, an mdtraj Trajectory, or an OpenMM ``(topology, positions)`` pair (or a
    ``Modeller``/``PDBFile``) of beads (martinize2 / Martini 3 naming).
    Molecules are made whole first.  ``model``: a shipped model name or file (everything
    non-solvent must be known to it), a list of them (each residue name goes to the first
    that knows it), or None for the shipped models.  Outputs are written atomically, a chain
    piece per CG molecule or chain gap (:meth:`BackmapResult.breaks`; TER between them), while
    ``result.trajectory`` keeps the input's chains.
    ``fit``: after the network, make proteins chemically sound and true to their beads
    (:mod:`openmm_herobm.reconstruction.geometric_fit`: ideal geometry, planar peptides (trans, or
    cis for an X-Pro peptide the beads put cis), the
    Ramachandran and rotamer statistics of real proteins, beads as soft targets with a
    tolerance, chain breaks from the beads); lipids a model's frame regression knows are placed
    by it instead of the network (:mod:`openmm_herobm.reconstruction.lipid_frames`), then made
    stereochemically right (every centre and double bond of
    :data:`~openmm_herobm.chemistry.CHIRALITY_CHECKS` / ``DOUBLE_BOND_CHECKS`` built wrong is put
    right geometrically, :func:`openmm_herobm.geometry.repair_stereo`; counts in
    ``parts[i].stereo_repaired``) and given CHARMM36 bonds and angles
    (:mod:`openmm_herobm.reconstruction.lipid_fit`); False keeps the raw network output.
    ``side_chains`` (with ``fit``): ``"rotamers"`` (real rotamers chosen with the model's
    side-chain library), ``"network"`` (rotamers without the library) or ``"mean"`` (the
    library's RMSD-optimal average of rotamers, not a physical conformation: for analysis);
    True means ``"rotamers"``, False ``"network"``.
    ``deformation``: undo the systematic deformation of CG simulation beads (Martini 3 bonds are
    not mapped distances; :mod:`openmm_herobm.mapping.deformation`), measured per frame, so
    mapped structures are left alone; False takes every bead as a mapped position.
    ``aliases``: ``{"NEW": "KNOWN"}``, CG residue names to read as a known molecule (a leaflet's
    POPC renamed by the setup); the protonation names CHARMM and Martini tools write (GLUP,
    ASPP, LSN; :data:`openmm_herobm.chemistry.CG_RESIDUE_ALIASES`) are read as their variant
    always.  The output has the known molecule's (force field's) name.
    """
    from .io import check_output_path, check_outputs, load_input, write_outputs

    if unmapped not in ("fail", "drop"):
        raise HeroBMError(f"unmapped must be 'fail' or 'drop', not {unmapped!r}")
    side_chains = {True: "rotamers", False: "network"}.get(side_chains, side_chains)
    if side_chains not in SIDE_CHAIN_MODES:
        raise HeroBMError(f"side_chains must be one of {', '.join(SIDE_CHAIN_MODES)}, not {side_chains!r}")
    if output is not None:
        check_output_path(output, "structure")
    if trajectory_output is not None:
        check_output_path(trajectory_output, "trajectory")
    check_outputs([output, trajectory_output], [cg, trajectory])
    traj, source = load_input(cg, trajectory)
    traj = with_aliases(traj, aliases)
    top = traj.topology
    models = None if model is None else (list(model) if isinstance(model, (list, tuple)) else [model])
    plan, unknown = assign_models(top, models)
    if unknown:
        listing = ", ".join(f"{n} x{c}" for n, c in unknown.most_common())
        where = f"{source}: " if source else ""
        if unmapped == "fail" or not plan:
            raise HeroBMError(f"{where}no model knows these molecules: {listing}; pass a --model that does, "
                              "or --unmapped drop to leave them out")
        warnings.warn(f"{where}left out, no model knows them: {listing}", stacklevel=2)
    solvent = Counter()
    for res in top.residues:
        if res.name in SOLVENT_RESIDUES:
            for atom in res.atoms:  # ION residues: count NA / CL beads; water: W beads
                solvent[atom.name if res.name == "ION" else res.name] += 1

    parts, frames = [], []
    for loaded, residues in plan:
        beads = np.array([a.index for r in residues for a in top.residue(r).atoms], np.int64)
        sub = traj.atom_slice(beads) if len(beads) < traj.n_atoms else traj
        system = SystemMapping.from_cg(sub.topology, loaded.mapping_set, unmapped="fail", source=source)
        _check_neighbours(sub, loaded.cutoff, source)
        xyz, dihedrals, targets, alpha, repaired = _predict(loaded, system, sub, chunk, fit, side_chains, deformation)
        misfit = np.linalg.norm(system.map(xyz) - targets, axis=-1)
        parts.append(BackmapPart(system, loaded, dihedrals, beads[system.cg_input_index], targets, alpha, misfit,
                                 repaired))
        frames.append(mdtraj.Trajectory(xyz, system.aa_topology, time=traj.time))
    out = frames[0]
    for more in frames[1:]:
        out = out.stack(more)
    if traj.unitcell_vectors is not None:
        out.unitcell_vectors = traj.unitcell_vectors
    box = None if traj.unitcell_vectors is None else traj.unitcell_vectors.astype(np.float64)
    cg_xyz = traj.xyz[:, np.concatenate([p.bead_index for p in parts])]
    result = BackmapResult(out, parts, dict(solvent), box, [], cg_xyz)
    if output or trajectory_output:  # a chain piece per CG molecule: a reader must not bond them
        result.written = write_outputs(split_chains(_as_refined_names(out), result.breaks()), output,
                                       trajectory_output)
    return result


def split_chains(traj: mdtraj.Trajectory, starts: np.ndarray) -> mdtraj.Trajectory:
    """``traj`` with a new chain (the same chain id) from every residue where ``starts``
    ``(n_residues,)`` is True (:meth:`BackmapResult.breaks`), as the refined output has: file
    writers end a chain with TER, and readers that bond consecutive amino acids of a chain
    (OpenMM's ``PDBFile``) would otherwise bond separate molecules.  Atoms come in chain order."""
    if not starts.any():
        return traj
    top = mdtraj.Topology()
    atoms = {}
    for chain in traj.topology.chains:
        piece = None
        for residue in chain.residues:
            if piece is None or starts[residue.index]:
                piece = top.add_chain(chain_id=getattr(chain, "chain_id", None))
            new = top.add_residue(residue.name, piece, residue.resSeq, residue.segment_id)
            if getattr(residue, "insertion_code", ""):
                new.insertion_code = residue.insertion_code
            for atom in residue.atoms:
                atoms[atom.index] = top.add_atom(atom.name, atom.element, new, serial=atom.serial)
    for bond in traj.topology.bonds:
        top.add_bond(atoms[bond[0].index], atoms[bond[1].index], type=bond.type, order=bond.order)
    order = np.empty(traj.n_atoms, np.int64)  # new atom index -> old (the same unless chains interleave)
    order[[atoms[k].index for k in range(traj.n_atoms)]] = np.arange(traj.n_atoms)
    xyz = traj.xyz if (order == np.arange(traj.n_atoms)).all() else traj.xyz[:, order]
    return mdtraj.Trajectory(xyz, top, traj.time, traj.unitcell_lengths, traj.unitcell_angles)


def with_aliases(traj: mdtraj.Trajectory, aliases: dict[str, str] | None = None) -> mdtraj.Trajectory:
    """``traj`` with its CG residue names read through ``aliases`` and the built-in
    :data:`~openmm_herobm.chemistry.CG_RESIDUE_ALIASES` (a renamed copy: the caller's is untouched)."""
    table = {**CG_RESIDUE_ALIASES, **parse_aliases(aliases)}
    return _renamed(traj, lambda name: table.get(name, name))


def parse_aliases(aliases) -> dict[str, str]:
    """``{"NEW": "KNOWN"}`` from a dict or from ``"NEW=KNOWN"`` strings (the CLI's ``--alias``)."""
    if not aliases:
        return {}
    items = aliases.items() if isinstance(aliases, dict) else (
        a.split("=", 1) if isinstance(a, str) and "=" in a else (a, None) for a in aliases)
    table = {}
    for new, known in items:
        if not isinstance(new, str) or not isinstance(known, str) or not new.strip() or not known.strip():
            raise HeroBMError(f"alias {new!r}: give NEW=KNOWN, two residue names (e.g. POPX=POPC)")
        table[new.strip()] = known.strip()
    return table


def _as_refined_names(traj: mdtraj.Trajectory) -> mdtraj.Trajectory:
    """``traj`` with the residue names the refined output has (HSD, CYX -> HIS, CYS: the pipeline's
    protonation is in its hydrogens, not its names), for the files written without refinement.
    The returned topology is a copy: the pipeline reads the variants from ``traj``'s names."""
    return _renamed(traj, standard_residue)


def _renamed(traj: mdtraj.Trajectory, rename) -> mdtraj.Trajectory:
    """``traj`` itself when ``rename(name)`` changes no residue name, else a copy (topology copied,
    coordinates shared) with every residue renamed."""
    if all(rename(r.name) == r.name for r in traj.topology.residues):
        return traj
    top = traj.topology.copy()
    for residue in top.residues:
        residue.name = rename(residue.name)
    return mdtraj.Trajectory(traj.xyz, top, traj.time, traj.unitcell_lengths, traj.unitcell_angles)


def _check_neighbours(traj: mdtraj.Trajectory, cutoff: float, source: str) -> None:
    """Refuse a bead with no other bead of its model's part within the cutoff (A) in some frame.

    The network orients atoms only from the vectors to neighbouring beads: a lone bead (a
    one-bead residue such as GLY on its own) gets no vectors at all, so every atom of it
    would sit on the bead (the network cannot even run when no bead has a neighbour).
    """
    for f in range(traj.n_frames):
        x = traj.xyz[f].astype(np.float64) * 10.0
        if len(x) > 1:
            distance, _ = cKDTree(x).query(x, k=2)
            lone = np.flatnonzero(~(distance[:, 1] < cutoff))
        else:
            lone = np.array([0])
        if len(lone):
            atom = traj.topology.atom(int(lone[0]))
            where = f"{source}: " if source else ""
            raise HeroBMError(
                f"{where}{residue_label(atom.residue)}: bead {atom.name} has no other bead within "
                f"{cutoff:g} A (the model's cutoff) in frame {f}, so the model cannot orient its atoms "
                "(a lone one-bead residue cannot be backmapped); include the beads around it")


def make_fit(system: SystemMapping, loaded: LoadedModel, side_chains: str = "rotamers"):
    """The per-frame fit of ``backmap`` for one system (None when it has nothing to fit)."""
    if side_chains == "mean":
        fitter = ProteinFit(system, loaded.side_chains)
    else:
        fitter = GeometricFit(system, loaded.side_chains if side_chains == "rotamers" else None)
    return None if fitter.empty else fitter


def _predict(loaded: LoadedModel, system: SystemMapping, traj: mdtraj.Trajectory, chunk: float,
             fit: bool = True, side_chains: str = "rotamers", deformation: bool = True):
    bead_type = torch.as_tensor(system.bead_types)
    slot_atom = torch.as_tensor(np.where(system.slot_valid, system.slot_atom, -1))
    xyz = np.empty((traj.n_frames, system.n_atoms, 3), np.float32)
    dihedrals = np.empty((traj.n_frames, system.n_beads, 4), np.float32)
    targets = traj.xyz[:, system.cg_input_index].astype(np.float64)
    alpha = np.zeros(traj.n_frames)
    fitter = make_fit(system, loaded, side_chains) if fit else None
    # lipids the model's frame regression knows take its atoms, not the network's (closer to the truth)
    regression = LipidFrameRegression(system, loaded.lipid_frames) if fit and loaded.lipid_frames else None
    # with the fit, lipid stereo is right by construction: a centre or double bond the network
    # built wrong is put right geometrically (the pipeline's repair, before any output)
    stereo = [(r.name, {a.name: a.index for a in r.atoms}) for r in system.aa_topology.residues
              if r.name not in PROTEIN_RESIDUES] if fit else []
    # ... and bonds and angles are CHARMM36's, the atoms moved as little as they can
    lipid_fit = LipidFit(stereo, system.n_atoms) if stereo else None
    repaired: dict = {}
    undo = BeadDeformation(system) if deformation else None
    next_word = time.perf_counter() + FRAME_PROGRESS_SECONDS
    with torch.no_grad(), plain_execution():
        for f in range(traj.n_frames):
            if time.perf_counter() >= next_word:  # a long trajectory: where the model is
                say("  frame %d of %d", f + 1, traj.n_frames)
                next_word = time.perf_counter() + FRAME_PROGRESS_SECONDS
            if undo is not None and not undo.empty:
                corrected, alpha[f] = undo(targets[f] * 10.0)
                targets[f] = corrected / 10.0
            pos = torch.as_tensor(targets[f] * 10.0, dtype=torch.float32)
            vectors, dih = predict_chunked(loaded.module, pos, bead_type, loaded.cutoff, chunk=chunk)
            atoms = loaded.module.reconstruct(pos, bead_type, vectors, slot_atom, system.n_atoms).numpy()
            if regression is not None and not regression.empty:
                atoms = regression(atoms, pos.numpy())
            if fitter is not None:
                atoms = fitter(atoms, pos.numpy(), dih.numpy())
            xyz[f] = atoms / 10.0
            if stereo:
                fixed, counts = repair_stereo(stereo, xyz[f])  # counts: what the network built wrong
                if lipid_fit is not None and not lipid_fit.empty:
                    # the repair first (a centre reflected, a double bond rebuilt), then the
                    # geometry; a nearly flat centre the fit pushed through is reflected back
                    # and fitted again (rare: 1 of 60 lipids once; at most LIPID_FIT_ROUNDS)
                    anchor = fixed * 10.0
                    for _ in range(LIPID_FIT_ROUNDS):
                        fixed, again = repair_stereo(stereo, lipid_fit(fixed * 10.0, anchor) / 10.0)
                        if not again:
                            break
                xyz[f] = fixed
                for key, n in counts.items():
                    repaired[key] = repaired.get(key, 0) + n
            dihedrals[f] = dih.numpy()
    return xyz, dihedrals, targets, alpha, repaired
