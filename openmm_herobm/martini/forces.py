"""The OpenMM forces of a Martini system, built from numpy arrays (nm, rad, kJ/mol, e).

GROMACS' functional forms (manual, "Bonded interactions" and "Reaction field") that OpenMM has
no native force for are written here as custom forces, each named after the GROMACS energy
term it reproduces (``Force.getName()``), so a caller can put each in its own force group and
compare term by term with ``gmx energy``.
"""

from __future__ import annotations

import math

import numpy as np
import openmm

#: kJ mol^-1 nm e^-2: 1/(4 pi eps0) from the SI constants GROMACS 2022 uses (units.h; OpenMM's
#: 138.935456 differs by 1e-8)
ONE_4PI_EPS0 = 1 / (4 * math.pi * 8.8541878128e-12 * 1e-6 / (1.602176634e-19 ** 2 * 6.02214076e23))

#: Force.getName() -> the GROMACS energy term (``gmx energy``) it reproduces
BOND, HARMONIC, ANGLE, G96_ANGLE, RESTRICTED_ANGLE = "Bond", "Harmonic Pot.", "Angle", "G96Angle", "Restr. Angles"
PROPER, PERIODIC_IMPROPER, IMPROPER = "Proper Dih.", "Per. Imp. Dih.", "Improper Dih."
RESTRICTED_DIHEDRAL, CBT = "Restr. Dih.", "CBT Dih."
LJ, COULOMB, LJ14, COULOMB14 = "LJ (SR)", "Coulomb (SR)", "LJ-14", "Coulomb-14"


def _named(force, name: str):
    force.setName(name)
    return force


def harmonic_bonds(pairs: np.ndarray, r0: np.ndarray, k: np.ndarray, name: str = BOND) -> openmm.HarmonicBondForce:
    """GROMACS bonds type 1 (and 6): 0.5 k (r - r0)^2.  pairs (B, 2) int, r0 (B,) nm, k (B,) kJ/mol/nm^2."""
    force = _named(openmm.HarmonicBondForce(), name)
    for (i, j), b, kb in zip(pairs.tolist(), r0.tolist(), k.tolist()):
        force.addBond(i, j, b, kb)
    return force


def harmonic_angles(triples: np.ndarray, theta0: np.ndarray, k: np.ndarray) -> openmm.HarmonicAngleForce:
    """GROMACS angles type 1: 0.5 k (theta - theta0)^2.  triples (A, 3), theta0 (A,) rad, k (A,) kJ/mol/rad^2."""
    force = _named(openmm.HarmonicAngleForce(), ANGLE)
    for (i, j, l), t, ka in zip(triples.tolist(), theta0.tolist(), k.tolist()):
        force.addAngle(i, j, l, t, ka)
    return force


def cosine_angles(triples: np.ndarray, theta0: np.ndarray, k: np.ndarray, restricted: bool) -> openmm.CustomAngleForce:
    """GROMACS angles type 2 (G96: 0.5 k (cos theta - cos theta0)^2) or, ``restricted``, type 10
    (restricted bending, ReB: the same divided by sin^2 theta, which keeps theta off 180 degrees).
    triples (A, 3), theta0 (A,) rad, k (A,) kJ/mol."""
    energy = "0.5*k*(cos(theta)-c0)^2" + ("/sin(theta)^2" if restricted else "")
    force = _named(openmm.CustomAngleForce(energy), RESTRICTED_ANGLE if restricted else G96_ANGLE)
    force.addPerAngleParameter("c0")
    force.addPerAngleParameter("k")
    for (i, j, l), t, ka in zip(triples.tolist(), theta0.tolist(), k.tolist()):
        force.addAngle(i, j, l, (math.cos(t), ka))
    return force


def periodic_torsions(quads: np.ndarray, phase: np.ndarray, k: np.ndarray, n: np.ndarray,
                      name: str = PROPER) -> openmm.PeriodicTorsionForce:
    """GROMACS dihedrals types 1 and 9 (``Proper Dih.``) or 4 (``Per. Imp. Dih.``): k (1 + cos(n phi - phase)).
    quads (D, 4), phase (D,) rad, k (D,) kJ/mol, n (D,) int."""
    force = _named(openmm.PeriodicTorsionForce(), name)
    for (i, j, l, m), p, kd, nd in zip(quads.tolist(), phase.tolist(), k.tolist(), n.tolist()):
        force.addTorsion(i, j, l, m, int(nd), p, kd)
    return force


