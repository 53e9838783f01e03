"""Evaluation of backmapped structures (RMSD, geometry, chirality, cis peptides).

Import from here; mdtraj and scipy are loaded on first use.
"""

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use
_MODULES = {"metrics": ("CHIRALITY_CHECKS", "evaluate", "evaluate_files", "format_report")}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = _names
