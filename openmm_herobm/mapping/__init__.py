"""Mappings: molecule YAML files, mapping sets, and their application to a system.

Import from here; each name's module (YAML, mdtraj) is loaded on first use.
"""

#: module -> the public names it defines, imported on first use
_MODULES = {"mapping_set": ("MappingSet", "available_mapping_sets"),
            "molecule": ("MoleculeMapping", "load_molecule_mapping", "parse_molecule_mapping"),
            "system": ("SystemMapping", "match_residue_atoms", "residue_label"),
            "hierarchy": ("bonds_from_structure", "check_structure_residue", "complete_hierarchy"),
            "vermouth_import": ("import_vermouth_map", "read_vermouth_map"),
            "forward": ("map_structure",),
            "deformation": ("BeadDeformation",)}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = [*_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
