"""Compiled (numba) residuals and Jacobian values of the least-squares terms.

A fit evaluates its terms ~70 times per frame; in numpy each bond, angle and dihedral term is
~40 array operations over a few thousand rows, and the operations' overhead, not the arithmetic,
was a third of the fit.  One loop per term does the same arithmetic in the same order.  The
formulas are those of :mod:`least_squares` (``distances``, ``angles``, ``dihedrals``); the
output layouts too: values of the atoms of a row are stacked atom by atom (all rows' first
atom, then all rows' second atom, ...).  Compiled once per machine (``cache=True``: about 10 s
the first time, a few milliseconds after).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, error_model="numpy")
def bonds(x, i, j, d0, sigma):
    """``((|x_i - x_j| - d0) / sigma (n,), values (2n, 3))``."""
    n = len(i)
    r = np.empty(n)
    values = np.empty((2 * n, 3))
    for k in range(n):
        v0 = x[i[k], 0] - x[j[k], 0]
        v1 = x[i[k], 1] - x[j[k], 1]
        v2 = x[i[k], 2] - x[j[k], 2]
        d = math.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
        dm = max(d, 1e-9)
        s = sigma[k]
        r[k] = (d - d0[k]) / s
        for a, v in enumerate((v0, v1, v2)):
            g = (v / dm) / s
            values[k, a] = g
            values[n + k, a] = -g
    return r, values


@njit(cache=True, nogil=True, error_model="numpy")
def angles(x, i, j, k, theta0, sigma):
    """``((theta_ijk - theta0) / sigma (n,), values (3n, 3))``."""
    n = len(i)
    r = np.empty(n)
    values = np.empty((3 * n, 3))
    u = np.empty(3)
    v = np.empty(3)
    for q in range(n):
        for a in range(3):
            u[a] = x[i[q], a] - x[j[q], a]
            v[a] = x[k[q], a] - x[j[q], a]
        nu = max(math.sqrt(u[0] * u[0] + u[1] * u[1] + u[2] * u[2]), 1e-9)
        nv = max(math.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]), 1e-9)
        cos = 0.0
        for a in range(3):
            cos += (u[a] / nu) * (v[a] / nv)
        cos = min(max(cos, -1.0), 1.0)
        sin = max(math.sqrt(1.0 - cos * cos), 1e-6)
        s = sigma[q]
        r[q] = (math.acos(cos) - theta0[q]) / s
        for a in range(3):
            uh, vh = u[a] / nu, v[a] / nv
            gi = (cos * uh - vh) / (nu * sin)
            gk = (cos * vh - uh) / (nv * sin)
            values[q, a] = gi / s
            values[n + q, a] = (-gi - gk) / s
            values[2 * n + q, a] = gk / s
    return r, values


@njit(cache=True, nogil=True, error_model="numpy")
def dihedral_gradients(x, i, j, k, m):
    """Dihedral i-j-k-m ``(n,)`` (radians, IUPAC sign) and its gradients ``(4n, 3)`` w.r.t. the four
    atoms (rows ``[0, n)`` atom i, ``[n, 2n)`` atom j, ...)."""
    n = len(i)
    phi = np.empty(n)
    grads = np.empty((4 * n, 3))
    for q in range(n):
        f0, f1, f2 = x[i[q], 0] - x[j[q], 0], x[i[q], 1] - x[j[q], 1], x[i[q], 2] - x[j[q], 2]
        g0, g1, g2 = x[j[q], 0] - x[k[q], 0], x[j[q], 1] - x[k[q], 1], x[j[q], 2] - x[k[q], 2]
        h0, h1, h2 = x[m[q], 0] - x[k[q], 0], x[m[q], 1] - x[k[q], 1], x[m[q], 2] - x[k[q], 2]
        a0, a1, a2 = f1 * g2 - f2 * g1, f2 * g0 - f0 * g2, f0 * g1 - f1 * g0
        b0, b1, b2 = h1 * g2 - h2 * g1, h2 * g0 - h0 * g2, h0 * g1 - h1 * g0
        aa = max(a0 * a0 + a1 * a1 + a2 * a2, 1e-12)
        bb = max(b0 * b0 + b1 * b1 + b2 * b2, 1e-12)
        gn = max(math.sqrt(g0 * g0 + g1 * g1 + g2 * g2), 1e-9)
        c0, c1, c2 = a1 * b2 - a2 * b1, a2 * b0 - a0 * b2, a0 * b1 - a1 * b0
        phi[q] = -math.atan2((c0 * g0 + c1 * g1 + c2 * g2) / gn, a0 * b0 + a1 * b1 + a2 * b2)
        fg = f0 * g0 + f1 * g1 + f2 * g2
        hg = h0 * g0 + h1 * g1 + h2 * g2
        sa, sb = gn / aa, gn / bb
        ta, tb = fg / (aa * gn), hg / (bb * gn)
        for c, (av, bv) in enumerate(((a0, b0), (a1, b1), (a2, b2))):
            di = -sa * av
            dm = sb * bv
            grads[q, c] = di
            grads[n + q, c] = -di + ta * av - tb * bv
            grads[2 * n + q, c] = -dm - ta * av + tb * bv
            grads[3 * n + q, c] = dm
    return phi, grads


@njit(cache=True, nogil=True, error_model="numpy")
def dihedral_residuals(phi, grads, phi0, sigma, period):
    """``2 sin((phi - phi0) / 2) / sigma`` (periodic in ``period``) and the Jacobian values: the
    gradients ``(4n, 3)`` of :func:`dihedral_gradients` scaled in place."""
    n = len(phi)
    r = np.empty(n)
    for q in range(n):
        t = np.fmod(period * (phi[q] - phi0[q]) + math.pi, 2.0 * math.pi)  # numpy's % (least_squares.wrap)
        if t < 0.0:
            t += 2.0 * math.pi
        delta = (t - math.pi) / period
        s = sigma[q]
        r[q] = 2.0 * math.sin(delta / 2.0) / s
        scale = math.cos(delta / 2.0) / s
        for p in range(4):
            for c in range(3):
                grads[p * n + q, c] *= scale
    return r, grads


# ------------------------------------------------------------------ normal equations in 3 x 3 blocks
# An atom's three coordinates always come together, so J^T J, its pattern and its LDL^T factor
# are kept as 3 x 3 blocks over atoms: a ninth of the index arithmetic of scalar sparse code.
# Matrices are the upper triangle in block CSC form: ``ptr`` (n + 1,), ``idx`` (nnz,) block rows
# (sorted, no duplicates, the diagonal block stored and last in its column), ``data`` (nnz, 3, 3)
# with ``data[p]`` the block at (idx[p], column).


@njit(cache=True, nogil=True, error_model="numpy")
def periodic_bicubic(table, cls, phi, psi):
    """Bicubic Hermite interpolation of periodic tables ``(classes, n, n, 4)`` (value, d/dphi,
    d/dpsi, d2/dphi dpsi at phi, psi = -pi + (i, j) 2 pi / n) at ``(cls, phi, psi)`` ``(k,)``
    radians: ``(value, d/dphi, d/dpsi)``, each ``(k,)``, the derivatives those of the interpolant."""
    n = table.shape[1]
    h = 2.0 * math.pi / n
    k = len(phi)
    e, dphi, dpsi = np.empty(k), np.empty(k), np.empty(k)
    for q in range(k):
        if not (math.isfinite(phi[q]) and math.isfinite(psi[q])):  # a broken trial step: let it show
            e[q] = dphi[q] = dpsi[q] = math.nan
            continue
        u = (phi[q] + math.pi) / h
        v = (psi[q] + math.pi) / h
        i0, j0 = math.floor(u), math.floor(v)
        u -= i0
        v -= j0
        # Hermite basis (values at 0 and 1, slopes at 0 and 1) and its derivatives, in u and in v
        hu = (2 * u ** 3 - 3 * u ** 2 + 1, -2 * u ** 3 + 3 * u ** 2, u ** 3 - 2 * u ** 2 + u, u ** 3 - u ** 2)
        du = (6 * u ** 2 - 6 * u, -6 * u ** 2 + 6 * u, 3 * u ** 2 - 4 * u + 1, 3 * u ** 2 - 2 * u)
        hv = (2 * v ** 3 - 3 * v ** 2 + 1, -2 * v ** 3 + 3 * v ** 2, v ** 3 - 2 * v ** 2 + v, v ** 3 - v ** 2)
        dv = (6 * v ** 2 - 6 * v, -6 * v ** 2 + 6 * v, 3 * v ** 2 - 4 * v + 1, 3 * v ** 2 - 2 * v)
        f = g_phi = g_psi = 0.0
        for a in range(2):
            i = (int(i0) + a) % n
            for b in range(2):
                j = (int(j0) + b) % n
                t = table[cls[q], i, j]
                c0, c1, c2, c3 = t[0], t[1] * h, t[2] * h, t[3] * h * h
                f += c0 * hu[a] * hv[b] + c1 * hu[2 + a] * hv[b] + c2 * hu[a] * hv[2 + b] + c3 * hu[2 + a] * hv[2 + b]
                g_phi += c0 * du[a] * hv[b] + c1 * du[2 + a] * hv[b] + c2 * du[a] * hv[2 + b] + c3 * du[2 + a] * hv[2 + b]
                g_psi += c0 * hu[a] * dv[b] + c1 * hu[2 + a] * dv[b] + c2 * hu[a] * dv[2 + b] + c3 * hu[2 + a] * dv[2 + b]
        e[q], dphi[q], dpsi[q] = f, g_phi / h, g_psi / h
    return e, dphi, dpsi


@njit(cache=True, nogil=True, error_model="numpy")
def normal_equations(n_atoms, n_rows, rows, atoms, values, r, part):
    """The upper triangle of ``J^T J`` in blocks (``ptr, idx, data``) over ``n_atoms`` atoms and
    ``J^T r`` ``(n_atoms, 3)``, for the Jacobian given by its entries: row ``rows[e]`` depends on
    atom ``atoms[e]`` (0 .. n_atoms-1) with gradient ``values[e]`` ``(3,)``.

    Gustavson's product: each atom's column gathers the atoms before it that share a row with it
    (a marker array, no global sort), then sorts its few neighbours.  Every atom has its diagonal
    block, zero if no row holds it.  Atoms of different ``part`` ``(n_atoms,)`` get no block: a
    row that comes to join two parts during a solve (a new contact) then counts in each part's
    normal equations as if the other part were fixed (each part's matrix stays its own, and
    positive semi-definite)."""
    n_e = len(rows)
    # the entries of each row, and the entries of each atom
    row_start = np.zeros(n_rows + 1, np.int64)
    atom_start = np.zeros(n_atoms + 1, np.int64)
    for e in range(n_e):
        row_start[rows[e] + 1] += 1
        atom_start[atoms[e] + 1] += 1
    for q in range(n_rows):
        row_start[q + 1] += row_start[q]
    for q in range(n_atoms):
        atom_start[q + 1] += atom_start[q]
    by_row = np.empty(n_e, np.int64)
    by_atom = np.empty(n_e, np.int64)
    fill_r = row_start[:-1].copy()
    fill_a = atom_start[:-1].copy()
    for e in range(n_e):
        by_row[fill_r[rows[e]]] = e
        fill_r[rows[e]] += 1
        by_atom[fill_a[atoms[e]]] = e
        fill_a[atoms[e]] += 1
    g = np.zeros((n_atoms, 3))
    for e in range(n_e):
        for a in range(3):
            g[atoms[e], a] += values[e, a] * r[rows[e]]
    # pass 1: the neighbours b <= c of each atom c
    mark = np.full(n_atoms, -1, np.int64)
    ptr = np.zeros(n_atoms + 1, np.int64)
    for c in range(n_atoms):
        mark[c] = c
        m = 1
        for p in range(atom_start[c], atom_start[c + 1]):
            q = rows[by_atom[p]]
            for s in range(row_start[q], row_start[q + 1]):
                b = atoms[by_row[s]]
                if b < c and mark[b] != c and part[b] == part[c]:
                    mark[b] = c
                    m += 1
        ptr[c + 1] = ptr[c] + m
    idx = np.empty(ptr[n_atoms], np.int64)
    data = np.empty((ptr[n_atoms], 3, 3))
    # pass 2: each column's blocks accumulated in a workspace, then written in row order
    mark[:] = -1
    slot = np.empty(n_atoms, np.int64)
    found = np.empty(n_atoms, np.int64)
    blocks = np.empty((n_atoms, 3, 3))
    for c in range(n_atoms):
        mark[c] = c
        slot[c] = 0
        found[0] = c
        blocks[0] = 0.0
        m = 1
        for p in range(atom_start[c], atom_start[c + 1]):
            ec = by_atom[p]
            q = rows[ec]
            v0, v1, v2 = values[ec, 0], values[ec, 1], values[ec, 2]
            for s in range(row_start[q], row_start[q + 1]):
                eb = by_row[s]
                b = atoms[eb]
                if b > c or part[b] != part[c]:
                    continue
                if mark[b] != c:
                    mark[b] = c
                    slot[b] = m
                    found[m] = b
                    blocks[m] = 0.0
                    m += 1
                k = slot[b]
                for i in range(3):
                    w = values[eb, i]
                    blocks[k, i, 0] += w * v0
                    blocks[k, i, 1] += w * v1
                    blocks[k, i, 2] += w * v2
        for t in range(1, m):  # insertion sort of a few; c itself, the largest, ends last
            v = found[t]
            u = t - 1
            while u >= 0 and found[u] > v:
                found[u + 1] = found[u]
                u -= 1
            found[u + 1] = v
        for t in range(m):
            idx[ptr[c] + t] = found[t]
            data[ptr[c] + t] = blocks[slot[found[t]]]
    return ptr, idx, data, g


@njit(cache=True, nogil=True, error_model="numpy")
def union_pattern(held_ptr, held_idx, ptr, idx, data):
    """The blocks ``data`` of a pattern ``(ptr, idx)`` placed in its union with the held pattern
    ``(held_ptr, held_idx)`` (zero blocks where only the held one has an entry): ``(union ptr,
    union idx, blocks, grown)``; ``grown`` False: the union is the held pattern."""
    n = len(ptr) - 1
    out_ptr = np.zeros(n + 1, np.int64)
    for c in range(n):
        i, j, k = held_ptr[c], ptr[c], 0
        while i < held_ptr[c + 1] or j < ptr[c + 1]:
            if j == ptr[c + 1] or (i < held_ptr[c + 1] and held_idx[i] < idx[j]):
                i += 1
            elif i == held_ptr[c + 1] or idx[j] < held_idx[i]:
                j += 1
            else:
                i += 1
                j += 1
            k += 1
        out_ptr[c + 1] = out_ptr[c] + k
    grown = out_ptr[n] != held_ptr[n]
    out_idx = held_idx if not grown else np.empty(out_ptr[n], np.int64)
    out = np.zeros((out_ptr[n], 3, 3))
    for c in range(n):
        i, j, k = held_ptr[c], ptr[c], out_ptr[c]
        while i < held_ptr[c + 1] or j < ptr[c + 1]:
            if j == ptr[c + 1] or (i < held_ptr[c + 1] and held_idx[i] < idx[j]):
                row = held_idx[i]
                i += 1
            else:
                row = idx[j]
                out[k] = data[j]
                if i < held_ptr[c + 1] and held_idx[i] == row:
                    i += 1
                j += 1
            if grown:
                out_idx[k] = row
            k += 1
    return out_ptr, out_idx, out, grown


# ------------------------------------------------------------------ block LDL^T with a kept ordering
# QDLDL's algorithms (Goulart, Stellato et al., Apache-2.0: elimination tree, up-looking
# factorisation, triangular solves), over 3 x 3 blocks: P A P^T = L D L^T, L unit lower
# triangular in blocks, D block diagonal.  The ordering (AMD on the atoms) is computed once and
# kept while the pattern grows by a few clash pairs, where QDLDL's binding orders every new
# pattern afresh.


@njit(cache=True, nogil=True, error_model="numpy")
def ldl_symbolic(ptr, idx, perm_inv):
    """For the upper triangle ``(ptr, idx)`` of A and the ordering ``perm_inv`` (new index of each
    old one): the upper triangle of P A P^T ``(Cp, Ci)``, the position in it of each block of A,
    the elimination tree and the blocks per column of L."""
    n = len(ptr) - 1
    nnz = ptr[n]
    Cp = np.zeros(n + 1, np.int64)
    for j in range(n):
        for p in range(ptr[j], ptr[j + 1]):
            Cp[max(perm_inv[idx[p]], perm_inv[j]) + 1] += 1
    for j in range(n):
        Cp[j + 1] += Cp[j]
    Ci = np.empty(nnz, np.int64)
    where = np.empty(nnz, np.int64)  # >= 0: the block as it is; < 0: at -1 - where, transposed
    fill = Cp[:n].copy()
    for j in range(n):
        for p in range(ptr[j], ptr[j + 1]):
            a, b = perm_inv[idx[p]], perm_inv[j]
            c = max(a, b)
            Ci[fill[c]] = min(a, b)
            where[p] = fill[c] if a <= b else -1 - fill[c]
            fill[c] += 1
    etree = np.full(n, -1, np.int64)
    Lnz = np.zeros(n, np.int64)
    work = np.full(n, -1, np.int64)
    for j in range(n):
        work[j] = j
        for p in range(Cp[j], Cp[j + 1]):
            i = Ci[p]
            while work[i] != j:
                if etree[i] == -1:
                    etree[i] = j
                Lnz[i] += 1
                work[i] = j
                i = etree[i]
    return Cp, Ci, where, etree, Lnz


@njit(cache=True, nogil=True, error_model="numpy")
def _inverse3(m, out):
    """``out`` = the inverse of the symmetric 3 x 3 ``m``."""
    c00 = m[1, 1] * m[2, 2] - m[1, 2] * m[2, 1]
    c01 = m[1, 2] * m[2, 0] - m[1, 0] * m[2, 2]
    c02 = m[1, 0] * m[2, 1] - m[1, 1] * m[2, 0]
    det = m[0, 0] * c00 + m[0, 1] * c01 + m[0, 2] * c02
    inv = 1.0 / det
    out[0, 0] = c00 * inv
    out[1, 0] = c01 * inv
    out[2, 0] = c02 * inv
    out[0, 1] = (m[0, 2] * m[2, 1] - m[0, 1] * m[2, 2]) * inv
    out[1, 1] = (m[0, 0] * m[2, 2] - m[0, 2] * m[2, 0]) * inv
    out[2, 1] = (m[0, 1] * m[2, 0] - m[0, 0] * m[2, 1]) * inv
    out[0, 2] = (m[0, 1] * m[1, 2] - m[0, 2] * m[1, 1]) * inv
    out[1, 2] = (m[0, 2] * m[1, 0] - m[0, 0] * m[1, 2]) * inv
    out[2, 2] = (m[0, 0] * m[1, 1] - m[0, 1] * m[1, 0]) * inv


@njit(cache=True, nogil=True, error_model="numpy")
def ldl_solve(Cp, Ci, where, etree, Lnz, perm, data, b):
    """``x`` ``(n, 3)`` with ``A x = b`` for the blocks ``data`` of A's upper triangle (in the order
    :func:`ldl_symbolic` was given) and ``b`` ``(n, 3)``.

    Row k of L: Z_c = A_ck - sum L_cm Z_m over the tree path (QDLDL's y), L_kc = Z_c^T D_c^-1,
    D_k = A_kk - sum L_kc Z_c."""
    n = len(Cp) - 1
    Cx = np.empty((len(Ci), 3, 3))
    for p in range(len(data)):
        w = where[p]
        if w >= 0:
            Cx[w] = data[p]
        else:
            Cx[-1 - w] = data[p].T
    Lp = np.zeros(n + 1, np.int64)
    for i in range(n):
        Lp[i + 1] = Lp[i] + Lnz[i]
    Li = np.empty(Lp[n], np.int64)
    Lx = np.empty((Lp[n], 3, 3))
    Dinv = np.empty((n, 3, 3))
    used = np.zeros(n, np.bool_)
    y_idx = np.empty(n, np.int64)
    elim = np.empty(n, np.int64)
    next_space = Lp[:n].copy()
    y = np.zeros((n, 3, 3))
    dk = np.empty((3, 3))
    for k in range(n):
        n_y = 0
        dk[:] = 0.0
        for p in range(Cp[k], Cp[k + 1]):
            i = Ci[p]
            if i == k:
                dk[:] = Cx[p]
                continue
            y[i] = Cx[p]
            if not used[i]:  # the path from i up the tree to the first node already on it
                used[i] = True
                elim[0] = i
                n_e = 1
                nxt = etree[i]
                while nxt != -1 and nxt < k:
                    if used[nxt]:
                        break
                    used[nxt] = True
                    elim[n_e] = nxt
                    n_e += 1
                    nxt = etree[nxt]
                while n_e:
                    n_e -= 1
                    y_idx[n_y] = elim[n_e]
                    n_y += 1
        for t in range(n_y - 1, -1, -1):
            c = y_idx[t]
            at = next_space[c]
            yc = y[c]
            c00, c01, c02 = yc[0, 0], yc[0, 1], yc[0, 2]
            c10, c11, c12 = yc[1, 0], yc[1, 1], yc[1, 2]
            c20, c21, c22 = yc[2, 0], yc[2, 1], yc[2, 2]
            for q in range(Lp[c], at):  # y_i -= L_ic y_c, unrolled (the hot loop)
                i = Li[q]
                for r in range(3):
                    l0, l1, l2 = Lx[q, r, 0], Lx[q, r, 1], Lx[q, r, 2]
                    y[i, r, 0] -= l0 * c00 + l1 * c10 + l2 * c20
                    y[i, r, 1] -= l0 * c01 + l1 * c11 + l2 * c21
                    y[i, r, 2] -= l0 * c02 + l1 * c12 + l2 * c22
            Li[at] = k
            lk = Lx[at]
            dc = Dinv[c]
            for r in range(3):  # L_kc = y_c^T D_c^-1
                for s in range(3):
                    lk[r, s] = yc[0, r] * dc[0, s] + yc[1, r] * dc[1, s] + yc[2, r] * dc[2, s]
            for r in range(3):  # D_k -= L_kc y_c
                for s in range(3):
                    dk[r, s] -= lk[r, 0] * yc[0, s] + lk[r, 1] * yc[1, s] + lk[r, 2] * yc[2, s]
            next_space[c] = at + 1
            yc[:] = 0.0
            used[c] = False
        _inverse3(dk, Dinv[k])
    x = np.empty((n, 3))
    for i in range(n):
        x[i] = b[perm[i]]
    for i in range(n):  # L z = b
        x0, x1, x2 = x[i, 0], x[i, 1], x[i, 2]
        for q in range(Lp[i], Lp[i + 1]):
            j = Li[q]
            for r in range(3):
                x[j, r] -= Lx[q, r, 0] * x0 + Lx[q, r, 1] * x1 + Lx[q, r, 2] * x2
    w = np.empty(3)
    for i in range(n):  # D w = z
        for r in range(3):
            w[r] = Dinv[i, r, 0] * x[i, 0] + Dinv[i, r, 1] * x[i, 1] + Dinv[i, r, 2] * x[i, 2]
        x[i] = w
    for i in range(n - 1, -1, -1):  # L^T x = w
        x0, x1, x2 = x[i, 0], x[i, 1], x[i, 2]
        for q in range(Lp[i], Lp[i + 1]):
            j = Li[q]
            x0 -= Lx[q, 0, 0] * x[j, 0] + Lx[q, 1, 0] * x[j, 1] + Lx[q, 2, 0] * x[j, 2]
            x1 -= Lx[q, 0, 1] * x[j, 0] + Lx[q, 1, 1] * x[j, 1] + Lx[q, 2, 1] * x[j, 2]
            x2 -= Lx[q, 0, 2] * x[j, 0] + Lx[q, 1, 2] * x[j, 1] + Lx[q, 2, 2] * x[j, 2]
        x[i, 0], x[i, 1], x[i, 2] = x0, x1, x2
    out = np.empty((n, 3))
    for i in range(n):
        out[perm[i]] = x[i]
    return out


# ------------------------------------------------------------------ clash search (cell list)


@njit(cache=True, nogil=True, error_model="numpy")
def _scan(x, atoms, extra, radius, polar, relief, moving, ex_ptr, ex_idx, cell, dims, head, nxt,
          out_i, out_j, dist, con):
    """:func:`close_pairs`' search over its cell list: the number of pairs found, the first
    ``len(out_i)`` of them written to the ``out_*`` arrays (arrays grown inside the loop made it
    20x slower)."""
    stamp = np.full(len(radius), -1, np.int64)
    cap = len(out_i)
    m = 0
    for p in range(len(atoms)):
        i0 = atoms[p]
        for e in range(ex_ptr[i0], ex_ptr[i0 + 1]):  # i0's excluded partners, marked
            stamp[ex_idx[e]] = i0
        for shift in range(14):  # the cell itself, then its 13 forward neighbours
            if shift == 0:
                dx, dy, dz = 0, 0, 0
            else:
                t = shift + 13  # offsets (-1..1)^3 numbered 0..26, 13 the cell itself
                dx, dy, dz = t // 9 - 1, (t // 3) % 3 - 1, t % 3 - 1
            cx, cy, cz = cell[p, 0] + dx, cell[p, 1] + dy, cell[p, 2] + dz
            if cx < 0 or cy < 0 or cz < 0 or cx >= dims[0] or cy >= dims[1] or cz >= dims[2]:
                continue
            q = nxt[p] if shift == 0 else head[(cx * dims[1] + cy) * dims[2] + cz]
            while q != -1:
                j0 = atoms[q]
                q = nxt[q]
                c = radius[i0] + radius[j0]
                if polar[i0] and polar[j0]:
                    c -= relief
                d2 = 0.0
                for a in range(3):
                    v = x[i0, a] - x[j0, a]
                    d2 += v * v
                if d2 > (c + extra) * (c + extra) * (1.0 + 1e-9):  # far: no square root (most pairs)
                    continue
                if stamp[j0] == i0:
                    continue
                i, j = (i0, j0) if i0 < j0 else (j0, i0)
                if not (moving[i] or moving[j]):
                    continue
                d2 = 0.0  # again in the pair's order: the same bits whichever atom came first
                for a in range(3):
                    v = x[i, a] - x[j, a]
                    d2 += v * v
                d = math.sqrt(d2)
                if d >= c + extra:
                    continue
                if m < cap:
                    out_i[m] = i
                    out_j[m] = j
                    dist[m] = d
                    con[m] = c
                m += 1
    return m


@njit(cache=True, nogil=True, error_model="numpy")
def close_pairs(x, atoms, extra, radius, polar, relief, moving, ex_ptr, ex_idx):
    """The pairs of ``atoms`` closer than their contact distance plus ``extra`` (A), one of them
    ``moving``, not excluded (``ex_idx[ex_ptr[i]:ex_ptr[i + 1]]``: the atoms excluded with atom
    i, both ways): atom numbers ``(i, j)`` (i < j, sorted by pair), distances and contact distances.

    A cell list over the atoms' bounding box (cells of the largest contact distance plus
    ``extra``, made larger if the box would need more than ~8 cells per atom), each cell searched
    against itself and its 13 forward neighbours: every pair once."""
    n = len(atoms)
    big = 0.0
    lo = np.full(3, np.inf)
    hi = np.full(3, -np.inf)
    for p in range(n):
        big = max(big, radius[atoms[p]])
        for a in range(3):
            lo[a] = min(lo[a], x[atoms[p], a])
            hi[a] = max(hi[a], x[atoms[p], a])
    size = max(2.0 * big + extra, 1e-3)
    dims = np.ones(3, np.int64)
    while n:
        for a in range(3):
            dims[a] = int((hi[a] - lo[a]) / size) + 1
        if dims[0] * dims[1] * dims[2] <= 8 * n + 1000:
            break
        size *= 1.25
    head = np.full(dims[0] * dims[1] * dims[2], -1, np.int64)
    nxt = np.empty(n, np.int64)
    cell = np.empty((n, 3), np.int64)
    for p in range(n):
        for a in range(3):
            cell[p, a] = min(int((x[atoms[p], a] - lo[a]) / size), dims[a] - 1)
        k = (cell[p, 0] * dims[1] + cell[p, 1]) * dims[2] + cell[p, 2]
        nxt[p] = head[k]
        head[k] = p
    cap = n + 64
    while True:  # once, unless more pairs than room
        out_i, out_j = np.empty(cap, np.int64), np.empty(cap, np.int64)
        dist, con = np.empty(cap), np.empty(cap)
        m = _scan(x, atoms, extra, radius, polar, relief, moving, ex_ptr, ex_idx, cell, dims, head, nxt,
                  out_i, out_j, dist, con)
        if m <= cap:
            break
        cap = m
    order = np.argsort(out_i[:m] * len(radius) + out_j[:m])
    return out_i[order], out_j[order], dist[order], con[order]


@njit(cache=True, nogil=True, error_model="numpy")
def clash_rows(x, i, j, d, d0, sigma):
    """Residuals ``(d0 - d) / sigma`` ``(m,)`` of the pairs ``(i, j)`` at distances ``d`` and their
    values ``(2m, 3)`` (atom i's rows, then atom j's)."""
    m = len(i)
    r = np.empty(m)
    values = np.empty((2 * m, 3))
    for t in range(m):
        dm = max(d[t], 1e-9)
        r[t] = (d0[t] - d[t]) / sigma
        for a in range(3):
            g = -((x[i[t], a] - x[j[t], a]) / dm) / sigma
            values[t, a] = g
            values[m + t, a] = -g
    return r, values
