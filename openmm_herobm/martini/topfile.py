"""``MartiniTopFile``: a GROMACS Martini 3 topology (``.top`` + ``.itp``, as martinize2, insane and
the Martini force-field files write them) read into an OpenMM Topology and System.

Shaped like ``openmm.app.GromacsTopFile``, but for what a Martini system uses and that class
lacks: LJ from ``[ nonbond_params ]`` (or the combination rule) with GROMACS' potential shift,
reaction-field electrostatics with GROMACS' exclusion and self terms, G96 and restricted-bending
angles, harmonic impropers, restricted and combined bending-torsion dihedrals, ``[ pairs ]``,
virtual sites.  What is read is :data:`FUNCTIONS` (plus ``[ exclusions ]``, ``nrexcl`` and
``[ virtual_sitesn ]`` types 1-3); anything else is refused with one :class:`HeroBMError` line
naming the file and line.  The forms and the check against GROMACS itself: ``forces.py`` and
``BENCHMARKS.md`` ("Martini 3 in OpenMM vs GROMACS").
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import openmm
from openmm import app, unit

from ..errors import HeroBMError
from ..units import NANOMETER, value_in
from . import forces

#: directives read; the ``*types`` tables are accepted but every interaction must carry its own
#: parameters (Martini files always do), so they are never looked up
DIRECTIVES = frozenset({"defaults", "atomtypes", "nonbond_params", "moleculetype", "atoms", "bonds", "constraints",
                        "angles", "dihedrals", "exclusions", "pairs", "virtual_sitesn", "virtual_sites2",
                        "virtual_sites3", "system", "molecules", "bondtypes", "angletypes", "dihedraltypes",
                        "constrainttypes", "pairtypes"})
#: directives that belong to one [ moleculetype ]
MOLECULE_DIRECTIVES = frozenset({"atoms", "bonds", "constraints", "angles", "dihedrals", "exclusions", "pairs",
                                 "virtual_sitesn", "virtual_sites2", "virtual_sites3"})
#: (directive, function type) -> number of atoms, number of parameters read
FUNCTIONS = {("bonds", 1): (2, 2), ("bonds", 6): (2, 2), ("constraints", 1): (2, 1), ("constraints", 2): (2, 1),
             ("angles", 1): (3, 2), ("angles", 2): (3, 2), ("angles", 10): (3, 2),
             ("dihedrals", 1): (4, 3), ("dihedrals", 2): (4, 2), ("dihedrals", 4): (4, 3), ("dihedrals", 9): (4, 3),
             ("dihedrals", 10): (4, 2), ("dihedrals", 11): (4, 6), ("pairs", 1): (2, 2),
             ("virtual_sites2", 1): (3, 1), ("virtual_sites3", 1): (4, 2), ("virtual_sites3", 4): (4, 3)}
#: bonded types that make the graph nrexcl counts along (GROMACS: bonds 1-5, 7, 8, 10 and constraints 1)
EXCLUDING = {("bonds", 1), ("constraints", 1)}
PTYPES = frozenset("ASVD")


@dataclass
class _Terms:
    """One kind of interaction of a molecule type: atoms (M, n) 0-based, funct (M,), params (M, p)."""
    atoms: list = field(default_factory=list)
    funct: list = field(default_factory=list)
    params: list = field(default_factory=list)

    def arrays(self, n_atoms: int, n_params: int):
        return (np.array(self.atoms, dtype=np.int64).reshape(-1, n_atoms), np.array(self.funct, dtype=np.int64),
                np.array(self.params, dtype=float).reshape(-1, n_params))


@dataclass
class _MoleculeType:
    name: str
    nrexcl: int
    where: str
    atoms: list = field(default_factory=list)  # (type, resnr, resname, name, charge or None, mass or None, where)
    terms: dict = field(default_factory=dict)  # (directive, funct) -> _Terms
    exclusions: list = field(default_factory=list)  # (i, j) 0-based
    vsites_n: list = field(default_factory=list)  # (site, funct, [atoms], [weights] or None)

    def add(self, directive: str, funct: int, atoms, params) -> None:
        t = self.terms.setdefault((directive, funct), _Terms())
        t.atoms.append(atoms)
        t.funct.append(funct)
        t.params.append(params)


def _fail(where: str, what: str) -> None:
    raise HeroBMError(f"{where}: {what}")


def _number(text: str, where: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        _fail(where, f"{what} {text!r} is not a number")


class _Preprocessor:
    """GROMACS' cpp subset: ``#include``, ``#define``/``#undef`` (names, and values substituted as whole
    words), ``#ifdef``/``#ifndef``/``#else``/``#endif``.  Yields ``(line without comment, where)``."""

    def __init__(self, include_dirs: list[Path], defines: dict[str, str]):
        self.include_dirs = include_dirs
        self.defines = dict(defines)

    def lines(self, path: Path, where_included: str | None = None):
        try:
            text = path.read_text()
        except OSError as err:
            _fail(where_included or str(path), f"cannot read {path} ({err.strerror}); check the path "
                                               "(or pass includeDir= for the folder it is in)")
        stack = []  # one bool per open #if: is this branch read
        pending = ""
        for number, raw in enumerate(text.splitlines(), 1):
            where = f"{path}:{number}"
            line = raw.split(";", 1)[0].rstrip()
            if line.endswith("\\"):  # continuation
                pending += line[:-1] + " "
                continue
            line, pending = (pending + line).strip(), ""
            if not line:
                continue
            if line.startswith("#"):
                words = line[1:].split()
                if not words:
                    continue
                word = words[0]
                if word in ("ifdef", "ifndef"):
                    if len(words) < 2:
                        _fail(where, f"#{word} needs a name")
                    stack.append((words[1] in self.defines) == (word == "ifdef"))
                elif word == "else":
                    if not stack:
                        _fail(where, "#else without #ifdef/#ifndef")
                    stack[-1] = not stack[-1]
                elif word == "endif":
                    if not stack:
                        _fail(where, "#endif without #ifdef/#ifndef")
                    stack.pop()
                elif not all(stack):
                    continue
                elif word == "define":
                    if len(words) < 2:
                        _fail(where, "#define needs a name")
                    self.defines[words[1]] = " ".join(words[2:])
                elif word == "undef":
                    self.defines.pop(words[1] if len(words) > 1 else "", None)
                elif word == "include":
                    name = line[1:].split(None, 1)[1].strip() if len(words) > 1 else ""
                    yield from self.lines(self._find(name.strip('"<>'), path, where), where)
                else:
                    _fail(where, f"preprocessor directive #{word} is not supported (only #include, #define, "
                                 "#undef, #ifdef, #ifndef, #else, #endif)")
                continue
            if not all(stack):
                continue
            yield self._substitute(line), where
        if stack:
            _fail(f"{path}:{number}", f"{len(stack)} #ifdef/#ifndef not closed by #endif at the end of the file")

    def _substitute(self, line: str) -> str:
        if not any(self.defines.values()):
            return line
        return " ".join(self.defines.get(w) or w for w in line.split())

    def _find(self, name: str, parent: Path, where: str) -> Path:
        if not name:
            _fail(where, "#include needs a file name")
        for folder in (parent.parent, *self.include_dirs):
            candidate = folder / name
            if candidate.is_file():
                return candidate
        searched = ", ".join(str(d) for d in (parent.parent, *self.include_dirs))
        _fail(where, f"#include {name!r}: no such file (searched {searched}); put it there or pass "
                     "includeDir= for its folder")


