"""From the beads of a CG *simulation* back to beads a real structure can have.

Martini 3's bonded parameters are not the distances between the heavy-atom centres that the
mapping defines: they come from centres of geometry with hydrogens, and rings are built wider
than their atoms (shape and volume).  In a Martini 3 frame an ALA SC1 sits 2.70 A from its BB
(mapped structures: 2.16), a PHE ring has 3.4 A sides (mapped: 2.4).  :class:`BeadDeformation`
undoes that systematic part: every edge of a residue's bead tree (``scripts/build_bead_deformation.py``
measured them on the training chains' Martini 3 MD) is scaled by ``(mapped / MD) ** alpha``,
children carried along with their parent.  ``alpha`` is measured per frame from the edges that
tell the two apart (0: the beads look mapped, nothing changes; 1: a Martini 3 frame), so mapped
structures and simulation frames both pass through unharmed.  The thermal part of the
deformation is left to the fit (beads are soft targets there).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

TABLES = {name: Path(__file__).with_name(f"deformation_{name}.json") for name in ("martini3", "martini3_lipids")}
# edges that tell a simulation frame from a mapped structure: stiff in both, far apart
TELL_MIN_SHIFT, TELL_MAX_SD = 0.25, 0.25  # A
# the measured likeness has noise (mapped structures: 0-0.04, simulation frames: 0.96-1.0):
# below DEAD it is 0 (mapped beads stay exactly as given), above 1 - DEAD it is 1
DEAD = 0.1


@lru_cache(maxsize=None)
def deformation_table(mapping_set: str) -> dict | None:
    path = TABLES.get(mapping_set)
    return json.loads(path.read_text())["residues"] if path is not None and path.exists() else None


class BeadDeformation:
    """The correction for one :class:`~openmm_herobm.mapping.SystemMapping` (bead rows in its order)."""

    def __init__(self, system, table: dict | None = None):
        table = deformation_table(system.mapping_set.name) if table is None else table
        parent, child, factor, depth, mapped, md, tell = [], [], [], [], [], [], []
        for res in (system.residues if table else ()):
            entry = table.get(res.mapping.cg_residue_name) or table.get(res.mapping.name)
            if entry is None or list(res.mapping.beads) != entry["beads"]:
                continue
            row = dict(zip(res.mapping.beads, res.beads))
            level = {entry["beads"][0]: 0}
            for e in entry["edges"]:
                level[e["child"]] = level[e["parent"]] + 1
                parent.append(row[e["parent"]])
                child.append(row[e["child"]])
                factor.append(e["mapped"] / e["md"])
                depth.append(level[e["child"]])
                mapped.append(e["mapped"])
                md.append(e["md"])
                tell.append(abs(e["md"] - e["mapped"]) > TELL_MIN_SHIFT
                            and max(e["mapped_sd"], e["md_sd"]) < TELL_MAX_SD)
        self.parent, self.child = np.array(parent, np.int64), np.array(child, np.int64)
        self.factor, self.depth = np.array(factor), np.array(depth, np.int64)
        self.mapped, self.md, self.tell = np.array(mapped), np.array(md), np.array(tell, bool)
        self.empty = not len(parent)

    def alpha(self, beads: np.ndarray) -> float:
        """How much ``beads`` ``(n_beads, 3)`` (A) look like a Martini 3 simulation frame, in [0, 1]:
        the least-squares position of the telling edges' lengths between mapped and MD means."""
        if self.empty or not self.tell.any():
            return 0.0
        p, c = self.parent[self.tell], self.child[self.tell]
        d = np.linalg.norm(beads[c] - beads[p], axis=1)
        shift = self.md[self.tell] - self.mapped[self.tell]
        raw = ((d - self.mapped[self.tell]) * shift).sum() / (shift * shift).sum()
        return float(np.clip((raw - DEAD) / (1.0 - 2.0 * DEAD), 0.0, 1.0))

    def __call__(self, beads: np.ndarray, alpha: float | None = None) -> tuple[np.ndarray, float]:
        """(corrected copy of ``beads`` ``(n_beads, 3)``, the alpha used); ``alpha`` None: measured."""
        a = self.alpha(beads) if alpha is None else float(alpha)
        if self.empty or a == 0.0:
            return np.array(beads, copy=True), a
        x = np.array(beads, np.float64)
        out = x.copy()
        scale = self.factor ** a
        for level in range(1, int(self.depth.max()) + 1):  # parents are placed before their children
            on = self.depth == level
            out[self.child[on]] = out[self.parent[on]] + (x[self.child[on]] - x[self.parent[on]]) * scale[on, None]
        return out.astype(np.asarray(beads).dtype), a
