"""Lesson 11: Winograd minimal filtering, a 3x3 conv with 2.25x to 4x fewer multiplications.

Run:  python lessons/11_winograd.py [--quick] [--out FOLDER]

Lesson 02 turned a conv into one big matrix product (im2col + GEMM): 9 multiply-adds per
output value per input channel. Winograd's minimal filtering algorithms (Lavin & Gray,
"Fast Algorithms for Convolutional Neural Networks", 2015) compute the same outputs with
fewer multiplications, by transforming small tiles of input and filter into a space where
the convolution becomes an elementwise product. This lesson:

1. derives the 1-D F(2,3) by hand: 2 outputs of a 3-tap filter with 4 multiplications, not 6;
2. nests it into 2-D F(2x2,3x3) and F(4x4,3x3): 16 instead of 36, 36 instead of 144;
3. counts why the transforms cost little beside the multiplications they save, once the
   per-tile products are batched into GEMMs over channels (adain_np/winograd.py);
4. measures and plots how the float32 error grows from F(2,3) to F(4,3) to F(6,3): the
   price of bigger tiles, and why adain_np stops at F(4,3).

Prints: the hand derivation checked numerically, the transform matrices, a cost table per
VGG layer shape, the error table. Draws: 11_error_growth.png.
Check: adain_np.winograd.conv2d_valid against adain_np.conv.conv2d_valid (im2col), float64
and float32, and the hand-derived F(2,3) against the direct correlation.
"""
import sys

from _common import Lesson, heading, max_abs, plt, rel_error, run

import numpy as np

from adain_np import conv, winograd
from adain_np.gradient_check import rel_error as norm_rel_error


# %% ----------------------------------------------------------------------------------
# 1. F(2,3) by hand. A 3-tap correlation of the inputs d0..d3 with the filter g0..g2
# gives two outputs:
#     y0 = d0 g0 + d1 g1 + d2 g2
#     y1 = d1 g0 + d2 g1 + d3 g2          6 multiplications.
# Winograd's trick: the filter is fixed for the whole image, so anything computed from g
# alone is free (done once). Define four products, each ONE multiplication of a sum of
# inputs by a sum of filter taps:
#     m1 = (d0 - d2) g0
#     m2 = (d1 + d2) (g0 + g1 + g2) / 2
#     m3 = (d2 - d1) (g0 - g1 + g2) / 2
#     m4 = (d1 - d3) g2
# Expand m2 + m3 = d1 g1 + d2 g0 + d2 g2 ... and it works out that
#     y0 = m1 + m2 + m3,     y1 = m2 - m3 - m4.
# (Multiply them out on paper once: the cross terms cancel in pairs.) Where do they come
# from? y0 + y1 x is the product of two polynomials evaluated cleverly: evaluate the filter
# polynomial and the input polynomial at the points 0, 1, -1 and "infinity", multiply
# pointwise (4 multiplications), interpolate back. That is the Cook-Toom construction;
# winograd.cook_toom_matrices builds it for any tile size from a list of points.
#
# In matrix form: y = A^T [(G g) * (B^T d)], with the three matrices printed below.

def f23_by_hand(d, g):
    # d: (4,), g: (3,) -> y: (2,), with 4 multiplications (the filter sums are precomputed)
    g_sum, g_alt = (g[0] + g[1] + g[2]) / 2, (g[0] - g[1] + g[2]) / 2
    m1 = (d[0] - d[2]) * g[0]
    m2 = (d[1] + d[2]) * g_sum
    m3 = (d[2] - d[1]) * g_alt
    m4 = (d[1] - d[3]) * g[2]
    return np.array([m1 + m2 + m3, m2 - m3 - m4])


def correlate_1d(d, g):
    # the definition: y_i = sum_k g_k d_{i+k}
    return np.array([g @ d[i:i + len(g)] for i in range(len(d) - len(g) + 1)])


# %% ----------------------------------------------------------------------------------
# 2. Nesting in 2-D. A 2-D 3x3 correlation is a 1-D correlation along rows of 1-D
# correlations along columns, so applying the 1-D algorithm on both sides nests:
#     Y = A^T [ (G g G^T) * (B^T d B) ] A
# for an (m+2) x (m+2) input tile d and a 3x3 filter g. The elementwise product has
# (m+2)^2 entries: 16 multiplications for a 2x2 output tile (direct: 4 * 9 = 36), and 36
# for a 4x4 tile (direct: 16 * 9 = 144). Summed over input channels, the products at one
# tile entry e become a matrix product over channels:
#     M[e] = U[e] @ V[e],   U[e]: (F, C) transformed filters, V[e]: (C, tiles)
# which is where the FLOPs go, and which BLAS runs near peak.

