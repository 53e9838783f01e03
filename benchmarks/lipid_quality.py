#!/usr/bin/env python
"""The Martini 3 lipid model on the held-out CHARMM36 POPC/cholesterol bilayer (100 POPC, 24 CHL).

1. Reference: ``charmm36_POPCchol-20pct`` (never seen in training), heavy atoms, molecules made
   whole; its box is left out (the snapshot's box does not match its atoms, so periodic images
   would overlap).  CG input = our forward mapping (``martini3_lipids``).
2. ``network``: the lipid model's network alone (``backmap(fit=False)``); ``raw``: ``backmap``'s
   output (the network, then every lipid centre and double bond it built wrong put right
   geometrically); ``refined`` (``--refine``): ``backmap_and_simulate``
   (stereo repair, CHARMM36 from OpenMM, hydrogens from its templates, bead restraint, vacuum
   minimisation).
3. Heavy-atom RMSD per lipid type (no superposition; also with the atoms whose names no structure
   tells apart, ``MoleculeMapping.equivalent_atoms``, in their best assignment), stereo checks of ``herobm evaluate``
   (POPC sn-2 C2, the eight cholesterol centres, the oleoyl cis double bond, cholesterol C5=C6),
   close contacts, rings pierced by a bond.
   With ``--bilayer`` another all-atom bilayer is the reference (e.g. the held-out mixed
   bilayer of ``scripts/build_lipid_conformers.py``: POPC, CHL and the six other lipid types);
   every lipid type then gets its own row (``--bilayer`` repeated: several bilayers side by side,
   pooled): heavy RMSD per molecule (mean / p95), stereo and
   cis/trans errors, bonds between heavy atoms outside 1.2-1.9 A (``herobm evaluate`` on that
   type's molecules alone).
4. Radial distribution functions of reconstructed vs true head-group nitrogen (N),
   phosphorus (P), glycerol C2, tail ends (C218, C316) and cholesterol O3, between atoms of
   different molecules, within the slab: g(r) = pair-distance histogram over the ideal-gas
   count of the same number of atoms in the bilayer's lateral area x the atoms' z spread
   (no periodic images; the same estimator for both, so they are comparable), plotted to
   ``--plot``.

    python benchmarks/lipid_quality.py --refine --threads 2 --out benchmarks/results/lipid_quality.json \\
        --plot benchmarks/results/lipid_rdf.png --markdown
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BILAYER = DATA / "lipids" / "charmm36_POPCchol-20pct.gro.gz"
GROUPS = {"nitrogen (N)": ("POPC", ("N",)), "phosphate (P)": ("POPC", ("P",)), "glycerol (C2)": ("POPC", ("C2",)),
          "tail ends (C218, C316)": ("POPC", ("C218", "C316")), "cholesterol O3": ("CHL", ("O3",))}
STEREO = ("chirality_errors_popc_c2", "chirality_errors_chol_c3", "chirality_errors_chol_c8",
          "chirality_errors_chol_c9", "chirality_errors_chol_c10", "chirality_errors_chol_c13",
          "chirality_errors_chol_c14", "chirality_errors_chol_c17", "chirality_errors_chol_c20",
          "double_bond_errors_popc_oleoyl_c9", "double_bond_errors_chol_c5")
BINS = np.linspace(0.0, 1.5, 31)  # nm (0.5 A bins: one snapshot, 100 molecules)


def _lipids() -> tuple[str, ...]:
    """All-atom names of the model's lipids: POPC, CHL, then the others of ``chemistry``."""
    from openmm_herobm.chemistry import LIPID_COMPOSITION, SPHINGOMYELINS

    return ("POPC", "CHL", *(n for n in LIPID_COMPOSITION if n != "POPC"), *SPHINGOMYELINS)


LIPIDS = _lipids()


#: nm between bilayers given together (--bilayer twice): far beyond the model's 8 A cutoff
SPACING = 50.0


