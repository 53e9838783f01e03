#!/usr/bin/env python
"""How far a POPC's beads pin down its atoms: the lipid frame regression on real CHARMM36 bilayers.

Training: the seven NMRLipids CHARMM36 POPC bilayers the lipid model trains on (560 POPC);
scored on the two it never saw: ``charmm36_POPCpure`` (72 POPC, the lipid model's validation
bilayer) and ``charmm36_POPCchol-20pct`` (100 POPC, issue 15's Test 1).  Heavy RMSD per
molecule (per atom name, no superposition) on the mapped beads of

1. the regression alone, for several training-set sizes (random subsets of molecules, seed 0)
   and neighbourhood radii (bonds): the learning curve says whether more molecules would help;
2. ``backmap``'s output with the regression (``--model``, e.g. the shipped model) and without
   it (the same model file with its frames taken out: the network), both through the lipid fit.

    python benchmarks/lipid_frames.py --out benchmarks/results/lipid_frames.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LIPIDS = ROOT.parent / "shared" / "data" / "lipids"
TRAIN = ("chol-0pct", "dehydration-15w", "dehydration-7w", "nacl-13na", "nacl-26na", "nacl-52na", "nacl-78na")
HELD_OUT = ("pure", "chol-20pct")


def _files(names) -> list[Path]:
    return [LIPIDS / f"charmm36_POPC{n}.gro.gz" for n in names]


def regression_scores(sizes, radii, seed: int = 0) -> list[dict]:
    from openmm_herobm.mapping import MappingSet
    from openmm_herobm.reconstruction import LipidFrames
    from openmm_herobm.training import evaluate_lipid_frames
    from openmm_herobm.training.lipid_frames import collect, fit_molecule

    ms = MappingSet.load("martini3_lipids")
    data, mappings = collect(_files(TRAIN), ms)
    beads, atoms = data["POPC"]
    order = np.random.default_rng(seed).permutation(len(beads))
    rows = []
    for radius in radii:
        for n in sizes:
            pick = order[:n]
            fitted = fit_molecule(mappings["POPC"], beads[pick], atoms[pick], radius)
            frames = LipidFrames({"POPC": fitted})
            row = {"radius": radius, "training_molecules": len(pick)}
            pred, _ = fitted.predict(beads[pick])
            row["training"] = float(np.sqrt(((pred - atoms[pick]) ** 2).sum(-1).mean(1)).mean())
            for name in HELD_OUT:
                row[name] = evaluate_lipid_frames(frames, _files([name]), ms)["POPC"]["mean"]
            print(f"radius {radius}, {n:4d} molecules: training {row['training']:.3f}, "
                  + ", ".join(f"{k} {row[k]:.3f}" for k in HELD_OUT) + " A", flush=True)
            rows.append(row)
    return rows


def backmap_scores(model: str) -> dict:
    """POPC (and CHL) heavy RMSD per molecule of ``backmap`` with and without the model's frames."""
    import openmm_herobm as hb
    from openmm_herobm.model import LoadedModel, load_model

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import lipid_quality as lq

    loaded = load_model(model)
    plain = LoadedModel(loaded.module, loaded.metadata, loaded.mapping_set, loaded.path, loaded.side_chains)
    out = {}
    for name in HELD_OUT:
        ref = lq.reference(_files([name])[0])
        cg = hb.map_structure(ref, "martini3_lipids").cg
        for label, m in (("network + lipid fit", plain), ("regression + lipid fit", loaded)):
            t0 = time.perf_counter()
            result = hb.backmap(cg, m)
            seconds = time.perf_counter() - t0
            rows = lq.evaluate_variant(result.trajectory, ref)["rmsd_per_molecule_A"]
            repaired = {k: v for p in result.parts for k, v in p.stereo_repaired.items()}
            out.setdefault(name, {})[label] = {
                "seconds": seconds, "stereo_repaired": repaired,
                **{t: {k: r[k] for k in ("mean", "p95", "mean_symmetric", "stereo_errors", "cis_trans_errors",
                                         "bonds_out_of_range")} for t, r in rows.items()}}
            print(f"{name}, {label}: " + ", ".join(f"{t} {r['mean']:.3f} / {r['p95']:.3f}" for t, r in rows.items())
                  + f" A; repaired {repaired}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[70, 140, 280, 560])
    ap.add_argument("--radii", type=int, nargs="+", default=[1, 2, 3, 4])
    ap.add_argument("--model", default="martini3_lipids")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    record = {"command": "python " + " ".join(sys.argv), "training": [f.name for f in _files(TRAIN)],
              "regression": regression_scores(args.sizes, args.radii), "backmap": backmap_scores(args.model)}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
