"""Structure and trajectory input/output.

``readers`` (PDB, GRO, mmCIF, XTC, DCD, TRR in, checked), ``pbc`` (molecules made whole),
``writers`` (every format out, atomically), ``files`` (output paths checked before work,
temporaries committed together), ``common`` (what they share).  Import from here: the
readers and writers load mdtraj and OpenMM on first use, so checking output paths does not.
"""

from .files import TEMP_PREFIX, atomic_output, check_output_folder, check_outputs, output_files

#: public name -> module that defines it (imported on first use)
_LAZY = {"STRUCTURE_FORMATS": "common", "TRAJECTORY_FORMATS": "common", "atom_slice": "common",
         "insertion_code": "common", "is_coarse_grained": "common",
         "count_frames": "readers", "from_openmm": "readers", "load_frames": "readers", "load_input": "readers",
         "load_structure": "readers",
         "make_whole": "pbc",
         "check_output_path": "writers", "save_structure": "writers", "save_trajectory": "writers",
         "write_outputs": "writers"}

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
