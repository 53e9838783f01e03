#!/usr/bin/env python
"""Inference throughput and peak memory of ``backmap`` at 1k, 10k and 100k Martini 3 beads on CPU.

Systems are built from real Martini 3 protein beads: a few test chains are mapped with
``map_structure(..., "martini3", incomplete="skip")`` (the beads ``martinize2 -ignh``
gives), and copies of them are tiled on a cubic grid, each copy centred in its own cell
of edge (largest chain extent + ``--gap``, default 10 A), until the bead count is reached;
the last copy is cut at a residue boundary so the system has at most the requested beads
(whole residues only).  With 10 A gaps (> the model cutoff) the copies do not see each
other: this is a dilute protein system, no solvent.  The system gets an orthorhombic box
around the grid, as a simulation frame would, so ``backmap``'s ``make_whole`` does its work.

Every size runs in a FRESH Python subprocess (``--worker``), so the peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``) belongs to that size alone.  In the
worker: map the source chains and build the system, load the model (not timed), warm up
(TorchScript profiles and optimises on its first calls: two ``backmap`` calls on a
<= 1000-bead piece of the system, then ``--warmup`` full-size calls), then time, each timed
call after a ``gc.collect()``:

* ``backmap(traj, model)`` end to end (make_whole, ``SystemMapping.from_cg``, inference,
  reconstruction, output trajectory; no file I/O, model already loaded), ``--repeats``
  times: best and mean seconds, beads/s and heavy atoms/s of the best;
* the same steps one by one, as ``backmap`` does them: ``predict_chunked`` (the network,
  spatially chunked above 4000 beads) and ``module.reconstruct`` (hierarchical placement),
  and their sum ("pure inference").

Threads: ``torch.set_num_threads(--threads)`` and OMP_NUM_THREADS / MKL_NUM_THREADS in the
worker's environment.  The report names the machine (nproc, CPU model, torch version,
load average before/after - another busy process on the machine slows everything down),
and the exact command.

Examples::

    python benchmarks/throughput.py --model models/martini3_protein.pt \
        --out benchmarks/results/throughput.json --markdown
    python benchmarks/throughput.py --model /tmp/smoke/m.pt --sizes 1000 --threads 1
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE.parent.parent / "shared" / "data" / "proteins"
MARKER = "@@THROUGHPUT_JSON@@ "


# --------------------------------------------------------------------------- machine
def machine_info(threads: int) -> dict:
    cpu = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        mem_total = next(int(line.split()[1]) // 1024 for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem_total = None
    import torch

    return {"nproc": nproc, "cpu_count": os.cpu_count(), "cpu_model": cpu or platform.processor(),
            "memory_total_mb": mem_total, "python": platform.python_version(), "torch": torch.__version__,
            "numpy": np.__version__, "threads": threads, "platform": platform.platform()}


def peak_rss_mb() -> float:
    # Linux reports KiB, macOS bytes
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r / (1024.0 * 1024.0) if sys.platform == "darwin" else r / 1024.0


def current_rss_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return None


# --------------------------------------------------------------------------- system
def source_chains(test_dir: str, names: list[str] | None, n: int) -> list[Path]:
    files = sorted(Path(test_dir).glob("*.pdb.gz"))
    if names:
        out = []
        for name in names:
            p = Path(name)
            if not p.is_file():
                p = Path(test_dir) / (name if name.endswith(".pdb.gz") else f"{name}.pdb.gz")
            if not p.is_file():
                raise SystemExit(f"source chain not found: {name}")
            out.append(p)
        return out
    if not files:
        raise SystemExit(f"no *.pdb.gz files in {test_dir}")
    idx = np.unique(np.linspace(0, len(files) - 1, num=min(n, len(files))).round().astype(int))
    return [files[i] for i in idx]  # evenly spread over the sorted test set


def map_chain(path: Path):
    from openmm_herobm import map_structure
    from openmm_herobm.io import atom_slice, load_structure

    traj = load_structure(path)
    heavy = [a.index for a in traj.topology.atoms
             if not (a.element is not None and a.element.symbol in ("H", "D"))]
    if len(heavy) < traj.n_atoms:
        traj = atom_slice(traj, heavy)
    return map_structure(traj, "martini3", incomplete="skip").cg


def tile(cgs: list, n_beads: int, gap_nm: float):
    """An mdtraj CG trajectory of about ``n_beads`` beads: copies of ``cgs`` on a cubic grid."""
    import mdtraj

    xyz0 = [c.xyz[0].astype(np.float64) - c.xyz[0].mean(0) for c in cgs]
    cell = max(float((x.max(0) - x.min(0)).max()) for x in xyz0) + gap_nm
    mean_beads = np.mean([c.n_atoms for c in cgs])
    n_copies = int(np.ceil(n_beads / mean_beads))
    g = max(1, int(np.ceil(n_copies ** (1.0 / 3.0) - 1e-9)))
    while g ** 3 < n_copies:
        g += 1
    grid = [(i, j, k) for i in range(g) for j in range(g) for k in range(g)]

    top = mdtraj.Topology()
    parts, total, copy = [], 0, 0
    chain_ids = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    while total < n_beads:
        if copy >= len(grid):  # cannot happen (g^3 >= copies), but never loop forever
            raise RuntimeError("grid too small")
        src = cgs[copy % len(cgs)]
        centre = (np.array(grid[copy], np.float64) + 0.5) * cell
        chain = top.add_chain(chain_id=chain_ids[copy % len(chain_ids)])
        taken = []
        for res in src.topology.residues:
            atoms = list(res.atoms)
            if total + len(atoms) > n_beads:
                total = n_beads  # stop here: at most n_beads, whole residues only
                break
            new = top.add_residue(res.name, chain, resSeq=res.resSeq)
            code = getattr(res, "insertion_code", "")
            if code:
                new.insertion_code = code
            for a in atoms:
                top.add_atom(a.name, a.element, new)
                taken.append(a.index)
            total += len(atoms)
        if taken:
            parts.append(xyz0[copy % len(cgs)][taken] + centre)
        copy += 1
    xyz = np.concatenate(parts)[None].astype(np.float32)
    box = g * cell
    traj = mdtraj.Trajectory(xyz, top, unitcell_lengths=[[box, box, box]], unitcell_angles=[[90.0, 90.0, 90.0]])
    return traj, {"copies": copy, "grid": g, "cell_nm": cell, "box_nm": box}


def n_chunks(pos_A: np.ndarray, chunk: float, max_unchunked: int = 4000) -> int:
    """How many cubes predict_chunked cuts the system into (1 = one call)."""
    if len(pos_A) <= max_unchunked:
        return 1
    cell = np.floor((pos_A - pos_A.min(0)) / chunk).astype(np.int64)
    return int(len(np.unique(cell, axis=0)))


# --------------------------------------------------------------------------- worker
def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    import openmm_herobm as hb
    from openmm_herobm.io import make_whole
    from openmm_herobm.mapping import SystemMapping
    from openmm_herobm.model import predict_chunked

    rss_start = current_rss_mb()
    t0 = time.perf_counter()
    paths = source_chains(args.test_dir, args.chains, args.n_source_chains)
    cgs = [map_chain(p) for p in paths]
    traj, layout = tile(cgs, args.worker, args.gap / 10.0)
    t_build = time.perf_counter() - t0

    t0 = time.perf_counter()
    model = hb.load_model(args.model)
    t_load = time.perf_counter() - t0

    # warm-up: TorchScript profiles on the first call and optimises on the second
    small = traj.atom_slice([a.index for r in traj.topology.residues
                             if max(b.index for b in r.atoms) < 1000 for a in r.atoms])  # whole residues
    t0 = time.perf_counter()
    for _ in range(2):
        hb.backmap(small, model, chunk=args.chunk, fit=args.fit)
    for _ in range(args.warmup):
        hb.backmap(traj, model, chunk=args.chunk, fit=args.fit)
    t_warm = time.perf_counter() - t0
    rss_before = peak_rss_mb()

    times = []
    for _ in range(max(1, args.repeats)):
        gc.collect()  # keep full garbage collections of earlier garbage out of the timed call
        t0 = time.perf_counter()
        result = hb.backmap(traj, model, chunk=args.chunk, fit=args.fit)
        times.append(time.perf_counter() - t0)
    n_atoms = result.trajectory.n_atoms
    n_beads = result.system.n_beads
    del result

    # the same steps one by one (as backmap does them)
    steps = {"make_whole": [], "system_from_cg": [], "predict_chunked": [], "reconstruct": []}
    for _ in range(max(1, args.repeats)):
        gc.collect()
        t0 = time.perf_counter()
        whole = make_whole(traj)
        t1 = time.perf_counter()
        system = SystemMapping.from_cg(whole.topology, model.mapping_set)
        t2 = time.perf_counter()
        bead_type = torch.as_tensor(system.bead_types)
        slot_atom = torch.as_tensor(np.where(system.slot_valid, system.slot_atom, -1))
        pos = torch.as_tensor(whole.xyz[0, system.cg_input_index] * 10.0, dtype=torch.float32)
        with torch.no_grad():
            t3 = time.perf_counter()
            vectors, _ = predict_chunked(model.module, pos, bead_type, model.cutoff, chunk=args.chunk)
            t4 = time.perf_counter()
            atoms = model.module.reconstruct(pos, bead_type, vectors, slot_atom, system.n_atoms)
            t5 = time.perf_counter()
        assert atoms.shape[0] == n_atoms
        for k, v in zip(steps, (t1 - t0, t2 - t1, t4 - t3, t5 - t4)):
            steps[k].append(v)
    best = min(times)
    pure = [p + r for p, r in zip(steps["predict_chunked"], steps["reconstruct"])]
    return {
        "requested_beads": args.worker,
        "n_beads": int(n_beads),
        "n_atoms": int(n_atoms),
        "n_chunks": n_chunks(pos.numpy(), args.chunk),
        "layout": layout,
        "source_chains": [p.name for p in paths],
        "build_seconds": t_build,
        "model_load_seconds": t_load,
        "warmup_seconds": t_warm,
        "backmap_seconds": times,
        "backmap_seconds_best": best,
        "backmap_seconds_mean": float(np.mean(times)),
        "beads_per_second": n_beads / best,
        "atoms_per_second": n_atoms / best,
        "steps_seconds_best": {k: min(v) for k, v in steps.items()},
        "pure_inference_seconds_best": min(pure),
        "pure_inference_beads_per_second": n_beads / min(pure),
        "pure_inference_atoms_per_second": n_atoms / min(pure),
        "rss_start_mb": rss_start,
        "peak_rss_before_timed_mb": rss_before,
        "peak_rss_mb": peak_rss_mb(),
        "torch_threads": torch.get_num_threads(),
    }


# --------------------------------------------------------------------------- main
def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Machine: {m['cpu_model']}, nproc {m['nproc']}, {m['threads']} torch thread(s), torch {m['torch']}, "
        f"Python {m['python']}; model `{report['config']['model']}`; "
        f"load average before/after {report['loadavg_before']} / {report['loadavg_after']}.",
        "",
        "| beads | heavy atoms | chunks | backmap end to end (s) | beads/s | atoms/s "
        "| predict_chunked + reconstruct (s) | beads/s | peak RSS (MB) | RSS after imports (MB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['requested_beads']} | failed: {r['error']} | | | | | | | | |")
            continue
        lines.append(
            f"| {r['n_beads']} | {r['n_atoms']} | {r['n_chunks']} | {r['backmap_seconds_best']:.3f} | "
            f"{r['beads_per_second']:.0f} | {r['atoms_per_second']:.0f} | {r['pure_inference_seconds_best']:.3f} | "
            f"{r['pure_inference_beads_per_second']:.0f} | {r['peak_rss_mb']:.0f} | {r['rss_start_mb']:.0f} |")
    lines += ["", "Peak RSS is ru_maxrss of a fresh process per size; \"after imports\" is its RSS once torch, "
              "mdtraj and openmm_herobm are imported (the fixed cost of any run).",
              f"Command: `{report['command']}`"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="martini3_protein", help="deployed model file or shipped model name")
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000], help="bead counts")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--test-dir", default=str(DATA / "test"), help="where the source chains come from")
    ap.add_argument("--chains", nargs="+", help="source chains (names in --test-dir or paths); "
                                                "default: --n-source-chains spread over the sorted test set")
    ap.add_argument("--n-source-chains", type=int, default=4)
    ap.add_argument("--gap", type=float, default=10.0, help="gap between copies (A)")
    ap.add_argument("--chunk", type=float, default=40.0, help="backmap(chunk=...): cube edge (A) above 4000 beads")
    ap.add_argument("--warmup", type=int, default=1, help="untimed full-size backmap calls before timing")
    ap.add_argument("--repeats", type=int, default=1, help="timed calls per size (best and mean reported)")
    ap.add_argument("--fit", action="store_true",
                    help="time backmap with the protein fit (backmap's default); without it the network alone")
    ap.add_argument("--out", help="JSON output")
    ap.add_argument("--markdown", action="store_true", help="print a markdown table")
    ap.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker is not None:
        result = worker(args)
        print(MARKER + json.dumps(result), flush=True)
        return 0

    command = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    report = {"command": command, "machine": machine_info(args.threads),
              "config": {"model": args.model, "fit": args.fit, "sizes": args.sizes, "gap_A": args.gap, "chunk_A": args.chunk,
                         "warmup": args.warmup, "repeats": args.repeats, "test_dir": os.path.abspath(args.test_dir)},
              "loadavg_before": [round(x, 2) for x in os.getloadavg()], "results": []}
    m = report["machine"]
    print(f"machine: {m['cpu_model']}; nproc {m['nproc']}; torch {m['torch']}; threads {args.threads}; "
          f"load average {report['loadavg_before']}")
    print(f"command: {command}", flush=True)
    for size in args.sizes:
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", str(size), "--model", args.model,
               "--threads", str(args.threads), "--test-dir", args.test_dir, "--gap", str(args.gap),
               "--chunk", str(args.chunk), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
               "--n-source-chains", str(args.n_source_chains)]
        if args.chains:
            cmd += ["--chains", *args.chains]
        if args.fit:
            cmd.append("--fit")
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
        lines = [x for x in proc.stdout.splitlines() if x.startswith(MARKER)]
        if proc.returncode != 0 or not lines:
            err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"  {size:>7d} beads: FAILED ({err})", flush=True)
            report["results"].append({"requested_beads": size, "error": err})
            continue
        r = json.loads(lines[-1][len(MARKER):])
        r["subprocess_seconds"] = time.perf_counter() - t0
        report["results"].append(r)
        print(f"  {r['n_beads']:>7d} beads {r['n_atoms']:>8d} atoms {r['n_chunks']:>4d} chunk(s): "
              f"backmap {r['backmap_seconds_best']:.3f} s = {r['beads_per_second']:.0f} beads/s, "
              f"{r['atoms_per_second']:.0f} atoms/s; predict+reconstruct {r['pure_inference_seconds_best']:.3f} s "
              f"(predict {r['steps_seconds_best']['predict_chunked']:.3f}, "
              f"reconstruct {r['steps_seconds_best']['reconstruct']:.3f}); peak RSS {r['peak_rss_mb']:.0f} MB",
              flush=True)
    report["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out + ".tmp", "w") as fh:
            json.dump(report, fh, indent=1)
        os.replace(args.out + ".tmp", args.out)
        print(f"wrote {args.out}")
    if args.markdown:
        print()
        print(markdown(report))
    return 0 if all("error" not in r for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
