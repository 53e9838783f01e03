"""Parts of the OpenMM pipeline on real structures: topology, backbone optimisation, TorchForce restraint."""

import gzip
from pathlib import Path

import mdtraj
import numpy as np
import openmm as mm
import openmm.unit as unit
import pytest

from openmm_herobm.geometry import dihedral
from openmm_herobm.mapping import MappingSet, SystemMapping
from openmm_herobm.pipeline.backbone import optimise_backbone
from openmm_herobm.pipeline.hydrogens import templates_free_residues
from openmm_herobm.pipeline.platform import choose_platform
from openmm_herobm.pipeline.restraint import PARAMETER, bead_restraint_force
from openmm_herobm.pipeline.system import load_forcefield
from openmm_herobm.pipeline.topology import prepare_topology

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
UBQ = ROOT / "examples" / "data" / "1ubq.pdb"


def heavy(traj):
    return traj.atom_slice([a.index for a in traj.topology.atoms if a.element.symbol != "H"])


def load_gz(path, tmp_path):
    plain = tmp_path / Path(path).name[:-3]
    plain.write_bytes(gzip.open(path).read())
    return mdtraj.load(str(plain))


def omegas(topology, pos):
    atoms = [{a.name: a.index for a in r.atoms()} for r in topology.residues()]
    out = []
    for a, b in topology.bonds():
        if {a.name, b.name} == {"C", "N"} and a.residue.index != b.residue.index:
            i, j = sorted((a.residue.index, b.residue.index))
            idx = [atoms[i]["CA"], atoms[i]["C"], atoms[j]["N"], atoms[j]["CA"]]
            out.append(dihedral(*pos[idx]))
    return np.degrees(out)


def test_restraint_energy_and_forces_match_finite_differences():
    """The TorchForce inside an OpenMM Context: energy = k/2 |W x - b|^2, forces = -dE/dx."""
    traj = mdtraj.load(str(UBQ))
    system_map = SystemMapping.from_atomistic(traj.topology, MappingSet.load("martini3"))
    x = traj.xyz[0].astype(np.float64)
    targets = system_map.map(x) + np.random.default_rng(0).normal(0, 0.02, (system_map.n_beads, 3))
    system = mm.System()
    for _ in range(traj.n_atoms):
        system.addParticle(12.0)
    system.addForce(bead_restraint_force(system_map.weights, np.arange(traj.n_atoms), targets, 1000.0))
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"))
    context.setPositions(x)
    state = context.getState(getEnergy=True, getForces=True)
    energy = state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    forces = state.getForces(asNumpy=True).value_in_unit(unit.kilojoule_per_mole / unit.nanometer)
    assert energy == pytest.approx(0.5 * 1000.0 * ((system_map.map(x) - targets) ** 2).sum(), rel=1e-9)
    h = 1e-5
    for i in (0, 57, 300, traj.n_atoms - 1):
        for d in range(3):
            e = []
            for sign in (1, -1):
                xp = x.copy()
                xp[i, d] += sign * h
                context.setPositions(xp)
                e.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
            assert -(e[0] - e[1]) / (2 * h) == pytest.approx(forces[i, d], rel=1e-5, abs=1e-6)
    context.setPositions(x)
    context.setParameter(PARAMETER, 0.0)  # the strength is a live context parameter
    assert context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole) == 0.0


