#!/usr/bin/env python
"""Mixed herobm runs side by side: does each get its fair share of the cores?

Commands on the repository's fixture (two raw trajectory backmaps, one full pipeline: torch and
OpenMM thread pools mixed; and a 2-worker ``herobm batch``), first each alone, then all together.  For every run:
wall time alone ``W``, cores it used alone ``u = CPU time / W``, wall time in the mix ``M``.
When the runs together ask for more cores than there are, a fair scheduler stretches every
run by ``F = max(1, sum(u) / cores)``; the table prints ``M / W`` and ``(M / W) / F`` (1.0 =
exactly fair; the issue's bar is 1.25).

    python benchmarks/mixed_runs.py --out benchmarks/results/mixed_runs.json
    python benchmarks/mixed_runs.py --pythonpath /tmp/old_main --no-batch   # an earlier checkout (before)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import write_result

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "real_frames" / "test"


def commands(tmp: Path, batch: bool) -> dict[str, list[str]]:
    herobm = [sys.executable, "-m", "openmm_herobm.cli.main", "backmap"]
    a = FIXTURE / "bm5_2X9A_l_b_B" / "elastic"
    b = FIXTURE / "bm5_4IZ7_l_u_B" / "plain"
    extra = {}
    if batch:  # the batch's own workers beside the rest (an earlier checkout may not have the command)
        extra["batch, 2 workers (20 frames)"] = [
            sys.executable, "-m", "openmm_herobm.cli.main", "batch", f"{a / 'md.gro'},{a / 'md.xtc'}",
            f"{b / 'md.gro'},{b / 'md.xtc'}", "-o", str(tmp / "batch"), "--no-minimize", "--workers", "2",
            "--frames-per-task", "5", "--no-progress"]
    return extra | {
        "raw trajectory A (10 frames)": herobm + [str(a / "md.gro"), "-t", str(a / "md.xtc"), "--no-minimize",
                                                  "-o", str(tmp / "a.pdb"), "--traj-out", str(tmp / "a.dcd"),
                                                  "--no-progress"],
        "raw trajectory B (10 frames)": herobm + [str(b / "md.gro"), "-t", str(b / "md.xtc"), "--no-minimize",
                                                  "-o", str(tmp / "b.pdb"), "--traj-out", str(tmp / "b.dcd"),
                                                  "--no-progress"],
        # a trajectory, so that no run is much shorter than the others (a short run lives only
        # through the busiest part of the mix)
        "full pipeline (10 frames)": herobm + [str(a / "md.gro"), "-t", str(a / "md.xtc"), "-o", str(tmp / "c.pdb"),
                                               "--traj-out", str(tmp / "c.dcd"), "--no-progress"],
    }


def run_all(named: dict[str, list[str]], env: dict) -> dict[str, dict]:
    """Start every command at once; wall and CPU seconds of each (CPU of the whole process tree)."""
    start = time.perf_counter()
    # cwd: a folder without the repository, or `python -m` would import the repository's package
    # first whatever PYTHONPATH says
    procs = {name: subprocess.Popen(cmd, env=env, cwd=tempfile.gettempdir(), stdout=subprocess.DEVNULL,
                                    stderr=subprocess.PIPE) for name, cmd in named.items()}
    pid_name = {p.pid: n for n, p in procs.items()}
    out: dict[str, dict] = {}
    while len(out) < len(procs):
        pid, status, usage = os.wait4(-1, 0)
        if pid not in pid_name:
            continue
        name = pid_name[pid]
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{name} failed: {procs[name].stderr.read().decode()[-500:]}")
        out[name] = {"wall_s": time.perf_counter() - start, "cpu_s": usage.ru_utime + usage.ru_stime}
    return out


def _fresh(tmp, run):
    # a batch resumes from its output folder: every run starts without one
    import shutil

    shutil.rmtree(Path(tmp) / "batch", ignore_errors=True)
    return run()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pythonpath", help="run an earlier checkout (PYTHONPATH=DIR) instead of the installed package")
    ap.add_argument("--repeats", type=int, default=2, help="alone runs per command (the minimum is kept)")
    ap.add_argument("--no-batch", action="store_true", help="leave `herobm batch` out of the mix")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    env = dict(os.environ)
    for name in ("HEROBM_THREADS", "OMP_NUM_THREADS", "OPENMM_CPU_THREADS", "OMP_WAIT_POLICY", "MKL_NUM_THREADS",
                 "OPENBLAS_NUM_THREADS"):
        env.pop(name, None)  # every run picks its own threads: the policy under test
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    cores = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        named = commands(Path(tmp), batch=not args.no_batch)
        alone = {}
        for name, cmd in named.items():
            runs = [_fresh(tmp, lambda: run_all({name: cmd}, env)[name]) for _ in range(args.repeats)]
            alone[name] = min(runs, key=lambda r: r["wall_s"])
            print(f"alone  {name}: {alone[name]['wall_s']:.1f} s wall, {alone[name]['cpu_s']:.1f} s CPU",
                  file=sys.stderr)
        mixed = _fresh(tmp, lambda: run_all(named, env))
    demand = sum(r["cpu_s"] / r["wall_s"] for r in alone.values())
    fair = max(1.0, demand / cores)
    rows = []
    for name in named:
        stretch = mixed[name]["wall_s"] / alone[name]["wall_s"]
        rows.append({"run": name, "alone_wall_s": round(alone[name]["wall_s"], 2),
                     "alone_cores": round(alone[name]["cpu_s"] / alone[name]["wall_s"], 2),
                     "mixed_wall_s": round(mixed[name]["wall_s"], 2), "stretch": round(stretch, 2),
                     "vs_fair": round(stretch / fair, 2)})
    lines = [f"{cores} cores; the runs alone ask for {demand:.2f} cores together: fair stretch {fair:.2f}",
             "| run | alone (s) | cores used alone | side by side (s) | stretch | stretch / fair |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['alone_wall_s']:.1f} | {r['alone_cores']:.2f} | {r['mixed_wall_s']:.1f} | "
              f"{r['stretch']:.2f} | {r['vs_fair']:.2f} |" for r in rows]
    print("\n".join(lines))
    write_result(args.out, cores=cores, fair_stretch=fair, rows=rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