def harmonic_impropers(quads: np.ndarray, xi0: np.ndarray, k: np.ndarray) -> openmm.CustomTorsionForce:
    """GROMACS dihedrals type 2: 0.5 k (xi - xi0)^2, xi - xi0 taken in [-pi, pi) as GROMACS does.
    quads (D, 4), xi0 (D,) rad, k (D,) kJ/mol/rad^2."""
    force = _named(openmm.CustomTorsionForce(
        "0.5*k*d^2; d = theta - xi0 - 6.283185307179586*floor((theta - xi0 + 3.141592653589793)/6.283185307179586)"),
        IMPROPER)
    force.addPerTorsionParameter("xi0")
    force.addPerTorsionParameter("k")
    for (i, j, l, m), x, kd in zip(quads.tolist(), xi0.tolist(), k.tolist()):
        force.addTorsion(i, j, l, m, (x, kd))
    return force


def restricted_torsions(quads: np.ndarray, phi0: np.ndarray, k: np.ndarray) -> openmm.CustomTorsionForce:
    """GROMACS dihedrals type 10 (restricted torsion, ReT): 0.5 k (cos phi - cos phi0)^2 / sin^2 phi.
    quads (D, 4), phi0 (D,) rad, k (D,) kJ/mol."""
    force = _named(openmm.CustomTorsionForce("0.5*k*(cos(theta)-c0)^2/sin(theta)^2"), RESTRICTED_DIHEDRAL)
    force.addPerTorsionParameter("c0")
    force.addPerTorsionParameter("k")
    for (i, j, l, m), p, kd in zip(quads.tolist(), phi0.tolist(), k.tolist()):
        force.addTorsion(i, j, l, m, (math.cos(p), kd))
    return force


def bending_torsions(quads: np.ndarray, a: np.ndarray) -> openmm.CustomCompoundBondForce:
    """GROMACS dihedrals type 11 (combined bending-torsion, CBT), as GROMACS 2022 computes it from the
    six parameters k a0 a1 a2 a3 a4 of the line: k sin^3 theta1 sin^3 theta2 sum_{n=0..4} a_n cos^n phi,
    theta1 = angle(i, j, k), theta2 = angle(j, k, l).  quads (D, 4), a (D, 6): k (kJ/mol), a0..a4."""
    force = _named(openmm.CustomCompoundBondForce(
        4, "k*sin(t1)^3*sin(t2)^3*(a0 + c*(a1 + c*(a2 + c*(a3 + c*a4)))); c = cos(dihedral(p1, p2, p3, p4)); "
           "t1 = angle(p1, p2, p3); t2 = angle(p2, p3, p4)"), CBT)
    for name in ("k", "a0", "a1", "a2", "a3", "a4"):
        force.addPerBondParameter(name)
    for quad, coefficients in zip(quads.tolist(), a.tolist()):
        force.addBond(quad, coefficients)
    return force


def pairs_14(pairs: np.ndarray, c6: np.ndarray, c12: np.ndarray, qq: np.ndarray) -> list[openmm.CustomBondForce]:
    """GROMACS [ pairs ] type 1: C12/r^12 - C6/r^6 (``LJ-14``) and qq/r (``Coulomb-14``, qq = f fudgeQQ
    q_i q_j), at any distance, no shift.  pairs (P, 2), c6 (P,) kJ/mol nm^6, c12 (P,) kJ/mol nm^12, qq (P,)
    kJ/mol nm."""
    lj = _named(openmm.CustomBondForce("c12/r^12 - c6/r^6"), LJ14)
    lj.addPerBondParameter("c6")
    lj.addPerBondParameter("c12")
    coulomb = _named(openmm.CustomBondForce("qq/r"), COULOMB14)
    coulomb.addPerBondParameter("qq")
    for (i, j), a, b, q in zip(pairs.tolist(), c6.tolist(), c12.tolist(), qq.tolist()):
        lj.addBond(i, j, (a, b))
        coulomb.addBond(i, j, (q,))
    return [lj, coulomb]


def _method(periodic: bool):
    return openmm.CustomNonbondedForce.CutoffPeriodic if periodic else openmm.CustomNonbondedForce.CutoffNonPeriodic