def tile_2d(d, g, m):
    # d: (m+2, m+2), g: (3, 3) -> y: (m, m), one tile by the nested transforms
    AT, G, BT = winograd.transform_matrices(m)
    return AT @ ((G @ g @ G.T) * (BT @ d @ BT.T)) @ AT.T


def correlate_2d(d, g):
    k = g.shape[0]
    out = d.shape[0] - k + 1
    return np.array([[np.sum(d[i:i + k, j:j + k] * g) for j in range(out)] for i in range(out)])


# %% ----------------------------------------------------------------------------------
# 3. Why the transforms cost little. Per tile, the product step costs a^2 * C * F
# multiply-adds (a = m + 2). The transforms, done as GEMMs on flattened tiles
# (vec(B^T d B) = kron(B^T, B^T) vec(d)), cost a^4 per (channel, tile) for the input and
# m^2 a^2 per (output channel, tile) for the output; the filter transform is once per call.
# Relative to the product step that is a^2 / F + m^2 / C: small when the layer has many
# channels, which every AdaIN layer but the first and the last has. The elementwise
# transforms are cheaper still in FLOPs (most entries of B are 0 or +-1), but in NumPy
# they are memory-bound and single-threaded, so as GEMMs they end up faster.

def cost_per_output(C, F, m):
    """(direct multiply-adds, Winograd product, Winograd transforms) per output position."""
    if m == 0:
        return 9 * C * F, 0, 0
    a = m + 2
    product = a * a * C * F / (m * m)
    transforms = (a ** 4 * C + m * m * a * a * F) / (m * m)
    return 9 * C * F, product, transforms


# %% ----------------------------------------------------------------------------------
# 4. The price: float error. The transform matrices of bigger tiles have bigger entries
# (F(4,3)'s B^T has 4s and 5s, F(6,3)'s has 21/4 and 17/4; G has small fractions) and the sums
# in them cancel, so rounding errors are amplified. Measured here: the float32 result of
# each tile size against the float64 im2col result, as the channel count grows.

def measure_errors(channel_counts, side, rng):
    rows = []
    for C in channel_counts:
        x = rng.random((1, C, side + 2, side + 2))                   # (1, C, side+2, side+2)
        w = rng.standard_normal((16, C, 3, 3)) * np.sqrt(2 / (9 * C))  # He-scaled, like VGG's
        ref = conv.conv2d_valid(x, w)                                # float64 reference
        x32, w32 = x.astype(np.float32), w.astype(np.float32)
        errs = {"im2col": norm_rel_error(conv.conv2d_valid(x32, w32), ref)}    # ||err|| / ||ref||
        for m in (2, 4, 6):
            errs[f"F({m},3)"] = norm_rel_error(winograd.conv2d_valid(x32, w32, m=m), ref)
        rows.append((C, errs))
    return rows


