"""Structure and trajectory input/output."""

from .structure import (
    STRUCTURE_FORMATS,
    TRAJECTORY_FORMATS,
    atom_slice,
    atomic_output,
    check_output_path,
    count_frames,
    insertion_code,
    is_coarse_grained,
    load_frames,
    load_input,
    load_structure,
    make_whole,
    save_structure,
    save_trajectory,
    write_outputs,
)

__all__ = [
    "STRUCTURE_FORMATS",
    "TRAJECTORY_FORMATS",
    "atom_slice",
    "atomic_output",
    "check_output_path",
    "count_frames",
    "insertion_code",
    "is_coarse_grained",
    "load_frames",
    "load_input",
    "load_structure",
    "make_whole",
    "save_structure",
    "save_trajectory",
    "write_outputs",
]