def test_topology_splits_chain_breaks_and_bonds_disulfides(tmp_path):
    """Real chain with disulfides and gaps: every break gets termini, every S-S is bonded."""
    path = next(p for p in sorted((DATA / "proteins" / "test").glob("*1XU1*.pdb.gz")))
    traj = heavy(load_gz(path, tmp_path))
    prepared = prepare_topology(traj)
    assert prepared.n_disulfides == 3
    ss = [(a, b) for a, b in prepared.topology.bonds() if a.name == b.name == "SG"]
    assert len(ss) == 3
    # chain breaks measured independently: consecutive residues with C-N > 2 A
    c = [r for r in traj.topology.residues]
    gaps = 0
    for r1, r2 in zip(c[:-1], c[1:]):
        if r1.chain.index != r2.chain.index:
            continue
        a = next(a for a in r1.atoms if a.name == "C")
        b = next(a for a in r2.atoms if a.name == "N")
        gaps += np.linalg.norm(traj.xyz[0, a.index] - traj.xyz[0, b.index]) > 0.2
    assert prepared.n_breaks == gaps
    assert prepared.topology.getNumChains() == traj.topology.n_chains + gaps


def test_backbone_optimisation_repairs_noisy_backbone():
    traj = heavy(mdtraj.load(str(UBQ)))
    prepared = prepare_topology(traj)
    pos = np.asarray(prepared.positions.value_in_unit(unit.nanometer))
    names = np.array([a.name for a in prepared.topology.atoms()])
    moving = np.isin(names, ["N", "C", "O"])
    noisy = pos.copy()
    noisy[moving] += np.random.default_rng(1).normal(0, 0.02, (moving.sum(), 3))  # 0.2 A per coordinate
    md_top = mdtraj.Topology.from_openmm(prepared.topology)
    phi = mdtraj.compute_phi(mdtraj.Trajectory(pos[None], md_top))[1][0]
    psi = mdtraj.compute_psi(mdtraj.Trajectory(pos[None], md_top))[1][0]
    phi_psi = np.full((prepared.topology.getNumResidues(), 2), np.nan)
    phi_psi[1:, 0], phi_psi[:-1, 1] = phi, psi

    def rmsd(p):
        return np.sqrt(((p[moving] - pos[moving]) ** 2).sum(-1).mean()) * 10

    geometry_only = optimise_backbone(prepared.topology, noisy, None)
    steered = optimise_backbone(prepared.topology, noisy, phi_psi)
    assert rmsd(noisy) > 0.3
    assert rmsd(geometry_only.positions) < 0.2
    assert rmsd(steered.positions) < rmsd(geometry_only.positions) + 0.005
    assert np.array_equal(steered.positions[~moving], pos[~moving])  # CA and side chains never move
    assert (np.abs(omegas(prepared.topology, steered.positions)) > 160).all()
    # N-CA and CA-C within the flat bottom (+ a little)
    for a, b, r0 in (("N", "CA", 0.1458), ("CA", "C", 0.1525)):
        ia, ib = np.nonzero(names == a)[0], np.nonzero(names == b)[0]
        d = np.linalg.norm(steered.positions[ia] - steered.positions[ib], axis=1)
        assert np.abs(d - r0).max() < 0.004


def test_backbone_optimisation_turns_cis_to_trans_but_keeps_cis_proline():
    traj = heavy(mdtraj.load(str(UBQ)))
    prepared = prepare_topology(traj)
    pos = np.asarray(prepared.positions.value_in_unit(unit.nanometer))
    residues = list(prepared.topology.residues())
    # make a peptide cis with the CA trace untouched: mirror N(i+1) through the CA(i)-CA(i+1) line,
    # so that C(i) and N(i+1) sit on the same side of it (a cis peptide on a trans CA trace)
    atoms = {(a.residue.index, a.name): a.index for a in prepared.topology.atoms()}
    i = next(k for k in range(5, 60) if residues[k + 1].name != "PRO")
    ca1, ca2 = pos[atoms[(i, "CA")]], pos[atoms[(i + 1, "CA")]]
    axis = (ca2 - ca1) / np.linalg.norm(ca2 - ca1)
    bad = pos.copy()
    for key in ((i + 1, "N"),):
        v = bad[atoms[key]] - ca1
        along = np.dot(v, axis) * axis
        bad[atoms[key]] = ca1 + along - (v - along)
    assert np.abs(omegas(prepared.topology, bad)).min() < 30
    fixed = optimise_backbone(prepared.topology, bad, None)
    assert fixed.n_omega_fixed == 1
    assert np.abs(omegas(prepared.topology, fixed.positions)).min() > 160


