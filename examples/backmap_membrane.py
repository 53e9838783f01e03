#!/usr/bin/env python
"""A whole Martini 3 membrane frame -> minimised (optionally solvated and equilibrated) CHARMM36 system.

Default input: the real 8-lipid Martini 3 membrane of ``../shared/data/cg_real`` (mstool;
80 POPC and 126 cholesterol among six lipid types we have no model for, W water, ions).
Each molecule type goes to the shipped model that knows it (a protein in the frame would
go to ``martini3_protein``, POPC/CHOL to ``martini3_lipids``); lipids without a model are
left out and listed (``--unmapped drop``), never silently.  Then the OpenMM pipeline:
stereo repair, CHARMM36 (protein + lipids), hydrogens, the bead restraint, staged
minimisation; with ``--solvent explicit`` the W and ION beads are rebuilt as CHARMM TIP3P
water and Na+/Cl- in the CG box, and ``--equilibrate PS`` heats and releases the restraint.
Prints the time and peak memory of each stage and writes PDB + System/State XML + report.

    python examples/backmap_membrane.py -o membrane_aa.pdb
    python examples/backmap_membrane.py -o membrane_aa.pdb --solvent explicit --equilibrate 10
"""

from __future__ import annotations

import argparse
import gzip
import resource
import shutil
import tempfile
import time
from pathlib import Path

import openmm_herobm as hb

MEMBRANE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cg_real" / "mstool_mix8_419lipids.gro.gz"


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cg", nargs="?", default=str(MEMBRANE), help="CG frame (.gro/.pdb, optionally .gz)")
    ap.add_argument("-o", "--output", required=True)
    ap.add_argument("--solvent", choices=["vacuum", "implicit", "explicit"], default="vacuum")
    ap.add_argument("--equilibrate", type=float, default=None, help="ps of NVT heating + restraint release")
    args = ap.parse_args(argv)

    cg = Path(args.cg)
    with tempfile.TemporaryDirectory() as tmp:
        if cg.suffix == ".gz":  # keep the inner extension for the format
            plain = Path(tmp) / cg.name[:-3]
            with gzip.open(cg) as src, open(plain, "wb") as dst:
                shutil.copyfileobj(src, dst)
            cg = plain
        t0 = time.perf_counter()
        result = hb.backmap_and_simulate(str(cg), unmapped="drop", solvent=None if args.solvent == "vacuum" else args.solvent,
                                         equilibrate=args.equilibrate, output=args.output)
    wall = time.perf_counter() - t0
    report = result.report
    print(f"{report['n_atoms']} atoms, force field {report['forcefield']}, platform {report['platform']}")
    print("stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings.items()) + f"; wall {wall:.1f}")
    print(f"peak memory {peak_mb():.0f} MB")
    checks = {k: v for k, v in report.items() if k.startswith(("chirality_errors", "cis_peptides_nonpro", "n_close",
                                                                 "n_pierced"))}
    print("checks:", checks)
    for path in result.written:
        print("wrote", path)


if __name__ == "__main__":
    main()
