#!/usr/bin/env python
"""Fit the lipid frame regression (:mod:`openmm_herobm.reconstruction.lipid_frames`) on all-atom
training bilayers and put it into a lipid model file.

Every non-protein molecule type of the model's mapping set with at least ``--min-molecules``
complete molecules in the training files gets a regression; ``backmap`` then places those
types' heavy atoms with it instead of the network.  ``--val`` files (never trained on) are
scored per type: heavy RMSD per molecule of the regression alone, on their mapped beads.

    python scripts/build_lipid_frames.py /work/data/lipids_v5/train_all --model models/martini3_lipids.pt \\
        --val /work/data/lipids_v5/val_all --json frames_val.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from openmm_herobm.model import attach_lipid_frames, load_model
from openmm_herobm.training import build_lipid_frames, evaluate_lipid_frames
from openmm_herobm.training.lipid_frames import MIN_MOLECULES, RADIUS, RIDGE


def structure_files(paths: list[str]) -> list[Path]:
    """Files as given, folders as their ``.gro``/``.pdb`` files (sorted; links followed)."""
    out = []
    for p in map(Path, paths):
        out += sorted(f for f in p.iterdir() if f.suffix in (".gro", ".pdb")) if p.is_dir() else [p]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("train", nargs="+", help="all-atom training structures or folders of them")
    ap.add_argument("--model", required=True, help="the lipid model file to put the regression into")
    ap.add_argument("-o", "--output", default=None, help="write here instead of over --model")
    ap.add_argument("--val", nargs="*", default=[], help="held-out structures or folders, scored per type")
    ap.add_argument("--radius", type=int, default=RADIUS)
    ap.add_argument("--ridge", type=float, default=RIDGE)
    ap.add_argument("--min-molecules", type=int, default=MIN_MOLECULES)
    ap.add_argument("--json", default=None, help="write the training counts and validation scores here")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model = load_model(args.model)
    train = structure_files(args.train)
    frames = build_lipid_frames(train, model.mapping_set, args.radius, args.ridge, args.min_molecules,
                                info={"training_files": len(train), "command": " ".join(sys.argv)}, progress=print)
    report = {"training_molecules": frames.info["training_molecules"]}
    if args.val:
        report["validation"] = evaluate_lipid_frames(frames, structure_files(args.val), model.mapping_set)
        for name, row in sorted(report["validation"].items()):
            print(f"  validation {name}: {row['mean']:.3f} / {row['p95']:.3f} A (mean / p95, {row['n']} molecules)")
    out = attach_lipid_frames(args.model, frames, args.output)
    print(f"{out}: {len(frames.molecules)} types, {time.perf_counter() - t0:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
