"""Backmap every frame of a CG trajectory: one topology, one refined all-atom frame per CG frame.

    python examples/backmap_trajectory.py CG.pdb CG.xtc OUT.pdb OUT.dcd

Without arguments, a 5-frame demo trajectory is made from the bundled ubiquitin beads
(small random displacements, as between frames of a CG simulation).
"""

import sys
import tempfile
from pathlib import Path

import mdtraj
import numpy as np

import openmm_herobm as hb

here = Path(__file__).resolve().parent
if len(sys.argv) == 5:
    cg, traj, out, traj_out = sys.argv[1:]
else:
    cg = str(here / "data" / "1ubq_martinize2_cg.pdb")
    frames = mdtraj.load(cg)
    rng = np.random.default_rng(0)
    xyz = frames.xyz + rng.normal(0, 0.01, (5,) + frames.xyz.shape[1:]).astype(np.float32)  # 0.1 A per frame
    traj = str(Path(tempfile.mkdtemp()) / "cg.xtc")
    mdtraj.Trajectory(xyz, frames.topology).save_xtc(traj)
    out, traj_out = "1ubq_frames.pdb", "1ubq_frames.dcd"

# heavy atoms only, fast (about 10,000+ beads/s): the model alone
raw = hb.backmap(cg, trajectory=traj)
print(f"model: {raw.trajectory.n_frames} frames x {raw.trajectory.n_atoms} heavy atoms")

# every frame refined (hydrogens, restraint, minimisation) into one topology
result = hb.backmap_and_simulate(cg, trajectory=traj, output=out, trajectory_output=traj_out, progress=True)
print("timings (s):", {k: round(v, 2) for k, v in result.timings.items()})
print("wrote", ", ".join(result.written))
