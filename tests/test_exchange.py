"""Resolution exchange (``openmm_herobm.exchange``) on real structures.

Serial switching: martinize2's bm5_2X9A_l_b_B (61 residues) in Martini 3 without solvent ->
HEroBM + Amber14/OBC2 -> Martini 3 again (examples/resolution_cycle.py, shortened).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from openmm import unit

from openmm_herobm import HeroBMError
from openmm_herobm.exchange import cg_positions, to_all_atom, to_coarse_grained
from openmm_herobm.martini import MartiniTopFile

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def _script(name: str, path: Path):
    """A script of the repository (example or benchmark) imported as a module."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _example():
    return _script("resolution_cycle", ROOT / "examples" / "resolution_cycle.py")


@pytest.fixture(scope="module")
def cycle():
    """One CG -> AA -> CG round: 100 Martini steps (2 ps), backmap, 100 all-atom steps (0.2 ps), back."""
    ex = _example()
    top = MartiniTopFile(ex.TOP)
    from openmm import app

    cg = ex.cg_simulation(top, app.GromacsGroFile(str(ex.START)).getPositions(), threads=1)  # the same frame every run
    cg.step(100)
    beads = cg_positions(cg)
    aa = to_all_atom(cg, platform="CPU")
    mapped = ex.mapped_beads(aa, top)
    e_aa0 = ex.energy(aa)
    aa.step(100)
    back = to_coarse_grained(aa, top, platform="CPU")
    return {"ex": ex, "top": top, "beads": beads, "aa": aa, "mapped": mapped, "e_aa0": e_aa0, "back": back}


def test_backmapped_frame_keeps_the_beads(cycle):
    """The forward-mapped all-atom frame lies on the CG frame it came from (measured 0.11 nm RMS over
    147 beads; a wrong bead order or a broken backmapping gives > 0.5 nm).  With two OpenMM threads
    the CG frame differed run to run and this ranged 0.09-0.19 nm."""
    rms = cycle["ex"].hb_rms(cycle["beads"], cycle["mapped"])
    assert rms < 0.15
    # and not trivially: beads of one residue swapped are far off
    swapped = cycle["mapped"].copy()
    swapped[[0, 1]] = swapped[[1, 0]]
    assert cycle["ex"].hb_rms(cycle["beads"], swapped) > rms


