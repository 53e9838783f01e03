"""User-facing errors.

Every problem caused by the user's input (a mapping file, a structure, a model)
raises :class:`HeroBMError` with a one-line message that says *what* is wrong,
*where* (file, residue, atom) and, when possible, *what to do*.  The CLI prints
the message alone and exits with status 2; the Python API lets it propagate.
"""


class HeroBMError(ValueError):
    """A problem with the user's input, explained in one line."""


class MappingError(HeroBMError):
    """A mapping file is malformed or inconsistent."""


class StructureError(HeroBMError):
    """A structure or trajectory cannot be read or does not fit its mapping."""
