#!/usr/bin/env python3
"""The Winograd F(m x m, 3x3) matrices of common/winograd.c, derived from
their interpolation points and checked exactly (sympy, rationals).

Toom-Cook (Lavin & Gray 2016, section 4): with finite points p_0..p_{m}
and infinity, A^T[i][j] = p_j^i, G[j][k] = p_j^k / prod_{l != j}(p_j - p_l)
(last column of A^T and last row of G: the point at infinity), and B^T the
solution of the identity the algorithm rests on: for a 1D input d of m + 2
samples and a kernel g of 3, A^T ((G g) .* (B^T d)) = the m outputs of the
correlation, sum_k g_k d_{i+k}. Each row of B^T is then scaled to small
integers (the scale moved into G's row), which does not change the results.

    python3 scripts/winograd_matrices.py     checks winograd.c's matrices (TABLES)
                                              and prints those derived from the points

winograd.c's tables are the derived ones up to the sign of a point's row
(in B^T and G together, or in A^T's column and B^T's row).

(Points 0, +-1, +-1/2 for F(4x4) are the mirror image of 0, +-1, +-2 up to
powers of two, i.e. the same float errors; F(3x3)'s 0, 1, -1, 2 equals 0,
1, -1, -2 and 0, 1, -1, 1/2 the same way.)
"""
import sympy as sp

POINTS = {2: [0, 1, -1], 3: [0, 1, -1, 2], 4: [0, 1, -1, 2, -2]}
R = 3  # kernel size


def toom(m, points):
    n = m + R - 1
    P = [sp.Integer(p) for p in points]
    AT, G = sp.zeros(m, n), sp.zeros(n, R)
    for j, p in enumerate(P):
        for i in range(m):
            AT[i, j] = p**i
        N = sp.prod([p - q for q in P if q != p])
        for k in range(R):
            G[j, k] = p**k / N
    AT[m - 1, n - 1], G[n - 1, R - 1] = 1, 1
    BT = sp.Matrix(n, n, lambda a, b: sp.Symbol(f"b{a}_{b}"))
    eqs = [sum(AT[i, j] * G[j, k] * BT[j, l] for j in range(n)) - (1 if l == i + k else 0)
           for i in range(m) for k in range(R) for l in range(n)]
    BT = BT.subs(sp.solve(eqs, list(BT)))
    for j in range(n):  # rows of B^T to coprime integers, the scale into G
        den = sp.ilcm(*[sp.fraction(x)[1] for x in BT[j, :]])
        s = sp.Rational(den) / sp.igcd(*[int(x * den) for x in BT[j, :] if x != 0])
        BT[j, :], G[j, :] = BT[j, :] * s, G[j, :] / s
    return BT, G, AT


def check(m, BT, G, AT):
    """The 1D identity, exactly, on symbolic d and g."""
    d, g = sp.symbols(f"d0:{m + 2}"), sp.symbols("g0:3")
    y = AT * (G * sp.Matrix(g)).multiply_elementwise(BT * sp.Matrix(d))
    for i in range(m):
        assert sp.expand(y[i] - sum(g[k] * d[i + k] for k in range(R))) == 0


# As written in common/winograd.c (its comment and its transform functions).
h, t, s6, s24, s12 = sp.Rational(1, 2), sp.Rational(1, 3), sp.Rational(1, 6), sp.Rational(1, 24), sp.Rational(1, 12)
TABLES = {
    2: ([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]],
        [[1, 0, 0], [h, h, h], [h, -h, h], [0, 0, 1]],
        [[1, 1, 1, 0], [0, 1, -1, -1]]),
    3: ([[2, -1, -2, 1, 0], [0, -2, -1, 1, 0], [0, 2, -3, 1, 0], [0, -1, 0, 1, 0], [0, 2, -1, -2, 1]],
        [[h, 0, 0], [-h, -h, -h], [-s6, s6, -s6], [s6, t, 2 * t], [0, 0, 1]],
        [[1, 1, 1, 1, 0], [0, 1, -1, 2, 0], [0, 1, 1, 4, 1]]),
    4: ([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0], [0, -2, -1, 2, 1, 0],
         [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]],
        [[sp.Rational(1, 4), 0, 0], [-s6, -s6, -s6], [-s6, s6, -s6], [s24, s12, s6], [s24, -s12, s6], [0, 0, 1]],
        [[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]]),
}

if __name__ == "__main__":
    for m, pts in POINTS.items():
        BT, G, AT = (sp.Matrix(x) for x in TABLES[m])
        check(m, BT, G, AT)
        print(f"F({m}x{m},3x3): winograd.c's B^T, G, A^T satisfy the identity")
        BT, G, AT = toom(m, pts)
        check(m, BT, G, AT)
        print(f"  derived from points {pts} and infinity:")
        for name, M in (("B^T", BT), ("G", G), ("A^T", AT)):
            print(f"    {name} =", [[str(x) for x in M.row(i)] for i in range(M.rows)])
