"""Many structures and trajectory frames, backmapped on Dask workers, resumable: ``herobm batch``.

    report = openmm_herobm.batch(["frames/*.gro", "md.gro,md.xtc@0:1000"], "out", minimize=False)

Inputs (strings):

* a structure file (PDB, GRO, mmCIF, .gz) -> ``OUTDIR/<stem>.pdb`` (with the full pipeline also
  ``<stem>.system.xml``, ``.state.xml``, ``.report.json``);
* a glob pattern (``"frames/*.gro"``) -> every match, sorted;
* ``TOPOLOGY,TRAJECTORY`` with an optional frame range ``@START:STOP[:STEP]`` -> blocks of
  ``frames_per_task`` frames across the workers, joined in frame order into ``OUTDIR/<stem>.dcd``
  over ``OUTDIR/<stem>.pdb`` (the first frame, with its companions); ``<stem>`` is the trajectory's
  stem, plus ``_START-STOP`` when a range is given.  With the full pipeline every block is
  protonated like the first one (its variants are passed on), so all frames have one topology.

Each task writes its outputs atomically and is then recorded, one JSON line, in
``OUTDIR/herobm_batch.jsonl`` (the manifest; its first line holds the options).  Rerunning the same
command skips what the manifest records as done, so after ``kill -9`` of the whole batch no frame
is lost or written twice: a task whose outputs were written but not recorded runs again and
replaces them.  A failing task is recorded with its one-line error and the batch goes on (the
failed ones run again on a rerun).  At the end: ``OUTDIR/herobm_batch_report.json`` and a short table.

Scheduling is Dask ``distributed``: by default an embedded ``LocalCluster`` of ``workers``
single-threaded worker processes (one per core); ``scheduler="tcp://host:8786"`` uses a running
cluster instead, e.g. one started by ``dask-jobqueue`` on SLURM/PBS (see the README).  Workers
apply the thread policy of :mod:`openmm_herobm.threads` with ``threads_per_worker`` threads.
"""

from __future__ import annotations

import glob
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import HeroBMError

MANIFEST = "herobm_batch.jsonl"
REPORT = "herobm_batch_report.json"
PARTS = ".herobm_parts"  # block trajectories before they are joined
STRUCTURE_SUFFIXES = (".pdb", ".gro", ".cif", ".mmcif", ".pdb.gz", ".gro.gz", ".cif.gz", ".mmcif.gz")
TRAJECTORY_SUFFIXES = (".xtc", ".dcd", ".trr")


@dataclass
class Task:
    """One unit of work: a structure, or a block of frames of a trajectory."""
    key: str  # unique in the batch: the manifest's name for it
    stem: str  # output name
    structure: str
    trajectory: str | None = None
    frames: tuple | None = None  # (start, stop, step) of the block, absolute frame numbers
    first: bool = True  # the block holding the input's first frame (writes OUTDIR/<stem>.pdb)

    @property
    def n_frames(self) -> int:
        if self.frames is None:
            return 1
        start, stop, step = self.frames
        return len(range(start, stop, step))


@dataclass
class BatchReport:
    output_dir: str
    tasks: int = 0
    done: int = 0
    skipped: int = 0  # done by an earlier run of the same batch
    failed: int = 0
    frames: int = 0  # frames backmapped in this run
    wall_s: float = 0.0
    workers: int = 0
    failures: list = field(default_factory=list)  # [{"task", "input", "error"}]
    written: list = field(default_factory=list)

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.wall_s if self.wall_s > 0 else 0.0

    def as_dict(self) -> dict:
        out = dict(self.__dict__)
        out["frames_per_s"] = round(self.frames_per_s, 4)
        return out

    def table(self) -> str:
        lines = [f"batch {self.output_dir}: {self.tasks} task(s) on {self.workers} worker(s)",
                 f"  done {self.done}, skipped (done before) {self.skipped}, failed {self.failed}",
                 f"  {self.frames} frame(s) in {self.wall_s:.1f} s ({self.frames_per_s:.2f} frames/s)"]
        for f in self.failures[:20]:
            lines.append(f"  FAILED {f['task']}: {f['error']}")
        if len(self.failures) > 20:
            lines.append(f"  ... and {len(self.failures) - 20} more failures (see {REPORT})")
        return "\n".join(lines)


