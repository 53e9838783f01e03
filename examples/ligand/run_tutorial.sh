#!/usr/bin/env bash
# The ligand tutorial (docs/ligand-tutorial.md) end to end: (S)-ibuprofen, from nothing to a
# trained HEroBM ligand model and a refined all-atom structure. About 10 minutes on 2 CPU cores.
# Needs the ligands extra: pip install ".[ligands]"
set -euo pipefail
OUT=${1:-ibp_tutorial}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/IBP_set" && cd "$OUT"

# 1. conformers (RDKit ETKDG + MMFF94), atom names as antechamber gives them
python "$HERE/make_conformers.py" -o conformers.pdb --sdf ibp.sdf --n 300 --seed 7
python - <<'PY'
import mdtraj
t = mdtraj.load("conformers.pdb")
t[:250].save_pdb("train.pdb"); t[250:275].save_pdb("val.pdb"); t[275:].save_pdb("test.pdb")
PY
# 2. mapping: atoms per bead from you, hierarchy from herobm
herobm mapping complete "$HERE/IBP.input.yaml" -s train.pdb -o IBP_set/IBP.yaml
# 3. datasets (one entry per conformer of a multi-model file), training, deployment
herobm dataset train.pdb -m IBP_set -o train.npz
herobm dataset val.pdb -m IBP_set -o val.npz
herobm train "$HERE/train_ibp.yaml"
herobm deploy ibp_run/best.pt -o ibp.pt --description "(S)-ibuprofen, 250 RDKit conformers"
# 4. GAFF2 / AM1-BCC template for the refinement
herobm ligand-params ibp.sdf --name IBP -o IBP.xml
# 5. backmap a held-out conformer's beads and refine it (amber14 + the ligand's GAFF2 template)
herobm map test.pdb -m IBP_set -o test_cg.pdb
herobm backmap test_cg.pdb --model ibp.pt -o test_raw.pdb --no-minimize
herobm backmap test_cg.pdb --model ibp.pt --forcefield amber14-all.xml --forcefield IBP.xml --solvent vacuum -o test_refined.pdb
herobm evaluate test_raw.pdb test.pdb | head -8
