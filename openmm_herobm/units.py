"""Units at the public boundary.

Public functions take ``openmm.unit`` quantities (``300*unit.kelvin``,
``500*unit.kilojoule_per_mole/unit.nanometer``, ``1*unit.nanometer``) or plain numbers already in
the documented unit.  Inside, everything is in OpenMM's units (nm, ps, K, kJ/mol); Angstrom is
private to the model and the fit.
"""

from __future__ import annotations

import numbers

import openmm.unit as unit

from .errors import HeroBMError

NANOMETER = unit.nanometer
PICOSECOND = unit.picosecond
KELVIN = unit.kelvin
KJ_PER_MOL_NM = unit.kilojoule_per_mole / unit.nanometer  # a force (the minimiser's tolerance)
KJ_PER_MOL_NM2 = unit.kilojoule_per_mole / unit.nanometer ** 2  # a spring constant


def value_in(value, target: unit.Unit, name: str) -> float | None:
    """``value`` as a plain float in ``target``: an ``openmm.unit`` quantity in any compatible unit,
    or a number taken to be in ``target`` already.  ``None`` stays ``None``.  A quantity in an
    incompatible unit, or anything that is not a number, is a :class:`HeroBMError`."""
    if value is None:
        return None
    if unit.is_quantity(value):
        if not value.unit.is_compatible(target):
            raise HeroBMError(f"{name}: {value} is not compatible with {target.get_symbol()}; "
                              f"give a quantity in {target.get_symbol()} (or a plain number in it)")
        return float(value.value_in_unit(target))
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise HeroBMError(f"{name}: expected a number in {target.get_symbol()} or an openmm.unit quantity, "
                          f"got {value!r}")
    return float(value)