def shifted_lennard_jones(type_index: np.ndarray, c6: np.ndarray, c12: np.ndarray, exclusions: np.ndarray,
                          cutoff: float, periodic: bool) -> openmm.CustomNonbondedForce:
    """GROMACS ``vdw-modifier = Potential-shift``: C12/r^12 - C6/r^6 minus its value at the cut-off,
    zero beyond; forces unchanged.  type_index (N,) int into the (T, T) tables c6 (kJ/mol nm^6)
    and c12 (kJ/mol nm^12); exclusions (E, 2) pairs that do not interact; cutoff nm."""
    force = _named(openmm.CustomNonbondedForce(
        f"C12(t1, t2)*(ir6*ir6 - irc6*irc6) - C6(t1, t2)*(ir6 - irc6); ir6 = 1/r^6; irc6 = {cutoff ** -6!r}"), LJ)
    n_types = len(c6)
    # Discrete2DFunction is indexed x + T*y; the tables are symmetric
    force.addTabulatedFunction("C6", openmm.Discrete2DFunction(n_types, n_types, np.asarray(c6).T.ravel().tolist()))
    force.addTabulatedFunction("C12", openmm.Discrete2DFunction(n_types, n_types, np.asarray(c12).T.ravel().tolist()))
    force.addPerParticleParameter("t")
    for t in type_index.tolist():
        force.addParticle((float(t),))
    for i, j in exclusions.tolist():
        force.addExclusion(i, j)
    force.setNonbondedMethod(_method(periodic))
    force.setCutoffDistance(cutoff)
    force.setUseLongRangeCorrection(False)
    force.setUseSwitchingFunction(False)
    return force


def reaction_field_constants(cutoff: float, epsilon_r: float, epsilon_rf: float) -> tuple[float, float]:
    """GROMACS' ``(k_rf, c_rf)`` (nm^-3, nm^-1); ``epsilon_rf = 0`` means infinity, as in an mdp file."""
    if epsilon_rf == 0:
        k_rf = 1 / (2 * cutoff ** 3)
    else:
        k_rf = (epsilon_rf - epsilon_r) / ((2 * epsilon_rf + epsilon_r) * cutoff ** 3)
    return k_rf, 1 / cutoff + k_rf * cutoff ** 2


def reaction_field(charges: np.ndarray, exclusions: np.ndarray, cutoff: float, epsilon_r: float, epsilon_rf: float,
                   periodic: bool) -> list[openmm.Force]:
    """GROMACS ``coulombtype = reaction-field`` with the Verlet scheme, as three forces named
    ``Coulomb (SR)`` (their sum is that energy term):

    * f q_i q_j (1/r + k_rf r^2 - c_rf) for non-excluded pairs within the cut-off, f = 1/(4 pi eps0 eps_r);
    * f q_i q_j (k_rf r^2 - c_rf) for excluded pairs within the cut-off (GROMACS applies the
      reaction field to them, without the 1/r term);
    * the constant self term -f q_i^2 c_rf / 2 of every charged particle.

    charges (N,) e; exclusions (E, 2); cutoff nm.  Only charged particles enter the pair forces."""
    k_rf, c_rf = reaction_field_constants(cutoff, epsilon_r, epsilon_rf)
    f = ONE_4PI_EPS0 / epsilon_r
    charged = np.flatnonzero(charges)
    pair = _named(openmm.CustomNonbondedForce(f"{f!r}*q1*q2*(1/r + {k_rf!r}*r^2 - {c_rf!r})"), COULOMB)
    pair.addPerParticleParameter("q")
    for q in charges.tolist():
        pair.addParticle((q,))
    for i, j in exclusions.tolist():  # all of them: OpenMM's CPU platform wants the same in every nonbonded force
        pair.addExclusion(i, j)
    both = charges[exclusions[:, 0]] * charges[exclusions[:, 1]] != 0 if len(exclusions) else np.zeros(0, bool)
    pair.addInteractionGroup(charged.tolist(), charged.tolist())  # the uncharged majority costs nothing
    pair.setNonbondedMethod(_method(periodic))
    pair.setCutoffDistance(cutoff)
    pair.setUseLongRangeCorrection(False)
    pair.setUseSwitchingFunction(False)

    excluded = _named(openmm.CustomBondForce(f"step({cutoff!r} - r)*qq*({k_rf!r}*r^2 - {c_rf!r})"), COULOMB)
    excluded.addPerBondParameter("qq")
    pairs = exclusions[both]
    for (i, j), qq in zip(pairs.tolist(), (f * charges[pairs[:, 0]] * charges[pairs[:, 1]]).tolist()):
        excluded.addBond(i, j, (qq,))
    excluded.setUsesPeriodicBoundaryConditions(periodic)

    self_term = _named(openmm.CustomExternalForce("e"), COULOMB)
    self_term.addPerParticleParameter("e")
    for i, q in zip(charged.tolist(), charges[charged].tolist()):
        self_term.addParticle(i, (-0.5 * f * q * q * c_rf,))
    return [pair, excluded, self_term]
