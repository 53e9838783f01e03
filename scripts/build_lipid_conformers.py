#!/usr/bin/env python
"""CHARMM36 conformations of the lipids besides POPC inside real bilayers, for the Martini 3 lipid model.

The real Martini 3 membrane ``cg_real/mstool_mix8_419lipids`` holds, besides POPC and
cholesterol, SSM, DLPE, PAPC, PAPS, POPE and SAP6; the model also knows the further PC, PE, PS,
PG and PA lipids of ``chemistry.LIPID_COMPOSITION`` and DPSM (CHARMM36 PSM).  No all-atom
structure of them is in the data, so they are made here (``--types``; SMILES from head + chains,
``glycerophospholipid`` / ``sphingomyelin``), each one *in the place of a real POPC* of the CHARMM36 bilayers
(``scripts/build_lipid_training_set.py`` output: POPC + cholesterol, molecules whole):

1. one molecule per lipid from SMILES with explicit stereochemistry (RDKit ETKDG): glycerol
   sn-2 R, L-serine, the PG head's 1'-sn-glycerol C2' S, sphingosine 2S,3R with the trans 4-5 double bond, all tail double bonds
   cis; the inositol centres of SAP6 follow mstool's chirality table, calibrated on the glycerol
   C2 of the real CHARMM36 POPC (see ``inositol_stereo``); CIP labels are printed for checking;
2. atom names from the CHARMM36 template (``charmm36.xml`` + the package's
   ``charmm36_lipids_extra.xml``) by graph isomorphism (elements and bonds);
3. for every POPC chosen for replacement: the molecule is superposed on that POPC's atoms it
   shares (glycerol, phosphate, head anchor, the acyl carbons with the same names; for SSM the
   sphingosine backbone and both chains by position along the chain, ``SSM_ANCHORS``), relaxed
   with CHARMM36 (vacuum, no cutoff) under flat-bottom restraints pulling those atoms onto the
   POPC's (0.05 nm free, 1000 kJ/mol/nm^2), then ``--md-ps`` of Langevin MD at 310 K (2 fs, HBonds)
   under the same restraints; the last frame is kept.  The bilayer around it is not simulated:
   the real POPC conformation is the environment (its tail order, tilt and head position);
   extra atoms (longer tails, bigger heads) are free;
4. every kept molecule passes the project's stereo checks (``openmm_herobm.evaluation``:
   chirality and cis/trans of ``chemistry.CHIRALITY_CHECKS`` / ``DOUBLE_BOND_CHECKS``) and has
   no bond outside 1.2-1.9 A between heavy atoms; otherwise the POPC stays.

Each ``--fraction`` of the POPC (seeded) becomes each new lipid.  Input: a folder tree of
``.gro`` bilayers (``train/``, ``val/``, ``test/``); output: the same tree with the new lipids.

    python scripts/build_lipid_conformers.py --input /work/data/lipids_v2/struct --out /work/data/lipids_v2/mixed
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import mdtraj
import networkx as nx
import numpy as np
import openmm as mm
import openmm.app as app
import openmm.unit as unit

from openmm_herobm.chemistry import ACYL_CHAINS, LIPID_COMPOSITION, SPHINGOMYELINS
from openmm_herobm.evaluation import evaluate
from openmm_herobm.pipeline.system import EXTRA_LIPIDS

# --------------------------------------------------------------------------- chemistry
def chain_smiles(chain: str, sn: int) -> str:
    """SMILES of an acyl chain of :data:`~openmm_herobm.chemistry.ACYL_CHAINS` with its cis double
    bonds (``/C=C\\``): ``sn=1`` from the methyl end up to the ester carbonyl ``C(=O)``, ``sn=2``
    from the carbon after the carbonyl to the methyl end."""
    n, double = ACYL_CHAINS[chain]
    pairs = {frozenset((k, k + 1)) for k in double}
    seq = list(range(n, 1, -1)) if sn == 1 else list(range(2, n + 1))
    out = []
    for j, atom in enumerate(seq):
        bond = ""
        if j > 0:
            if frozenset((seq[j - 1], atom)) in pairs:
                bond = "="
            elif j + 1 < len(seq) and frozenset((atom, seq[j + 1])) in pairs:
                bond = "/"
            elif j > 1 and frozenset((seq[j - 2], seq[j - 1])) in pairs:
                bond = "\\"
        out.append(bond + "C")
    return "".join(out) + ("C(=O)" if sn == 1 else "")


HEAD = {"PC": "CC[N+](C)(C)C",
        "PE": "CC[NH3+]",
        "PS": "C[C@H]([NH3+])C(=O)[O-]",                # L-serine (S), checked by CIP below
        "PG": "C[C@@H](O)CO",                           # 1'-sn-glycerol (C2' S), checked by CIP below
        "PA": "",                                       # P-OH: CHARMM36's PA is the -1 monoanion
        # myo-inositol 1-phosphodiester, 4-phosphate HPO3-, 5-phosphate PO3 2-; ring
        # stereo set afterwards (inositol_stereo)
        "PIP2": "C1C(O)C(O)C(OP(=O)(O)[O-])C(OP(=O)([O-])[O-])C1O"}


def glycerophospholipid(resname: str) -> str:
    head, sn1, sn2 = LIPID_COMPOSITION[resname]
    # the glycerol written as in PubChem's POPC (sn-glycero-3-phospho: C2 is R)
    return f"{chain_smiles(sn1, 1)}OC[C@H](COP(=O)([O-])O{HEAD[head]})OC(=O){chain_smiles(sn2, 2)}"


def sphingomyelin(resname: str) -> str:
    """N-acyl-D-erythro-sphingosylphosphorylcholine (2S,3R,4E), d18:1 with the chain of SPHINGOMYELINS."""
    return (f"{chain_smiles(SPHINGOMYELINS[resname], 1)}N[C@@H](COP(=O)([O-])OCC[N+](C)(C)C)"
            "[C@@H](/C=C/CCCCCCCCCCCCC)O")


#: all-atom residue name (CHARMM36 template) -> SMILES: every lipid of the model but POPC
SMILES = {**{n: glycerophospholipid(n) for n in LIPID_COMPOSITION if n != "POPC"},
          **{n: sphingomyelin(n) for n in SPHINGOMYELINS}}
#: expected CIP labels (CHARMM36 names), checked on the built molecule
EXPECTED_CIP = {"C2": "R", "C2S": "S", "C3S": "R"}
HEAD_CIP = {"PS": {"C12": "S"}, "PG": {"C12": "S"}}  # L-serine; the PG head's 1'-sn-glycerol C2'

#: PI(4,5)P2 inositol: (1R,2R,3S,4R,5R,6S) as the IUPAC name of 1D-myo-inositol 4,5-bisphosphate
#: 1-phosphodiesters gives it; printed next to the configuration mstool's table produces
LITERATURE_CIP_INOSITOL = {"C11": "R", "C12": "R", "C13": "S", "C14": "R", "C15": "R", "C16": "S"}
#: mstool's [ chiral ] lines for SAPI24 (examples/BackmappingMartini3/mapping.dat: H, centre, a, b, c;
#: improper dihedral centre-a-b-c = -35.26 deg) and its glycerol line, the calibration
MSTOOL_CHIRAL = {"C11": ("C12", "O12", "C16"), "C12": ("C13", "O2", "C11"), "C13": ("C12", "C14", "O3"),
                 "C14": ("C13", "O4", "C15"), "C15": ("C14", "C16", "O5"), "C16": ("C11", "C15", "O6")}
MSTOOL_GLYCEROL = ("C2", "O21", "C1", "C3")

GLYCEROL_CORE = "P O11 O12 O13 O14 C1 C2 C3 O21 O22 C21 O31 O32 C31".split()
#: head atoms placed on the POPC atom of the same name
HEAD_ANCHORS = {"PC": ["N", "C12", "C11"], "PE": ["N", "C12", "C11"], "PS": ["N", "C12", "C11"],
                "PG": ["C11", "C12"], "PA": [], "PIP2": ["C11"]}
#: SSM atom -> POPC atom: phosphocholine by name; the sphingosine C1S-C2S-C3S on glycerol
#: C1-C2-C3, the amide N-C(=O) on the sn-2 ester O21-C21(=O22) and the N-acyl chain on the
#: sn-2 chain; the sphingosine chain from C4S on the sn-1 O31-C31-C32-... by position
SSM_ANCHORS = {**{n: n for n in "N C11 C12 P O11 O12 O13 O14".split()},
               "C1S": "C1", "C2S": "C2", "C3S": "C3", "NF": "O21", "C1F": "C21", "OF": "O22",
               **{f"C{k}F": f"C2{k}" for k in range(2, 19)},
               "C4S": "O31", "C5S": "C31", **{f"C{k}S": f"C3{k - 4}" for k in range(6, 19) if k - 4 <= 16}}


def forcefield() -> app.ForceField:
    return app.ForceField("charmm36.xml", str(EXTRA_LIPIDS))


# --------------------------------------------------------------------------- building
def template_graph(ff: app.ForceField, name: str) -> nx.Graph:
    t = ff._templates[name]
    g = nx.Graph()
    for i, a in enumerate(t.atoms):
        g.add_node(i, name=a.name, element=a.element.symbol)
    g.add_edges_from(t.bonds)
    return g


def rdkit_molecule(resname: str, seed: int):
    """RDKit molecule with hydrogens and one ETKDG conformer, stereo as written."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(SMILES[resname]))
    params = AllChem.ETKDGv3()
    params.randomSeed = seed
    params.useRandomCoords = True  # long polyunsaturated chains fail from the eigenvector start
    if AllChem.EmbedMolecule(mol, params) != 0:
        raise RuntimeError(f"{resname}: RDKit could not embed the molecule")
    return mol