# ---------------------------------------------------------------- planning (client side)
def plan(inputs: list[str], frames_per_task: int = 10) -> list[Task]:
    """The tasks of ``inputs`` (see the module docstring), in input order; raises HeroBMError with one
    line for an input that names nothing.  Inputs whose files share a name (``run1/md.xtc``,
    ``run2/md.xtc``) get the folders in their output name (``run1_md``)."""
    from .io import count_frames

    if frames_per_task < 1:
        raise HeroBMError(f"frames per task {frames_per_task}: give a whole number >= 1")
    sources: list[tuple] = []  # (structure, trajectory or None, (start, stop, step) or None, ranged)
    for spec in inputs:
        if "," in spec:
            sources.append(_trajectory_source(spec, count_frames))
            continue
        paths = sorted(glob.glob(spec)) if glob.has_magic(spec) else [spec]
        if not paths:
            raise HeroBMError(f"{spec}: no file matches this pattern")
        for path in paths:
            if not os.path.isfile(path):
                raise HeroBMError(f"{path}: file not found; check the path")
            if not path.lower().endswith(STRUCTURE_SUFFIXES):
                raise HeroBMError(f"{path}: not a structure file ({', '.join(STRUCTURE_SUFFIXES)}); give a "
                                  f"trajectory as TOPOLOGY,TRAJECTORY[@START:STOP[:STEP]]")
            sources.append((path, None, None, False))
    sources = list(dict.fromkeys(sources))  # an input given twice is one input
    stems = _stems(sources)
    tasks: list[Task] = []
    for (structure, trajectory, frames, _), stem in zip(sources, stems):
        if trajectory is None:
            tasks.append(Task(key=stem, stem=stem, structure=structure))
            continue
        start, stop, step = frames
        numbers = list(range(start, stop, step))
        for k in range(0, len(numbers), frames_per_task):
            block = numbers[k:k + frames_per_task]
            a, b = block[0], block[-1] + 1
            tasks.append(Task(key=f"{stem}[{a}:{b}:{step}]", stem=stem, structure=structure,
                              trajectory=trajectory, frames=(a, b, step), first=k == 0))
    return tasks


def _stems(sources: list[tuple]) -> list[str]:
    """Output names: the file's stem (+ ``_START-STOP`` for a frame range), with as many of its
    folders in front as it takes to tell inputs apart."""
    def name(source, depth):
        structure, trajectory, frames, ranged = source
        path = os.path.abspath(trajectory or structure)
        parts = Path(path).parts
        stem = "_".join(list(parts[max(len(parts) - depth, 1):-1]) + [_stem(path)])
        return f"{stem}_{frames[0]}-{frames[1]}" if ranged else stem

    stems = [name(s, 1) for s in sources]
    for depth in range(2, 64):
        clash = {x for x in stems if stems.count(x) > 1}
        if not clash:
            return stems
        stems = [name(s, depth) if x in clash else x for s, x in zip(sources, stems)]
    raise HeroBMError(f"inputs {sorted(clash)} cannot be told apart by their paths; give them in separate batches")


def _stem(path: str) -> str:
    name = os.path.basename(path)
    if name.endswith(".gz"):
        name = name[:-3]
    return os.path.splitext(name)[0]


