"""Structure and trajectory input/output.

``readers`` (PDB, GRO, mmCIF, XTC, DCD, TRR in, checked), ``pbc`` (molecules made whole),
``writers`` (every format out, atomically), ``files`` (output paths checked before work,
temporaries committed together), ``common`` (what they share).  Import from here: the
readers and writers load mdtraj and OpenMM on first use, so checking output paths does not.
"""

from .files import TEMP_PREFIX, atomic_output, check_output_folder, check_outputs, output_files

#: module -> the public names it defines, imported on first use
_MODULES = {"common": ("STRUCTURE_FORMATS", "TRAJECTORY_FORMATS", "atom_slice", "insertion_code", "is_coarse_grained"),
            "readers": ("count_frames", "from_openmm", "load_frames", "load_input", "load_structure"),
            "pbc": ("make_whole",),
            "writers": ("check_output_path", "restore_residue_names", "save_openmm_structure", "save_structure",
                        "save_trajectory", "write_outputs")}
_LAZY = {name: module for module, names in _MODULES.items() for name in names}

__all__ = ["TEMP_PREFIX", "atomic_output", "check_output_folder", "check_outputs", "output_files", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
