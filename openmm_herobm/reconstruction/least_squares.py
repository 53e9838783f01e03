"""Sparse Levenberg-Marquardt over geometric residuals, with analytic Jacobians (numpy + scipy).

A structure fit is a sum of squared residuals, each a function of a few atoms: bead misfits
(linear in the atoms), bond lengths, angles, dihedral targets, a Ramachandran statistical
potential, clash lower bounds.  Stiff terms (bonds to 0.02 A) next to soft ones (beads to
0.3 A) make first-order optimisers crawl; Gauss-Newton steps on the sparse normal equations
do not care about that conditioning, so a fit converges in a few dozen steps.

Coordinates are ``(n_atoms, 3)`` arrays in Angstrom; only the ``moving`` atoms change.  A term
returns its residuals ``r`` and the Jacobian entries as ``(rows, atoms, values (k, 3))``: row
``rows[k]`` depends on atom ``atoms[k]`` with gradient ``values[k]``.  Every term's residual
is already divided by its tolerance (sigma), so the cost is ``sum r^2`` in units of kT-like
"sigmas squared".
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import qdldl
import scipy.sparse
import scipy.sparse.csgraph

from ..geometry import cross
from . import _kernels

Jacobian = tuple  # (rows (k,), atoms (k,), values (k, 3))


# --------------------------------------------------------------------------- geometry with gradients

def distances(x: np.ndarray, i: np.ndarray, j: np.ndarray):
    """|x_i - x_j| ``(k,)`` and its gradient w.r.t. x_i ``(k, 3)`` (x_j's is the negative)."""
    v = x[i] - x[j]
    d = np.sqrt((v * v).sum(1))
    return d, v / np.maximum(d, 1e-9)[:, None]


def angles(x: np.ndarray, i: np.ndarray, j: np.ndarray, k: np.ndarray):
    """Angle i-j-k (radians) ``(m,)`` and its gradients w.r.t. x_i, x_j, x_k ``(m, 3)`` each."""
    u, v = x[i] - x[j], x[k] - x[j]
    nu, nv = np.linalg.norm(u, axis=1), np.linalg.norm(v, axis=1)
    nu, nv = np.maximum(nu, 1e-9), np.maximum(nv, 1e-9)
    uh, vh = u / nu[:, None], v / nv[:, None]
    cos = np.clip((uh * vh).sum(1), -1.0, 1.0)
    theta = np.arccos(cos)
    sin = np.maximum(np.sqrt(1.0 - cos * cos), 1e-6)
    gi = (cos[:, None] * uh - vh) / (nu * sin)[:, None]
    gk = (cos[:, None] * vh - uh) / (nv * sin)[:, None]
    return theta, gi, -gi - gk, gk


def dihedrals(x: np.ndarray, i: np.ndarray, j: np.ndarray, k: np.ndarray, m: np.ndarray):
    """Dihedral i-j-k-m (radians, IUPAC sign as mdtraj) ``(n,)`` and its gradients w.r.t. the four atoms."""
    f, g, h = x[i] - x[j], x[j] - x[k], x[m] - x[k]
    a, b = cross(f, g), cross(h, g)
    aa, bb = np.maximum((a * a).sum(1), 1e-12), np.maximum((b * b).sum(1), 1e-12)
    gn = np.maximum(np.linalg.norm(g, axis=1), 1e-9)
    # atan2 form of the IUPAC dihedral
    phi = np.arctan2((cross(a, b) * g).sum(1) / gn, (a * b).sum(1))
    phi = -phi  # IUPAC sign (as geometry.dihedral and mdtraj; checked in tests)
    fg, hg = (f * g).sum(1), (h * g).sum(1)
    di = -(gn / aa)[:, None] * a
    dm = (gn / bb)[:, None] * b
    dj = -di + (fg / (aa * gn))[:, None] * a - (hg / (bb * gn))[:, None] * b
    dk = -dm - (fg / (aa * gn))[:, None] * a + (hg / (bb * gn))[:, None] * b
    return phi, di, dj, dk, dm


def wrap(a: np.ndarray) -> np.ndarray:
    return (a + np.pi) % (2 * np.pi) - np.pi


# --------------------------------------------------------------------------- terms
# Every term has ``subset(keep)``: the same term over the rows whose atoms are all in the boolean
# ``keep`` ``(n_atoms,)`` (what ``solve`` still evaluates once some parts of a problem are done).

def _rows(value, on: np.ndarray):
    """``value[on]`` for a per-row array, ``value`` itself for a scalar."""
    value = np.asarray(value)
    return value[on] if value.ndim else value


def _compiled(term, atoms: tuple[str, ...], per_row: tuple[str, ...]) -> None:
    """The fields as the compiled kernels take them (int64 / float64, contiguous, sigma per row),
    and the Jacobian's constant row and atom numbers (the atoms of a row stacked atom by atom)."""
    for a in atoms:
        setattr(term, a, np.ascontiguousarray(getattr(term, a), np.int64))
    n = len(getattr(term, atoms[0]))
    for f in per_row:
        setattr(term, f, np.ascontiguousarray(np.broadcast_to(np.asarray(getattr(term, f), float), (n,))))
    term._jac_rows = np.tile(np.arange(n), len(atoms))
    term._jac_atoms = np.concatenate([getattr(term, a) for a in atoms])


def _subset(term, keep: np.ndarray, atoms: tuple[str, ...], per_row: tuple[str, ...]):
    on = np.logical_and.reduce([keep[getattr(term, a)] for a in atoms])
    return dataclasses.replace(term, **{f: _rows(getattr(term, f), on) for f in atoms + per_row})


_DIAGONAL = np.arange(3)


@dataclass
class Linear:
    """Residuals ``(sum_a w_ba x_a - target_b) / sigma_b`` for rows b of a sparse (rows, n_atoms) matrix.

    ``robust`` c > 0 turns the squared norm s of each row's 3-vector into the Cauchy loss
    ``c^2 log(1 + s / c^2)``: quadratic while a row misses by less than ~c sigma, then only
    logarithmic, so a bead that no sound structure can meet stops pulling hard (residuals and
    Jacobian scaled as in Triggs et al.'s square-root form)."""
    matrix: scipy.sparse.csr_matrix
    target: np.ndarray  # (rows, 3)
    sigma: np.ndarray  # (rows,)
    robust: float = 0.0

    def __post_init__(self):
        coo = self.matrix.tocoo()
        self._rows, self._cols = coo.row, coo.col
        self._vals = coo.data / self.sigma[coo.row]
        # the Jacobian's layout: entry (row b, atom a) is the 3 x 3 block vals * I, rows 3b, 3b+1, 3b+2
        self._jac_rows = ((self._rows * 3)[:, None] + np.arange(3)).ravel()
        self._jac_atoms = np.repeat(self._cols, 3)

    def subset(self, keep: np.ndarray) -> "Linear":
        on = (abs(self.matrix) @ (~keep).astype(float)) == 0
        return Linear(self.matrix[on], self.target[on], self.sigma[on], self.robust)

    def __call__(self, x: np.ndarray):
        r = (self.matrix @ x - self.target) / self.sigma[:, None]
        vals = self._vals
        if self.robust > 0:
            c2 = self.robust ** 2
            s = (r * r).sum(1)
            rho = c2 * np.log1p(s / c2)
            r = r * np.sqrt(rho / np.maximum(s, 1e-12))[:, None]
            vals = vals * np.sqrt(1.0 / (1.0 + s / c2))[self._rows]
        values = np.zeros((len(vals), 3, 3))
        values[:, _DIAGONAL, _DIAGONAL] = vals[:, None]
        return r.ravel(), (self._jac_rows, self._jac_atoms, values.reshape(-1, 3))


@dataclass
class Bonds:
    """``(|x_i - x_j| - d0) / sigma``."""
    i: np.ndarray
    j: np.ndarray
    d0: np.ndarray
    sigma: float | np.ndarray

    def __post_init__(self):
        _compiled(self, ("i", "j"), ("d0", "sigma"))

    def subset(self, keep: np.ndarray) -> "Bonds":
        return _subset(self, keep, ("i", "j"), ("d0", "sigma"))

    def __call__(self, x):
        r, values = _kernels.bonds(x, self.i, self.j, self.d0, self.sigma)
        return r, (self._jac_rows, self._jac_atoms, values)


@dataclass
class Angles:
    """``(theta_ijk - theta0) / sigma`` (radians)."""
    i: np.ndarray
    j: np.ndarray
    k: np.ndarray
    theta0: np.ndarray
    sigma: float | np.ndarray

    def __post_init__(self):
        _compiled(self, ("i", "j", "k"), ("theta0", "sigma"))

    def subset(self, keep: np.ndarray) -> "Angles":
        return _subset(self, keep, ("i", "j", "k"), ("theta0", "sigma"))

    def __call__(self, x):
        r, values = _kernels.angles(x, self.i, self.j, self.k, self.theta0, self.sigma)
        return r, (self._jac_rows, self._jac_atoms, values)


@dataclass
class Dihedrals:
    """``2 sin((phi - phi0) / 2) / sigma``: periodic, ~ (phi - phi0) / sigma near the target.

    ``period`` 2 treats phi0 and phi0 + 180 deg alike (planar groups)."""
    i: np.ndarray
    j: np.ndarray
    k: np.ndarray
    m: np.ndarray
    phi0: np.ndarray
    sigma: float | np.ndarray
    period: int = 1

    def __post_init__(self):
        _compiled(self, ("i", "j", "k", "m"), ("phi0", "sigma"))

    def subset(self, keep: np.ndarray) -> "Dihedrals":
        return _subset(self, keep, ("i", "j", "k", "m"), ("phi0", "sigma"))

    def __call__(self, x):
        phi, grads = _kernels.dihedral_gradients(x, self.i, self.j, self.k, self.m)
        r, values = _kernels.dihedral_residuals(phi, grads, self.phi0, self.sigma, int(self.period))
        return r, (self._jac_rows, self._jac_atoms, values)


@dataclass
class Ramachandran:
    """``sqrt(w * (E(phi, psi) - E_min) + eps)`` for a smooth statistical potential ``E`` (kT).

    ``potential(cls, phi, psi) -> (E, dE/dphi, dE/dpsi)``; phi = C-1 N CA C, psi = N CA C N+1."""
    c_prev: np.ndarray
    n: np.ndarray
    ca: np.ndarray
    c: np.ndarray
    n_next: np.ndarray
    cls: np.ndarray
    potential: object
    weight: float = 1.0
    eps: float = 0.05

    def __post_init__(self):
        for a in ("c_prev", "n", "ca", "c", "n_next"):
            setattr(self, a, np.ascontiguousarray(getattr(self, a), np.int64))
        self._jac_rows = np.tile(np.arange(len(self.n)), 8)
        self._jac_atoms = np.concatenate([self.c_prev, self.n, self.ca, self.c, self.n, self.ca, self.c, self.n_next])

    def subset(self, keep: np.ndarray) -> "Ramachandran":
        return _subset(self, keep, ("c_prev", "n", "ca", "c", "n_next"), ("cls",))

    def __call__(self, x):
        phi, gphi = _kernels.dihedral_gradients(x, self.c_prev, self.n, self.ca, self.c)
        psi, gpsi = _kernels.dihedral_gradients(x, self.n, self.ca, self.c, self.n_next)
        e, dphi, dpsi = self.potential(self.cls, phi, psi)
        r = np.sqrt(self.weight * np.maximum(e, 0.0) + self.eps)
        scale = self.weight / (2.0 * r)
        values = np.concatenate([gphi * np.tile(scale * dphi, 4)[:, None], gpsi * np.tile(scale * dpsi, 4)[:, None]])
        return r, (self._jac_rows, self._jac_atoms, values)


@dataclass
class Clashes:
    """``max(0, d0 - |x_i - x_j|) / sigma`` over atom pairs closer than their contact distance.

    ``radius`` ``(n_atoms,)``: contact distance of a pair = radius_i + radius_j (minus
    ``hbond_relief`` when both are N/O: hydrogen bonds are allowed); pairs in ``excluded``
    (codes ``i * n + j``, i < j: 1-2, 1-3, 1-4 pairs) and pairs of two fixed atoms never count.
    The contacts are found anew on every call, by a compiled cell list over ``atoms``
    (:func:`_kernels.close_pairs`): a neighbour list kept between calls went stale on most of
    them (the atoms of a fit move several A, a damping trial throws loose atoms 5-20 A away), and
    keeping it up to date (strays looked up again, rebuilds) took 17 ms per 264-bead frame where
    searching anew takes 8.  The rows come in the order of their pairs ``(i, j)``."""
    atoms: np.ndarray
    radius: np.ndarray
    polar: np.ndarray
    excluded: np.ndarray
    moving_mask: np.ndarray
    sigma: float = 0.1
    hbond_relief: float = 0.4
    SKIN = 2.0  # A: the reach of couplings(): parts closer than this at the start are one problem

    def __post_init__(self):
        self.atoms = np.ascontiguousarray(self.atoms, np.int64)
        self._excluded = np.sort(np.asarray(self.excluded, np.int64))
        n = len(self.radius)
        i, j = np.divmod(self._excluded, n)  # each atom's excluded partners, both ways
        ex = scipy.sparse.csr_matrix((np.ones(2 * len(i), np.int8), (np.r_[i, j], np.r_[j, i])), shape=(n, n))
        self._ex_ptr, self._ex_idx = ex.indptr.astype(np.int64), ex.indices.astype(np.int64)
        self._radius = np.ascontiguousarray(self.radius, np.float64)
        self._polar = np.ascontiguousarray(self.polar, np.bool_)
        self._moving = np.ascontiguousarray(self.moving_mask, np.bool_)
        self._near = None

    def _pairs(self, x: np.ndarray, extra: float):
        """``x`` a contiguous float64 ``(n_atoms, 3)`` array."""
        return _kernels.close_pairs(x, self.atoms, float(extra), self._radius, self._polar, float(self.hbond_relief),
                                    self._moving, self._ex_ptr, self._ex_idx)

    def subset(self, keep: np.ndarray) -> "Clashes":
        excluded = self._excluded[keep[self._excluded // len(self.radius)]]  # still sorted
        return Clashes(self.atoms[keep[self.atoms]], self.radius, self.polar, excluded, self.moving_mask,
                       self.sigma, self.hbond_relief)

    def held(self, keep: np.ndarray) -> "Clashes":
        """The same term with the atoms outside ``keep`` held where they are: no pair of two of them
        counts, but they still stop the others (the finished parts of a solve are obstacles to the
        parts still moving, not gone)."""
        return Clashes(self.atoms, self.radius, self.polar, self.excluded, self.moving_mask & keep,
                       self.sigma, self.hbond_relief)

    def couplings(self):
        """The atom pairs ``(i, j)`` this term may put a residual on: those within their contact
        distance plus ``SKIN`` where the term was first called."""
        return self._near

    def __call__(self, x):
        x = np.ascontiguousarray(x, np.float64)
        if self._near is None:
            self._near = self._pairs(x, self.SKIN)[:2]
        i, j, d, d0 = self._pairs(x, 0.0)
        r, values = _kernels.clash_rows(x, i, j, d, d0, float(self.sigma))
        return r, (np.tile(np.arange(len(r)), 2), np.concatenate([i, j]), values)


@dataclass
class Result:
    x: np.ndarray
    cost: float
    iterations: int
    costs: dict = field(default_factory=dict)


def evaluate(terms: list, x: np.ndarray):
    residuals, jacobians = [], []
    offset = 0
    for term in terms:
        r, (rows, atoms, values) = term(x)
        residuals.append(r)
        jacobians.append((rows + offset, atoms, values))
        offset += len(r)
    return residuals, jacobians, offset


def term_costs(terms: list, x: np.ndarray, names: list[str] | None = None) -> dict:
    names = names or [type(t).__name__ for t in terms]
    out: dict = {}
    for name, term in zip(names, terms):
        r = term(x)[0]
        out[name] = out.get(name, 0.0) + float((r * r).sum())
    return out


def merge(terms: list) -> list:
    """Terms of one kind (bonds, angles, dihedrals of one period) joined into one: fewer, larger
    array operations per evaluation."""
    groups: dict = {}
    out = []
    for t in terms:
        if isinstance(t, (Bonds, Angles)) or (isinstance(t, Dihedrals) and True):
            key = (type(t), getattr(t, "period", None))
            groups.setdefault(key, []).append(t)
        else:
            out.append(t)
    for (kind, period), group in groups.items():
        fields = {"Bonds": ("i", "j", "d0"), "Angles": ("i", "j", "k", "theta0"),
                  "Dihedrals": ("i", "j", "k", "m", "phi0")}[kind.__name__]
        args = [np.concatenate([np.asarray(getattr(t, f)) for t in group]) for f in fields]
        sigma = np.concatenate([np.broadcast_to(np.asarray(t.sigma, float), len(np.asarray(getattr(t, fields[0]))))
                                for t in group])
        out.append(kind(*args, sigma, period) if kind is Dihedrals else kind(*args, sigma))
    return out


# damping x LAM_UP after a rejected step, / LAM_DOWN after an accepted one (x8 measured 12% less CPU on a
# trajectory but beads 0.015 A further and 0.3 points more Ramachandran outliers: BENCHMARKS, "Speed")
LAM_UP, LAM_DOWN = 4.0, 3.0
BATCH_ATOMS = 4_000  # solve: parts in batches of about this many moving atoms (100k beads: 336k atoms)
RESTRICT_BELOW = 0.7  # solve: evaluate only the unfinished parts once fewer than this fraction of them is left


def solve(terms: list, x0: np.ndarray, moving: np.ndarray, iterations: int = 30, damping: float = 1e-3,
          tolerance: float = 1e-5, batch_atoms: int | None = None) -> Result:
    """Levenberg-Marquardt on ``sum_terms |r|^2`` over the ``moving`` atoms (indices) of ``x0`` ``(n, 3)``.

    Parts of the problem that share no term (chains, molecules: the connected components of the
    atoms through the terms, clash candidates included) are solved as separate problems, each
    with its own damping, step acceptance and stopping rule, side by side: the terms are still
    evaluated once for all of them per step, and each part's normal equations are factorised on
    their own.  One solve over 300 chains then costs 300 chains' solves, not more (one shared
    damping and stopping rule, and one factor whose pattern grows with any chain's new contact,
    made a 100k-bead system 6x slower per bead than a 1k one).  Above ``batch_atoms`` moving atoms
    (default ``BATCH_ATOMS``) the parts are solved in batches of about that many atoms, one batch
    after another: the same result, with arrays small enough to stay in the CPU's caches."""
    terms = merge(terms)
    x = np.array(x0, np.float64)
    moving = np.asarray(moving, np.int64)

    def residuals(x):
        parts, jacobians, n_rows = evaluate(terms, x)
        return (np.concatenate(parts) if parts else np.zeros(0)), (jacobians, n_rows)

    r, pieces = residuals(x)
    part = _parts(terms, pieces, moving, len(x))
    n_parts = int(part.max(initial=-1)) + 1 if len(moving) else 0
    if n_parts == 0:  # nothing moves
        return Result(x, float(r @ r), 0)
    batch_atoms = BATCH_ATOMS if batch_atoms is None else batch_atoms
    if n_parts > 1 and len(moving) > batch_atoms > 0:
        sizes = np.bincount(part[moving], minlength=n_parts)
        batch = (np.cumsum(sizes) - sizes) // batch_atoms  # of each part, in order
        costs, steps = [], []
        for b in np.unique(batch):
            inside = np.zeros(n_parts + 1, bool)  # [-1] = fixed atoms, in every batch
            inside[np.flatnonzero(batch == b)] = inside[-1] = True
            keep = inside[part]
            sub = moving[keep[moving]]
            result = solve([t.subset(keep) for t in terms], x, sub, iterations, damping, tolerance, batch_atoms=0)
            x[sub] = result.x[sub]
            costs.append(result.cost)
            steps.append(result.iterations)
        return Result(x, float(sum(costs)), max(steps))
    order = moving[np.argsort(part[moving], kind="stable")]  # the atoms of each part together
    bounds = np.searchsorted(part[order], np.arange(n_parts + 1))  # the parts' ranges of atoms in `order`
    column = np.full(len(x), -1, np.int64)
    column[order] = np.arange(len(order))

    def jacobian(pieces):
        # the entries of J over the variables' atoms (fixed atoms dropped); gathered only for accepted
        # steps (about half of the trials are not)
        jacobians, n_rows = pieces
        rows = np.concatenate([j[0] for j in jacobians])
        atoms = np.concatenate([j[1] for j in jacobians])
        values = np.concatenate([j[2] for j in jacobians])
        col = column[atoms]
        keep = col >= 0
        return rows[keep], col[keep], np.ascontiguousarray(values[keep], np.float64), n_rows

    def normal_equations(J, r):
        rows, col, values, n_rows = J
        ptr, idx, data, g = _kernels.normal_equations(len(order), n_rows, rows, col, values, r, part[order])
        return (ptr, idx, data), g  # the upper triangle of J^T J in 3 x 3 blocks, J^T r (atoms, 3)

    def part_costs(r, pieces):
        # summed row by row in order (bincount), so a part's cost does not depend on the other parts;
        # a row that a new contact made between two parts counts in both
        jacobians, n_rows = pieces
        row_part = np.zeros(n_rows, np.int64)  # a row of fixed atoms only: a constant, counted in part 0
        other = np.zeros(n_rows, np.int64)
        for rows, atoms, _ in (jacobians if n_parts > 1 else []):
            p = part[atoms]
            on = p >= 0
            row_part[rows[on]] = p[on]
            other[rows[on][::-1]] = p[on][::-1]
        cost = np.bincount(row_part, weights=r * r, minlength=n_parts)
        both = other != row_part
        if both.any():
            cost += np.bincount(other[both], weights=r[both] ** 2, minlength=n_parts)
        return cost

    J = jacobian(pieces)
    cost = part_costs(r, pieces)
    lam = np.full(n_parts, damping)
    steps = np.zeros(n_parts, np.int64)  # accepted steps (iterations) per part
    trials = np.zeros(n_parts, np.int64)  # rejected trials of the current iteration
    active = np.ones(n_parts, bool) if n_parts == 1 else cost > 0
    fresh = np.ones(n_parts, bool)  # the part starts an iteration: its normal equations are set anew
    solvers = [_NormalEquations() for _ in range(n_parts)]
    gradient = [None] * n_parts
    A = g = None
    evaluated = n_parts  # parts whose rows the terms still hold
    while active.any():
        live = np.flatnonzero(active)
        if n_parts > 1 and len(live) < RESTRICT_BELOW * evaluated:
            # drop the rows of the finished parts (the active parts' rows are all kept, so r, J and
            # the costs of the active parts stay what they are)
            live_atoms = active[part] | (part < 0)
            terms = [t.held(live_atoms) if isinstance(t, Clashes) else t.subset(live_atoms) for t in terms]
            evaluated = len(live)
        if fresh[live].any():
            A, g = normal_equations(J, r)
        for c in live[fresh[live]]:
            lo, hi = bounds[c], bounds[c + 1]
            solvers[c].set_block(A, lo, hi)
            gradient[c] = g[lo:hi]
            fresh[c], trials[c] = False, 0
        trial = x.copy()
        for c in live:
            trial[order[bounds[c]:bounds[c + 1]]] += solvers[c].solve(lam[c], -gradient[c])
        r_new, pieces_new = residuals(trial)
        new_cost = part_costs(r_new, pieces_new)
        better = np.zeros(n_parts, bool)
        better[live] = np.isfinite(new_cost[live]) & (new_cost[live] < cost[live])
        worse = active & ~better
        lam[worse] *= LAM_UP
        trials[worse] += 1
        active[worse & (trials >= 8)] = False
        if better.any():
            moved = order[better[part[order]]]
            x[moved] = trial[moved]
            improvement = (cost[better] - new_cost[better]) / np.maximum(cost[better], 1e-12)
            cost[better] = new_cost[better]
            lam[better] = np.maximum(lam[better] / LAM_DOWN, 1e-7)
            steps[better] += 1
            fresh[better] = True
            done = np.flatnonzero(better)[(improvement < tolerance) | (steps[better] >= iterations)]
            active[done] = False
            # the rows of the parts that moved are right for x; the others' rows are not used again
            r, J = r_new, jacobian(pieces_new)
    return Result(x, float(cost.sum()), int(steps.max(initial=0)))


def _parts(terms: list, pieces, moving: np.ndarray, n_atoms: int) -> np.ndarray:
    """``(n_atoms,)`` part of each moving atom (-1 for fixed atoms): the connected components of the
    moving atoms through the rows of the terms and the atom pairs a term may couple later
    (``term.couplings()``: a clash's candidate pairs), numbered in the order of ``moving``."""
    jacobians, n_rows = pieces
    is_moving = np.zeros(n_atoms, bool)
    is_moving[moving] = True
    rows = np.concatenate([j[0] for j in jacobians]) if jacobians else np.zeros(0, np.int64)
    atoms = np.concatenate([j[1] for j in jacobians]) if jacobians else np.zeros(0, np.int64)
    on = is_moving[atoms]
    a, b = [atoms[on]], [n_atoms + rows[on]]  # a bipartite graph of atoms and rows
    for term in terms:
        if hasattr(term, "couplings"):
            i, j = term.couplings()
            both = is_moving[i] & is_moving[j]
            a.append(i[both])
            b.append(j[both])
    a, b = np.concatenate(a), np.concatenate(b)
    graph = scipy.sparse.coo_matrix((np.ones(len(a), np.int8), (a, b)), shape=(n_atoms + n_rows,) * 2)
    _, label = scipy.sparse.csgraph.connected_components(graph, directed=False)
    # renumber the labels of the moving atoms 0, 1, ... in the order of first appearance
    _, first, inverse = np.unique(label[moving], return_index=True, return_inverse=True)
    part = np.full(n_atoms, -1, np.int64)
    part[moving] = np.argsort(np.argsort(first))[inverse]
    return part


class _NormalEquations:
    """The damped normal equations ``(J^T J + lam diag(J^T J)) delta = b`` of one LM solve, over
    the 3 x 3 blocks of atoms.

    ``J^T J`` is symmetric positive definite, so a sparse block LDL^T with a fill-reducing
    ordering does (QDLDL's algorithm over blocks, :mod:`_kernels`: 0.5 ms where QDLDL took 1.6 ms
    for a 150-residue chain).  The pattern only grows (a union with every earlier one, the extra
    blocks zero), and new clash contacts grow it in 3 of 4 accepted steps of a real frame: the
    ordering (AMD over the atoms, by QDLDL) is kept, and a grown pattern costs a symbolic
    analysis; the ordering is renewed when the factor has grown by ``REORDER`` since.
    Anticipating contacts (near pairs stored in advance) costs more fill than it saves; leaving
    new ones out of the factor (a PSD approximation) left the beads 0.04-0.09 A further away
    within the same iterations."""

    REORDER = 1.25

    def __init__(self):
        self._ptr = self._idx = None  # the pattern so far
        self._perm = None

    def set_block(self, A: tuple, lo: int, hi: int) -> None:
        """The diagonal block (atoms ``lo:hi``) of the upper triangle of ``J^T J`` in blocks
        ``(ptr, idx, data)`` of a problem whose parts share no entry: its columns hold nothing else."""
        ptr, idx, data = A
        start, stop = ptr[lo], ptr[hi]
        self.set_matrix(ptr[lo:hi + 1] - start, idx[start:stop] - lo, data[start:stop])

    def set_matrix(self, ptr: np.ndarray, idx: np.ndarray, data: np.ndarray) -> None:
        """The upper triangle of ``J^T J`` of this iteration in blocks, every diagonal block stored
        (:func:`_kernels.normal_equations`)."""
        if self._ptr is None:
            grown = True
        else:
            ptr, idx, data, grown = _kernels.union_pattern(self._ptr, self._idx, ptr, idx, data)
        if grown:
            self._ptr, self._idx = ptr, idx
            self._diag_at = ptr[1:] - 1  # the last block of each column
            self._analyse(ptr, idx)
        self._data = data
        self._diag = np.diagonal(data[self._diag_at], axis1=1, axis2=2).copy()  # (atoms, 3)

    def _analyse(self, ptr: np.ndarray, idx: np.ndarray) -> None:
        if self._perm is not None:
            self._symbolic = _kernels.ldl_symbolic(ptr, idx, self._perm_inv)
            if self._symbolic[4].sum() <= self.REORDER * self._ordered_fill:
                return
        # AMD over the atoms, read from QDLDL's factorisation of a diagonally dominant matrix of
        # this pattern
        n = len(ptr) - 1
        values = np.full(len(idx), -1.0 / n)
        values[self._diag_at] = 2.0
        self._perm = qdldl.Solver(scipy.sparse.csc_matrix((values, idx, ptr), shape=(n, n)), upper=True).factors()[2]
        self._perm_inv = np.argsort(self._perm)
        self._symbolic = _kernels.ldl_symbolic(ptr, idx, self._perm_inv)
        self._ordered_fill = self._symbolic[4].sum()

    def solve(self, lam: float, b: np.ndarray) -> np.ndarray:
        """``delta`` ``(atoms, 3)`` for the right-hand side ``b`` ``(atoms, 3)``."""
        data = self._data.copy()
        k = np.arange(3)
        data[self._diag_at[:, None], k, k] = self._diag + lam * np.maximum(self._diag, 1e-6) + 1e-9
        return _kernels.ldl_solve(*self._symbolic, self._perm, data, b)


def exclusions(bonds: np.ndarray, n_atoms: int, depth: int = 3) -> np.ndarray:
    """Codes ``i * n_atoms + j`` (i < j) of atom pairs at most ``depth`` bonds apart."""
    if len(bonds) == 0:
        return np.zeros(0, np.int64)
    adj = scipy.sparse.coo_matrix((np.ones(2 * len(bonds)), (np.r_[bonds[:, 0], bonds[:, 1]],
                                                             np.r_[bonds[:, 1], bonds[:, 0]])),
                                  shape=(n_atoms, n_atoms)).tocsr()
    reach = adj.copy()
    step = adj.copy()
    for _ in range(depth - 1):
        step = step @ adj
        reach = reach + step
    reach = scipy.sparse.triu(reach, k=1).tocoo()
    return np.unique(reach.row.astype(np.int64) * n_atoms + reach.col)