def test_platform_choice():
    assert choose_platform().getName() in ("CUDA", "HIP", "OpenCL", "CPU", "Reference")
    assert choose_platform("Reference").getName() == "Reference"
    from openmm_herobm.errors import HeroBMError

    with pytest.raises(HeroBMError, match="not available"):
        choose_platform("NoSuchPlatform")


def test_chirality_repair_on_mirrored_centres():
    """Invert CA, ILE-CB and THR-CB centres of a real structure; the repair restores all of them."""
    from openmm_herobm.evaluation import evaluate
    from openmm_herobm.pipeline.chirality import repair_chirality

    traj = heavy(mdtraj.load(str(UBQ)))
    prepared = prepare_topology(traj)
    pos = np.asarray(prepared.positions.value_in_unit(unit.nanometer))
    md_top = mdtraj.Topology.from_openmm(prepared.topology)
    atoms = {(a.residue.index, a.name): a.index for a in prepared.topology.atoms()}
    bad = pos.copy()
    broken = []
    for residue in prepared.topology.residues():
        r = residue.index
        if residue.name in ("ILE", "THR"):  # swap the branches: inverts CB
            a, b = ("CG1", "CG2") if residue.name == "ILE" else ("OG1", "CG2")
            bad[[atoms[(r, a)], atoms[(r, b)]]] = bad[[atoms[(r, b)], atoms[(r, a)]]]
            broken.append(residue.name)
        elif residue.name in ("LEU", "LYS") and len(broken) < 12:  # mirror the side chain: inverts CA
            n, ca, c = (pos[atoms[(r, k)]] for k in ("N", "CA", "C"))
            normal = np.cross(n - ca, c - ca)
            normal /= np.linalg.norm(normal)
            for atom in residue.atoms():
                if atom.name not in ("N", "CA", "C", "O"):
                    bad[atom.index] -= 2 * np.dot(bad[atom.index] - ca, normal) * normal
            broken.append("CA")
    before = evaluate(mdtraj.Trajectory(bad[None], md_top))
    assert before["chirality_errors_ca"] == broken.count("CA") > 0
    assert before["chirality_errors_ile_cb"] == broken.count("ILE") > 0
    assert before["chirality_errors_thr_cb"] == broken.count("THR") > 0
    repaired, counts = repair_chirality(prepared.topology, bad)
    assert counts == {"ca": broken.count("CA"), "ile_cb": broken.count("ILE"), "thr_cb": broken.count("THR")}
    after = evaluate(mdtraj.Trajectory(repaired[None], md_top))
    assert after["chirality_errors_ca"] == after["chirality_errors_ile_cb"] == after["chirality_errors_thr_cb"] == 0
    # a mirrored side chain goes back exactly where it was; swapped branches too
    mirrored = [a.index for r in prepared.topology.residues() if r.name in ("LEU", "LYS") for a in r.atoms()]
    assert np.abs(repaired[mirrored] - pos[mirrored]).max() < 1e-9
    thr = [a.index for r in prepared.topology.residues() if r.name == "THR" for a in r.atoms()]
    assert np.abs(repaired[thr] - pos[thr]).max() < 1e-9


def _context_energy(force, n_atoms):
    system = mm.System()
    for _ in range(n_atoms):
        system.addParticle(12.0)
    system.addForce(force)
    context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("Reference"))

    def energy(xyz):
        context.setPositions(xyz)
        return context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    return energy