def name_atoms(mol, template: nx.Graph) -> list[str]:
    """CHARMM36 name of every RDKit atom (graph isomorphism on elements and bonds)."""
    g = nx.Graph()
    for a in mol.GetAtoms():
        g.add_node(a.GetIdx(), element=a.GetSymbol())
    g.add_edges_from((b.GetBeginAtomIdx(), b.GetEndAtomIdx()) for b in mol.GetBonds())
    matcher = nx.algorithms.isomorphism.GraphMatcher(g, template, node_match=lambda x, y: x["element"] == y["element"])
    match = next(matcher.isomorphisms_iter(), None)
    if match is None:
        raise RuntimeError("SMILES and CHARMM36 template differ")
    return [template.nodes[match[i]]["name"] for i in range(mol.GetNumAtoms())]


def _dihedral(p0, p1, p2, p3) -> float:
    b0, b1, b2 = p0 - p1, p2 - p1, p3 - p2
    b1 = b1 / np.linalg.norm(b1)
    v, w = b0 - np.dot(b0, b1) * b1, b2 - np.dot(b2, b1) * b1
    return float(np.degrees(np.arctan2(np.dot(np.cross(b1, v), w), np.dot(v, w))))


def mstool_sign(reference_popc: np.ndarray, popc_names: list[str]) -> float:
    """Sign of mstool's improper dihedral (centre, a, b, c) at a correct centre: the glycerol C2
    of a real CHARMM36 POPC (sn-2 R) gives it."""
    idx = {n: i for i, n in enumerate(popc_names)}
    return np.sign(_dihedral(*(reference_popc[idx[n]] for n in MSTOOL_GLYCEROL)))


