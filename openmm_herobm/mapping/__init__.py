"""Mappings: molecule YAML files, mapping sets, and their application to a system.

Import from here; each name's module (YAML, mdtraj) is loaded on first use.
"""

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use
_MODULES = {"mapping_set": ("MappingSet", "available_mapping_sets"),
            "molecule": ("MoleculeMapping", "load_molecule_mapping", "parse_molecule_mapping"),
            "system": ("SystemMapping", "match_residue_atoms", "residue_label"),
            "hierarchy": ("bonds_from_structure", "check_structure_residue", "complete_hierarchy"),
            "vermouth_import": ("import_vermouth_map", "read_vermouth_map"),
            "forward": ("map_structure",),
            "deformation": ("BeadDeformation",)}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = _names
