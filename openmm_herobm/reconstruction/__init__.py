"""Hierarchical placement of atoms from per-bead vectors (torch, scriptable)."""

from .hierarchical import gather_atoms, place_slots, reconstruct, recenter

__all__ = ["gather_atoms", "place_slots", "reconstruct", "recenter"]