def test_all_atom_simulation_is_sound(cycle):
    aa, report = cycle["aa"], cycle["aa"].herobm_report
    assert aa.topology.getNumAtoms() == 900  # the 61 residues with hydrogens (Amber14 names)
    assert report["chirality_errors_ca"] == 0 and report["chirality_errors_ile_cb"] == 0
    assert report["chirality_errors_thr_cb"] == 0 and report["cis_peptides_nonpro"] == 0
    assert aa.system.getNumConstraints() > 0  # HBonds for 2 fs steps
    names = {aa.system.getForce(i).getName() for i in range(aa.system.getNumForces())}
    assert not any("HEroBM" in n or "guard" in n.lower() for n in names), names  # production System, no restraint
    state = aa.context.getState(getEnergy=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    assert np.isfinite(cycle["e_aa0"]) and cycle["e_aa0"] < 0 and np.isfinite(energy) and energy < 0
    dof = 3 * aa.system.getNumParticles() - aa.system.getNumConstraints() - 3
    temperature = 2 * state.getKineticEnergy() / (dof * unit.MOLAR_GAS_CONSTANT_R)
    assert 200 < temperature.value_in_unit(unit.kelvin) < 400  # velocities drawn at 300 K


def test_back_in_martini_runs(cycle):
    back, top = cycle["back"], cycle["top"]
    assert back.topology.getNumAtoms() == top.topology.getNumAtoms() == 147
    e0 = cycle["ex"].energy(back)
    back.step(200)
    x = cg_positions(back)
    assert np.isfinite(x).all() and np.isfinite(e0) and e0 < 0
    assert cycle["ex"].hb_rms(x, cycle["mapped"]) < 0.5  # 4 ps of Martini from the mapped frame: still the fold


def test_a_topology_of_another_molecule_is_refused(cycle, tmp_path):
    other = tmp_path / "other.top"
    other.write_text(f'#include "{DATA}/martini/martini_v3.0.0_subset.itp"\n'
                     f'#include "{DATA}/real_frames/test/bm5_4IZ7_l_u_B/plain/molecule_0.itp"\n'
                     "[ system ]\nother\n[ molecules ]\nmolecule_0 1\n")
    with pytest.raises(HeroBMError, match="residue|bead"):
        to_coarse_grained(cycle["aa"], MartiniTopFile(other))


# -- Hamiltonian resolution exchange on alanine dipeptide (benchmarks/resolution_exchange.py) ----------

def _bench():
    return _script("resolution_exchange_bench", ROOT / "benchmarks" / "resolution_exchange.py")


@pytest.fixture(scope="module")
def dipeptide():
    from openmm_herobm.exchange import resolution_system

    bench = _bench()
    pdb, system = bench.setup()
    return bench, pdb, system, resolution_system(pdb.topology, system, pdb.positions, str(bench.TOP))


def _reference_context(system, positions):
    import openmm

    context = openmm.Context(system, openmm.VerletIntegrator(0.001), openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    return context


def test_the_exchange_system_is_all_atom_plus_martini_of_the_mapped_beads(dipeptide):
    """Groups 0 + 1 are the all-atom System exactly; group 2 is the Martini System at M x, its
    forces M^T F_CG on the atoms (the exactness of the sampler rests on this decomposition)."""
    import mdtraj

    from openmm_herobm.exchange import CG_GROUP
    from openmm_herobm.mapping import map_structure

    bench, pdb, system, rex_system = dipeptide
    x = pdb.getPositions(asNumpy=True).value_in_unit(unit.nanometer) + 0.01 * np.random.default_rng(3).normal(
        size=(22, 3))  # off the minimum: every term has a force
    kj = unit.kilojoule_per_mole
    mixed, plain = _reference_context(rex_system, x), _reference_context(system, x)
    aa = mixed.getState(getEnergy=True, groups={0, 1}).getPotentialEnergy().value_in_unit(kj)
    assert aa == pytest.approx(plain.getState(getEnergy=True).getPotentialEnergy().value_in_unit(kj), abs=1e-8)

    mapped = map_structure(mdtraj.Trajectory(x[None], mdtraj.Topology.from_openmm(pdb.topology)), "martini3")
    top = MartiniTopFile(bench.TOP)
    cg = _reference_context(top.createSystem(), mapped.cg.xyz[0].astype(np.float64))
    weights = mapped.system.weights.toarray()
    beads = weights @ x
    cg.setPositions(beads)
    state = mixed.getState(getEnergy=True, getForces=True, groups={CG_GROUP})
    reference = cg.getState(getEnergy=True, getForces=True)
    e_cg = state.getPotentialEnergy().value_in_unit(kj)
    assert abs(e_cg) > 1.0
    assert e_cg == pytest.approx(reference.getPotentialEnergy().value_in_unit(kj), rel=1e-9)
    f_atoms = state.getForces(asNumpy=True).value_in_unit(kj / unit.nanometer)
    f_beads = reference.getForces(asNumpy=True).value_in_unit(kj / unit.nanometer)
    np.testing.assert_allclose(f_atoms, weights.T @ f_beads, atol=1e-6 * np.abs(f_beads).max())


def test_martini_virtual_sites_are_centres_of_the_mapped_atoms(cycle):
    """A real protein (2X9A: three virtual_sitesn beads, aromatic side chains): the CG group of the
    exchange System is the Martini energy with the virtual sites built from the mapped beads, as
    Martini builds them (the composed atom weights), to 1e-9."""
    from openmm_herobm.exchange import CG_GROUP, CONSTRAINT_K, resolution_system

    aa, ex = cycle["aa"], cycle["ex"]
    flexible = MartiniTopFile(ex.TOP, defines={"FLEXIBLE": ""})
    cg_system = flexible.createSystem()
    assert sum(cg_system.isVirtualSite(i) for i in range(cg_system.getNumParticles())) == 3
    x = aa.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    rex_system = resolution_system(aa.topology, aa.system, x, flexible)
    kj = unit.kilojoule_per_mole
    e_cg = _reference_context(rex_system, x).getState(getEnergy=True, groups={CG_GROUP}).getPotentialEnergy()
    import mdtraj
    import openmm

    from openmm_herobm.exchange.sampler import _bead_order
    from openmm_herobm.mapping import map_structure

    # the mapped beads in Martini's order, as they are (no constraint projection, no minimisation)
    mapped = map_structure(mdtraj.Trajectory(x[None], mdtraj.Topology.from_openmm(aa.topology)), "martini3")
    weights = mapped.system.weights.tocsr()
    weights = weights.multiply(1.0 / weights.sum(axis=1)).tocsr()
    beads = (weights @ x)[_bead_order(flexible.topology, mapped.cg.topology)]  # float64
    for force in cg_system.getForces():  # the reaction field's self term, a constant, is left out
        force.setForceGroup(1 if isinstance(force, openmm.CustomExternalForce) else 0)
    reference = _reference_context(cg_system, beads)
    reference.computeVirtualSites()  # Martini's own sites, from the mapped beads
    e_ref = reference.getState(getEnergy=True, groups={0}).getPotentialEnergy().value_in_unit(kj)
    # + the constraints martinize2 keeps under FLEXIBLE (helix backbone, the disulfide), as bonds
    bonds = [cg_system.getConstraintParameters(i) for i in range(cg_system.getNumConstraints())]
    assert len(bonds) == 7
    beads = reference.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    e_ref += sum(0.5 * CONSTRAINT_K * (np.linalg.norm(beads[a] - beads[b]) - r0.value_in_unit(unit.nanometer)) ** 2
                 for a, b, r0 in bonds)
    assert abs(e_ref) > 10.0
    assert e_cg.value_in_unit(kj) == pytest.approx(e_ref, rel=1e-9)


def test_identical_states_always_swap_and_a_checkpoint_resumes(dipeptide, tmp_path):
    from openmm_herobm.exchange import ResolutionExchange, resolution_states

    _, pdb, _, rex_system = dipeptide
    rex = ResolutionExchange(rex_system, pdb.positions, resolution_states([1.0, 1.0, 1.0]), steps=20,
                             platform="Reference", seed=2)
    rex.run(4)
    assert rex.acceptance.tolist() == [1.0, 1.0]  # delta = 0 exactly
    rex.save(tmp_path / "rex.npz")
    again = ResolutionExchange(rex_system, pdb.positions, resolution_states([1.0, 1.0, 1.0]), steps=20,
                               platform="Reference", seed=99)
    again.load(tmp_path / "rex.npz")
    assert again.iteration == 4 and (again.state_of == rex.state_of).all()
    x = again.contexts[1].getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)
    np.testing.assert_allclose(x, rex.contexts[1].getState(getPositions=True).getPositions(asNumpy=True)
                               .value_in_unit(unit.nanometer))
    again.run(2)
    assert again.iteration == 6 and len(again.history) == 6 and len(again.samples) == 6
    with pytest.raises(HeroBMError, match="replicas"):
        ResolutionExchange(rex_system, pdb.positions, resolution_states([0.5, 1.0]), steps=1,
                           platform="Reference").load(tmp_path / "rex.npz")


def _plain_md_energies(system, positions, iterations, steps, seed=3):
    """(iterations, 2) E_bonded, E_rest of plain Langevin MD (the reference for the target state)."""
    import openmm

    system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(system))
    for force in system.getForces():
        force.setForceGroup(0 if isinstance(force, (openmm.HarmonicBondForce, openmm.HarmonicAngleForce)) else 1)
    integrator = openmm.LangevinMiddleIntegrator(300 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
    integrator.setRandomNumberSeed(seed)
    context = openmm.Context(system, integrator, openmm.Platform.getPlatformByName("Reference"))
    context.setPositions(positions)
    context.applyConstraints(1e-6)
    context.setVelocitiesToTemperature(300 * unit.kelvin, seed)
    out = []
    for _ in range(iterations):
        integrator.step(steps)
        out.append([context.getState(getEnergy=True, groups={g}).getPotentialEnergy()
                    .value_in_unit(unit.kilojoule_per_mole) for g in (0, 1)])
    return np.array(out)


def test_the_all_atom_replica_samples_the_all_atom_ensemble(dipeptide):
    """A 5-state resolution exchange (fixed seed, 200 iterations of 0.25 ps): every neighbour pair
    swaps, replicas make round trips, and the all-atom state's bonded and non-bonded energies have
    plain MD's means (block errors; a Martini force leaking into the l = 1 state, a wrong
    temperature or a wrong swap rule moves them by several kJ/mol).  The alpha_R / beta weights need
    nanoseconds (benchmarks/resolution_exchange.py); the phi/psi populations inside the beta basin:
    test_the_all_atom_replica_has_plain_md_phi_psi_populations."""
    from openmm_herobm.exchange import ResolutionExchange, resolution_states

    _, pdb, system, rex_system = dipeptide
    rex = ResolutionExchange(rex_system, pdb.positions, resolution_states([0.3, 0.45, 0.6, 0.8, 1.0]),
                             steps=125, platform="Reference", seed=7)
    target = []
    for _ in range(200):
        rex.step()
        target.append(rex.group_energies(int(np.flatnonzero(rex.state_of == rex.target)[0]))[:2])
    assert (rex.acceptance > 0.3).all(), rex.acceptance
    assert rex.round_trips() >= 5
    history = np.array(rex.history)
    assert all(len(set(history[:, r])) == 5 for r in range(5))  # every replica visits every state
    md = _plain_md_energies(system, pdb.positions, 800, 125)
    for k in range(2):
        a, b = np.array(target)[20:, k], md[80:, k]
        se = np.hypot(*(x.reshape(10, -1).mean(1).std(ddof=1) / np.sqrt(10) for x in (a[:len(a) // 10 * 10],
                                                                                        b[:len(b) // 10 * 10])))
        assert abs(a.mean() - b.mean()) < 3 * se + 0.5, (k, a.mean(), b.mean(), se)


# the beta basin (phi < 0 outside alpha_R: -120 <= psi < 60) split into regions whose populations
# relax in picoseconds; masks over the 12 x 12 cells of scripts/alanine_dipeptide_md_reference.py
_PHI, _PSI = np.meshgrid(np.arange(-180, 180, 30), np.arange(-180, 180, 30), indexing="ij")  # cell lower edges
_BETA_BASIN = (_PHI < 0) & ~((_PSI >= -120) & (_PSI < 60))
_REGIONS = {"beta (phi < -120)": _BETA_BASIN & (_PHI < -120),
            "PPII": _BETA_BASIN & (_PHI >= -120) & ~((_PSI >= 60) & (_PSI < 120)),
            "C7eq (60 <= psi < 120)": _BETA_BASIN & (_PHI >= -120) & (_PSI >= 60) & (_PSI < 120)}


def _basin_populations(counts: np.ndarray) -> dict:
    """{region: (population within the beta basin, block standard error)} from (blocks, 144) cell
    counts; the error of the ratio by the delta method: SE of the block means of
    1[region] - p 1[basin], over the basin's fraction."""
    counts = np.asarray(counts, dtype=float)
    frames, basin = counts.sum(1), counts[:, _BETA_BASIN.ravel()].sum(1)
    out = {}
    for name, mask in _REGIONS.items():
        region = counts[:, mask.ravel()].sum(1)
        p = region.sum() / basin.sum()
        z = (region - p * basin) / frames
        out[name] = (p, z.std(ddof=1) / np.sqrt(len(z)) / (basin.sum() / frames.sum()))
    return out


def _biased_exchange_populations(dipeptide, seed: int, iterations: int = 1000, warmup: int = 40, blocks: int = 10):
    """The l = 1 state's beta-basin populations of a 3-state resolution exchange (l = 0.45, 0.75, 1;
    0.25 ps per iteration) whose low-l states carry, in the CG group, a phi bias
    -40 cos(phi + 150 deg) kJ/mol (c = 1 - l of it: 22 kJ/mol at l = 0.45) towards beta (phi ~ -150)
    from PPII / C7eq (phi ~ -70).  Returns (populations, the exchange)."""
    import mdtraj
    import openmm

    from openmm_herobm.exchange import CG_GROUP, ResolutionExchange, resolution_states

    bench, pdb, _, rex_system = dipeptide
    reference = _script("alanine_dipeptide_md_reference", ROOT / "scripts" / "alanine_dipeptide_md_reference.py")
    rex_system = openmm.XmlSerializer.deserialize(openmm.XmlSerializer.serialize(rex_system))
    bias = openmm.CustomTorsionForce("-k_phi*cos(theta + 2.6179938779914944)")
    bias.addPerTorsionParameter("k_phi")
    phi = mdtraj.compute_phi(mdtraj.Trajectory(np.zeros((1, 22, 3)), mdtraj.Topology.from_openmm(pdb.topology)))[0][0]
    bias.addTorsion(*map(int, phi), [40.0])
    bias.setForceGroup(CG_GROUP)
    rex_system.addForce(bias)
    rex = ResolutionExchange(rex_system, pdb.positions, resolution_states([0.45, 0.75, 1.0]), steps=125,
                             platform="Reference", seed=seed)
    rex.run(iterations)
    angles = bench.phi_psi(pdb.topology, np.array(rex.samples[warmup:]))
    return _basin_populations(reference.block_counts(angles, blocks)), rex


def test_the_all_atom_replica_has_plain_md_phi_psi_populations(dipeptide):
    """The all-atom state of a resolution exchange whose lower states are strongly biased in phi
    (fixed seed, 1000 iterations of 0.25 ps, 3 states) has plain MD's phi/psi populations inside
    the beta basin (beta, PPII, C7eq: they relax in picoseconds) within 4 combined block errors;
    the reference: 40 ns of plain Amber14/OBC2 MD (tests/data/exchange/alanine_dipeptide_md_phipsi.json,
    scripts/alanine_dipeptide_md_reference.py; beta 0.223, PPII 0.731, C7eq 0.047).  The swaps
    carry the biased states' configurations into the l = 1 state, so a wrong swap rule shows:
    accepting every swap, dropping the CG term from the energy difference, flipping its sign or
    0.1 of U_CG leaking into l = 1 give beta 0.43-0.63 (shifts of 6.7 to 23 errors; BENCHMARKS.md).  The
    alpha_R / beta basin weights need nanoseconds (benchmarks/resolution_exchange.py)."""
    import json

    populations, rex = _biased_exchange_populations(dipeptide, seed=5)
    assert (rex.acceptance > 0.1).all(), rex.acceptance
    holder = np.argmax(np.array(rex.history) == rex.target, axis=1)
    assert (np.diff(holder) != 0).sum() >= 50  # the l = 1 state keeps receiving swapped configurations
    reference = json.loads((DATA / "exchange" / "alanine_dipeptide_md_phipsi.json").read_text())
    md = _basin_populations(reference["counts"])
    for name, (p, se) in populations.items():
        p_md, se_md = md[name]
        assert abs(p - p_md) < 4 * np.hypot(se, se_md), (name, p, se, p_md, se_md)


def test_herobm_exchange_resumes_a_killed_run(tmp_path, capsys):
    """``herobm exchange CONFIG.yaml``: 3 iterations, then the same config asking for 5 resumes at
    3 (the checkpoint), writes the JSON report; a bad key is one line with exit status 2."""
    import json

    from openmm_herobm.cli.main import main

    config = tmp_path / "rex.yaml"
    body = (f"structure: {DATA}/exchange/alanine_dipeptide.pdb\nmartini: {DATA}/exchange/alanine_dipeptide_martini.top\n"
            "lambdas: [0.5, 1.0]\nsteps: 10\nplatform: Reference\ncheckpoint_every: 1\n")
    config.write_text(body + "iterations: 3\n")
    assert main(["exchange", str(config)]) == 0
    first = json.loads((tmp_path / "exchange.report.json").read_text())
    assert first["iterations"] == 3 and first["resumed_from"] == 0
    config.write_text(body + "iterations: 5\n")
    assert main(["exchange", str(config), "--no-progress"]) == 0
    second = json.loads((tmp_path / "exchange.report.json").read_text())
    assert second["iterations"] == 5 and second["resumed_from"] == 3 and second["samples"] == 5
    import mdtraj  # the all-atom state's trajectory: one frame per iteration, all 22 atoms

    traj = mdtraj.load(str(tmp_path / "exchange.dcd"), top=str(DATA / "exchange" / "alanine_dipeptide.pdb"))
    assert traj.n_frames == 5 and traj.n_atoms == 22 and np.isfinite(traj.xyz).all()
    assert "iteration 3" in capsys.readouterr().err
    config.write_text(body + "iterations: 5\nlambda: [1]\n")
    assert main(["exchange", str(config)]) == 2
    assert "unknown key(s) lambda" in capsys.readouterr().err


def test_real_protein_exchange_example(tmp_path):
    """examples/exchange_protein.py, shortened: a martinize2 protein with Martini virtual sites,
    HEroBM's all-atom start, 4 replicas; writes the all-atom trajectory and the statistics."""
    import json

    import mdtraj

    ex = _script("exchange_protein", ROOT / "examples" / "exchange_protein.py")
    import sys

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        report = ex.main(["-o", str(tmp_path), "--iterations", "2", "--steps", "10"])
    finally:
        sys.path.remove(str(ROOT / "examples"))
    assert report["iterations"] == 2 and len(report["acceptance"]) == 3
    assert json.loads((tmp_path / "exchange.report.json").read_text())["samples"] == 2
    traj = mdtraj.load(str(tmp_path / "exchange.dcd"), top=str(tmp_path / "aa_start.pdb"))
    assert traj.n_frames == 2 and traj.n_atoms == 900 and np.isfinite(traj.xyz).all()
    # the all-atom state stays near its start: no blow-up in 2 x 10 steps
    start = mdtraj.load(str(tmp_path / "aa_start.pdb"))
    assert float(np.sqrt(((traj.xyz[-1] - start.xyz[0]) ** 2).sum(1).mean())) < 0.1