def inositol_stereo(mol, names: list[str], sign: float, seed: int):
    """Set the six inositol centres as mstool's table says (``sign`` from the calibration), re-embed."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    Chem.AssignStereochemistryFrom3D(mol)
    idx = {n: i for i, n in enumerate(names)}
    xyz = mol.GetConformer().GetPositions()
    flipped = 0
    for centre, (a, b, c) in MSTOOL_CHIRAL.items():
        if np.sign(_dihedral(*(xyz[idx[n]] for n in (centre, a, b, c)))) != sign:
            mol.GetAtomWithIdx(idx[centre]).InvertChirality()
            flipped += 1
    if flipped:
        params = AllChem.ETKDGv3()
        params.randomSeed = seed
        params.useRandomCoords = True
        if AllChem.EmbedMolecule(mol, params) != 0:
            raise RuntimeError("SAP6: RDKit could not re-embed the inositol stereoisomer")
    xyz = mol.GetConformer().GetPositions()
    bad = [c for c, (a, b, d) in MSTOOL_CHIRAL.items() if np.sign(_dihedral(*(xyz[idx[n]] for n in (c, a, b, d)))) != sign]
    if bad:
        raise RuntimeError(f"SAP6: inositol centres {bad} still differ from mstool's table")
    return mol


def cip_labels(mol, names: list[str]) -> dict[str, str]:
    from rdkit import Chem

    Chem.AssignStereochemistryFrom3D(mol)
    from rdkit.Chem import rdCIPLabeler
    rdCIPLabeler.AssignCIPLabels(mol)
    return {names[a.GetIdx()]: a.GetProp("_CIPCode") for a in mol.GetAtoms() if a.HasProp("_CIPCode")}


class Relaxer:
    """CHARMM36 of one lipid in vacuum with flat-bottom position restraints on its anchors."""

    def __init__(self, ff: app.ForceField, resname: str, names: list[str], anchors: dict[str, str], md_ps: float,
                 seed: int):
        t = ff._templates[resname]
        self.names = [a.name for a in t.atoms]
        top = app.Topology()
        res = top.addResidue(resname, top.addChain())
        atoms = [top.addAtom(a.name, a.element, res) for a in t.atoms]
        for i, j in t.bonds:
            top.addBond(atoms[i], atoms[j])
        self.topology = top
        system = ff.createSystem(top, nonbondedMethod=app.NoCutoff, constraints=app.HBonds,
                                 residueTemplates={res: resname})
        force = mm.CustomExternalForce("0.5*k_anchor*max(0, d-0.05)^2; d=sqrt((x-x0)^2+(y-y0)^2+(z-z0)^2)")
        force.addGlobalParameter("k_anchor", 1000.0)
        for p in ("x0", "y0", "z0"):
            force.addPerParticleParameter(p)
        index = {n: i for i, n in enumerate(self.names)}
        self.anchor_atoms = np.array([index[n] for n in anchors])
        self.anchor_targets = list(anchors.values())
        for i in self.anchor_atoms:
            force.addParticle(int(i), [0.0, 0.0, 0.0])
        self.force = force
        system.addForce(force)
        self.integrator = mm.LangevinMiddleIntegrator(310 * unit.kelvin, 1 / unit.picosecond, 0.002 * unit.picosecond)
        self.integrator.setRandomNumberSeed(seed)
        self.context = mm.Context(system, self.integrator, mm.Platform.getPlatformByName("CPU"))
        self.steps = int(round(md_ps / 0.002))
        self.heavy = np.array([a.element.symbol != "H" for a in t.atoms])
        self.elements = {a.name: a.element.symbol for a in t.atoms}
        self.bonds = np.array(t.bonds)

    def relax(self, start: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """``start`` (atoms, 3) nm, in template order; ``targets`` (anchors, 3) nm -> relaxed positions (nm)."""
        own = start[self.anchor_atoms]
        rot, shift = kabsch(own, targets)
        pos = start @ rot.T + shift
        for k, i in enumerate(self.anchor_atoms):
            self.force.setParticleParameters(k, int(i), targets[k].tolist())
        self.force.updateParametersInContext(self.context)
        self.context.setPositions(pos)
        mm.LocalEnergyMinimizer.minimize(self.context, 10.0, 500)
        self.context.setVelocitiesToTemperature(310 * unit.kelvin)
        self.integrator.step(self.steps)
        return self.context.getState(getPositions=True).getPositions(asNumpy=True).value_in_unit(unit.nanometer)

    def bonds_ok(self, pos: np.ndarray) -> bool:
        heavy = self.heavy[self.bonds].all(1)
        d = np.linalg.norm(pos[self.bonds[heavy, 0]] - pos[self.bonds[heavy, 1]], axis=1) * 10
        return bool(((d > 1.1) & (d < 2.0)).all())  # C=O vibrates below 1.2 A at 310 K


def kabsch(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotation R and shift t with a @ R.T + t ~ b (least squares)."""
    ca, cb = a.mean(0), b.mean(0)
    u, _, vt = np.linalg.svd((a - ca).T @ (b - cb))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1, 1, d]) @ u.T
    return rot, cb - ca @ rot.T


