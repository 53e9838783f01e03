"""Build the side-chain library of a Martini 3 protein model and put it inside the model file.

1. every complete ARG/ASN/ASP/GLN/GLU/ILE/LEU/LYS/MET/PRO/SER/THR/VAL residue of the training
   chains gives one entry (its side-chain beads and heavy atoms in its backbone frame); at
   most ``--max-entries`` random entries per type are kept (float16, ~5 MB in all);
2. on ``--val-chains`` validation chains the model backmaps (network + protein fit), and per
   residue type the blend weight between the library and the network with the lowest
   side-chain RMSD is chosen (grid 0, 0.1, ..., 1; 0 = the type is left to the network);
3. the library is written to ``--library`` and, with ``--attach``, into the model file
   (atomically; the network is unchanged).

    python scripts/build_side_chain_library.py --model models/martini3_protein.pt \\
        --train-dir ../shared/data/proteins/train --val-dir ../shared/data/proteins/val \\
        --library /tmp/side_chains.npz --report benchmarks/results/side_chain_library.json --attach
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from openmm_herobm import load_model
from openmm_herobm.io import atomic_output
from openmm_herobm.model import attach_side_chains
from openmm_herobm.training.dataset import find_structures
from openmm_herobm.training.side_chains import build_side_chain_library, tune_weights


def progress(what: str):
    def report(done: int, total: int) -> None:
        if done == total or done % 50 == 0:
            print(f"  {what}: {done}/{total}", file=sys.stderr, flush=True)
    return report


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="deployed protein model (.pt)")
    ap.add_argument("--train-dir", required=True, help="all-atom training chains (library entries)")
    ap.add_argument("--val-dir", required=True, help="all-atom validation chains (blend weights)")
    ap.add_argument("--train-limit", type=int, default=0, help="use only this many training chains (0 = all)")
    ap.add_argument("--val-chains", type=int, default=25, help="random validation chains for the weights")
    ap.add_argument("--max-entries", type=int, default=12000, help="entries kept per residue type")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--library", required=True, help="library file to write (.npz)")
    ap.add_argument("--report", help="JSON with the per-type weights and validation RMSDs")
    ap.add_argument("--attach", action="store_true", help="write the library into the model file")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    train = find_structures(args.train_dir)
    if args.train_limit:
        train = train[:args.train_limit]
    model = load_model(args.model)
    library = build_side_chain_library(train, model.mapping_set, max_entries=args.max_entries, seed=args.seed,
                                       progress=progress("library"))
    t_build = time.perf_counter() - t0
    val = find_structures(args.val_dir)
    rng = np.random.default_rng(args.seed)
    if 0 < args.val_chains < len(val):
        val = [val[i] for i in sorted(rng.choice(len(val), args.val_chains, replace=False))]
    tuned = tune_weights(library, model, val, progress=progress("weights"))
    library = library.with_weights({n: t["weight"] for n, t in tuned.items()})
    library.info.update(val_chains=len(val), neighbours=library.neighbours)
    data = library.to_bytes()
    with atomic_output(args.library) as tmp:
        Path(tmp).write_bytes(data)
    for name, t in tuned.items():
        print(f"{name}: weight {t['weight']:.1f}  side-chain RMSD {t['rmsd_network']:.3f} -> "
              f"{t['rmsd_blend']:.3f} A ({t['n_residues']} residues)")
    print(f"{len(library)} entries from {library.info['chains']} chains, {len(data) / 1e6:.2f} MB; "
          f"built in {t_build:.0f} s, weights in {time.perf_counter() - t0 - t_build:.0f} s")
    if args.report:
        report = {"command": " ".join(sys.argv), "library": library.info, "entries": len(library),
                  "bytes": len(data), "val": [Path(v).name for v in val], "per_type": tuned}
        with atomic_output(args.report) as tmp:
            Path(tmp).write_text(json.dumps(report, indent=1))
    if args.attach:
        print(f"wrote {attach_side_chains(args.model, library)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
