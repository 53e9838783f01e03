"""Martini 3 in OpenMM (``openmm_herobm.martini``) against GROMACS itself.

The references in ``tests/data/martini/reference.npz`` are GROMACS 2022.5 (double precision)
reruns of real systems (``scripts/martini_gromacs_reference.py``, README there): martinize2's
protein with and without its elastic network in W + NaCl, and the real mstool membrane frame
(POPC, POPE, W, ions); and of a made-up molecule with every other term the reader supports, under
each combination rule (``features_comb{1,2,3}``).  CI has no GROMACS; ``test_live_gromacs`` runs
it where it is installed.
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import numpy as np
import openmm
import openmm.app
import pytest
from openmm import unit

from openmm_herobm import HeroBMError
from openmm_herobm.martini import MartiniTopFile, gromacs_box

DATA = Path(__file__).resolve().parent / "data" / "martini"
REAL_FRAMES = Path(__file__).resolve().parent / "data" / "real_frames"
SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "martini_gromacs_reference.py"
REFERENCE = dict(np.load(DATA / "reference.npz"))
SYSTEMS = sorted({key.split(":")[0] for key in REFERENCE})
#: relative agreement asked of every energy term (both sides are double precision: they agree to 1e-13)
ENERGY_TOL = 1e-9
#: |F_openmm - F_gmx| / rms |F_gmx|, per bead (the stored forces are float32)
FORCE_TOL = 1e-5


def _terms(system: str) -> list[str]:
    return [key.split(":", 2)[2] for key in REFERENCE if key.startswith(f"{system}:energy:")]


def _molecules(top: Path) -> dict[str, int]:
    """[ molecules ] of a .top: name -> count."""
    rows = top.read_text().split("[ molecules ]")[1].split("\n")
    return {r.split()[0]: int(r.split()[1]) for r in rows if r.strip()}


def openmm_energies(top: Path, positions: np.ndarray, box: np.ndarray, terms: list[str], **create):
    """Per GROMACS energy term (F,) kJ/mol, forces (F, N, 3) kJ/mol/nm (virtual sites zeroed, as
    GROMACS reports them) on the Reference platform (double), positions as given (a rerun's)."""
    system = MartiniTopFile(top, periodicBoxVectors=gromacs_box(box[0])).createSystem(**create)
    groups = {}
    for force in system.getForces():
        force.setForceGroup(groups.setdefault(force.getName(), len(groups) + 1))
    assert len(groups) < 32
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    virtual = np.array([system.isVirtualSite(i) for i in range(system.getNumParticles())])
    energies, forces = {t: [] for t in terms}, []
    for x, b in zip(positions, box):
        context.setPeriodicBoxVectors(*gromacs_box(b))
        context.setPositions(x.astype(np.float64))
        for t in terms:
            state = context.getState(getEnergy=True, groups=set(groups.values()) if t == "Potential" else {groups[t]})
            energies[t].append(state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
        f = context.getState(getForces=True).getForces(asNumpy=True)
        f = f.value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
        f[virtual] = 0.0
        forces.append(f)
    return {t: np.array(e) for t, e in energies.items()}, np.array(forces)


def relative_errors(reference: dict, system: str, top: Path, **create) -> dict:
    """Per term max over frames |E / E_gmx - 1|; ``forces``: max over beads |dF| / rms |F_gmx|."""
    terms = [key.split(":", 2)[2] for key in reference if key.startswith(f"{system}:energy:")]
    energies, forces = openmm_energies(top, reference[f"{system}:positions"], reference[f"{system}:box"], terms,
                                       **create)
    errors = {t: np.max(np.abs(energies[t] / reference[f"{system}:energy:{t}"] - 1)) for t in terms}
    f_ref = reference[f"{system}:forces"].astype(np.float64)
    rms = np.sqrt(np.mean(np.sum(f_ref ** 2, axis=-1)))
    errors["forces"] = np.max(np.linalg.norm(forces - f_ref, axis=-1)) / rms
    return errors


@pytest.fixture(scope="module")
def errors():
    return {system: relative_errors(REFERENCE, system, DATA / f"{system}.top") for system in SYSTEMS}


def test_the_references_cover_every_martinize2_term():
    """The fixtures hold what martinize2 writes: bonds (elastic network too), G96 and ReB angles,
    proper and improper dihedrals, LJ and reaction field, in protein, membrane and solvent."""
    assert SYSTEMS == ["features_comb1", "features_comb2", "features_comb3", "membrane", "protein_elastic",
                       "protein_plain"]
    assert set(_terms("protein_elastic")) == {"Bond", "G96Angle", "Restr. Angles", "Proper Dih.", "Improper Dih.",
                                              "LJ (SR)", "Coulomb (SR)", "Potential"}
    assert {"Bond", "G96Angle", "LJ (SR)", "Coulomb (SR)"} <= set(_terms("membrane"))
    assert REFERENCE["protein_elastic:positions"].shape[1] > 700 and REFERENCE["membrane:positions"].shape[1] > 7000
    # and what martinize2 does not write: every other supported form, each non-zero
    features = {t for t in _terms("features_comb2") if abs(REFERENCE[f"features_comb2:energy:{t}"][0]) > 1}
    assert features == {"Bond", "Harmonic Pot.", "Angle", "G96Angle", "Restr. Angles", "Proper Dih.", "Improper Dih.",
                        "Per. Imp. Dih.", "Restr. Dih.", "CBT Dih.", "LJ-14", "Coulomb-14", "LJ (SR)", "Coulomb (SR)",
                        "Potential"}


@pytest.mark.parametrize("system", SYSTEMS)
def test_energies_per_term_match_gromacs(errors, system):
    bad = {t: e for t, e in errors[system].items() if t != "forces" and not e < ENERGY_TOL}
    assert not bad, f"{system}: relative errors above {ENERGY_TOL}: {bad}"


@pytest.mark.parametrize("system", SYSTEMS)
def test_forces_match_gromacs(errors, system):
    assert errors[system]["forces"] < FORCE_TOL


def _copy_fixture(tmp_path: Path) -> Path:
    """tests/data/martini and the martinize2 .itp it includes, copied to be edited."""
    shutil.copytree(DATA, tmp_path / "martini")
    itp = REAL_FRAMES / "test" / "bm5_2X9A_l_b_B" / "elastic" / "molecule_0.itp"
    target = tmp_path / "real_frames" / itp.relative_to(REAL_FRAMES)
    target.parent.mkdir(parents=True)
    shutil.copy(itp, target)
    return tmp_path / "martini"


@pytest.mark.parametrize("file, old, new, term", [
    ("martini_v3.0.0_subset.itp", "W     W  1 4.700000e-01    4.650000e+00", "W     W  1 4.700000e-01    4.660000e+00",
     "LJ (SR)"),  # W-W epsilon +0.2 %
    ("../real_frames/test/bm5_2X9A_l_b_B/elastic/molecule_0.itp", "  1   3   5 10 127 20", "  1   3   5 10 127 21",
     "Restr. Angles"),  # one ReB angle's force constant
])
def test_a_wrong_parameter_is_caught(tmp_path, file, old, new, term):
    """The comparison can fail: one parameter changed slightly breaks its term (and nothing else)."""
    folder = _copy_fixture(tmp_path)
    path = folder / file
    text = path.read_text()
    assert text.count(old) == 1
    path.write_text(text.replace(old, new))
    wrong = relative_errors(REFERENCE, "protein_elastic", folder / "protein_elastic.top")
    assert wrong[term] > 1e-5 and wrong["Potential"] > ENERGY_TOL
    assert wrong["Bond"] < ENERGY_TOL and wrong["Coulomb (SR)"] < ENERGY_TOL


def test_a_wrong_reaction_field_is_caught():
    """GROMACS' reaction field (eps_rf = infinity, the exclusion and self terms) is what matches."""
    wrong = relative_errors(REFERENCE, "protein_plain", DATA / "protein_plain.top", epsilonRF=80.0)
    assert wrong["Coulomb (SR)"] > 1e-3 and wrong["LJ (SR)"] < ENERGY_TOL


@pytest.mark.parametrize("system, n_sites, tol", [
    ("protein_elastic", 3, 1e-6),  # martinize2's aromatic centres ([ virtual_sitesn ] 2), GROMACS' float MD
    ("features_comb1", 6 * 27, 1e-12),  # virtual_sites2 1, virtual_sites3 1 and 4, virtual_sitesn 1, 2, 3 (gmx_d)
])
def test_virtual_sites_are_built_where_gromacs_built_them(system, n_sites, tol):
    """A rerun takes virtual sites as given, so the energies above do not test where OpenMM builds
    them: here OpenMM builds them from the other beads, and they land where GROMACS put them."""
    x, box = REFERENCE[f"{system}:positions"][0].astype(np.float64), REFERENCE[f"{system}:box"][0]
    system = MartiniTopFile(DATA / f"{system}.top", periodicBoxVectors=gromacs_box(box)).createSystem()
    sites = [i for i in range(system.getNumParticles()) if system.isVirtualSite(i)]
    assert len(sites) == n_sites and all(system.getParticleMass(i) == 0 * unit.dalton for i in sites)
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(x)
    context.computeVirtualSites()
    built = context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    assert np.abs(built[sites] - x[sites]).max() < tol
    assert np.array_equal(np.delete(built, sites, 0), np.delete(x, sites, 0))


def test_topology_and_defines():
    """One chain per molecule, residues and names from [ atoms ]; ``FLEXIBLE`` turns martinize2's
    constraints into stiff bonds."""
    top = MartiniTopFile(DATA / "protein_elastic.top")
    chains = list(top.topology.chains())
    assert len(chains) == sum(_molecules(DATA / "protein_elastic.top").values())
    assert top.topology.getPeriodicBoxVectors() is None
    protein = list(chains[0].residues())
    assert (protein[0].name, [a.name for a in protein[0].atoms()]) == ("THR", ["BB", "SC1"])
    assert len(protein) == 61 and sum(1 for _ in chains[0].atoms()) == 147
    rigid = top.createSystem()
    flexible = MartiniTopFile(DATA / "protein_elastic.top", defines=["FLEXIBLE"]).createSystem()
    # side-chain constraints become bonds; the helix backbone's and the disulfide's stay (7 here)
    assert rigid.getNumConstraints() == 61 and flexible.getNumConstraints() == 7
    bonds = {s: sum(f.getNumBonds() for f in s.getForces() if isinstance(f, openmm.HarmonicBondForce))
             for s in (rigid, flexible)}
    assert bonds[flexible] == bonds[rigid] + 61 - 7
    assert not any(isinstance(f, openmm.CustomNonbondedForce) and f.getNonbondedMethod() == f.CutoffPeriodic
                   for f in rigid.getForces())  # no box: not periodic
    cubic = MartiniTopFile(DATA / "protein_elastic.top", unitCellDimensions=openmm.Vec3(6, 6, 6) * unit.nanometer)
    boxed = cubic.createSystem(nonbondedCutoff=1.2 * unit.nanometer)
    lj = next(f for f in boxed.getForces() if f.getName() == "LJ (SR)")
    assert lj.getNonbondedMethod() == lj.CutoffPeriodic and lj.getCutoffDistance() == 1.2 * unit.nanometer
    assert boxed.getDefaultPeriodicBoxVectors()[2] == openmm.Vec3(0, 0, 6) * unit.nanometer


def test_the_cpu_platform_agrees():
    """Every nonbonded force has the same exclusions (OpenMM's CPU platform refuses otherwise)."""
    x, box = REFERENCE["protein_plain:positions"][0].astype(np.float64), REFERENCE["protein_plain:box"][0]
    system = MartiniTopFile(DATA / "protein_plain.top", periodicBoxVectors=gromacs_box(box)).createSystem()
    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("CPU"),
                             {"Threads": "1"})
    context.setPositions(x)
    energy = context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert energy == pytest.approx(REFERENCE["protein_plain:energy:Potential"][0], rel=1e-5)


def test_gromacs_box_keeps_the_lattice():
    """A dodecahedron box as GROMACS writes it (|c_x| 5e-6 nm over a_x/2) is accepted, same lattice."""
    box = np.array([[5.1771102, 0, 0], [0, 5.1771102, 0], [2.5885601, 2.5885601, 3.66076994]])  # a real one
    assert box[2, 0] > box[0, 0] / 2  # the case OpenMM refuses as it is
    with pytest.raises(ValueError, match="reduced form"):
        openmm.app.Topology().setPeriodicBoxVectors([openmm.Vec3(*v) for v in box] * unit.nanometer)
    reduced = np.array(gromacs_box(box).value_in_unit(unit.nanometer))
    lattice = np.linalg.solve(box.T, reduced.T)  # integer coordinates of the new vectors in the old lattice
    assert np.allclose(lattice, np.rint(lattice), atol=1e-9) and abs(np.linalg.det(np.rint(lattice))) == 1


def _write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


ITP = "[ atomtypes ]\nP1 72.0 0.000 A 0.0 0.0\n[ nonbond_params ]\nP1 P1 1 0.47 4.5\n"
MOL = "[ moleculetype ]\nM 1\n[ atoms ]\n1 P1 1 RES A 1 0\n2 P1 1 RES B 2 0\n[ bonds ]\n1 2 1 0.47 1250\n"


@pytest.mark.parametrize("top, message", [
    ('#include "ff.itp"\n[ cmap ]\n', r"top.top:2: \[ cmap \] is not supported"),
    ('#include "ff.itp"\n' + MOL + "[ angles ]\n1 2 1 5 90 25\n",
     r"top.top:10: \[ angles \] function type 5 is not supported \(supported: 1, 2, 10\)"),
    ('#include "nowhere.itp"\n', r"top.top:1: #include 'nowhere.itp': no such file .* pass includeDir="),
    (MOL + "[ system ]\nS\n[ molecules ]\nM 1\n", r"top.top:4: atom type 'P1' of molecule M is not in \[ atomtypes \]"),
    ('#include "ff.itp"\n[ system ]\nS\n[ molecules ]\nX 1\n', r"top.top:5: molecule 'X' has no \[ moleculetype \]"),
    ('#include "ff.itp"\n' + MOL.replace("1250", "") + "[ system ]\nS\n[ molecules ]\nM 1\n",
     r"top.top:8: \[ bonds \] type 1 without its 2 parameters"),
    ('#if FOO\n#endif\n', r"top.top:1: preprocessor directive #if is not supported"),
    ('#ifdef FOO\n', r"top.top:1: 1 #ifdef/#ifndef not closed"),
    (MOL + MOL, r"top.top:9: molecule type 'M' defined twice \(first at .*top.top:2\)"),
    ('#include "ff.itp"\n' + MOL + "[ pairs ]\n1 2 1\n", r"top.top:10: \[ pairs \] type 1 without its 2 "),
])
def test_bad_input_is_one_clear_line(tmp_path, top, message):
    _write(tmp_path, "ff.itp", ITP)
    path = _write(tmp_path, "top.top", top)
    with pytest.raises(HeroBMError, match=message) as err:
        MartiniTopFile(path).createSystem()
    assert "\n" not in str(err.value)


def test_preprocessor_branches_and_macros(tmp_path):
    """#define (a name, or a value substituted as a word), #ifdef/#ifndef/#else/#endif, nested."""
    _write(tmp_path, "ff.itp", ITP)
    top = ('#include "ff.itp"\n#define KB 1250\n' + MOL.replace("1250", "KB")
           + "#ifdef RIGID\n[ constraints ]\n1 2 1 0.47\n#else\n#ifndef NOTHING\n[ bonds ]\n1 2 6 0.5 100\n#endif\n"
             "#endif\n[ system ]\nS\n[ molecules ]\nM 2\n")
    path = _write(tmp_path, "top.top", top)
    plain = MartiniTopFile(path).createSystem()
    names = sorted(f.getName() for f in plain.getForces() if isinstance(f, openmm.HarmonicBondForce))
    assert names == ["Bond", "Harmonic Pot."] and plain.getNumConstraints() == 0
    bond = next(f for f in plain.getForces() if f.getName() == "Bond")
    assert bond.getNumBonds() == 2 and bond.getBondParameters(1)[:2] == [2, 3]
    assert bond.getBondParameters(0)[3].value_in_unit(unit.kilojoule_per_mole / unit.nanometer ** 2) == 1250
    rigid = MartiniTopFile(path, defines={"RIGID": ""}).createSystem()
    assert rigid.getNumConstraints() == 2
    lj = next(f for f in plain.getForces() if f.getName() == "LJ (SR)")
    assert lj.getNumExclusions() == 2  # 1-2 of each molecule, from the type 1 bond
    only_6 = _write(tmp_path, "six.top", top.replace("[ bonds ]\n1 2 1 0.47 KB\n", ""))
    lj = next(f for f in MartiniTopFile(only_6).createSystem().getForces() if f.getName() == "LJ (SR)")
    assert lj.getNumExclusions() == 0  # a type 6 bond excludes nothing (GROMACS: for elastic networks)


#: GROMACS binary -> (energy, force) tolerances: double precision agrees to rounding; mixed (single)
#: precision to its float arithmetic (measured: energies <= 9e-7, forces 6e-6 of the rms force)
LIVE = {"gmx_d": (ENERGY_TOL, 1e-8), "gmx": (1e-4, 1e-4)}


@pytest.mark.parametrize("gmx", sorted(LIVE))
def test_live_gromacs(tmp_path, gmx):
    """GROMACS run now (where installed), on the elastic-network protein's first frame written as a
    .gro with 8 decimals, both programs reading the same numbers."""
    if shutil.which(gmx) is None:
        pytest.skip(f"{gmx} (GROMACS) is not installed")
    spec = importlib.util.spec_from_file_location("martini_gromacs_reference", SCRIPT)
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    x, box = REFERENCE["protein_elastic:positions"][0].astype(np.float64), REFERENCE["protein_elastic:box"][0]
    atoms = [(r.index + 1, r.name, a.name) for r in MartiniTopFile(DATA / "protein_elastic.top").topology.residues()
             for a in r.atoms()]
    v = box[[0, 1, 2, 0, 0, 1, 1, 2, 2], [0, 1, 2, 1, 2, 0, 2, 0, 1]]  # .gro order: v1x v2y v3z v1y v1z v2x v2z v3x v3y
    lines = [f"{n % 100000:5d}{res:<5s}{name:>5s}{k % 100000 + 1:5d}{p[0]:13.8f}{p[1]:13.8f}{p[2]:13.8f}"
             for k, ((n, res, name), p) in enumerate(zip(atoms, x))]
    last = " ".join(f"{c:.8f}" for c in v)
    (tmp_path / "start.gro").write_text("live\n" + f"{len(lines)}\n" + "\n".join(lines) + "\n" + last + "\n")
    x = np.array([[float(line[20 + 13 * k:33 + 13 * k]) for k in range(3)] for line in lines])  # as written
    v = [float(c) for c in last.split()]
    box = np.array([[v[0], v[3], v[4]], [v[5], v[1], v[6]], [v[7], v[8], v[2]]])
    live = script.rerun(DATA / "protein_elastic.top", tmp_path / "start.gro", tmp_path / "rerun", gmx=gmx)
    reference = {f"live:{k}": v for k, v in live.items()}
    reference["live:positions"], reference["live:box"] = x[None], box[None]
    errors = relative_errors(reference, "live", DATA / "protein_elastic.top")
    print(gmx, {t: f"{e:.1e}" for t, e in errors.items()})
    energy_tol, force_tol = LIVE[gmx]
    assert max(e for t, e in errors.items() if t != "forces") < energy_tol and errors["forces"] < force_tol


def test_martini_md_runs_at_20_fs():
    """The System is usable as Martini is run: 20 fs Langevin steps with the constraints and virtual
    sites, on the CPU platform, stay finite and near the bath temperature."""
    x, box = REFERENCE["protein_elastic:positions"][0].astype(np.float64), REFERENCE["protein_elastic:box"][0]
    top = MartiniTopFile(DATA / "protein_elastic.top", periodicBoxVectors=gromacs_box(box))
    system = top.createSystem()
    integrator = openmm.LangevinMiddleIntegrator(310 * unit.kelvin, 5 / unit.picosecond, 0.02 * unit.picosecond)
    integrator.setRandomNumberSeed(1)
    simulation = openmm.app.Simulation(top.topology, system, integrator, openmm.Platform.getPlatformByName("CPU"),
                                       {"Threads": "1"})
    simulation.context.setPositions(x)
    simulation.context.computeVirtualSites()
    simulation.context.setVelocitiesToTemperature(310 * unit.kelvin, 1)
    simulation.step(250)
    state = simulation.context.getState(getEnergy=True, getPositions=True)
    real = sum(1 for i in range(system.getNumParticles()) if not system.isVirtualSite(i))
    dof = 3 * real - system.getNumConstraints() - 3
    temperature = 2 * state.getKineticEnergy() / (dof * unit.MOLAR_GAS_CONSTANT_R)
    assert np.isfinite(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer)).all()
    assert 250 < temperature.value_in_unit(unit.kelvin) < 370
    assert state.getPotentialEnergy() < 0 * unit.kilojoule_per_mole