def test_peptide_guard_is_zero_on_real_structure_and_holds_trans():
    """The omega guard costs nothing on a real protein and pushes back a peptide turned towards cis."""
    from openmm_herobm.pipeline.chirality import peptide_restraint_force

    traj = heavy(mdtraj.load(str(UBQ)))
    prepared = prepare_topology(traj)
    pos = np.asarray(prepared.positions.value_in_unit(unit.nanometer))
    force = peptide_restraint_force(prepared.topology, pos)
    assert force.getNumTorsions() == 75  # 76 residues, one chain
    assert all(force.getTorsionParameters(i)[4][0] == pytest.approx(np.pi) for i in range(75))  # no cis Pro in 1UBQ
    energy = _context_energy(force, prepared.topology.getNumAtoms())
    assert energy(pos) == 0.0
    # rotate the C-terminal part about the N-C bond of residue 30 -> omega(30) 60 deg from trans
    residues = list(prepared.topology.residues())
    atoms = {(a.residue.index, a.name): a.index for a in prepared.topology.atoms()}
    c, n = pos[atoms[(30, "C")]], pos[atoms[(31, "N")]]
    axis = (n - c) / np.linalg.norm(n - c)
    moving = np.array([a.index for r in residues[31:] for a in r.atoms()])
    angle = np.radians(60)
    v = pos[moving] - n
    rot = (v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
           + np.outer(v @ axis, axis) * (1 - np.cos(angle)))
    bent = pos.copy()
    bent[moving] = n + rot
    assert energy(bent) > 100 * (np.radians(30)) ** 2  # 30 deg beyond the tolerance, k = 1000


def test_native_obc2_matches_custom_gb_energy():
    """The native GBSAOBCForce the pipeline swaps in gives the obc2.xml energy of a real protein."""
    import openmm.app as app

    from openmm_herobm.pipeline.system import native_obc2

    pdb = app.PDBFile(str(UBQ))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.deleteWater()
    modeller.addHydrogens(app.ForceField("amber14-all.xml"))
    forcefield = app.ForceField("amber14-all.xml", "implicit/obc2.xml")
    energies = []
    for swap in (False, True):
        system = forcefield.createSystem(modeller.topology, nonbondedMethod=app.CutoffNonPeriodic,
                                         nonbondedCutoff=1.0 * unit.nanometer)
        if swap:
            native_obc2(system, modeller.topology)
            assert not any(isinstance(f, mm.CustomGBForce) for f in system.getForces())
            assert sum(isinstance(f, mm.GBSAOBCForce) for f in system.getForces()) == 1
        context = mm.Context(system, mm.VerletIntegrator(0.001), mm.Platform.getPlatformByName("CPU"))
        context.setPositions(modeller.positions)
        energies.append(context.getState(getEnergy=True).getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole))
    assert energies[1] == pytest.approx(energies[0], abs=0.05)


def test_flat_bottom_restraint_is_zero_within_each_beads_tolerance():
    """A bead within its tolerance costs nothing; beyond it, k/2 (d - t)^2."""
    traj = mdtraj.load(str(UBQ))
    system_map = SystemMapping.from_atomistic(traj.topology, MappingSet.load("martini3"))
    x = traj.xyz[0].astype(np.float64)
    beads = system_map.map(x)
    shift = np.zeros_like(beads)
    shift[:, 0] = 0.02  # every bead 0.2 A off its target
    tolerance = np.full(system_map.n_beads, 0.03)
    tolerance[5] = 0.005  # ... except one whose tolerance is smaller
    energy = _context_energy(bead_restraint_force(system_map.weights, np.arange(traj.n_atoms), beads + shift,
                                                  1000.0, tolerance), traj.n_atoms)
    assert energy(x) == pytest.approx(0.5 * 1000.0 * (0.02 - 0.005) ** 2, rel=1e-6)


