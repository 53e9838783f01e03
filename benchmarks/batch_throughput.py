#!/usr/bin/env python
"""``herobm batch`` throughput with 1 and 2 workers, and a kill -9 / resume count.

Inputs: trajectories given as TOPOLOGY,TRAJECTORY (default: the real Martini 3 frames of the
repository's fixture, 2 proteins x 10 frames).  Each worker count runs ``--repeats`` times,
alternating, in a fresh output folder; frames/s = frames / wall time of the whole command
(cluster start and model loads included).  Then a 2-worker run is killed (``SIGKILL`` to its
whole process group) after ``--kill-after`` tasks are recorded and run again: the joined
trajectories must hold every requested frame once, in order, equal to an uninterrupted run.

    python benchmarks/batch_throughput.py --out benchmarks/results/batch_throughput.json
    python benchmarks/batch_throughput.py --inputs out/real_frames/test/*/elastic --frames-per-task 5
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import write_result

from openmm_herobm.batch import done_tasks

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "data" / "real_frames" / "test"


def batch_command(specs, out: Path, workers: int, frames_per_task: int, minimize: bool) -> list[str]:
    return ([sys.executable, "-m", "openmm_herobm.cli.main", "batch", *specs, "-o", str(out.resolve()), "--workers",
             str(workers), "--frames-per-task", str(frames_per_task), "--no-progress"]
            + ([] if minimize else ["--no-minimize"]))


def joined(out: Path):
    import mdtraj

    return {p.stem: mdtraj.load(str(p), top=str(p.with_suffix(".pdb"))).xyz for p in sorted(out.glob("*.dcd"))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", nargs="+", type=Path,
                    default=[FIXTURE / "bm5_2X9A_l_b_B" / "elastic", FIXTURE / "bm5_4IZ7_l_u_B" / "plain"],
                    help="folders holding md.gro + md.xtc")
    ap.add_argument("--frames-per-task", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--minimize", action="store_true", help="the full pipeline (default: --no-minimize)")
    ap.add_argument("--kill-after", type=int, default=2, help="tasks recorded before the kill")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    import mdtraj

    specs, n_frames = [], 0
    for folder in args.inputs:
        specs.append(f"{folder / 'md.gro'},{folder / 'md.xtc'}")
        n_frames += mdtraj.load(str(folder / "md.xtc"), top=str(folder / "md.gro")).n_frames
    env = dict(os.environ)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for workers in (1, 2):
                out = Path(tmp) / f"w{workers}_{repeat}"
                t = time.perf_counter()
                done = subprocess.run(batch_command(specs, out, workers, args.frames_per_task, args.minimize),
                                      capture_output=True, text=True, env=env)
                wall = time.perf_counter() - t
                if done.returncode != 0:
                    raise SystemExit(done.stdout + done.stderr)
                rows.setdefault(workers, []).append(wall)
                print(f"{workers} worker(s): {wall:.1f} s, {n_frames / wall:.2f} frames/s", file=sys.stderr)
        reference = joined(Path(tmp) / "w2_0")
        # kill -9 of the whole batch, then the same command
        out = Path(tmp) / "killed"
        command = batch_command(specs, out, 2, args.frames_per_task, args.minimize)
        run = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        manifest = out / "herobm_batch.jsonl"
        while run.poll() is None and not (manifest.exists() and len(done_tasks(manifest)) >= args.kill_after):
            time.sleep(0.1)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait()
        before = len(done_tasks(manifest))
        resumed = subprocess.run(command, capture_output=True, text=True, env=env)
        keys = done_tasks(manifest)
        result = joined(out)
        frames_out = sum(len(x) for x in result.values())
        same = all(np.abs(result[k] - reference[k]).max() < 1e-4 for k in reference)
    kill = {"tasks_done_before_kill": before, "resume_exit": resumed.returncode,
            "tasks_recorded_twice": len(keys) - len(set(keys)), "frames_expected": n_frames,
            "frames_written": frames_out, "same_as_uninterrupted": bool(same)}
    one, two = min(rows[1]), min(rows[2])
    lines = [f"{n_frames} frames ({len(specs)} trajectories), {args.frames_per_task} frames per task, "
             f"{'full pipeline' if args.minimize else '--no-minimize'}",
             "| workers | wall (s, best of %d) | frames/s |" % args.repeats, "|---|---|---|",
             f"| 1 | {one:.1f} | {n_frames / one:.2f} |", f"| 2 | {two:.1f} | {n_frames / two:.2f} |",
             f"kill -9 after {before} task(s), then the same command: {frames_out} of {n_frames} frames written, "
             f"{kill['tasks_recorded_twice']} task(s) recorded twice, identical to an uninterrupted run: {same}"]
    print("\n".join(lines))
    write_result(args.out, frames=n_frames, wall_s={str(k): v for k, v in rows.items()}, kill_resume=kill)
    return 0


if __name__ == "__main__":
    sys.exit(main())
