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

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse
import qdldl
from scipy.spatial import cKDTree

Jacobian = tuple  # (rows (k,), atoms (k,), values (k, 3))


# --------------------------------------------------------------------------- geometry with gradients

def cross(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cross product of ``(n, 3)`` arrays (np.cross costs more than the arithmetic here)."""
    out = np.empty(np.broadcast_shapes(a.shape, b.shape))
    out[..., 0] = a[..., 1] * b[..., 2] - a[..., 2] * b[..., 1]
    out[..., 1] = a[..., 2] * b[..., 0] - a[..., 0] * b[..., 2]
    out[..., 2] = a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]
    return out


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

    def __call__(self, x: np.ndarray):
        r = (self.matrix @ x - self.target) / self.sigma[:, None]
        vals = self._vals
        if self.robust > 0:
            c2 = self.robust ** 2
            s = (r * r).sum(1)
            rho = c2 * np.log1p(s / c2)
            r = r * np.sqrt(rho / np.maximum(s, 1e-12))[:, None]
            vals = vals * np.sqrt(1.0 / (1.0 + s / c2))[self._rows]
        n = len(self._rows)
        rows = (self._rows * 3)[:, None] + np.arange(3)
        values = np.zeros((n, 3, 3))
        values[:, np.arange(3), np.arange(3)] = vals[:, None]
        return r.ravel(), (rows.ravel(), np.repeat(self._cols, 3), values.reshape(-1, 3))


@dataclass
class Bonds:
    """``(|x_i - x_j| - d0) / sigma``."""
    i: np.ndarray
    j: np.ndarray
    d0: np.ndarray
    sigma: float | np.ndarray

    def __call__(self, x):
        d, g = distances(x, self.i, self.j)
        s = np.broadcast_to(np.asarray(self.sigma, float), d.shape)
        g = g / s[:, None]
        n = len(d)
        return (d - self.d0) / s, (np.tile(np.arange(n), 2), np.concatenate([self.i, self.j]), np.concatenate([g, -g]))


@dataclass
class Angles:
    """``(theta_ijk - theta0) / sigma`` (radians)."""
    i: np.ndarray
    j: np.ndarray
    k: np.ndarray
    theta0: np.ndarray
    sigma: float | np.ndarray

    def __call__(self, x):
        t, gi, gj, gk = angles(x, self.i, self.j, self.k)
        s = np.broadcast_to(np.asarray(self.sigma, float), t.shape)[:, None]
        n = len(t)
        return (t - self.theta0) / s[:, 0], (np.tile(np.arange(n), 3), np.concatenate([self.i, self.j, self.k]),
                                             np.concatenate([gi / s, gj / s, gk / s]))


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

    def __call__(self, x):
        phi, *grads = dihedrals(x, self.i, self.j, self.k, self.m)
        s = np.broadcast_to(np.asarray(self.sigma, float), phi.shape)
        p = self.period
        delta = wrap(p * (phi - self.phi0)) / p
        r = 2.0 * np.sin(delta / 2.0) / s
        dr = (np.cos(delta / 2.0) / s)[:, None]
        n = len(phi)
        return r, (np.tile(np.arange(n), 4), np.concatenate([self.i, self.j, self.k, self.m]),
                   np.concatenate([g * dr for g in grads]))


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

    def __call__(self, x):
        phi, *gphi = dihedrals(x, self.c_prev, self.n, self.ca, self.c)
        psi, *gpsi = dihedrals(x, self.n, self.ca, self.c, self.n_next)
        e, dphi, dpsi = self.potential(self.cls, phi, psi)
        r = np.sqrt(self.weight * np.maximum(e, 0.0) + self.eps)
        scale = self.weight / (2.0 * r)
        k = len(r)
        atoms = np.concatenate([self.c_prev, self.n, self.ca, self.c, self.n, self.ca, self.c, self.n_next])
        values = np.concatenate([g * (scale * dphi)[:, None] for g in gphi]
                                + [g * (scale * dpsi)[:, None] for g in gpsi])
        return r, (np.tile(np.arange(k), 8), atoms, values)


@dataclass
class Clashes:
    """``max(0, d0 - |x_i - x_j|) / sigma`` over atom pairs closer than their contact distance.

    ``radius`` ``(n_atoms,)``: contact distance of a pair = radius_i + radius_j (minus
    ``hbond_relief`` when both are N/O: hydrogen bonds are allowed); pairs in ``excluded``
    (codes ``i * n + j``, i < j: 1-2, 1-3, 1-4 pairs) and pairs of two fixed atoms never count.
    Candidate pairs come from a neighbour list (KD-tree over ``atoms``, contact distance plus
    ``SKIN``), rebuilt when an atom has moved more than half the skin since."""
    atoms: np.ndarray
    radius: np.ndarray
    polar: np.ndarray
    excluded: np.ndarray
    moving_mask: np.ndarray
    sigma: float = 0.1
    hbond_relief: float = 0.4
    SKIN = 1.0

    def __post_init__(self):
        self._built_at = None
        self._excluded = np.sort(self.excluded)

    def _rebuild(self, x):
        pos = x[self.atoms]
        cutoff = 2.0 * float(self.radius[self.atoms].max()) + self.SKIN
        p = cKDTree(pos).query_pairs(cutoff, output_type="ndarray")
        i, j = self.atoms[p[:, 0]], self.atoms[p[:, 1]]
        i, j = np.minimum(i, j), np.maximum(i, j)
        code = i.astype(np.int64) * len(self.radius) + j
        at = np.searchsorted(self._excluded, code)
        excluded = (at < len(self._excluded)) & (self._excluded[np.minimum(at, len(self._excluded) - 1)] == code)
        keep = (self.moving_mask[i] | self.moving_mask[j]) & ~excluded
        self._i, self._j = i[keep], j[keep]
        both_polar = self.polar[self._i] & self.polar[self._j]
        self._d0 = self.radius[self._i] + self.radius[self._j] - self.hbond_relief * both_polar
        self._built_at = pos.copy()

    def __call__(self, x):
        if self._built_at is None or np.abs(x[self.atoms] - self._built_at).max() > 0.5 * self.SKIN:
            self._rebuild(x)
        d, g = distances(x, self._i, self._j)
        active = d < self._d0
        i, j, d0, d, g = self._i[active], self._j[active], self._d0[active], d[active], g[active]
        n = len(d)
        g = -g / self.sigma
        return (d0 - d) / self.sigma, (np.tile(np.arange(n), 2), np.concatenate([i, j]), np.concatenate([g, -g]))


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


def solve(terms: list, x0: np.ndarray, moving: np.ndarray, iterations: int = 30, damping: float = 1e-3,
          tolerance: float = 1e-5) -> Result:
    """Levenberg-Marquardt on ``sum_terms |r|^2`` over the ``moving`` atoms (indices) of ``x0`` ``(n, 3)``."""
    terms = merge(terms)
    x = np.array(x0, np.float64)
    column = np.full(len(x), -1, np.int64)
    column[moving] = np.arange(len(moving))
    n_var = 3 * len(moving)

    def residuals(x):
        parts, jacobians, n_rows = evaluate(terms, x)
        return (np.concatenate(parts) if parts else np.zeros(0)), (jacobians, n_rows)

    def jacobian(pieces):
        # the sparse matrix is built only for accepted steps (about half of the trials are not)
        jacobians, n_rows = pieces
        rows = np.concatenate([j[0] for j in jacobians])
        atoms = np.concatenate([j[1] for j in jacobians])
        values = np.concatenate([j[2] for j in jacobians])
        col = column[atoms]
        keep = col >= 0
        rows, col, values = rows[keep], col[keep], values[keep]
        return scipy.sparse.csr_matrix((values.ravel(), (np.repeat(rows, 3), (3 * col[:, None] + np.arange(3)).ravel())),
                                       shape=(n_rows, n_var))

    r, pieces = residuals(x)
    J = jacobian(pieces)
    cost = float(r @ r)
    lam = damping
    it = 0
    solver = _NormalEquations()
    for it in range(1, iterations + 1):
        solver.set(J)
        g = J.T @ r
        accepted = False
        for _ in range(8):
            delta = solver.solve(lam, -g)
            trial = x.copy()
            trial[moving] += delta.reshape(-1, 3)
            r_new, pieces_new = residuals(trial)
            new_cost = float(r_new @ r_new)
            if np.isfinite(new_cost) and new_cost < cost:
                accepted = True
                break
            lam *= 4.0
        if not accepted:
            break
        improvement = (cost - new_cost) / max(cost, 1e-12)
        x, r, J, cost = trial, r_new, jacobian(pieces_new), new_cost
        lam = max(lam / 3.0, 1e-7)
        if improvement < tolerance:
            break
    return Result(x, cost, it)


class _NormalEquations:
    """The damped normal equations ``(J^T J + lam diag(J^T J)) delta = b`` of one LM solve.

    ``J^T J`` is symmetric positive definite, so a sparse LDL^T (QDLDL) with a fill-reducing
    ordering does.  Its symbolic analysis is kept for as long as the sparsity pattern holds: the
    pattern only grows (a union with every earlier one, the extra entries zero), so the damping
    trials of an iteration and most iterations refactorise numerically only (~1 ms where
    SuperLU's full LU with its ordering took ~7 ms on a 150-residue chain).  New clash contacts
    still grow the pattern; anticipating them (near pairs stored in advance), or one pattern for
    all three solves of a frame, costs more fill than the symbolic analyses it saves."""

    def __init__(self):
        self._solver = None
        self._holder = None  # the pattern so far, every value TINY (a sum keeps the union of patterns)

    TINY = 1e-300

    def set(self, J: scipy.sparse.csr_matrix) -> None:
        A = (J.T @ J).tocsc()
        if self._holder is None:
            n = A.shape[0]
            A = A + scipy.sparse.diags(np.full(n, self.TINY), format="csc")  # the diagonal always stored
        else:
            A = A + self._holder
        if not A.has_sorted_indices:
            A.sort_indices()
        if self._holder is None or A.nnz != self._holder.nnz:
            self._holder = scipy.sparse.csc_matrix((np.full(A.nnz, self.TINY), A.indices.copy(), A.indptr.copy()),
                                                   shape=A.shape)
            col = np.repeat(np.arange(A.shape[1]), np.diff(A.indptr))
            # the upper triangle (QDLDL's input), gathered from A's data by these positions
            self._upper_at = np.flatnonzero(A.indices <= col)
            counts = np.bincount(col[self._upper_at], minlength=A.shape[1])
            self._upper = scipy.sparse.csc_matrix((A.data[self._upper_at], A.indices[self._upper_at],
                                                   np.r_[0, np.cumsum(counts)]), shape=A.shape)
            self._diag_at = np.flatnonzero(A.indices[self._upper_at] == col[self._upper_at])
            self._solver = None
        self._upper.data[:] = A.data[self._upper_at]
        self._diag = self._upper.data[self._diag_at].copy()

    def solve(self, lam: float, b: np.ndarray) -> np.ndarray:
        upper = self._upper
        upper.data[self._diag_at] = self._diag + lam * np.maximum(self._diag, 1e-6) + 1e-9
        if self._solver is None:
            self._solver = qdldl.Solver(upper, upper=True)
        else:
            self._solver.update(upper, upper=True)
        return self._solver.solve(b)


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