def reference(path: Path | list[Path] = BILAYER):
    """Heavy lipid atoms of the bilayer(s), molecules whole, no box; several bilayers side by side
    (``SPACING`` apart in x), so that their molecules are evaluated together but never see each other."""
    from openmm_herobm.io import load_structure, make_whole

    parts = []
    for k, one in enumerate(path if isinstance(path, list) else [path]):
        traj = make_whole(load_structure(str(one)))
        traj = traj.atom_slice([a.index for a in traj.topology.atoms
                                if a.residue.name in LIPIDS and a.element.symbol != "H"])
        traj.unitcell_vectors = None
        traj.xyz[..., 0] += k * SPACING
        parts.append(traj)
    out = parts[0]
    for more in parts[1:]:
        out = out.stack(more)
    return out


def per_type_checks(heavy, name: str) -> dict:
    """``herobm evaluate`` on the molecules of one lipid type alone: stereo, cis/trans, bond lengths."""
    import openmm_herobm as hb

    part = heavy.atom_slice([a.index for a in heavy.topology.atoms if a.residue.name == name])
    out = hb.evaluate(part)
    chir = sum(v for k, v in out.items() if k.startswith("chirality_errors_") and isinstance(v, int))
    dbl = sum(v for k, v in out.items() if k.startswith("double_bond_errors_") and isinstance(v, int))
    return {"stereo_errors": chir, "cis_trans_errors": dbl, "bonds_out_of_range": out.get("n_bonds_out_of_range"),
            "centres_checked": sum(n for n in out["chirality_checked"].values()),
            "double_bonds_checked": sum(_double_bond_counts(part).values())}


def _double_bond_counts(part) -> dict:
    from openmm_herobm.chemistry import DOUBLE_BOND_CHECKS

    names = [r.name for r in part.topology.residues]
    return {k: sum(n in resnames for n in names) for k, (resnames, _, _) in DOUBLE_BOND_CHECKS.items()}


def rdf(traj, resname: str, names: tuple) -> np.ndarray:
    """g(r) on BINS between atoms ``names`` of different ``resname`` molecules (no periodic images)."""
    idx = np.array([a.index for a in traj.topology.atoms if a.residue.name in (resname, "CHL1") and a.name in names])
    if len(idx) < 2:  # a bilayer without this lipid (e.g. no cholesterol)
        return np.zeros(len(BINS) - 1)
    res = np.array([traj.topology.atom(i).residue.index for i in idx])
    xyz = traj.xyz[0, idx].astype(np.float64)
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    other = res[:, None] != res[None]
    hist, _ = np.histogram(d[np.triu(other, 1)], bins=BINS)
    span = xyz.max(0) - xyz.min(0)
    density = len(idx) / np.prod(np.maximum(span, 0.5))
    shell = 4.0 / 3.0 * np.pi * (BINS[1:] ** 3 - BINS[:-1] ** 3)
    return hist / (0.5 * len(idx) * density * shell)


def best_assignment(pred: np.ndarray, true: np.ndarray, names: tuple) -> dict:
    """{name: squared distance (A^2)} of the equivalent atoms ``names`` (pred, true ``(k, 3)`` A) in the
    assignment that meets best (``MoleculeMapping.equivalent_atoms``: their names are arbitrary)."""
    from itertools import permutations

    best = min(permutations(range(len(names))), key=lambda p: ((pred - true[list(p)]) ** 2).sum())
    return {n: float(((pred[k] - true[j]) ** 2).sum()) for k, (n, j) in enumerate(zip(names, best))}


