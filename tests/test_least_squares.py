"""The sparse Levenberg-Marquardt solver under the geometric fit: gradients, convergence, terms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from openmm_herobm.geometry import dihedral
from openmm_herobm.reconstruction import least_squares as ls
from openmm_herobm.reconstruction import protein_geometry as pg


def _numeric(f, x, atom, eps=1e-6):
    g = np.zeros(3)
    for d in range(3):
        xp, xm = x.copy(), x.copy()
        xp[atom, d] += eps
        xm[atom, d] -= eps
        g[d] = (f(xp) - f(xm)) / (2 * eps)
    return g


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_analytic_gradients_match_finite_differences(seed):
    x = np.random.default_rng(seed).normal(size=(4, 3)) * 1.5
    i, j, k, m = (np.array([q]) for q in range(4))
    phi, *grads = ls.dihedrals(x, i, j, k, m)
    assert phi[0] == pytest.approx(dihedral(*x), abs=1e-9)  # IUPAC sign, as the dataset and mdtraj
    for atom, g in enumerate(grads):
        np.testing.assert_allclose(g[0], _numeric(lambda y: ls.dihedrals(y, i, j, k, m)[0][0], x, atom), atol=1e-5)
    theta, *grads = ls.angles(x, i, j, k)
    for atom, g in enumerate(grads):
        np.testing.assert_allclose(g[0], _numeric(lambda y: ls.angles(y, i, j, k)[0][0], x, atom), atol=1e-5)


def test_ramachandran_potential_is_flat_inside_and_differentiable_outside():
    pot = pg.RamachandranPotential()
    cls = np.zeros(3, int)
    phi, psi = np.radians([-63.0, -120.0, 60.0]), np.radians([-43.0, 130.0, -120.0])
    e, dphi, dpsi = pot(cls, phi, psi)
    assert e[0] == 0.0 and e[1] == 0.0  # alpha helix and beta strand: allowed, no force
    assert e[2] > 1.0  # phi +60, psi -120 for a general residue: disallowed
    step = 1e-5
    num = (pot(cls[2:], phi[2:] + step, psi[2:])[0] - pot(cls[2:], phi[2:] - step, psi[2:])[0]) / (2 * step)
    assert num[0] == pytest.approx(dphi[2], rel=1e-4)


def test_solver_restores_ideal_geometry_and_keeps_fixed_atoms():
    """A distorted butane-like chain: bonds 1.53, angles 112, dihedral trans; atom 0 fixed."""
    rng = np.random.default_rng(3)
    ideal = np.array([[0.0, 0, 0], [1.53, 0, 0], [2.1, 1.42, 0], [3.63, 1.42, 0]])
    x0 = ideal + rng.normal(scale=0.2, size=ideal.shape)
    i = np.array([0, 1, 2])
    terms = [ls.Bonds(i, i + 1, np.full(3, 1.53), 0.01),
             ls.Angles(np.array([0, 1]), np.array([1, 2]), np.array([2, 3]), np.full(2, math.radians(112.0)),
                       math.radians(1.0)),
             ls.Dihedrals(np.array([0]), np.array([1]), np.array([2]), np.array([3]), np.array([math.pi]),
                          math.radians(2.0))]
    result = ls.solve(terms, x0, np.array([1, 2, 3]), iterations=50)
    x = result.x
    np.testing.assert_allclose(x[0], x0[0])
    np.testing.assert_allclose(np.linalg.norm(np.diff(x, axis=0), axis=1), 1.53, atol=2e-3)
    assert math.degrees(abs(ls.dihedrals(x, *(np.array([q]) for q in range(4)))[0][0])) == pytest.approx(180, abs=1)
    assert result.cost < 1e-3


def test_merged_terms_have_the_same_cost():
    x = np.random.default_rng(4).normal(size=(6, 3)) * 2
    terms = [ls.Bonds(np.array([0]), np.array([1]), np.array([1.5]), 0.1),
             ls.Bonds(np.array([2, 3]), np.array([3, 4]), np.array([1.4, 1.3]), np.array([0.2, 0.05])),
             ls.Dihedrals(np.array([0]), np.array([1]), np.array([2]), np.array([3]), np.array([1.0]), 0.3),
             ls.Dihedrals(np.array([1]), np.array([2]), np.array([3]), np.array([4]), np.array([-2.0]), 0.1)]
    before = sum(float((t(x)[0] ** 2).sum()) for t in terms)
    merged = ls.merge(terms)
    assert len(merged) == 2
    assert sum(float((t(x)[0] ** 2).sum()) for t in merged) == pytest.approx(before)


def test_robust_beads_stop_pulling_far_beyond_their_tolerance():
    import scipy.sparse

    x = np.zeros((1, 3))
    target = np.array([[0.05, 0, 0], [5.0, 0, 0]])
    near = ls.Linear(scipy.sparse.csr_matrix(np.ones((1, 1))), target[:1], np.array([0.1]), robust=3.0)
    far = ls.Linear(scipy.sparse.csr_matrix(np.ones((1, 1))), target[1:], np.array([0.1]), robust=3.0)
    # quadratic near the target, logarithmic far from it: the gradient of the far one is smaller
    r_near, (_, _, j_near) = near(x)
    r_far, (_, _, j_far) = far(x)
    assert (r_near ** 2).sum() == pytest.approx(0.25, rel=0.05)
    assert abs((r_far * j_far[:, 0]).sum()) < abs((r_near * j_near[:, 0]).sum()) * 5


def _butane_terms(offset: int):
    i = np.array([0, 1, 2]) + offset
    return [ls.Bonds(i, i + 1, np.full(3, 1.53), 0.01),
            ls.Angles(i[:2], i[1:], i[1:] + 1, np.full(2, math.radians(112.0)), math.radians(1.0)),
            ls.Dihedrals(i[:1], i[:1] + 1, i[:1] + 2, i[:1] + 3, np.array([math.pi]), math.radians(2.0))]


def test_independent_parts_are_solved_as_separate_problems_and_in_batches():
    """Two molecules that share no term, in one solve, end exactly where each ends alone (each
    part has its own damping and stopping rule: with one shared problem, the badly distorted
    molecule's rejected steps held the other back, 1e-3 A here), and so do they in batches."""
    rng = np.random.default_rng(5)
    ideal = np.array([[0.0, 0, 0], [1.53, 0, 0], [2.1, 1.42, 0], [3.63, 1.42, 0]])
    a = ideal + rng.normal(scale=1.5, size=ideal.shape)
    b = ideal + rng.normal(scale=0.3, size=ideal.shape) + 20.0
    alone = [ls.solve(_butane_terms(0), a, np.arange(4), iterations=4).x,
             ls.solve(_butane_terms(0), b, np.arange(4), iterations=4).x]
    both = np.concatenate([a, b])
    for batch in (0, 4):
        joint = ls.solve(_butane_terms(0) + _butane_terms(4), both, np.arange(8), iterations=4, batch_atoms=batch).x
        np.testing.assert_array_equal(joint[:4], alone[0])
        np.testing.assert_array_equal(joint[4:], alone[1])
