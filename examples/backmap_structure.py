"""Backmap one Martini 3 structure into a minimised, simulation-ready all-atom protein.

    python examples/backmap_structure.py [CG.pdb] [OUT.pdb]

Defaults to the bundled ubiquitin beads (written by martinize2).  Writes OUT.pdb plus
OUT.system.xml / OUT.state.xml (continue with OpenMM) and OUT.report.json.
"""

import sys
from pathlib import Path

import openmm_herobm as hb

here = Path(__file__).resolve().parent
cg = sys.argv[1] if len(sys.argv) > 1 else here / "data" / "1ubq_martinize2_cg.pdb"
out = sys.argv[2] if len(sys.argv) > 2 else "1ubq_backmapped.pdb"

result = hb.backmap_and_simulate(cg, ph=7.0, solvent="implicit", tolerance=500.0, output=out)
print("energies (kJ/mol):", {k: round(v) for k, v in result.energies.items()})
print("stage timings (s):", {k: round(v, 2) for k, v in result.timings.items()})
print("checks:", {k: result.report[k] for k in ("chirality_errors_ca", "cis_peptides_nonpro", "n_close_contacts")})
print("wrote", ", ".join(result.written))
