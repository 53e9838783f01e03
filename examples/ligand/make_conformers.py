#!/usr/bin/env python
"""All-atom conformations of a drug-like ligand for training a HEroBM ligand model (RDKit).

Default: (S)-ibuprofen, neutral acid.  RDKit ETKDG embeds ``--n`` conformers (seeded), each
relaxed with MMFF94; atoms are named the way antechamber names them (element + running
number: C1..C13, O1, O2, H1..H18), so the mapping YAML, the structures and the GAFF2
template of ``herobm ligand-params`` agree.  Writes a multi-model PDB (one model per
conformer) and an SDF of the first conformer (input of ``herobm ligand-params``).

    python examples/ligand/make_conformers.py -o ibp_conformers.pdb --sdf ibp.sdf --n 300
"""

from __future__ import annotations

import argparse
from collections import Counter

from rdkit import Chem
from rdkit.Chem import AllChem

IBUPROFEN = "CC(C)Cc1ccc(cc1)[C@@H](C)C(=O)O"


def named_molecule(smiles: str, residue: str) -> Chem.Mol:
    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    counts: Counter = Counter()
    for atom in mol.GetAtoms():
        counts[atom.GetSymbol()] += 1
        info = Chem.AtomPDBResidueInfo()
        info.SetName(f"{atom.GetSymbol()}{counts[atom.GetSymbol()]}".ljust(4)[:4])
        info.SetResidueName(residue)
        info.SetResidueNumber(1)
        info.SetIsHeteroAtom(False)
        atom.SetMonomerInfo(info)
    return mol


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smiles", default=IBUPROFEN)
    ap.add_argument("--name", default="IBP", help="residue name (3 letters for PDB)")
    ap.add_argument("--n", type=int, default=300, help="number of conformers")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("-o", "--output", required=True, help="multi-model PDB")
    ap.add_argument("--sdf", help="first conformer as SDF (for herobm ligand-params)")
    args = ap.parse_args(argv)

    mol = named_molecule(args.smiles, args.name)
    params = AllChem.ETKDGv3()
    params.randomSeed = args.seed
    ids = list(AllChem.EmbedMultipleConfs(mol, numConfs=args.n, params=params))
    AllChem.MMFFOptimizeMoleculeConfs(mol, maxIters=1000)
    with open(args.output, "w") as f:
        for k, cid in enumerate(ids):
            f.write(f"MODEL     {k + 1:4d}\n")
            block = Chem.MolToPDBBlock(mol, confId=cid, flavor=2 | 8)  # no CONECT, no END
            f.write("".join(line + "\n" for line in block.splitlines() if line.startswith(("ATOM", "HETATM"))))
            f.write("ENDMDL\n")
        f.write("END\n")
    if args.sdf:
        Chem.MolToMolFile(mol, args.sdf, confId=ids[0])
    print(f"{len(ids)} conformers of {args.smiles} -> {args.output}")


if __name__ == "__main__":
    main()
