"""Mappings: molecule YAML files, mapping sets, and their application to a system."""

from .mapping_set import MappingSet, available_mapping_sets
from .molecule import MoleculeMapping, load_molecule_mapping, parse_molecule_mapping
from .system import SystemMapping

__all__ = ["MappingSet", "MoleculeMapping", "SystemMapping", "available_mapping_sets",
           "load_molecule_mapping", "parse_molecule_mapping"]