def test_ramachandran_restraint_is_free_on_a_real_protein_and_costs_outside():
    from openmm_herobm.pipeline.chirality import ramachandran_force

    traj = heavy(mdtraj.load(str(UBQ)))
    prepared = prepare_topology(traj)
    pos = np.asarray(prepared.positions.value_in_unit(unit.nanometer))
    force = ramachandran_force(prepared.topology)
    assert force.getNumTorsions() == 74  # every residue with both phi and psi
    energy = _context_energy(force, prepared.topology.getNumAtoms())
    assert energy(pos) < 50.0  # 1UBQ: at most one residue a little outside the 98% regions
    # turn the C-terminal half about N-CA of residue 30: phi(30) moves 150 deg into forbidden space
    residues = list(prepared.topology.residues())
    atoms = {(a.residue.index, a.name): a.index for a in prepared.topology.atoms()}
    n, ca = pos[atoms[(30, "N")]], pos[atoms[(30, "CA")]]
    axis = (ca - n) / np.linalg.norm(ca - n)
    moving = np.array([a.index for r in residues[30:] for a in r.atoms()
                       if not (r.index == 30 and a.name in ("N", "CA"))])
    v = pos[moving] - ca
    angle = np.radians(150)
    turned = pos.copy()
    turned[moving] = (ca + v * np.cos(angle) + np.cross(axis, v) * np.sin(angle)
                      + np.outer(v @ axis, axis) * (1 - np.cos(angle)))
    assert energy(turned) > energy(pos) + 50.0


def test_chain_breaks_follow_the_cg_links_not_a_stretched_backbone():
    """A peptide stretched to CA-CA 4.5 A stays bonded when the beads say so; a real gap stays open."""
    traj = heavy(mdtraj.load(str(UBQ)))
    n_res = traj.n_residues
    linked = np.ones(n_res, bool)
    linked[0] = False
    # stretch residues 40.. away by 0.8 A: CA(39)-CA(40) ~ 4.6 A, which the geometric rule calls a break
    moving = [a.index for r in list(traj.topology.residues)[40:] for a in r.atoms]
    stretched = traj[:]
    ca = [a.index for a in traj.topology.atoms if a.name == "CA"]
    direction = stretched.xyz[0, ca[40]] - stretched.xyz[0, ca[39]]
    stretched.xyz[0, moving] += 0.08 * direction / np.linalg.norm(direction)
    assert prepare_topology(stretched).n_breaks == 1
    assert prepare_topology(stretched, linked=linked).n_breaks == 0
    gap = linked.copy()
    gap[60] = False
    assert prepare_topology(stretched, linked=gap).n_breaks == 1


def test_free_amino_acids_kept_or_left_out_and_which_force_field_has_templates_for_them():
    """Three ubiquitin residues far apart in one chain: free=False leaves them out (named), free=True
    keeps each as a chain of its own; CHARMM36 has templates for them (terminal patches), amber14 not."""
    traj = heavy(mdtraj.load(str(UBQ)))
    part = traj.atom_slice([a.index for a in traj.topology.atoms
                            if a.residue.is_protein and a.residue.resSeq in (2, 20, 40)])
    left_out = prepare_topology(part)
    assert left_out.topology.getNumAtoms() == 0 and not left_out.free
    assert left_out.dropped == ["GLN 2 (chain A)", "SER 20 (chain A)", "GLN 40 (chain A)"]
    kept = prepare_topology(part, free=True)
    assert kept.free == [0, 1, 2] and not kept.dropped
    assert [len(list(c.residues())) for c in kept.topology.chains()] == [1, 1, 1]
    assert kept.topology.getNumAtoms() == part.n_atoms
    probe = (kept.topology, kept.positions.value_in_unit(unit.nanometer), kept.variants, kept.free, 7.0)
    assert templates_free_residues(load_forcefield("charmm36.xml", None), *probe)
    assert not templates_free_residues(load_forcefield("amber14-all.xml", None), *probe)
    # residues bonded to a neighbour are not free: a whole chain has none
    whole = prepare_topology(traj.atom_slice([a.index for a in traj.topology.atoms if a.residue.is_protein]),
                             free=True)
    assert whole.free == [] and whole.dropped == []
