"""The sparse Levenberg-Marquardt solver under the geometric fit: gradients, convergence, terms."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse

from openmm_herobm.geometry import dihedral
from openmm_herobm.io import load_structure
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


def test_ramachandran_table_follows_the_fourier_series_it_tabulates():
    """The potential is interpolated from a table; off the grid it must still be the series (an
    index or phase slip of one grid step would be ~0.1 kT off, a wrong slope ~1 kT/rad)."""
    pot = pg.RamachandranPotential(allowed=0.0)  # nothing flattened: the series everywhere
    rng = np.random.default_rng(5)
    cls = rng.integers(0, len(pg.RAMA_CLASSES), 500)
    phi, psi = rng.uniform(-np.pi, np.pi, 500), rng.uniform(-np.pi, np.pi, 500)
    a, b = (np.exp(1j * np.outer(t + np.pi, pot.m)) for t in (phi, psi))
    series = np.einsum("ka,kab,kb->k", a, pot.coef[cls], b).real - pot.offset[cls]
    d_phi = np.einsum("ka,kab,kb->k", a * 1j * pot.m, pot.coef[cls], b).real
    d_psi = np.einsum("ka,kab,kb->k", a, pot.coef[cls], b * 1j * pot.m).real
    e, g_phi, g_psi = pot(cls, phi, psi)
    on = series > 0  # allowed=0 leaves only the rare points below the lowest level flattened
    assert on.mean() > 0.95
    np.testing.assert_allclose(e[on], series[on], atol=1e-5)
    np.testing.assert_allclose(g_phi[on], d_phi[on], atol=1e-3)
    np.testing.assert_allclose(g_psi[on], d_psi[on], atol=1e-3)


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


def test_parts_that_come_into_contact_during_a_solve_stay_separate_problems():
    """Two molecules too far apart to share a clash candidate at the start are two parts; their
    beads then pull them into one another.  The clash row that joins them mid-solve counts in each
    part's cost and normal equations with the other part held, and a part that has finished stays
    an obstacle to the one still moving (before, its atoms left the clash search: the other part
    walked into it, 0.5 A apart; and a block between two parts fell outside both parts' matrices)."""
    ideal = np.array([[0.0, 0, 0], [1.53, 0, 0], [2.1, 1.42, 0], [3.63, 1.42, 0]])
    x0 = np.concatenate([ideal, ideal + [12.0, 0.0, 0.0]])
    n = len(x0)
    target = np.array([[8.0, 1.42, 0.0], [8.5, 1.42, 0.0]])  # atom 3 and atom 4, 0.5 A apart
    weights = scipy.sparse.csr_matrix((np.ones(2), ([0, 1], [3, 4])), shape=(2, n))
    clash = ls.Clashes(np.arange(n), np.full(n, 1.6), np.zeros(n, bool),
                       ls.exclusions(np.array([[0, 1], [1, 2], [2, 3], [4, 5], [5, 6], [6, 7]]), n),
                       np.ones(n, bool), 0.05, 0.35)
    terms = _butane_terms(0) + _butane_terms(4) + [ls.Linear(weights, target, np.full(2, 1.0)), clash]
    x = ls.solve(terms, x0, np.arange(n), iterations=40).x
    assert np.linalg.norm(x[3] - x[4]) > 3.0  # apart by their contact distance (3.2 A), not the beads' 0.5
    for atom, goal in ((3, target[0]), (4, target[1])):  # yet both moved towards their beads
        assert np.linalg.norm(x[atom] - goal) < np.linalg.norm(x0[atom] - goal) - 0.5
    np.testing.assert_allclose(np.linalg.norm(np.diff(x[:4], axis=0), axis=1), 1.53, atol=0.02)


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


# ---------------------------------------------------------------- compiled kernels on a real chain
ROOT = Path(__file__).resolve().parents[1]
CHAIN = ROOT.parent / "shared" / "data" / "proteins" / "test" / "pb_7KM8_WPD_A.pdb.gz"


@pytest.fixture(scope="module")
def real_chain():
    """Heavy atoms (A) of a held-out 132-residue chain, moved off their places as a network's output
    is, with its bonds, angles and dihedrals (atom triples and quadruples along the bonds)."""
    if not CHAIN.exists():
        pytest.skip("shared data not found")
    ref = load_structure(CHAIN)
    ref = ref.atom_slice([a.index for a in ref.topology.atoms if a.element.symbol != "H"])
    x = ref.xyz[0].astype(np.float64) * 10 + np.random.default_rng(6).normal(scale=0.3, size=(ref.n_atoms, 3))
    bonds = np.array([(b[0].index, b[1].index) for b in ref.topology.bonds])
    partners = [[] for _ in range(ref.n_atoms)]
    for i, j in bonds:
        partners[i].append(j)
        partners[j].append(i)
    angles = np.array([(i, j, k) for j in range(ref.n_atoms) for i in partners[j] for k in partners[j] if i < k])
    dihedrals = np.array([(i, j, k, m) for j, k in bonds for i in partners[j] for m in partners[k] if i != k and m != j])
    return x, bonds, angles, dihedrals


def _reference(term, x):
    """The residuals and Jacobian values of a term by the numpy formulas the kernels compile."""
    if isinstance(term, ls.Bonds):
        d, g = ls.distances(x, term.i, term.j)
        g = g / term.sigma[:, None]
        return (d - term.d0) / term.sigma, np.concatenate([g, -g])
    if isinstance(term, ls.Angles):
        t, *grads = ls.angles(x, term.i, term.j, term.k)
        return (t - term.theta0) / term.sigma, np.concatenate([g / term.sigma[:, None] for g in grads])
    phi, *grads = ls.dihedrals(x, term.i, term.j, term.k, term.m)
    delta = ls.wrap(term.period * (phi - term.phi0)) / term.period
    dr = (np.cos(delta / 2.0) / term.sigma)[:, None]
    return 2.0 * np.sin(delta / 2.0) / term.sigma, np.concatenate([g * dr for g in grads])


def test_compiled_terms_compute_the_numpy_formulas_on_a_real_chain(real_chain):
    x, bonds, angles, dihedrals = real_chain
    rng = np.random.default_rng(7)
    terms = [ls.Bonds(bonds[:, 0], bonds[:, 1], rng.uniform(1.2, 1.6, len(bonds)), 0.01),
             ls.Angles(*angles.T, rng.uniform(1.8, 2.1, len(angles)), rng.uniform(0.01, 0.05, len(angles))),
             ls.Dihedrals(*dihedrals.T, rng.uniform(-np.pi, np.pi, len(dihedrals)), 0.03),
             ls.Dihedrals(*dihedrals.T, rng.uniform(-np.pi, np.pi, len(dihedrals)), 0.03, period=2)]
    for term in terms:
        r, (rows, atoms, values) = term(x)
        r_ref, values_ref = _reference(term, x)
        np.testing.assert_allclose(r, r_ref, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(values, values_ref, rtol=1e-10, atol=1e-7)
        n = len(r)
        assert list(rows[::n]) == [0] * (len(atoms) // n) and (rows[:n] == np.arange(n)).all()


def test_clash_search_finds_every_contact_as_atoms_stray(real_chain):
    """The clash term's residuals equal a brute-force search over all atom pairs, after a few
    atoms moved far, moved again, back, or next to other moved atoms, and after many did (the
    bounding box and the cells grow)."""
    x, bonds, _, _ = real_chain
    n = len(x)
    radius = np.full(n, 1.6)
    polar = np.zeros(n, bool)
    moving = np.ones(n, bool)
    excluded = ls.exclusions(bonds, n)
    term = ls.Clashes(np.arange(n), radius, polar, excluded, moving, 0.05, 0.35)

    def brute(y):
        i, j = np.triu_indices(n, 1)
        d = np.linalg.norm(y[i] - y[j], axis=1)
        on = (d < 3.2) & ~np.isin(i * n + j, excluded)
        return np.sort((3.2 - d[on]) / 0.05)

    rng = np.random.default_rng(8)
    y = x.copy()
    assert len(term(y)[0]) > 0
    np.testing.assert_allclose(np.sort(term(y)[0]), brute(y))
    first = rng.choice(n, 5, replace=False)
    start = y[first].copy()
    others = rng.choice(np.setdiff1d(np.arange(n), first), 5, replace=False)
    steps = [(first, None), (first, None), (others, first), (first, start), (40, None), (n // 3, None)]
    for atoms_moved, to in steps:
        y = y.copy()
        if isinstance(atoms_moved, int):
            atoms_moved = rng.choice(n, atoms_moved, replace=False)
        if to is None:
            y[atoms_moved] += rng.normal(scale=3.0, size=(len(atoms_moved), 3))
        elif to is start:
            y[atoms_moved] = start  # back where they were
        else:  # next to earlier re-anchored atoms
            y[atoms_moved] = y[to] + rng.normal(scale=1.5, size=(len(atoms_moved), 3))
        r, (rows, atoms, values) = term(y)
        np.testing.assert_allclose(np.sort(r), brute(y))
        pairs = np.stack([atoms[:len(r)], atoms[len(r):]], 1)
        assert (np.diff(pairs[:, 0] * n + pairs[:, 1]) > 0).all()  # the list's row order, whatever strayed


def test_clash_search_in_a_sparse_box_and_with_an_atom_thrown_far():
    """Atoms spread thinly (more cells than the search allows: it makes its cells larger), and one
    thrown 10,000 A away, as a damping trial can: the contacts still equal a brute-force search."""
    rng = np.random.default_rng(3)
    n = 400
    x = rng.uniform(0.0, 300.0, size=(n, 3))
    x[1::2] = x[::2] + rng.normal(scale=1.5, size=(n // 2, 3))  # close pairs, some in contact
    radius = rng.choice([1.35, 1.4, 1.5, 1.7], n)
    polar = rng.random(n) < 0.4
    moving = rng.random(n) < 0.8
    excluded = np.sort(rng.choice(np.arange(0, n, 2), 20, replace=False) * n + np.arange(1, 41, 2))
    term = ls.Clashes(np.arange(n), radius, polar, excluded, moving, 0.05, 0.35)

    def brute(y):
        i, j = np.triu_indices(n, 1)
        d = np.linalg.norm(y[i] - y[j], axis=1)
        d0 = radius[i] + radius[j] - 0.35 * (polar[i] & polar[j])
        on = (d < d0) & ~np.isin(i * n + j, excluded) & (moving[i] | moving[j])
        return np.stack([i[on], j[on]], 1), (d0[on] - d[on]) / 0.05

    for y in (x, np.r_[x[:-1], [[1e4, 0.0, 0.0]]]):
        pairs, expected = brute(y)
        assert len(pairs) > 10
        r, (_, atoms, _) = term(y)
        np.testing.assert_array_equal(np.stack([atoms[:len(r)], atoms[len(r):]], 1), pairs)
        np.testing.assert_allclose(r, expected)


def test_block_normal_equations_and_factor_solve_the_dense_system(real_chain):
    """J^T J in 3 x 3 blocks and its LDL^T with a kept ordering give the dense solution, also after
    the pattern has grown by new contacts."""
    x, bonds, angles, dihedrals = real_chain
    n = len(x)
    terms = [ls.Bonds(bonds[:, 0], bonds[:, 1], np.full(len(bonds), 1.5), 0.01),
             ls.Angles(*angles.T, np.full(len(angles), 1.9), 0.02),
             ls.Dihedrals(*dihedrals.T, np.zeros(len(dihedrals)), 0.05)]
    solver = ls._NormalEquations()
    rng = np.random.default_rng(9)
    for extra in (np.zeros((0, 2), int), rng.choice(n, size=(300, 2))):
        extra = extra[extra[:, 0] != extra[:, 1]]
        now = terms + [ls.Bonds(extra[:, 0], extra[:, 1], np.full(len(extra), 4.0), 0.1)]
        parts, jacobians, n_rows = ls.evaluate(now, x)
        r = np.concatenate(parts)
        rows = np.concatenate([j[0] for j in jacobians])
        atoms = np.concatenate([j[1] for j in jacobians])
        values = np.concatenate([j[2] for j in jacobians])
        ptr, idx, data, g = ls._kernels.normal_equations(n, n_rows, rows, atoms, values, r, np.zeros(n, np.int64))
        J = np.zeros((n_rows, 3 * n))
        np.add.at(J, (np.repeat(rows, 3), (3 * atoms[:, None] + np.arange(3)).ravel()), values.ravel())
        A = J.T @ J
        upper = np.zeros_like(A)
        for c in range(n):
            for p in range(ptr[c], ptr[c + 1]):
                upper[3 * idx[p]:3 * idx[p] + 3, 3 * c:3 * c + 3] = data[p]
        np.testing.assert_allclose(np.triu(upper), np.triu(A), atol=1e-8 * abs(A).max())
        np.testing.assert_allclose(g.ravel(), J.T @ r, atol=1e-8 * abs(J.T @ r).max())
        solver.set_matrix(ptr, idx, data)
        lam = 1e-3
        damped = A + np.diag(lam * np.maximum(np.diag(A), 1e-6) + 1e-9)
        b = rng.normal(size=(n, 3))
        np.testing.assert_allclose(solver.solve(lam, b).ravel(), np.linalg.solve(damped, b.ravel()), rtol=1e-6, atol=1e-9)