class MartiniTopFile:
    """A GROMACS topology of a Martini system, like ``openmm.app.GromacsTopFile``.

    ``file``: the ``.top`` (its ``#include`` files are searched next to the including file, then in
    ``includeDir``: a folder or a list of them).  ``defines``: names to ``#define`` first (a dict
    name -> value, or names), e.g. ``{"FLEXIBLE": ""}``.  The periodic box is
    ``periodicBoxVectors`` (3 Vec3, nm, OpenMM's reduced form: :func:`gromacs_box` makes it from a
    GROMACS box) or ``unitCellDimensions`` (Vec3, a rectangular box, nm); without either the system
    is not periodic.  Positions must keep each molecule's virtual sites next to their atoms (whole
    molecules, e.g. ``gmx trjconv -pbc mol``): OpenMM builds a site from the coordinates as given.

    ``.topology``: openmm.app.Topology, one chain per molecule, residues from ``[ atoms ]``, no
    elements (beads); bonds from ``[ bonds ]`` type 1 and ``[ constraints ]``.
    """

    def __init__(self, file, periodicBoxVectors=None, unitCellDimensions=None, includeDir=None, defines=None):
        self.path = Path(file)
        include = [] if includeDir is None else [includeDir] if isinstance(includeDir, (str, os.PathLike)) \
            else list(includeDir)
        defines = {} if defines is None else dict(defines) if isinstance(defines, dict) \
            else {name: "" for name in defines}
        self.defaults = (1, 2, "no", 1.0, 1.0)  # nbfunc, comb-rule, gen-pairs, fudgeLJ, fudgeQQ
        self._atomtypes = {}  # name -> (mass, charge, V, W)
        self._nonbond = {}  # (a, b) sorted -> (V, W, where)
        self._molecule_types = {}
        self._molecules = []  # (name, count, where)
        self.system_name = ""
        self._read(_Preprocessor([Path(d) for d in include], {k: str(v) for k, v in defines.items()}))
        if not self._molecules:
            _fail(str(self.path), "no [ molecules ]: nothing to build; is this the system's .top (not an .itp)?")
        self.topology = self._build_topology()
        if periodicBoxVectors is not None:
            try:
                self.topology.setPeriodicBoxVectors(periodicBoxVectors)
            except ValueError as err:
                raise HeroBMError(f"periodicBoxVectors: {err} (OpenMM's); for a box as GROMACS writes it, "
                                  "pass gromacs_box(box)") from None
        elif unitCellDimensions is not None:
            self.topology.setUnitCellDimensions(unitCellDimensions)

    # -- reading -------------------------------------------------------------------------------

    def _read(self, pre: _Preprocessor) -> None:
        directive, molecule = None, None
        for line, where in pre.lines(self.path):
            if line.startswith("["):
                if not line.endswith("]"):
                    _fail(where, f"malformed directive {line!r}; write [ name ]")
                directive = line[1:-1].strip().lower()
                if directive not in DIRECTIVES:
                    _fail(where, f"[ {directive} ] is not supported by MartiniTopFile (it reads "
                                 f"{', '.join(sorted(DIRECTIVES))})")
                if directive in MOLECULE_DIRECTIVES and molecule is None:
                    _fail(where, f"[ {directive} ] outside a [ moleculetype ]")
                continue
            if directive is None:
                _fail(where, f"{line!r} before any [ directive ]")
            fields = line.split()
            if directive == "moleculetype":
                if len(fields) < 2:
                    _fail(where, "[ moleculetype ] needs: name nrexcl")
                if fields[0] in self._molecule_types:
                    _fail(where, f"molecule type {fields[0]!r} defined twice (first at "
                                 f"{self._molecule_types[fields[0]].where}); #include its .itp once")
                molecule = _MoleculeType(fields[0], int(_number(fields[1], where, "nrexcl")), where)
                self._molecule_types[fields[0]] = molecule
            elif directive in MOLECULE_DIRECTIVES:
                self._read_molecule_line(molecule, directive, fields, where)
            else:
                getattr(self, f"_read_{directive}", lambda f, w: None)(fields, where)

    def _read_defaults(self, fields, where):
        if len(fields) < 2:
            _fail(where, "[ defaults ] needs at least: nbfunc comb-rule")
        nbfunc, comb = int(_number(fields[0], where, "nbfunc")), int(_number(fields[1], where, "comb-rule"))
        if nbfunc != 1 or comb not in (1, 2, 3):
            _fail(where, f"[ defaults ] nbfunc {nbfunc} comb-rule {comb}: only Lennard-Jones (nbfunc 1) with "
                         "combination rule 1, 2 or 3 is supported")
        gen_pairs = fields[2] if len(fields) > 2 else "no"
        fudge_lj = _number(fields[3], where, "fudgeLJ") if len(fields) > 3 else 1.0
        fudge_qq = _number(fields[4], where, "fudgeQQ") if len(fields) > 4 else 1.0
        self.defaults = (nbfunc, comb, gen_pairs, fudge_lj, fudge_qq)

    def _read_atomtypes(self, fields, where):
        # name [bonded type] [atomic number] mass charge ptype V W: find ptype from the right
        if len(fields) < 6 or fields[-3] not in PTYPES:
            _fail(where, "[ atomtypes ] line must end with: mass charge ptype V W (ptype one of A, S, V, D)")
        mass, charge, v, w = (_number(fields[k], where, what) for k, what in
                              ((-5, "mass"), (-4, "charge"), (-2, "V"), (-1, "W")))
        self._atomtypes[fields[0]] = (mass, charge, v, w)

    def _read_nonbond_params(self, fields, where):
        if len(fields) < 5 or fields[2] != "1":
            _fail(where, "[ nonbond_params ] line must be: type type 1 V W (Lennard-Jones)")
        self._nonbond[tuple(sorted(fields[:2]))] = (fields[3], fields[4], where)  # numbers read when used

    def _read_system(self, fields, where):
        self.system_name = " ".join(fields) if not self.system_name else self.system_name

    def _read_molecules(self, fields, where):
        if len(fields) != 2:
            _fail(where, "[ molecules ] line must be: name count")
        self._molecules.append((fields[0], int(_number(fields[1], where, "count")), where))

    def _read_molecule_line(self, mol: _MoleculeType, directive: str, fields: list[str], where: str) -> None:
        def index(text):
            k = int(_number(text, where, "atom index")) - 1
            if not 0 <= k < len(mol.atoms):
                _fail(where, f"atom {text} is not in molecule {mol.name} (it has {len(mol.atoms)} atoms so far)")
            return k

        if directive == "atoms":
            if len(fields) < 5:
                _fail(where, "[ atoms ] line needs at least: nr type resnr residue atom")
            if int(_number(fields[0], where, "atom number")) != len(mol.atoms) + 1:
                _fail(where, f"atom number {fields[0]} out of order in {mol.name} (expected {len(mol.atoms) + 1})")
            charge = _number(fields[6], where, "charge") if len(fields) > 6 else None
            mass = _number(fields[7], where, "mass") if len(fields) > 7 else None
            mol.atoms.append((fields[1], fields[2], fields[3], fields[4], charge, mass, where))
        elif directive == "exclusions":
            first = index(fields[0])
            mol.exclusions += [(first, index(f)) for f in fields[1:]]
        elif directive == "virtual_sitesn":
            if len(fields) < 3:
                _fail(where, "[ virtual_sitesn ] line needs: site funct atom...")
            funct = int(_number(fields[1], where, "function type"))
            rest = fields[2:]
            if funct in (1, 2):
                mol.vsites_n.append((index(fields[0]), funct, [index(f) for f in rest], None))
            elif funct == 3 and len(rest) % 2 == 0:
                mol.vsites_n.append((index(fields[0]), funct, [index(f) for f in rest[::2]],
                                     [_number(w, where, "weight") for w in rest[1::2]]))
            else:
                _fail(where, f"[ virtual_sitesn ] function type {fields[1]} is not supported (1: centre of "
                             "geometry, 2: centre of mass, 3: weighted with atom weight pairs)")
        else:
            n_atoms = 3 if directive == "virtual_sites2" else 4 if directive == "virtual_sites3" else \
                {"bonds": 2, "constraints": 2, "pairs": 2, "angles": 3, "dihedrals": 4}[directive]
            if len(fields) <= n_atoms:
                _fail(where, f"[ {directive} ] line needs {n_atoms} atoms and a function type")
            funct = int(_number(fields[n_atoms], where, "function type"))
            if (directive, funct) not in FUNCTIONS:
                known = sorted(f for d, f in FUNCTIONS if d == directive)
                _fail(where, f"[ {directive} ] function type {funct} is not supported (supported: "
                             f"{', '.join(map(str, known))})")
            n_params = FUNCTIONS[directive, funct][1]
            params = fields[n_atoms + 1:]
            if len(params) < n_params:
                _fail(where, f"[ {directive} ] type {funct} without its {n_params} parameters: MartiniTopFile does "
                             "not look up [ *types ] tables; write the parameters in the line")
            mol.add(directive, funct, [index(f) for f in fields[:n_atoms]],
                    [_number(p, where, "parameter") for p in params[:n_params]])

    # -- topology ------------------------------------------------------------------------------

    def _instances(self):
        """(molecule type, count) in [ molecules ] order, every name checked."""
        for name, count, where in self._molecules:
            if name not in self._molecule_types:
                _fail(where, f"molecule {name!r} has no [ moleculetype ]; #include its .itp in the .top")
            yield self._molecule_types[name], count

    def _build_topology(self) -> app.Topology:
        topology = app.Topology()
        for mol, count in self._instances():
            bonds = [a for (d, f), t in mol.terms.items() if d in ("bonds", "constraints") and (d, f) != ("bonds", 6)
                     for a in t.atoms]
            for _ in range(count):
                chain = topology.addChain()
                residue, key, atoms = None, None, []
                for atype, resnr, resname, name, *_ in mol.atoms:
                    if (resnr, resname) != key:
                        residue, key = topology.addResidue(resname, chain, id=resnr), (resnr, resname)
                    atoms.append(topology.addAtom(name, None, residue))
                for i, j in bonds:
                    topology.addBond(atoms[i], atoms[j])
        return topology

    # -- system --------------------------------------------------------------------------------

    def _atom_arrays(self, mol: _MoleculeType):
        """types (n,) str, charges (n,) e, masses (n,) Da of a molecule type; an unknown atom type fails."""
        types, charges, masses = [], [], []
        for atype, *_, charge, mass, where in mol.atoms:
            if atype not in self._atomtypes:
                _fail(where, f"atom type {atype!r} of molecule {mol.name} is not in [ atomtypes ]; #include "
                             "the force field's .itp (e.g. martini_v3.0.0.itp) before the molecule")
            t_mass, t_charge, *_ = self._atomtypes[atype]
            types.append(atype)
            charges.append(t_charge if charge is None else charge)
            masses.append(t_mass if mass is None else mass)
        return types, np.array(charges), np.array(masses)

    def _lj_tables(self, used: list[str]):
        """(C6, C12) (T, T) for the used types: [ nonbond_params ] where given, else the combination rule."""
        _, comb, *_ = self.defaults
        n = len(used)
        c6, c12 = np.zeros((n, n)), np.zeros((n, n))
        for a in range(n):
            for b in range(a, n):
                ta, tb = used[a], used[b]
                pair = self._nonbond.get((ta, tb) if ta <= tb else (tb, ta))
                if pair is not None:
                    v, w = _number(pair[0], pair[2], "V"), _number(pair[1], pair[2], "W")
                elif comb == 1:
                    v = math.sqrt(self._atomtypes[ta][2] * self._atomtypes[tb][2])
                    w = math.sqrt(self._atomtypes[ta][3] * self._atomtypes[tb][3])
                else:
                    (va, wa), (vb, wb) = self._atomtypes[ta][2:], self._atomtypes[tb][2:]
                    v = (va + vb) / 2 if comb == 2 else math.sqrt(va * vb)
                    w = math.sqrt(wa * wb)
                c6[a, b], c12[a, b] = self._c6_c12(v, w)
                c6[b, a], c12[b, a] = c6[a, b], c12[a, b]
        return c6, c12

    def _c6_c12(self, v, w):
        """(C6, C12) of LJ parameters V, W as the combination rule reads them: C6, C12 (rule 1) or sigma
        (nm), epsilon (kJ/mol) (rules 2, 3).  Numbers or arrays."""
        return (v, w) if self.defaults[1] == 1 else (4 * w * v ** 6, 4 * w * v ** 12)

    def _excluded_pairs(self, mol: _MoleculeType) -> np.ndarray:
        """(E, 2) sorted unique pairs of a molecule type: within nrexcl bonds of each other along bonds
        type 1 and constraints type 1, plus [ exclusions ]."""
        n = len(mol.atoms)
        neighbours = [set() for _ in range(n)]
        for key in EXCLUDING:
            for i, j in mol.terms.get(key, _Terms()).atoms:
                neighbours[i].add(j)
                neighbours[j].add(i)
        pairs = set()
        for start in range(n):
            frontier, seen = {start}, {start}
            for _ in range(mol.nrexcl):
                frontier = {k for f in frontier for k in neighbours[f]} - seen
                seen |= frontier
            pairs |= {(start, k) for k in seen if k > start}
        pairs |= {(min(i, j), max(i, j)) for i, j in mol.exclusions if i != j}
        return np.array(sorted(pairs), dtype=np.int64).reshape(-1, 2)

    def createSystem(self, nonbondedCutoff=1.1 * unit.nanometer, epsilonR: float = 15.0, epsilonRF: float = 0.0,
                     removeCMMotion: bool = True) -> openmm.System:
        """The OpenMM System of the Martini 3 defaults (GROMACS mdp: ``cutoff-scheme = Verlet``,
        ``vdw-modifier = Potential-shift-verlet``, ``rvdw = rcoulomb = nonbondedCutoff``,
        ``coulombtype = reaction-field``, ``epsilon_r = epsilonR``, ``epsilon_rf = epsilonRF``, 0 meaning
        infinity).  Periodic (cut-off with minimum images) if the topology has a box.  Each force is
        named after the GROMACS energy term it reproduces (``forces.py``); constraints as in the file
        (``#ifndef FLEXIBLE`` in martinize2's output: pass ``defines={"FLEXIBLE": ""}`` for bonds)."""
        cutoff = value_in(nonbondedCutoff, NANOMETER, "nonbondedCutoff")
        periodic = self.topology.getPeriodicBoxVectors() is not None
        system = openmm.System()
        if periodic:
            system.setDefaultPeriodicBoxVectors(*self.topology.getPeriodicBoxVectors())
        offset, types, charges, excl = 0, [], [], []
        collected = {}  # (directive, funct) -> list of (atoms + offset, params)
        for mol, count in self._instances():
            mtypes, mcharges, masses = self._atom_arrays(mol)
            sites = self._virtual_sites(mol, masses)
            masses = masses.copy()
            masses[list(sites)] = 0.0  # OpenMM: a virtual site has no mass
            mexcl = self._excluded_pairs(mol)
            terms = {key: t.arrays(*FUNCTIONS[key]) for key, t in mol.terms.items()}
            n = len(mol.atoms)
            for k in range(count):
                base = offset + k * n
                for m in masses.tolist():
                    system.addParticle(m)
                for site, build in sites.items():
                    system.setVirtualSite(base + site, build(base))
                for key, (atoms, _, params) in terms.items():
                    collected.setdefault(key, []).append((atoms + base, params))
            bases = offset + n * np.arange(count)
            excl.append((mexcl[None] + bases[:, None, None]).reshape(-1, 2))
            offset += count * n
            types += mtypes * count
            charges.append(np.tile(mcharges, count))
        charges = np.concatenate(charges)
        exclusions = np.concatenate(excl) if excl else np.zeros((0, 2), np.int64)

        for key, blocks in collected.items():
            atoms = np.concatenate([a for a, _ in blocks])
            params = np.concatenate([p for _, p in blocks])
            if key == ("pairs", 1):
                qq = forces.ONE_4PI_EPS0 / epsilonR * self.defaults[4] * charges[atoms[:, 0]] * charges[atoms[:, 1]]
                for force in forces.pairs_14(atoms, *self._c6_c12(params[:, 0], params[:, 1]), qq):
                    system.addForce(force)
            else:
                self._add_terms(system, key, atoms, params)
        for force in system.getForces():  # bonded terms by minimum image, as GROMACS: whatever the box wraps
            force.setUsesPeriodicBoundaryConditions(periodic)

        used = sorted(set(types))
        type_index = np.searchsorted(used, types)
        c6, c12 = self._lj_tables(used)
        system.addForce(forces.shifted_lennard_jones(type_index, c6, c12, exclusions, cutoff, periodic))
        if np.any(charges):
            for force in forces.reaction_field(charges, exclusions, cutoff, epsilonR, epsilonRF, periodic):
                system.addForce(force)
        if removeCMMotion:
            system.addForce(openmm.CMMotionRemover())
        return system

    @staticmethod
    def _add_terms(system: openmm.System, key, atoms: np.ndarray, params: np.ndarray) -> None:
        directive, funct = key
        if directive == "constraints":
            for (i, j), (d,) in zip(atoms.tolist(), params.tolist()):
                system.addConstraint(i, j, d)
        elif directive == "bonds":
            system.addForce(forces.harmonic_bonds(atoms, params[:, 0], params[:, 1],
                                                  forces.BOND if funct == 1 else forces.HARMONIC))
        elif key == ("angles", 1):
            system.addForce(forces.harmonic_angles(atoms, np.radians(params[:, 0]), params[:, 1]))
        elif directive == "angles":
            system.addForce(forces.cosine_angles(atoms, np.radians(params[:, 0]), params[:, 1], funct == 10))
        elif key == ("dihedrals", 2):
            system.addForce(forces.harmonic_impropers(atoms, np.radians(params[:, 0]), params[:, 1]))
        elif key == ("dihedrals", 10):
            system.addForce(forces.restricted_torsions(atoms, np.radians(params[:, 0]), params[:, 1]))
        elif key == ("dihedrals", 11):
            system.addForce(forces.bending_torsions(atoms, params))
        elif directive == "dihedrals":
            system.addForce(forces.periodic_torsions(atoms, np.radians(params[:, 0]), params[:, 1],
                                                     np.rint(params[:, 2]).astype(int),
                                                     forces.PERIODIC_IMPROPER if funct == 4 else forces.PROPER))
        # virtual_sites2/3 are set per particle in createSystem

    def _virtual_sites(self, mol: _MoleculeType, masses: np.ndarray) -> dict:
        """site index -> function(base) -> openmm.VirtualSite, for every virtual site of a molecule type."""
        sites = {}
        for site, funct, atoms, weights in mol.vsites_n:
            w = np.ones(len(atoms)) if funct == 1 else masses[atoms] if funct == 2 else np.array(weights)
            if w.sum() == 0:
                _fail(mol.where, f"virtual site {site + 1} of {mol.name}: its constructing atoms weigh nothing")
            if len(atoms) < 2:
                _fail(mol.where, f"virtual site {site + 1} of {mol.name} is built from one atom, which OpenMM "
                                 "cannot do; give [ virtual_sitesn ] at least two")
            sites[site] = _centre_site(atoms, w / w.sum())
        for (directive, funct), t in mol.terms.items():
            if directive not in ("virtual_sites2", "virtual_sites3"):
                continue
            for (site, *atoms), params in zip(t.atoms, t.params):
                sites[site] = _site(directive, funct, atoms, params)
        return sites


