"""``herobm dataset``: build a training dataset from a folder of all-atom chains.

Wire it into the main parser with ``add_dataset_parser(subparsers)``; the parser's
``func`` default runs the command and returns the exit status.
"""

from __future__ import annotations

import argparse


def add_dataset_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "dataset",
        help="map a folder of all-atom chains into one training dataset (.npz)",
        description=(
            "Map every all-atom structure (.pdb, .cif, optionally .gz) in INPUT_DIR with a mapping set and "
            "write one compressed .npz with bead positions and types (the model input), the per-slot vectors "
            "that rebuild the heavy atoms (the target), bonds, angles, backbone dihedrals and loss masks. "
            "Hydrogens and residues without a mapping (water, ions, ligands) are dropped; residues missing "
            "whole beads are left out; residues missing some heavy atoms stay in the input but out of the "
            "loss. Files that cannot be read are reported, not fatal. Positions are stored in angstrom."),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("input", metavar="INPUT_DIR", help="folder of all-atom structures (one chain per file)")
    p.add_argument("-m", "--mapping", default="martini3", help="shipped mapping set name or folder of YAML files")
    p.add_argument("-o", "--output", default="data.npz", metavar="OUT.npz", help="dataset file to write (atomically)")
    p.add_argument("--workers", type=int, default=2, metavar="N", help="worker processes")
    p.add_argument("--limit", type=int, default=None, metavar="N",
                   help="use only the first N files (sorted by name), e.g. for a quick test")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_dataset)
    return p


def run_dataset(args) -> int:
    from .dataset import build_dataset

    if args.workers < 1:
        from ..errors import HeroBMError

        raise HeroBMError(f"--workers must be at least 1, not {args.workers}")
    report = build_dataset(args.input, mapping=args.mapping, output=args.output, workers=args.workers,
                           limit=args.limit, progress=not args.no_progress)
    print(report.summary())
    return 0
