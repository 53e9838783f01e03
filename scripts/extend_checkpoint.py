#!/usr/bin/env python
"""Start a model for a grown mapping set from a checkpoint trained on a smaller one (fine-tuning).

The network's only part that depends on the mapping set is the bead-type embedding (one row per
(CG residue, bead), ``MappingSet.bead_types``); the slot tables are the mapping's own.  This
writes a checkpoint (``{"model": state_dict}``, for the training config's ``init:``) of the
network built for ``--mapping`` with:

* every other weight copied from ``--checkpoint``;
* the embedding row of a bead type the old set had copied as it was;
* a new bead type's embedding row copied from a *donor*: a tail bead's from a known lipid with the same
  tails (``TAIL_DONORS``: SAPC's C5A is PAPS's), else the same bead name in the donor molecule of its
  head (``DONORS``: a PC takes POPC's, a PS PAPS's, DPSM SSM's ...), else in POPC or DLPE, else the same
  bead with the other chain letter (a DPPC C2A takes POPC's C2B); beads without one (PG's GL0)
  keep the fresh initialisation; its slot-mixing row (``network.slot_mix``, per bead type) too
  where the donor's slots are the same (anchors and levels), else fresh.

    python scripts/extend_checkpoint.py --checkpoint /work/runs/martini3_lipids_v2/best.pt \\
        --old-mapping OLD_MAPPINGS_FOLDER --mapping martini3_lipids -o /work/runs/init_v3.pt
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from openmm_herobm.mapping import MappingSet
from openmm_herobm.model.config import ModelConfig, build_model

#: new CG residue -> old CG residue whose beads it starts from (by head group)
DONORS = {"PC": "POPC", "PE": "POPE", "PS": "PAPS", "PG": "POPG", "PA": "POPA", "SM": "SSM"}  # POPG, POPA: from v3
#: tail beads (C1A ... C5B) of a new lipid first from a known one with the same tails (CG name's first
#: three letters): stearoyl-arachidonoyl from the palmitoyl-arachidonoyl lipids (the same bead names),
#: dilauroyl from DLPC (M3 v1's dilauroyl-PC), palmitoyl-linoleoyl from PIPC / PIPE; dilinoleoyl (DIPC and
#: the lipidome's DLPS/DLPG/DLPA) from DLPE, palmitoyl-arachidonoyl PE/PG/PA from PAPC / PAPS
TAIL_DONORS = {"SAP": ("PAPS", "PAPC"), "DUP": ("DLPC",), "PLP": ("PIPE", "PIPC"), "DIP": ("DLPE",),
               "DLP": ("DLPE",), "PAP": ("PAPC", "PAPS")}


def donor_molecule(cg_name: str) -> str:
    if cg_name.endswith("SM"):
        return DONORS["SM"]
    return DONORS.get(cg_name[2:], "POPC")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", required=True, type=Path, help="trained checkpoint (best.pt of herobm train)")
    ap.add_argument("--old-mapping", required=True, help="the mapping set (folder) that checkpoint was trained with")
    ap.add_argument("--mapping", required=True, help="the grown mapping set (name or folder)")
    ap.add_argument("-o", "--output", required=True, type=Path)
    args = ap.parse_args(argv)

    state = torch.load(args.checkpoint, weights_only=True)
    config = state["config"] if isinstance(state["config"], dict) else json.loads(state["config"])
    model_config = ModelConfig(**config["model"])
    old_set, new_set = MappingSet.load(args.old_mapping), MappingSet.load(args.mapping)
    old = build_model(old_set, model_config)
    old.load_state_dict(state["model"])
    new = build_model(new_set, model_config)
    if old_set.max_slots != new_set.max_slots:
        raise SystemExit(f"max slots differ ({old_set.max_slots} -> {new_set.max_slots}): the output layers change")
    new_state = new.state_dict()
    old_state = old.state_dict()
    copied = 0
    for key, value in old_state.items():
        if key.startswith("slot_") or key in ("network.embed.weight", "network.slot_mix.weight"):
            continue
        if new_state[key].shape != value.shape:
            raise SystemExit(f"{key}: shape {tuple(value.shape)} -> {tuple(new_state[key].shape)}")
        new_state[key] = value.clone()
        copied += 1
    old_embed, embed = old_state["network.embed.weight"], new_state["network.embed.weight"].clone()
    old_mix, mix = old_state["network.slot_mix.weight"], new_state["network.slot_mix.weight"].clone()
    known = {(t.residue, t.bead): t for t in old_set.bead_types}
    kept, donated, fresh, mixes = 0, {}, [], 0

    def same_slots(a, b) -> bool:
        return (a.slot_anchor == b.slot_anchor).all() and (a.slot_level == b.slot_level).all()

    for t in new_set.bead_types:
        key = (t.residue, t.bead)
        if key in known:
            if not same_slots(known[key], t):
                raise SystemExit(f"{key}: its slots changed; this is not the mapping the checkpoint was trained with")
            embed[t.index], mix[t.index] = old_embed[known[key].index], old_mix[known[key].index]
            kept += 1
            continue
        donor = donor_molecule(t.residue)
        swapped = t.bead[:-1] + {"A": "B", "B": "A"}.get(t.bead[-1], t.bead[-1])
        tail = t.bead[0] in "CD" and t.bead[-1] in "AB" and t.bead[1:-1].isdigit()
        tails = [(m, t.bead) for m in TAIL_DONORS.get(t.residue[:3], ())] if tail else []
        for candidate in (*tails, (donor, t.bead), ("POPC", t.bead), ("DLPE", t.bead), (donor, swapped),
                          ("POPC", swapped)):
            if candidate in known:
                embed[t.index] = old_embed[known[candidate].index]
                if same_slots(known[candidate], t):  # the slot outputs mean the same atoms' vectors
                    mix[t.index] = old_mix[known[candidate].index]
                    mixes += 1
                donated[key] = candidate
                break
        else:
            fresh.append(key)
    new_state["network.slot_mix.weight"] = mix
    new_state["network.embed.weight"] = embed
    new.load_state_dict(new_state)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": new.state_dict()}, args.output)
    print(f"{copied} weights copied; embedding: {kept} bead types kept, {len(donated)} from donors, "
          f"{len(fresh)} fresh {sorted(set(b for _, b in fresh))}; slot mixing copied for {kept + mixes}; "
          f"wrote {args.output}")


if __name__ == "__main__":
    main()