def _trajectory_source(spec: str, count_frames) -> tuple:
    structure, _, rest = spec.partition(",")
    trajectory, _, selection = rest.partition("@")
    for path in (structure, trajectory):
        if not os.path.isfile(path):
            raise HeroBMError(f"{spec}: {path} not found; give TOPOLOGY,TRAJECTORY[@START:STOP[:STEP]]")
    if not trajectory.lower().endswith(TRAJECTORY_SUFFIXES):
        raise HeroBMError(f"{spec}: {trajectory} is not a trajectory ({', '.join(TRAJECTORY_SUFFIXES)})")
    n = count_frames(trajectory)
    start, stop, step = 0, n, 1
    if selection:
        try:
            parts = [int(p) if p else None for p in selection.split(":")]
            if len(parts) not in (2, 3):
                raise ValueError
        except ValueError:
            raise HeroBMError(f"{spec}: frame range {selection!r}: write START:STOP or START:STOP:STEP") from None
        start, stop, step = slice(*parts).indices(n)
        if step < 1:
            raise HeroBMError(f"{spec}: frame range {selection!r}: the step must be >= 1")
    if not range(start, stop, step):
        raise HeroBMError(f"{spec}: the frame range selects no frame (the trajectory has {n})")
    return structure, trajectory, (start, stop, step), bool(selection)


# ---------------------------------------------------------------- the manifest
def manifest_records(path: Path) -> list[dict]:
    """Every complete line of a manifest, in order (a line cut short by a kill is skipped)."""
    records = []
    if not Path(path).exists():
        return records
    with open(path) as f:
        for line in f:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # the last line of a killed run
    return records


def done_tasks(path: Path) -> list[str]:
    """The task of every "done" line, in order: a task recorded twice shows twice."""
    return [r["task"] for r in manifest_records(path) if r.get("status") == "done" and "task" in r]


def read_manifest(path: Path) -> tuple[dict | None, dict]:
    """(options line, {task key: its last record})."""
    header, records = None, {}
    for record in manifest_records(path):
        if "options" in record:
            header = header or record
        elif "task" in record:
            records[record["task"]] = record
    return header, records