def anchors_for(resname: str, names: list[str], popc_names: list[str]) -> dict[str, str]:
    if resname in SPHINGOMYELINS:
        return {a: b for a, b in SSM_ANCHORS.items() if a in names and b in popc_names}
    tails = [n for n in names if n[:2] in ("C2", "C3") and len(n) > 2 and n in popc_names and n not in GLYCEROL_CORE]
    return {n: n for n in GLYCEROL_CORE + HEAD_ANCHORS[LIPID_COMPOSITION[resname][0]] + tails}


def stereo_ok(topology: app.Topology, pos_nm: np.ndarray) -> tuple[bool, dict]:
    traj = mdtraj.Trajectory(pos_nm[None].astype(np.float32), mdtraj.Topology.from_openmm(topology))
    report = evaluate(traj, periodic=False)
    errors = {k: v for k, v in report.items() if k.startswith(("chirality_errors_", "double_bond_errors_")) and v}
    return not errors, report


# --------------------------------------------------------------------------- bilayers
def replace_popc(traj: mdtraj.Trajectory, relaxers: dict, starts: dict, fraction: float,
                 rng: np.random.Generator, log: dict) -> mdtraj.Trajectory:
    top, xyz = traj.topology, traj.xyz[0].astype(np.float64)
    popc = [r for r in top.residues if r.name == "POPC"]
    order = rng.permutation(len(popc))
    per = int(round(fraction * len(popc)))
    chosen = {}
    for k, resname in enumerate(relaxers):
        for i in order[k * per:(k + 1) * per]:
            chosen[int(i)] = resname
    new_top = mdtraj.Topology()
    chain = new_top.add_chain()
    new_xyz = []
    for res in top.residues:
        made = None
        if res.name == "POPC" and popc.index(res) in chosen:
            resname = chosen[popc.index(res)]
            rel = relaxers[resname]
            local = {a.name: xyz[a.index] for a in res.atoms}
            targets = np.array([local[n] for n in rel.anchor_targets])
            pos = rel.relax(starts[resname], targets)
            ok, _ = stereo_ok(rel.topology, pos)
            if ok and rel.bonds_ok(pos):
                made = (resname, rel.names, pos)
                starts[resname] = pos  # the next site starts from a lipid-shaped molecule
                log[resname] = log.get(resname, 0) + 1
            else:
                log[f"{resname} rejected"] = log.get(f"{resname} rejected", 0) + 1
        r = new_top.add_residue(made[0] if made else res.name, chain, resSeq=new_top.n_residues + 1)
        if made:
            for n in made[1]:
                new_top.add_atom(n, mdtraj.element.get_by_symbol(rel.elements[n]), r)
            new_xyz.extend(made[2])
        else:
            for a in res.atoms:
                new_top.add_atom(a.name, a.element, r)
                new_xyz.append(xyz[a.index])
    out = mdtraj.Trajectory(np.array(new_xyz, np.float32)[None], new_top)
    out.unitcell_vectors = traj.unitcell_vectors
    return out


