"""Structure and trajectory input/output.

``readers`` (PDB, GRO, mmCIF, XTC, DCD, TRR in, checked), ``pbc`` (molecules made whole),
``writers`` (every format out, atomically), ``files`` (output paths checked before work,
temporaries committed together), ``common`` (what they share).  Import from here: the
readers and writers load mdtraj and OpenMM on first use, so checking output paths does not.
"""

from ..faces import lazy_face
from .files import TEMP_PREFIX, atomic_output, check_output_folder, check_outputs, output_files

#: module -> the public names it defines, imported on first use
_MODULES = {"common": ("STRUCTURE_FORMATS", "TRAJECTORY_FORMATS", "atom_slice", "insertion_code", "is_coarse_grained"),
            "readers": ("count_frames", "from_openmm", "load_frames", "load_input", "load_structure"),
            "pbc": ("make_whole",),
            "writers": ("check_output_path", "restore_residue_names", "save_openmm_structure", "save_structure",
                        "save_trajectory", "write_outputs")}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = ["TEMP_PREFIX", "atomic_output", "check_output_folder", "check_outputs", "output_files", *_names]