def _append(path: Path, record: dict) -> None:
    # one write of one line, flushed to disk before the next task is recorded
    with open(path, "a") as f:
        f.write(json.dumps(record, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------- the worker side
_WORKER: dict = {}


def run_task(task: Task, output_dir: str, model, options: dict, minimize: bool, threads: int,
             variants=None) -> dict:
    """Backmap (and, with ``minimize``, refine) one task on a worker; never raises: a failure is
    returned as a record with its one-line error."""
    t0 = time.perf_counter()
    record = {"task": task.key, "input": task.structure if task.trajectory is None
              else f"{task.structure},{task.trajectory}", "frames": task.frames, "n_frames": task.n_frames}
    try:
        from .threads import configure

        if _WORKER.get("threads") != threads:
            configure(threads)
            _WORKER["threads"] = threads
        # the model by name: backmap loads what the task needs once per worker process
        written, used = _run(task, Path(output_dir), model, options, minimize, variants)
        record.update(status="done", outputs=written)
        if used is not None and task.first:
            record["variants"] = used
    except HeroBMError as exc:
        record.update(status="failed", error=str(exc))
    except Exception as exc:  # a bug or a library error: recorded, the batch goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    record["seconds"] = round(time.perf_counter() - t0, 3)
    return record


def _run(task: Task, out: Path, model, options: dict, minimize: bool, variants):
    import numpy as np

    from .io import atomic_output, load_frames, load_input, make_whole

    if task.trajectory is None:
        cg, _ = load_input(task.structure)
    else:
        cg = make_whole(load_frames(task.structure, task.trajectory, *task.frames))
    # the block holding the first frame writes OUTDIR/<stem>.pdb (+ the pipeline's companions)
    structure = out / f"{task.stem}.pdb" if task.first else None
    if minimize:
        from .pipeline import backmap_and_simulate

        result = backmap_and_simulate(cg, model, output=structure, all_frames=task.trajectory is not None,
                                      variants=variants, **options)
        written, xyz, used = list(result.written), result.frames, result.variants
    else:
        from .backmapping import backmap

        result = backmap(cg, model, output=structure, **options)
        written, xyz, used = list(result.written), result.trajectory.xyz, None
    if task.trajectory is not None:
        part = out / PARTS / task.stem / f"{task.frames[0]:09d}.npy"
        part.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(part) as tmp:
            np.save(tmp, np.asarray(xyz, dtype=np.float32))
        written.append(str(part))
    return written, used


# ---------------------------------------------------------------- joining blocks
def join(tasks: list[Task], out: Path) -> str:
    """Concatenate the block trajectories of one input in frame order into ``OUTDIR/<stem>.dcd``
    (atomically), over the topology of ``OUTDIR/<stem>.pdb``; the parts are removed after."""
    import shutil

    import mdtraj
    import numpy as np

    from .io import atomic_output

    stem = tasks[0].stem
    top = mdtraj.load(str(out / f"{stem}.pdb")).topology
    target = out / f"{stem}.dcd"
    with atomic_output(target) as tmp:
        with mdtraj.formats.DCDTrajectoryFile(tmp, "w", force_overwrite=True) as f:
            for t in sorted(tasks, key=lambda t: t.frames[0]):
                xyz = np.load(out / PARTS / stem / f"{t.frames[0]:09d}.npy")
                if xyz.shape != (t.n_frames, top.n_atoms, 3):
                    raise HeroBMError(f"{t.key}: its block holds {xyz.shape[0]} frame(s) of {xyz.shape[1]} atoms, "
                                      f"not {t.n_frames} of {top.n_atoms} (another topology?); delete "
                                      f"{out / PARTS / stem} and its lines in {out / MANIFEST}, and rerun")
                f.write(xyz * 10.0)  # DCD is in A
    shutil.rmtree(out / PARTS / stem, ignore_errors=True)
    return str(target)


# ---------------------------------------------------------------- the batch
def batch(inputs, output_dir, *, model=None, minimize: bool = True, workers: int | None = None,
          scheduler: str | None = None, frames_per_task: int = 10, threads_per_worker: int = 1,
          progress: bool = True, **options) -> BatchReport:
    """Backmap every input (files, globs, ``TOPOLOGY,TRAJECTORY[@START:STOP[:STEP]]``) into
    ``output_dir`` on Dask workers; resumable (see the module docstring).

    ``model``: shipped model names or ``.pt`` paths, one or a list (each worker loads them once;
    default: the shipped models); ``minimize``:
    the full pipeline (:func:`~openmm_herobm.backmap_and_simulate`, whose keyword arguments
    ``options`` may hold) or the model's heavy atoms only (:func:`~openmm_herobm.backmap`);
    ``workers``: worker processes of the embedded LocalCluster (default: one per core);
    ``scheduler``: address of a running Dask scheduler instead.
    """
    from .threads import available_cores

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    inputs = [os.fspath(i) for i in inputs]
    if isinstance(model, (str, os.PathLike)):
        model = [model]
    if model is not None and not all(isinstance(m, (str, os.PathLike)) for m in model):
        raise HeroBMError("batch: give models as shipped names or .pt paths (each worker loads them)")
    model = None if model is None else [os.fspath(m) for m in model]
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = plan(inputs, frames_per_task)
    fingerprint = {"minimize": minimize, "model": model,
                   "options": json.loads(json.dumps(options, sort_keys=True, default=str))}
    manifest = out / MANIFEST
    header, records = read_manifest(manifest)
    if header is not None and header["options"] != fingerprint:
        raise HeroBMError(f"{out}: holds a batch run with other options ({header['options']}); give another "
                          f"output folder, or delete {manifest} to start over")
    if header is None:
        _append(manifest, {"options": fingerprint, "created": time.strftime("%Y-%m-%d %H:%M:%S")})
    report = BatchReport(output_dir=str(out), tasks=len(tasks))
    done = {k for k, r in records.items() if r.get("status") == "done"}
    todo = [t for t in tasks if t.key not in done]
    report.skipped = len(tasks) - len(todo)
    t0 = time.perf_counter()
    if todo:
        n_workers = workers or min(available_cores(), len(todo))
        _run_on_dask(todo, out, model, options, minimize, n_workers, scheduler, threads_per_worker, progress,
                     records, manifest, report)
    # join every trajectory input whose blocks are all done (this run or an earlier one)
    _, records = read_manifest(manifest)
    by_stem: dict[str, list[Task]] = {}
    for t in tasks:
        if t.trajectory is not None:
            by_stem.setdefault(t.stem, []).append(t)
    for stem, blocks in by_stem.items():
        if all(records.get(t.key, {}).get("status") == "done" for t in blocks):
            if records.get(f"{stem}:join", {}).get("status") != "done":
                try:
                    report.written.append(join(blocks, out))
                    _append(manifest, {"task": f"{stem}:join", "status": "done", "outputs": [f"{stem}.dcd"]})
                except HeroBMError as exc:
                    report.failures.append({"task": f"{stem}:join", "input": stem, "error": str(exc)})
                    report.failed += 1
    report.wall_s = round(time.perf_counter() - t0, 3)
    from .io import atomic_output

    with atomic_output(out / REPORT) as tmp:  # rewritten whole by every run; the manifest is the record
        Path(tmp).write_text(json.dumps(report.as_dict(), indent=1, default=str) + "\n")
    return report


def _run_on_dask(todo, out, model, options, minimize, n_workers, scheduler, threads, progress, records,
                 manifest, report) -> None:
    import logging

    from tqdm import tqdm

    # worker processes inherit this environment: single-threaded pools that sleep when idle
    from .threads import configure

    configure(threads)
    from distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler is None:
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=logging.ERROR)
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout="30s")
        except OSError as exc:
            raise HeroBMError(f"--scheduler {scheduler}: cannot connect ({exc}); start the scheduler first "
                              f"(dask scheduler, or dask-jobqueue)") from None
    report.workers = len(client.scheduler_info().get("workers", {})) or n_workers
    try:
        futures, first = {}, {}
        # a trajectory refined by the full pipeline: its later blocks take the protonation of its
        # first block (one topology for every frame), from that block's future or an earlier run
        for t in sorted(todo, key=lambda t: not t.first):  # first blocks first
            variants = None
            if minimize and t.trajectory is not None and not t.first:
                variants = (client.submit(_variants_of, first[t.stem], pure=False) if t.stem in first
                            else _recorded_variants(records, t.stem))
            future = client.submit(run_task, t, str(out), model, options, minimize, threads, variants,
                                   key=f"herobm-{t.key}", pure=False)
            futures[future] = t
            if minimize and t.trajectory is not None and t.first:
                first[t.stem] = future
        bar = tqdm(total=sum(t.n_frames for t in todo), disable=not progress, unit="frame", desc="batch",
                   smoothing=0.1)
        for future in as_completed(futures):
            task = futures[future]
            try:
                record = future.result()
            except Exception as exc:  # its first block failed (_variants_of), or the worker died
                error = str(exc) if isinstance(exc, HeroBMError) else f"worker lost: {type(exc).__name__}: {exc}"
                record = {"task": task.key, "input": task.structure, "frames": task.frames, "status": "failed",
                          "error": error}
            _append(manifest, record)
            if record["status"] == "done":
                report.done += 1
                report.frames += task.n_frames
                report.written.extend(record.get("outputs", []))
            else:
                report.failed += 1
                report.failures.append({"task": task.key, "input": record["input"], "error": record["error"]})
            bar.update(task.n_frames)
            bar.set_postfix(done=report.done, failed=report.failed)
        bar.close()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def _variants_of(record: dict):
    if record.get("status") != "done":
        raise HeroBMError(f"{record['task']} failed, so its trajectory's other blocks cannot take its "
                          f"protonation: {record.get('error')}")
    return record.get("variants")


def _recorded_variants(records: dict, stem: str):
    for key, record in records.items():
        if key.startswith(f"{stem}[") and record.get("status") == "done" and "variants" in record:
            return record["variants"]
    return None
