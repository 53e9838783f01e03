"""Resolution exchange on a real protein: a Martini 3 frame -> HEroBM all-atom start -> replicas.

    python examples/exchange_protein.py -o rex_out [--lambdas 0.994 0.996 0.998 1.0] [--iterations 150] [--steps 50]

The protein is martinize2's bm5_2X9A_l_b_B (61 residues, three tryptophans whose SC3 beads are
Martini virtual sites, a disulfide; a test fixture).  A frame of its Martini 3 simulation
(vacuum, as in ``resolution_cycle.py``) is backmapped with HEroBM (``to_all_atom``: hydrogens,
minimised, Amber14 + OBC2 implicit solvent), and the all-atom structure starts every replica of
``herobm exchange`` (U_k = l_k U_AA + (1 - l_k) U_CG(M x), Liu & Voth style; the l = 1 replica
samples the all-atom Boltzmann distribution exactly; docs/resolution-exchange.md).  Writes
``OUT/exchange.dcd`` (the all-atom state, one frame per iteration), ``OUT/exchange.report.json``
(acceptance per neighbour pair, round trips, timings), ``OUT/exchange.npz`` (the checkpoint:
running the same command again continues) and the config it ran, ``OUT/exchange.yaml``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import yaml
from openmm import app

from openmm_herobm.exchange import run_exchange, to_all_atom
from openmm_herobm.martini import MartiniTopFile

HERE = Path(__file__).resolve().parent
DATA = HERE.parent / "tests" / "data"
TOP = DATA / "exchange" / "protein_vacuum.top"
START = DATA / "real_frames" / "test" / "bm5_2X9A_l_b_B" / "plain" / "md.gro"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--out", type=Path, default=Path("rex_out"))
    # U_CG(M x) of all-atom structures is ~1e5 kJ/mol here (stiff Martini side-chain bonds at mapped
    # beads): neighbouring states must differ by ~0.002 in l for swaps to be accepted
    parser.add_argument("--lambdas", type=float, nargs="+", default=[0.994, 0.996, 0.998, 1.0])
    parser.add_argument("--iterations", type=int, default=150)
    parser.add_argument("--steps", type=int, default=50, help="2 fs steps per replica between swaps")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    start = args.out / "aa_start.pdb"
    if not start.exists():  # the HEroBM start, once (a rerun resumes the exchange from its checkpoint)
        import resolution_cycle as cycle  # noqa: E402 (the CG side of the serial example)

        top = MartiniTopFile(TOP)
        cg = cycle.cg_simulation(top, app.GromacsGroFile(str(START)).getPositions())
        cg.step(100)
        aa = to_all_atom(cg, platform="CPU")
        state = aa.context.getState(getPositions=True)
        with open(start, "w") as handle:
            app.PDBFile.writeFile(aa.topology, state.getPositions(), handle)
    backmapped = time.perf_counter() - t0
    config = {"structure": str(start.resolve()), "martini": str(TOP), "forcefield": "amber14-all.xml",
              "solvent": "implicit", "lambdas": args.lambdas, "steps": args.steps, "iterations": args.iterations,
              "platform": "CPU", "checkpoint_every": 10, "checkpoint": "exchange.npz",
              "report": "exchange.report.json", "trajectory": "exchange.dcd"}
    path = args.out / "exchange.yaml"
    path.write_text(yaml.safe_dump(config))
    report = run_exchange(path)
    report["seconds_backmap"] = backmapped
    report["seconds_total"] = time.perf_counter() - t0
    print(json.dumps({k: report[k] for k in ("iterations", "acceptance", "round_trips", "samples",
                                             "seconds_backmap", "seconds_this_run", "seconds_total")}, indent=1))
    return report


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(HERE))
    main()
