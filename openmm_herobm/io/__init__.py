"""Structure and trajectory input/output."""

from .files import TEMP_PREFIX, atomic_output, check_output_folder, check_outputs, output_files
from .structure import (
    STRUCTURE_FORMATS,
    TRAJECTORY_FORMATS,
    atom_slice,
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
    "TEMP_PREFIX",
    "TRAJECTORY_FORMATS",
    "atom_slice",
    "atomic_output",
    "check_output_folder",
    "check_output_path",
    "check_outputs",
    "count_frames",
    "insertion_code",
    "is_coarse_grained",
    "load_frames",
    "load_input",
    "load_structure",
    "make_whole",
    "output_files",
    "save_structure",
    "save_trajectory",
    "write_outputs",
]
