"""Martini 3 in OpenMM: a GROMACS topology (``.top`` + ``.itp``, as martinize2 writes it) read into an
OpenMM Topology and System, checked term by term against GROMACS (BENCHMARKS.md).

``topfile`` (``MartiniTopFile``, shaped like ``openmm.app.GromacsTopFile``), ``forces`` (the
GROMACS functional forms as OpenMM forces).  Import from here: OpenMM loads on first use.
"""

from ..faces import lazy_face

#: module -> the public names it defines, imported on first use
_MODULES = {"topfile": ("MartiniTopFile", "gromacs_box"),
            "forces": ("ONE_4PI_EPS0", "reaction_field_constants")}
__getattr__, __dir__, _names = lazy_face(__name__, _MODULES)
__all__ = [*_names]
