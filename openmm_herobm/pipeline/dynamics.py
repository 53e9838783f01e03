"""Equilibration: NVT heating with the bead restraint on, then without it."""

from __future__ import annotations

import openmm.app as app
import openmm.unit as unit

from ..progress import say
from .system import SEED


def equilibrate(simulation: app.Simulation, picoseconds: float, temperature: float, restraint_parameter: str | None,
                stages: int = 5) -> None:
    """NVT heating in ``stages`` steps from 50 K to ``temperature`` with the restraint on, then release it."""
    steps_total = int(round(picoseconds / 0.002))
    heat = steps_total // 2
    integrator = simulation.integrator
    simulation.context.setVelocitiesToTemperature(50 * unit.kelvin, SEED)
    for k in range(stages):
        target = 50 + (temperature - 50) * (k + 1) / stages
        integrator.setTemperature(target * unit.kelvin)
        simulation.step(max(heat // stages, 1))
        say("  heating %d/%d to %.0f K", k + 1, stages, target)
    if restraint_parameter is not None:
        simulation.context.setParameter(restraint_parameter, 0.0)
    simulation.step(max(steps_total - heat, 1))
    say("  %.1f ps without the bead restraint", (steps_total - heat) * 0.002)
