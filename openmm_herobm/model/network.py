"""The HEroBM network: a strictly local E(3)-equivariant bead encoder.

For every *centre* bead i the network reads only the positions and types of the beads
j within ``cutoff`` of it (no message passing, so nothing from beyond the cutoff ever
reaches i; a system can be cut into chunks with a one-cutoff halo and give identical
results).  Per centre bead:

1. edge scalars  ``h_ij = MLP(type_i, type_j, bessel(r_ij)) * envelope(r_ij)``;
2. the ACE/MACE atomic basis ``A_i = sum_j R(h_ij) Y(r_ij)`` (channels x (0e+1o+2e));
3. MACE-style products ``A (x) A`` and ``(A (x) A) (x) A`` (body order 4), mixed into
   node features with scalars, pseudo-scalars, vectors and pseudo-vectors (a chiral
   environment needs the odd-parity channels to be told from its mirror image);
4. an Allegro-like second pass: the basis is rebuilt with radial weights that also
   depend on the centre's invariants, and multiplied with its node features;
5. readout: one vector per reconstruction slot (a per-bead-type mix of the ``1o``
   channels, exactly equivariant) and backbone dihedrals (cos from ``0e``, sin from
   ``0o`` channels, so they flip correctly under reflection).

Shapes: ``pos (N, 3)`` in Angstrom, ``bead_type (N,)``, ``edge_center/edge_neighbor
(E,)``, outputs ``(N_centres, S, 3)`` and ``(N_centres, 4)``.
"""

from __future__ import annotations

import math

import torch
from e3nn import o3


class BesselRadial(torch.nn.Module):
    """``n`` Bessel functions times a smooth polynomial envelope vanishing at the cutoff."""

    def __init__(self, cutoff: float, n: int = 8, p: int = 6):
        super().__init__()
        self.cutoff = float(cutoff)
        self.p = float(p)
        self.register_buffer("freq", torch.arange(1, n + 1, dtype=torch.get_default_dtype()) * math.pi / cutoff)

    def envelope(self, r: torch.Tensor) -> torch.Tensor:
        x = r / self.cutoff
        p = self.p
        env = 1.0 - (p + 1.0) * (p + 2.0) / 2.0 * x.pow(p) + p * (p + 2.0) * x.pow(p + 1.0) - p * (p + 1.0) / 2.0 * x.pow(p + 2.0)
        return env * (x < 1.0).to(r.dtype)

    def forward(self, r: torch.Tensor) -> torch.Tensor:
        r = r.unsqueeze(-1)
        return torch.sin(self.freq * r) / r.clamp(min=1e-6) * math.sqrt(2.0 / self.cutoff)


class Gate(torch.nn.Module):
    """Equivariant gate: SiLU on ``0e``, tanh on ``0o`` (odd, keeps parity), sigmoid gates on ``1o`` / ``1e``.

    Input irreps ``s x 0e + p x 0o + (v + v) x 0e (gates) + v x 1o + v x 1e``;
    output ``s x 0e + p x 0o + v x 1o + v x 1e``.  (A scriptable stand-in for e3nn's Gate.)
    """

    def __init__(self, n_scalars: int, n_pseudo: int, n_vectors: int):
        super().__init__()
        self.s, self.p, self.v = n_scalars, n_pseudo, n_vectors
        self.irreps_in = o3.Irreps(f"{n_scalars}x0e + {n_pseudo}x0o + {2 * n_vectors}x0e + {n_vectors}x1o + {n_vectors}x1e")
        self.irreps_out = o3.Irreps(f"{n_scalars}x0e + {n_pseudo}x0o + {n_vectors}x1o + {n_vectors}x1e")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s, p, v = self.s, self.p, self.v
        scalars = torch.nn.functional.silu(x[:, :s])
        pseudo = torch.tanh(x[:, s: s + p])
        gates = torch.sigmoid(x[:, s + p: s + p + 2 * v])
        vec = x[:, s + p + 2 * v:].reshape(x.shape[0], 2 * v, 3) * gates.unsqueeze(-1)
        return torch.cat([scalars, pseudo, vec.reshape(x.shape[0], 6 * v)], dim=1)