def prepare(ff: app.ForceField, reference: mdtraj.Trajectory, md_ps: float, seed: int,
            types: list[str]) -> tuple[dict, dict]:
    """Relaxer and start structure (template order, nm) per lipid; prints the stereo checks."""
    popc = next(r for r in reference.topology.residues if r.name == "POPC")
    popc_names = [a.name for a in popc.atoms]
    popc_xyz = reference.xyz[0][[a.index for a in popc.atoms]].astype(np.float64)
    sign = mstool_sign(popc_xyz, popc_names)
    relaxers, starts = {}, {}
    for resname in types:
        mol = rdkit_molecule(resname, seed)
        tgraph = template_graph(ff, resname)
        names = name_atoms(mol, tgraph)
        if resname == "SAP6":
            mol = inositol_stereo(mol, names, sign, seed)
        cip = cip_labels(mol, names)
        head = LIPID_COMPOSITION[resname][0] if resname in LIPID_COMPOSITION else "SM"
        expected = {**EXPECTED_CIP, **HEAD_CIP.get(head, {})}
        wrong = {n: (cip.get(n), want) for n, want in expected.items() if n in names and cip.get(n) != want}
        if wrong:
            raise RuntimeError(f"{resname}: CIP labels (found, expected) {wrong}")
        if resname == "SAP6":
            got = {n: cip.get(n) for n in LITERATURE_CIP_INOSITOL}
            print(f"SAP6 inositol CIP {got} (literature {LITERATURE_CIP_INOSITOL}: "
                  f"{'same' if got == LITERATURE_CIP_INOSITOL else 'DIFFERENT'})")
        order = {n: i for i, n in enumerate(names)}
        t_names = [a.name for a in ff._templates[resname].atoms]
        start = mol.GetConformer().GetPositions()[[order[n] for n in t_names]] / 10.0
        anchors = anchors_for(resname, t_names, popc_names)
        relaxers[resname] = Relaxer(ff, resname, t_names, anchors, md_ps, seed + 1)
        starts[resname] = start
        print(f"{resname}: {len(t_names)} atoms, {len(anchors)} anchors on POPC atoms, CIP "
              f"{ {n: cip[n] for n in ('C2', 'C2S', 'C3S', 'C12') if n in cip and n in expected} }")
    return relaxers, starts


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--input", required=True, help="folder with train/ val/ test/ .gro bilayers (build_lipid_training_set.py)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--fraction", type=float, default=0.08, help="share of the POPC that becomes each new lipid")
    ap.add_argument("--md-ps", type=float, default=1.0, help="restrained MD per molecule (ps)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--limit", type=int, default=0, help="only this many bilayers per folder (testing)")
    ap.add_argument("--types", default=",".join(SMILES),
                    help="comma-separated all-atom names of the lipids to make (default: all but POPC: %(default)s)")
    ap.add_argument("--splits", default="train,val,test", help="folders of --input to use (default: %(default)s)")
    args = ap.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    ff = forcefield()
    types = [t for t in args.types.split(",") if t]
    unknown = set(types) - set(SMILES)
    if unknown:
        ap.error(f"--types: unknown lipids {sorted(unknown)} (known: {', '.join(SMILES)})")
    files = {split: sorted((Path(args.input) / split).glob("*.gro")) for split in args.splits.split(",")}
    reference = mdtraj.load(str(next(f for fs in files.values() for f in fs)))
    relaxers, starts = prepare(ff, reference, args.md_ps, args.seed, types)
    t0 = time.perf_counter()
    total: dict = {}
    for split, paths in files.items():
        (Path(args.out) / split).mkdir(parents=True, exist_ok=True)
        for path in paths[:args.limit or None]:
            log: dict = {}
            mixed = replace_popc(mdtraj.load(str(path)), relaxers, starts, args.fraction, rng, log)
            target = Path(args.out) / split / path.name.replace(".gro", "_mix.gro")
            mixed.save_gro(str(target))
            counts = {}
            for r in mixed.topology.residues:
                counts[r.name] = counts.get(r.name, 0) + 1
            for k, v in log.items():
                total[k] = total.get(k, 0) + v
            print(f"{target}: {counts}; rejected {({k: v for k, v in log.items() if 'rejected' in k})} "
                  f"({time.perf_counter() - t0:.0f} s)", flush=True)
    print(f"molecules made: {total}; {args.md_ps} ps restrained MD each at 310 K; {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
