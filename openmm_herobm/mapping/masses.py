"""Element masses used for bead centres (the values martinize2's force fields use)."""

from ..errors import MappingError

_MASS = {
    "H": 1.008, "C": 12.011, "N": 14.007, "O": 15.999, "S": 32.06, "P": 30.974,
    "Na": 22.990, "Cl": 35.45, "K": 39.098, "Mg": 24.305, "Ca": 40.078, "Zn": 65.38,
    "Br": 79.904, "F": 18.998, "I": 126.90, "Se": 78.971,
}


def element_mass(symbol: str) -> float:
    try:
        return _MASS[symbol]
    except KeyError:
        raise MappingError(f"no mass known for element {symbol!r}") from None


def has_mass(symbol: str) -> bool:
    return symbol in _MASS