def evaluate_variant(pred, ref) -> dict:
    import openmm_herobm as hb

    for residue in pred.topology.residues:  # CHARMM36's name for cholesterol, back to the reference's
        if residue.name == "CHL1":
            residue.name = "CHL"
    heavy = pred.atom_slice([a.index for a in pred.topology.atoms if a.element.symbol != "H"])
    out = hb.evaluate(heavy, ref)
    row = {"rmsd_heavy": out["rmsd_heavy"], "rmsd_per_type": out["rmsd_heavy_per_residue_type"],
           "n_close_contacts": out["n_close_contacts"], "n_pierced_rings": out["n_pierced_rings"],
           "stereo_errors": {k: out.get(k) for k in STEREO}, "stereo_errors_total": sum(out.get(k) or 0 for k in STEREO)}
    per_molecule = {}
    lipid_set = hb.MappingSet.load("martini3_lipids")
    for name in [n for n in LIPIDS if any(r.name == n for r in ref.topology.residues)]:
        mapping = lipid_set.for_residue(name)
        groups = [tuple(mapping.atoms[i].name for i in g) for g in mapping.equivalent_atoms]
        values, symmetric = [], []
        for r_pred, r_ref in zip(heavy.topology.residues, ref.topology.residues):
            if r_ref.name != name:
                continue
            a = {x.name: x.index for x in r_pred.atoms}
            b = {x.name: x.index for x in r_ref.atoms}
            common = [n for n in b if n in a]
            diff = 10.0 * (heavy.xyz[0, [a[n] for n in common]] - ref.xyz[0, [b[n] for n in common]])  # A
            sq = dict(zip(common, (diff ** 2).sum(1)))
            values.append(float(np.sqrt(np.mean(list(sq.values())))))
            for g in groups:  # equivalent atoms (a choline's methyls ...) in their best assignment
                if all(n in sq for n in g):
                    sq.update(best_assignment(heavy.xyz[0, [a[n] for n in g]] * 10, ref.xyz[0, [b[n] for n in g]] * 10, g))
            symmetric.append(float(np.sqrt(np.mean(list(sq.values())))))
        per_molecule[name] = {"mean": float(np.mean(values)), "median": float(np.median(values)),
                              "p95": float(np.percentile(values, 95)), "max": float(np.max(values)), "n": len(values),
                              "mean_symmetric": float(np.mean(symmetric)),
                              "p95_symmetric": float(np.percentile(symmetric, 95)),
                              **per_type_checks(heavy, name)}
    row["rmsd_per_molecule_A"] = per_molecule
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="martini3_lipids")
    ap.add_argument("--refine", action="store_true", help="also run backmap_and_simulate (CHARMM36, vacuum)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    ap.add_argument("--plot", default=None, help="PNG of the RDFs")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--bilayer", type=Path, action="append", default=None,
                    help=f"all-atom reference (default: {BILAYER}); repeat it to evaluate several bilayers together")
    args = ap.parse_args(argv)
    os.environ["OPENMM_CPU_THREADS"] = str(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    import openmm_herobm as hb

    args.bilayer = args.bilayer or [BILAYER]
    ref = reference(args.bilayer)
    cg = hb.map_structure(ref, "martini3_lipids").cg
    results, trajs, timings = {}, {"true": ref}, {}
    t0 = time.perf_counter()
    network = hb.backmap(cg, args.model, fit=False)  # the network alone
    timings["network"] = time.perf_counter() - t0
    trajs["network"] = network.trajectory
    results["network"] = evaluate_variant(network.trajectory, ref)
    t0 = time.perf_counter()
    raw = hb.backmap(cg, args.model)  # backmap's output: the network + stereo put right geometrically
    timings["raw"] = time.perf_counter() - t0
    trajs["raw"] = raw.trajectory
    results["raw"] = evaluate_variant(raw.trajectory, ref)
    if args.refine:
        t0 = time.perf_counter()
        refined = hb.backmap_and_simulate(cg, args.model, solvent=None)
        timings["refined"] = time.perf_counter() - t0
        trajs["refined"] = refined.trajectory
        results["refined"] = evaluate_variant(refined.trajectory, ref)
        results["refined"]["pipeline_timings_s"] = refined.timings
        results["refined"]["minimize"] = refined.report.get("minimize")
        results["refined"]["n_atoms_with_h"] = refined.report.get("n_atoms")
    rdfs = {group: {name: rdf(t, resname, names).tolist() for name, t in trajs.items()}
            for group, (resname, names) in GROUPS.items()}
    similarity = {group: {name: float(np.abs(np.array(v[name]) - np.array(v["true"])).sum()
                                      / max(np.array(v["true"]).sum(), 1e-9))
                          for name in v if name != "true"} for group, v in rdfs.items()}
    counts = {}
    for r in ref.topology.residues:
        counts[r.name] = counts.get(r.name, 0) + 1
    record = {"command": "python " + " ".join(shlex.quote(a) for a in sys.argv), "reference": " + ".join(b.name for b in args.bilayer),
              "lipids": counts, "results": results, "seconds": timings, "rdf_bins_nm": BINS.tolist(),
              "rdf": rdfs, "rdf_relative_l1_difference": similarity}
    if args.out:
        Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(GROUPS), figsize=(4 * len(GROUPS), 3.2))
        centres = 0.5 * (BINS[1:] + BINS[:-1]) * 10
        for ax, (group, curves) in zip(axes, rdfs.items()):
            for name, style in (("true", "k-"), ("network", "C2-."), ("raw", "C0--"), ("refined", "C1:")):
                if name in curves:
                    ax.plot(centres, curves[name], style, label=name)
            ax.set_title(group)
            ax.set_xlabel("r (A)")
        axes[0].set_ylabel("g(r)")
        axes[0].legend()
        fig.suptitle("Held-out CHARMM36 POPC/cholesterol bilayer: reconstructed vs true")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
    if args.markdown:
        names = list(results)
        print("| metric | " + " | ".join(f"`{n}`" for n in names) + " |")
        print("|---|" + "---|" * len(names))
        for name in results[names[0]]["rmsd_per_molecule_A"]:
            print(f"| {name} heavy RMSD per molecule, mean / median / max (A) | " + " | ".join(
                "{mean:.3f} / {median:.3f} / {max:.3f}".format(**results[n]["rmsd_per_molecule_A"][name])
                for n in names) + " |")
            print(f"| {name} the same, equivalent atoms in their best assignment, mean (A) | " + " | ".join(
                "{mean_symmetric:.3f}".format(**results[n]["rmsd_per_molecule_A"][name]) for n in names) + " |")
        print("| all heavy atoms, pooled RMSD (A) | " + " | ".join(f"{results[n]['rmsd_heavy']:.3f}" for n in names) + " |")
        for key in STEREO:
            print(f"| {key.replace('_errors', '')} errors | " + " | ".join(
                str(results[n]["stereo_errors"][key]) for n in names) + " |")
        print("| close contacts (< 2 A, beyond 1-3) | " + " | ".join(str(results[n]["n_close_contacts"]) for n in names) + " |")
        print("| rings pierced by a bond | " + " | ".join(str(results[n]["n_pierced_rings"]) for n in names) + " |")
        print("| time (s) | " + " | ".join(f"{timings[n]:.1f}" for n in names) + " |")
        print()
        print("| lipid (n) | " + " | ".join(f"`{n}` heavy RMSD mean / p95 (A) | `{n}` with equivalent atoms matched, mean / p95 (A) | `{n}` stereo / cis-trans errors (centres, "
                                          f"double bonds checked) | `{n}` bonds outside 1.2-1.9 A" for n in names) + " |")
        print("|---|" + "---|---|---|---|" * len(names))
        for name in results[names[0]]["rmsd_per_molecule_A"]:
            cells = []
            for n in names:
                m = results[n]["rmsd_per_molecule_A"][name]
                cells += [f"{m['mean']:.2f} / {m['p95']:.2f}", f"{m['mean_symmetric']:.2f} / {m['p95_symmetric']:.2f}",
                          f"{m['stereo_errors']} / {m['cis_trans_errors']} ({m['centres_checked']}, {m['double_bonds_checked']})",
                          str(m["bonds_out_of_range"])]
            print(f"| {name} ({results[names[0]]['rmsd_per_molecule_A'][name]['n']}) | " + " | ".join(cells) + " |")
        print()
        print("| RDF, relative L1 difference to true | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        for group, v in similarity.items():
            print(f"| {group} | " + " | ".join(f"{v[n]:.3f}" for n in names) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