def gromacs_box(box) -> unit.Quantity:
    """A GROMACS box (3, 3) nm (rows a, b, c, as in a .gro/.trr) as OpenMM periodic box vectors.
    GROMACS tolerates |c_x| slightly over a_x/2 (a dodecahedron's is a_x/2, give or take 1e-5 nm),
    OpenMM refuses it: c and b are reduced by whole lattice vectors, which leaves the
    lattice, and so every periodic distance, exactly as GROMACS has it."""
    a, b, c = np.array(box, dtype=float).reshape(3, 3)
    c = c - b * round(c[1] / b[1])
    c = c - a * round(c[0] / a[0])
    b = b - a * round(b[0] / a[0])
    return [openmm.Vec3(*v) for v in (a, b, c)] * unit.nanometer


def _centre_site(atoms: list[int], weights: np.ndarray):
    """A weighted centre of n >= 2 atoms: a two- or three-particle average, or OpenMM's
    LocalCoordinatesSite at the weighted origin (its axes, from the first three atoms, are multiplied
    by a zero local position: collinear atoms are fine)."""
    n = len(atoms)
    if n == 2:
        return lambda base: openmm.TwoParticleAverageSite(base + atoms[0], base + atoms[1], *weights.tolist())
    if n == 3:
        return lambda base: openmm.ThreeParticleAverageSite(*(base + a for a in atoms), *weights.tolist())
    x, y = np.zeros(n), np.zeros(n)
    x[[0, 1]], y[[0, 2]] = (-1.0, 1.0), (-1.0, 1.0)
    return lambda base: openmm.LocalCoordinatesSite([base + a for a in atoms], weights.tolist(), x.tolist(),
                                                    y.tolist(), openmm.Vec3(0, 0, 0))


def _site(directive: str, funct: int, atoms: list[int], params: list[float]):
    if directive == "virtual_sites2":  # type 1: (1 - a) x_i + a x_j
        (a,) = params
        return lambda base: openmm.TwoParticleAverageSite(base + atoms[0], base + atoms[1], 1 - a, a)
    if funct == 1:  # 3: x_i + a r_ij + b r_ik
        a, b = params
        return lambda base: openmm.ThreeParticleAverageSite(*(base + k for k in atoms), 1 - a - b, a, b)
    a, b, c = params  # 3out: x_i + a r_ij + b r_ik + c (r_ij x r_ik)
    return lambda base: openmm.OutOfPlaneSite(*(base + k for k in atoms), a, b, c)