class Regroup(torch.nn.Module):
    """Reorder features so equal irreps sit together (``irreps.sort().simplify()``).

    e3nn's ``o3.Linear`` runs one small matmul per (input block, output block) pair; the
    output of a tensor product has dozens of blocks, so regrouping first makes the
    linear layers an order of magnitude cheaper.
    """

    def __init__(self, irreps: o3.Irreps):
        super().__init__()
        irreps = o3.Irreps(irreps)
        sorted_irreps, perm, _ = irreps.sort()
        starts = [0]
        for mul, ir in irreps:
            starts.append(starts[-1] + mul * ir.dim)
        index = []
        inverse = [0] * len(perm)
        for old_block, new_block in enumerate(perm):
            inverse[new_block] = old_block
        for old_block in inverse:
            index.extend(range(starts[old_block], starts[old_block + 1]))
        self.irreps_out = sorted_irreps.simplify()
        self.register_buffer("index", torch.tensor(index, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.index_select(1, self.index)


def _mlp(sizes: list[int]) -> torch.nn.Sequential:
    layers: list[torch.nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [torch.nn.Linear(a, b), torch.nn.SiLU()]
    return torch.nn.Sequential(*layers[:-1])


def channelwise_product(irreps1: o3.Irreps, irreps2: o3.Irreps, lmax: int, keep: str = "") -> o3.TensorProduct:
    """Channel-by-channel (``uuu``) tensor product of two irreps with equal multiplicities.

    ``keep``: if given (e.g. ``"1o 0o"``), only those output irreps are produced.
    Note a channel times *itself* has no antisymmetric part (``v x v = 0``), so the two
    inputs should be different mixtures of channels to produce pseudo-vectors.
    """
    wanted = [o3.Irrep(k) for k in keep.split()] if keep else None
    out, instructions = [], []
    for i1, (mul1, ir1) in enumerate(irreps1):
        for i2, (mul2, ir2) in enumerate(irreps2):
            assert mul1 == mul2
            for ir in ir1 * ir2:
                if ir.l <= lmax and (wanted is None or ir in wanted):
                    instructions.append((i1, i2, len(out), "uuu", True))
                    out.append((mul1, ir))
    return o3.TensorProduct(irreps1, irreps2, o3.Irreps(out), instructions,
                            internal_weights=True, shared_weights=True)


class HEroBMNetwork(torch.nn.Module):
    def __init__(self, n_bead_types: int, max_slots: int, cutoff: float = 8.0, channels: int = 16,
                 embed_dim: int = 32, edge_dim: int = 64, n_radial: int = 8, hidden_mul: int = 16):
        super().__init__()
        self.n_bead_types = n_bead_types
        self.max_slots = max_slots
        self.cutoff = float(cutoff)
        self.channels = channels
        self.radial = BesselRadial(cutoff, n_radial)
        self.embed = torch.nn.Embedding(n_bead_types, embed_dim)
        self.edge_mlp = _mlp([2 * embed_dim + n_radial, edge_dim, edge_dim, edge_dim])
        self.sh = o3.SphericalHarmonics(o3.Irreps("0e + 1o + 2e"), normalize=True, normalization="component")

        c = channels
        self.irreps_a = o3.Irreps(f"{c}x0e + {c}x1o + {c}x2e")
        self.radial_a = torch.nn.Linear(edge_dim, 3 * c)
        # body order 3; A times a channel-mixed copy of A, so cross products (1e) survive
        self.lin_a = o3.Linear(self.irreps_a, self.irreps_a)
        self.prod2 = channelwise_product(self.irreps_a, self.irreps_a, lmax=1)

        h = hidden_mul
        self.irreps_hidden = o3.Irreps(f"{2 * h}x0e + {h}x0o + {h}x1o + {h}x1e")
        self.gate1 = self._gate(h)
        self.group1 = Regroup(self.irreps_a + self.prod2.irreps_out)
        self.mix1 = o3.Linear(self.group1.irreps_out, self.gate1.irreps_in)

        # second, centre-conditioned pass (strictly local: uses only the centre's features)
        self.radial_a2 = _mlp([edge_dim + 3 * h + embed_dim, edge_dim, 3 * c])
        self.irreps_h = self.gate1.irreps_out
        self.lin_h = o3.Linear(self.irreps_h, o3.Irreps(f"{c}x0e + {c}x0o + {c}x1o + {c}x1e"))
        self.prod_ah = channelwise_product(self.irreps_a, self.lin_h.irreps_out, lmax=1)
        self.gate2 = self._gate(h)
        # body order 4 and pseudo-scalars (1o x 1e -> 0o): the centre's features times a new basis
        self.group2 = Regroup(self.irreps_h + self.prod_ah.irreps_out + self.irreps_a)
        self.mix2 = o3.Linear(self.group2.irreps_out, self.gate2.irreps_in)

        # final chiral product: pseudo-scalar x pseudo-vector -> vector.  Without it the
        # vector outputs could not depend on handedness (an L and a D residue would look alike)
        self.irreps_o = o3.Irreps(f"{h}x0e + {h}x0o + {h}x1o + {h}x1e")
        self.lin_o1 = o3.Linear(self.gate2.irreps_out, self.irreps_o)
        self.lin_o2 = o3.Linear(self.gate2.irreps_out, self.irreps_o)
        self.prod_o = channelwise_product(self.irreps_o, self.irreps_o, lmax=1, keep="1o 0o")
        self.group_o = Regroup(self.prod_o.irreps_out)
        self.mix_o = o3.Linear(self.group_o.irreps_out, o3.Irreps(f"{h}x0o + {h}x1o"))

        # readouts
        n_vec = 3 * h  # 1o channels of both passes and of the chiral product
        self.slot_mix = torch.nn.Embedding(n_bead_types, max_slots * n_vec)
        torch.nn.init.normal_(self.slot_mix.weight, std=1.0 / math.sqrt(n_vec))
        self.dihedral_cos = _mlp([7 * h, 64, 2])
        self.dihedral_sin = _mlp([7 * h, 64, 6 * h])

    @staticmethod
    def _gate(h: int) -> Gate:
        return Gate(2 * h, h, h)

    def _basis(self, weights: torch.Tensor, y: torch.Tensor, edge_center: torch.Tensor, n_centers: int) -> torch.Tensor:
        """``sum_j w_ij,c,l Y_l(r_ij)`` laid out as irreps ``c x 0e + c x 1o + c x 2e``."""
        c = self.channels
        w = weights.view(-1, 3, c)
        parts = [
            w[:, 0, :].unsqueeze(-1) * y[:, 0:1].unsqueeze(1),
            w[:, 1, :].unsqueeze(-1) * y[:, 1:4].unsqueeze(1),
            w[:, 2, :].unsqueeze(-1) * y[:, 4:9].unsqueeze(1),
        ]
        edge_feat = torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)
        out = torch.zeros(n_centers, edge_feat.shape[1], dtype=edge_feat.dtype, device=edge_feat.device)
        return out.index_add_(0, edge_center, edge_feat)

    def forward(self, pos: torch.Tensor, bead_type: torch.Tensor, center_index: torch.Tensor,
                edge_center: torch.Tensor, edge_neighbor: torch.Tensor):
        """Slot vectors ``(C, S, 3)`` and dihedral (sin phi, cos phi, sin psi, cos psi) ``(C, 4)``.

        ``center_index (C,)`` are the beads to predict; ``edge_center`` indexes into
        ``center_index`` (0..C-1), ``edge_neighbor`` into all beads.
        """
        n_centers = center_index.shape[0]
        vec = pos[edge_neighbor] - pos[center_index[edge_center]]
        r = torch.linalg.norm(vec, dim=1)
        center_type = bead_type[center_index]
        emb_c = self.embed(center_type)
        edge_in = torch.cat([emb_c[edge_center], self.embed(bead_type[edge_neighbor]), self.radial(r)], dim=1)
        h_edge = self.edge_mlp(edge_in) * self.radial.envelope(r).unsqueeze(-1)
        y = self.sh(vec)

        a = self._basis(self.radial_a(h_edge), y, edge_center, n_centers)
        b2 = self.prod2(a, self.lin_a(a))
        x = self.gate1(self.mix1(self.group1(torch.cat([a, b2], dim=1))))

        # invariants of the centre (|pseudo-scalar| is a true scalar)
        inv = torch.cat([self._scalars(x, 0), self._scalars(x, 1).abs()], dim=1)
        cond = torch.cat([h_edge, inv[edge_center], emb_c[edge_center]], dim=1)
        a2 = self._basis(self.radial_a2(cond), y, edge_center, n_centers)
        ah = self.prod_ah(a2, self.lin_h(x))
        x2 = self.gate2(self.mix2(self.group2(torch.cat([x, ah, a2], dim=1))))

        xo = self.mix_o(self.group_o(self.prod_o(self.lin_o1(x2), self.lin_o2(x2))))
        h = self.gate1.v
        vectors = torch.cat([self._vectors(x), self._vectors(x2), xo[:, h:].reshape(n_centers, h, 3)], dim=1)
        mix = self.slot_mix(center_type).view(n_centers, self.max_slots, -1)
        # (e3nn's 1o components transform with the rotation matrix itself, checked in the tests)
        slots = torch.einsum("csk,ckx->csx", mix, vectors)

        s_even = torch.cat([self._scalars(x, 0), self._scalars(x2, 0)], dim=1)
        s_odd = torch.cat([self._scalars(x, 1), self._scalars(x2, 1), xo[:, :h]], dim=1)
        cos = self.dihedral_cos(torch.cat([s_even, s_odd.abs()], dim=1))
        sin_w = self.dihedral_sin(torch.cat([s_even, s_odd.abs()], dim=1)).view(n_centers, 2, -1)
        sin = (sin_w * s_odd.unsqueeze(1)).sum(-1)
        dihedrals = torch.stack([sin[:, 0], cos[:, 0], sin[:, 1], cos[:, 1]], dim=1)
        return slots, dihedrals

    def _scalars(self, x: torch.Tensor, which: int) -> torch.Tensor:
        """0e (which=0) or 0o (which=1) channels of a gate output ``(n, ...)``."""
        n0e = self.gate1.s
        n0o = self.gate1.p
        if which == 0:
            return x[:, :n0e]
        return x[:, n0e: n0e + n0o]

    def _vectors(self, x: torch.Tensor) -> torch.Tensor:
        """The 1o channels of a gate output as ``(n, channels, 3)``."""
        n0 = self.gate1.s + self.gate1.p
        n1o = self.gate1.v
        return x[:, n0: n0 + 3 * n1o].reshape(x.shape[0], n1o, 3)