def main():
    lesson = Lesson(__doc__)
    rng = np.random.default_rng(0)

    # %% ------------------------------------------------------------------------------
    heading("1. F(2,3) by hand")
    d, g = rng.standard_normal(4), rng.standard_normal(3)
    by_hand, direct = f23_by_hand(d, g), correlate_1d(d, g)
    print(f"direct     y = {direct}  (6 multiplications)")
    print(f"F(2,3)     y = {by_hand}  (4 multiplications)")
    lesson.check("F(2,3) by hand vs the direct correlation (float64)", max_abs(by_hand, direct), 1e-12)
    for m in (2, 4, 6):
        AT, G, BT = winograd.cook_toom_matrices(m, winograd.TILE_POINTS[m])
        print(f"\nF({m},3), points {[str(p) for p in winograd.TILE_POINTS[m]]} and infinity:")
        for name, mat in (("A^T", AT), ("G", G), ("B^T", BT)):
            print(f"  {name} =")
            for row in mat:
                print("    [" + ", ".join(f"{str(v):>6}" for v in row) + "]")
        if m == 6 and lesson.quick:
            break

    # %% ------------------------------------------------------------------------------
    heading("2. Nesting in 2-D")
    for m in (2, 4):
        d2, g2 = rng.standard_normal((m + 2, m + 2)), rng.standard_normal((3, 3))
        err = max_abs(tile_2d(d2, g2, m), correlate_2d(d2, g2))
        a = m + 2
        print(f"F({m}x{m},3x3): {a * a} multiplications per tile instead of {m * m * 9}"
              f" ({m * m * 9 / (a * a):.2f}x fewer); one tile vs the direct 2-D correlation: {err:.1e}")
        lesson.check(f"one F({m}x{m},3x3) tile vs the direct correlation (float64)", err, 1e-12)

    # %% ------------------------------------------------------------------------------
    heading("3. Multiply-adds per output position, per AdaIN layer shape")
    print(f"{'Cin→Cout':<10} {'im2col':>9} {'F(2) prod':>10} {'F(2) tr':>8} {'F(4) prod':>10}"
          f" {'F(4) tr':>8} {'F(4) saving':>12}")
    for C, F in ((3, 64), (64, 64), (128, 128), (256, 256), (512, 256), (64, 3)):
        direct_cost, p2, t2 = cost_per_output(C, F, 2)
        _, p4, t4 = cost_per_output(C, F, 4)
        print(f"{f'{C}→{F}':<10} {direct_cost:9.0f} {p2:10.0f} {t2:8.0f} {p4:10.0f} {t4:8.0f}"
              f" {direct_cost / (p4 + t4):11.2f}x")
    print("(the first and last layers have too few channels for the transforms to pay: im2col suits them)")

    # %% ------------------------------------------------------------------------------
    heading("4. float32 error against float64, as the tile grows")
    channel_counts = (4, 32, 128) if lesson.quick else (4, 16, 64, 256, 512)
    side = 32  # enough tiles that the norm error is steady from one seed to the next
    rows = measure_errors(channel_counts, side, rng)
    names = list(rows[0][1])
    print(f"{'C':>5} " + " ".join(f"{n:>9}" for n in names) + "   (||err|| / ||ref||)")
    for C, errs in rows:
        print(f"{C:5d} " + " ".join(f"{errs[n]:9.1e}" for n in names))
    fig, ax = plt.subplots(figsize=(6, 4))
    for n in names:
        ax.loglog([C for C, _ in rows], [errs[n] for _, errs in rows], "o-", label=n)
    ax.set_xlabel("input channels C")
    ax.set_ylabel("float32 error, ||err|| / ||ref||")
    ax.set_title("Winograd tile size vs float32 error")
    ax.legend()
    fig.tight_layout()
    lesson.save_figure(fig, "11_error_growth.png")
    plt.close(fig)
    growth = [rows[-1][1][f"F({m},3)"] for m in (2, 4, 6)]
    print(f"at C={rows[-1][0]}: F(4,3) is {growth[1] / growth[0]:.0f}x F(2,3)'s error, "
          f"F(6,3) {growth[2] / growth[0]:.0f}x")
    lesson.check("the error grows with the tile: F(2,3) < F(4,3) < F(6,3) at the largest C (1 = no)",
                 float(not growth[0] < growth[1] < growth[2]), 0.5)

    # %% ------------------------------------------------------------------------------
    heading("5. adain_np.winograd.conv2d_valid against conv2d_valid (im2col)")
    N, C, F, H, W = (2, 8, 6, 11, 13) if lesson.quick else (2, 64, 32, 67, 45)
    x = rng.standard_normal((N, C, H, W))                            # (N, C, H, W): odd sizes
    w = rng.standard_normal((F, C, 3, 3))
    b = rng.standard_normal(F)
    reference = conv.conv2d_valid(x, w, b, relu=True)
    for m in winograd.TILES:
        y64 = winograd.conv2d_valid(x, w, b, relu=True, m=m)
        y32 = winograd.conv2d_valid(x.astype(np.float32), w.astype(np.float32), b.astype(np.float32),
                                    relu=True, m=m)
        # float64: exact algebra, rounding amplified ~100x by the transforms -> 1e-12.
        lesson.check(f"F({m},3) float64 vs im2col: max err / max |y|", rel_error(y64, reference), 1e-12)
        # float32: the error table above (~1e-6 at these channel counts); 1e-4 is far below a bug.
        lesson.check(f"F({m},3) float32 vs im2col float64: max err / max |y|", rel_error(y32, reference), 1e-4)
    return lesson.finish()


# %% ----------------------------------------------------------------------------------
# What to try
# - Change TILE_POINTS: F(4,3) with the points (0, 1, -1, 1/2, -1/2) instead of +-2. Does
#   the error go up or down? (Smaller points make A^T's entries small but G's large.)
# - Time winograd.conv2d_valid against conv.conv2d_valid on one layer shape with
#   `python -m adain_np.bench convs`, on a quiet machine; then with the thread pool (--pool 2).
# - Write the input transform elementwise (B^T d B with slices, using that B has 0/+-1
#   entries) and time it against the kron GEMM: which wins at 64 channels, which at 512?
# - F(6,3): 64 products per 36 outputs (5.06x fewer than direct). Count its transform
#   cost with cost_per_output and compare the saving with its error from section 4.
# - The backward-data conv is a 3x3 conv too (winograd.conv2d_input_grad). Could the
#   weight gradient go through Winograd as well? (Hint: the roles of the tile and the filter swap.)

if __name__ == "__main__":
    sys.exit(run(main))
