"""Atoms from per-bead vectors: hierarchical placement (torch, scriptable) and the geometric fit.

Import from here; each name's module (torch, scipy) is loaded on first use.
``least_squares`` (vectorised bond/angle/dihedral terms and the sparse solver) and
``protein_geometry`` (ideal amino-acid geometry, Ramachandran and rotamer statistics) are
public as namespaces.
"""

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use (a module's own name: the module itself)
_MODULES = {"hierarchical": ("gather_atoms", "place_slots", "reconstruct", "recenter"),
            "geometric_fit": ("GeometricFit", "RAMA_ALLOWED"),
            "protein_fit": ("ProteinFit",),
            "lipid_fit": ("LipidFit",),
            "lipid_frames": ("LIPID_FRAMES", "LipidFrameRegression", "LipidFrames", "MoleculeFrames", "frame_groups",
                             "local_frames"),
            "protein_geometry": ("PEPTIDE_LINK_MAX", "RAMA_CLASSES", "RamachandranPotential", "rama_class",
                                 "protein_geometry"),
            "least_squares": ("least_squares",),
            "side_chain_library": ("EXTRA_FILE", "NEIGHBOURS", "ResidueLibrary", "SideChainBlend", "SideChainLibrary",
                                   "residue_frames", "side_chain_groups")}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = _names
