"""Fidelity restraint through openmm-torch: keep the refined structure true to its CG input.

The energy is ``k/2 * sum_b max(0, |W x - b| - t_b)^2``: the current heavy atoms ``x`` are
forward-mapped with the mapping's bead weights ``W`` (the same definition the CG input was made
with) and each mapped bead is pulled towards its input position ``b`` once it is further than
its tolerance ``t_b``.  Atoms may move freely as long as their beads stay near, so the force
field fixes local geometry without drifting away from what the CG simulation said; the
flat bottom lets it reach chemistry that the beads of a CG *simulation* frame (which no real
structure maps onto exactly) would otherwise forbid.  The strength is the context parameter
``herobm_k`` (kJ/mol/nm^2), changeable during a run (e.g. released after equilibration).
"""

from __future__ import annotations

import numpy as np
import torch

PARAMETER = "herobm_k"


class BeadRestraint(torch.nn.Module):
    """TorchScript-able energy ``k/2 sum_b |sum_a w_ba x_a - b|^2`` in kJ/mol; positions in nm."""

    def __init__(self, rows: np.ndarray, cols: np.ndarray, vals: np.ndarray, targets_nm: np.ndarray,
                 tolerance_nm: np.ndarray | None = None):
        super().__init__()
        self.register_buffer("rows", torch.as_tensor(rows, dtype=torch.long))
        self.register_buffer("cols", torch.as_tensor(cols, dtype=torch.long))
        self.register_buffer("vals", torch.as_tensor(vals, dtype=torch.float64))
        self.register_buffer("targets", torch.as_tensor(targets_nm, dtype=torch.float64))
        tol = np.zeros(len(targets_nm)) if tolerance_nm is None else np.asarray(tolerance_nm, np.float64)
        self.register_buffer("tolerance", torch.as_tensor(tol, dtype=torch.float64))

    def forward(self, positions: torch.Tensor, herobm_k: torch.Tensor) -> torch.Tensor:
        pos = positions.to(torch.float64)
        mapped = torch.zeros_like(self.targets).index_add_(0, self.rows, pos[self.cols] * self.vals.unsqueeze(1))
        # sqrt(d^2 + eps): finite gradient on a bead that sits exactly on its target
        distance = ((mapped - self.targets).pow(2).sum(1) + 1e-12).sqrt()
        excess = torch.clamp(distance - self.tolerance, min=0.0)
        return 0.5 * herobm_k.to(torch.float64) * excess.pow(2).sum()


def bead_restraint_force(weights, atom_index: np.ndarray, targets_nm: np.ndarray, k: float,
                         tolerance_nm: np.ndarray | None = None):
    """An ``openmmtorch.TorchForce`` restraining beads of the atoms ``atom_index``.

    ``weights`` is the sparse ``(n_beads, n_heavy)`` matrix of :class:`SystemMapping`;
    ``atom_index[j]`` is the particle index of heavy atom ``j`` in the OpenMM system, or -1
    for an atom the system does not have (its beads are then not restrained).
    ``tolerance_nm`` ``(n_beads,)``: the flat bottom of each bead (default 0, harmonic).
    """
    TorchForce = _torch_force_class()
    coo = weights.tocoo()
    particle = atom_index[coo.col]
    complete = np.ones(weights.shape[0], bool)
    complete[coo.row[particle < 0]] = False
    keep = complete[coo.row]
    beads = np.flatnonzero(complete)
    row = np.searchsorted(beads, coo.row[keep])
    tolerance = None if tolerance_nm is None else np.asarray(tolerance_nm, np.float64)[beads]
    module = torch.jit.script(BeadRestraint(row, particle[keep], coo.data[keep], targets_nm[beads], tolerance))
    force = TorchForce(module)
    force.addGlobalParameter(PARAMETER, float(k))
    force.setName("HEroBM bead restraint")
    return force


def _torch_force_class():
    """``openmmtorch.TorchForce``, imported without the ``simtk.openmm`` deprecation message.

    The SWIG wrapper of openmm-torch (acellera-openmmtorch 1.10) runs ``import simtk.openmm``,
    whose compatibility shim logs "importing 'simtk.openmm' is deprecated" on every run.  The
    shim is only ``from openmm import *``: registering ``openmm`` itself under the old names
    first gives the wrapper the same classes and never runs the shim.
    """
    import sys

    import openmm
    import openmm.app

    if "simtk.openmm" not in sys.modules:
        try:
            import simtk  # its __init__ only imports openmm and openmm.unit (no message)
        except ImportError:  # an OpenMM without the shim: nothing imports it
            simtk = None
        if simtk is not None:
            sys.modules["simtk.openmm"] = openmm
            sys.modules["simtk.openmm.app"] = openmm.app
            simtk.openmm = openmm
    from openmmtorch import TorchForce

    return TorchForce
