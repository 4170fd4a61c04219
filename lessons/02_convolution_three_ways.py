"""Lesson 02: convolution three ways, loops, im2col + GEMM, and adain_np's blocked fast path.

Run:  python lessons/02_convolution_three_ways.py [--quick] [--out FOLDER]

A conv layer is almost all of AdaIN's work: 20 of them in the encoder, 9 in the
decoder, each a 3x3 convolution with stride 1 after a reflection pad (lesson 01).
Here the same convolution is written three times and timed; what should make
each faster than the one before is argued from the work and the memory traffic,
and the run prints the order it measured (a busy or small machine can differ):

1. loops: the definition, one output value at a time;
2. im2col + GEMM: copy every 3x3 window into a column of a matrix, then one
   matrix product does all the multiply-adds;
3. ``adain_np.conv.conv2d_valid``: the same product, done a band of rows at a
   time in a reused buffer, so the copied matrix never gets big.

Prints: the im2col matrix of a 4x4 example, times and GFLOP/s of each way, the
memory im2col needs at AdaIN's sizes. Draws: 02_im2col.png, 02_timings.png.
Check: all three against torch's conv2d (or against each other in float64 without torch).
"""
import sys
import time

from _common import Lesson, heading, import_torch, max_abs, plt, rel_error, run

import numpy as np

from adain_np.conv import BLOCK_BYTES, conv2d_valid


# %% ----------------------------------------------------------------------------------
# 1. The definition. Output channel f at position (i, j) is the bias plus the sum, over
# the input channels c and the kernel offsets (ky, kx), of w[f, c, ky, kx] * x[c, i+ky, j+kx].
# "Valid" means no padding of its own: the output is (H-k+1) x (W-k+1), and the caller
# pads first (AdaIN's convs are pad(1) + valid 3x3, so the size stays H x W).
# The sum over (c, ky, kx) is written as one np.sum over the window; the four loops
# around it are plain Python, and that is what makes this way slow.

def conv_loops(x, w, b):
    # x: (N, C, H, W), w: (F, C, k, k), b: (F,) -> y: (N, F, H-k+1, W-k+1)
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    Ho, Wo = H - k + 1, W - k + 1
    y = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            for i in range(Ho):
                for j in range(Wo):
                    window = x[n, :, i:i + k, j:j + k]               # (C, k, k)
                    y[n, f, i, j] = np.sum(window * w[f]) + b[f]
    return y


# %% ----------------------------------------------------------------------------------
# 2. im2col. Lay each window out as a column: row (c, ky, kx) of column (i, j) holds
# x[c, i+ky, j+kx]. Then the conv is ONE matrix product,
#     y[f, (i, j)] = sum over (c, ky, kx) of w[f, (c, ky, kx)] * cols[(c, ky, kx), (i, j)],
# i.e. y = W @ cols with W = w.reshape(F, C*k*k). A matrix product (GEMM) is the best
# optimised routine there is: BLAS splits it into blocks that fit the caches, uses SIMD
# and all the cores, and reaches close to the machine's peak. The price: cols holds
# every input value k*k times.

def im2col(x_n, k):
    # x_n: (C, H, W) -> cols: (C*k*k, Ho*Wo), rows ordered (c, ky, kx) like w.reshape(F, -1)
    C, H, W = x_n.shape
    Ho, Wo = H - k + 1, W - k + 1
    cols = np.empty((C, k, k, Ho, Wo), dtype=x_n.dtype)
    for ky in range(k):
        for kx in range(k):
            # All windows' (ky, kx) entries at once: a shifted view of the image.
            cols[:, ky, kx] = x_n[:, ky:ky + Ho, kx:kx + Wo]
    return cols.reshape(C * k * k, Ho * Wo)


def conv_im2col(x, w, b):
    # x: (N, C, H, W), w: (F, C, k, k), b: (F,) -> y: (N, F, Ho, Wo)
    N, C, H, W = x.shape
    F, _, k, _ = w.shape
    Ho, Wo = H - k + 1, W - k + 1
    w_mat = w.reshape(F, C * k * k)                                  # (F, C*k*k)
    y = np.empty((N, F, Ho, Wo), dtype=x.dtype)
    for n in range(N):
        cols = im2col(x[n], k)                                       # (C*k*k, Ho*Wo)
        y[n] = (w_mat @ cols + b[:, None]).reshape(F, Ho, Wo)
    return y


# %% ----------------------------------------------------------------------------------
# 3. The fast path, adain_np.conv.conv2d_valid. Same product, two changes:
#  - Blocked: cols is built for a band of R output rows at a time, R chosen so the band
#    fits BLOCK_BYTES (8 MB). At a 512x512 image with 64 channels a whole-image cols is
#    600 MB; a band is 8 MB, stays in cache while BLAS reads it, and one buffer serves
#    every band and every layer (fresh large buffers cost page faults on every call).
#  - Fused: the bias and an optional ReLU are applied to each band right after its GEMM,
#    while the band is still in cache, instead of in extra passes over the whole output.
# The lesson calls it; read adain_np/conv.py for the forty lines.

def band_rows(C, k, Wo, Ho, itemsize=4):
    """How many output rows one band of conv2d_valid holds (the rule in adain_np/conv.py)."""
    return int(max(1, min(Ho, BLOCK_BYTES // (C * k * k * Wo * itemsize))))


def best_time(fn, repeats):
    """The fastest of `repeats` runs: the least disturbed by whatever else the machine does."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    lesson = Lesson(__doc__)
    rng = np.random.default_rng(0)

    # %% ------------------------------------------------------------------------------
    heading("im2col of a 1-channel 4x4 image, 3x3 kernel")
    tiny = np.arange(16, dtype=np.float64).reshape(1, 4, 4)          # (C=1, 4, 4)
    tiny_cols = im2col(tiny, 3)                                      # (9, 4): 4 windows of 9
    print("image:\n", tiny[0].astype(int))
    print("cols (one column per output position, one row per kernel offset):\n",
          tiny_cols.astype(int))
    print(f"16 pixels became {tiny_cols.size} entries: each interior pixel is copied up to 9 times")

    # %% ------------------------------------------------------------------------------
    # Timings on a small layer, where even the loops finish: all three ways.
    heading("timing on a small layer (all three)")
    small = (1, 8, 8, 16, 16) if lesson.quick else (1, 32, 32, 32, 32)  # N, C, F, H, W (padded input)
    N, C, F, H, W = small
    k = 3
    x = rng.standard_normal((N, C, H, W)).astype(np.float32)        # (N, C, H, W)
    w = (rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    flops_small = 2.0 * N * F * C * k * k * (H - k + 1) * (W - k + 1)
    results = {}
    for name, fn, repeats in (("loops", conv_loops, 1), ("im2col + GEMM", conv_im2col, 3),
                              ("conv2d_valid", conv2d_valid, 3)):
        seconds = best_time(lambda: fn(x, w, b), repeats)
        results[name] = seconds
        print(f"{name:>14}: {seconds * 1e3:9.2f} ms  {flops_small / seconds / 1e9:7.2f} GFLOP/s")
    small_results = dict(results)

    # %% ------------------------------------------------------------------------------
    # A real AdaIN layer: conv1_2 of VGG, 64 -> 64 channels. The loops would take minutes
    # here, so only the two GEMM ways (and torch, if present, as a yardstick).
    heading("timing on VGG conv1_2 (64 -> 64 channels)")
    side = 128 if lesson.quick else 256
    N, C, F = 1, 64, 64
    x_big = rng.standard_normal((N, C, side + 2, side + 2)).astype(np.float32)  # padded input
    w_big = (rng.standard_normal((F, C, k, k)) / np.sqrt(C * k * k)).astype(np.float32)
    b_big = rng.standard_normal(F).astype(np.float32)
    flops_big = 2.0 * N * F * C * k * k * side * side
    repeats = 2 if lesson.quick else 5
    big_results = {}
    for name, fn in (("im2col + GEMM", conv_im2col), ("conv2d_valid", conv2d_valid)):
        big_results[name] = best_time(lambda: fn(x_big, w_big, b_big), repeats)
    torch = import_torch()
    if torch is not None:
        xt, wt, bt = (torch.from_numpy(a) for a in (x_big, w_big, b_big))
        with torch.no_grad():
            big_results["torch conv2d"] = best_time(lambda: torch.nn.functional.conv2d(xt, wt, bt),
                                                    repeats)
    for name, seconds in big_results.items():
        print(f"{name:>14}: {seconds * 1e3:9.2f} ms  {flops_big / seconds / 1e9:7.2f} GFLOP/s")
    rows = band_rows(C, k, side, side)
    print(f"im2col matrix for this layer: {C * k * k * side * side * 4 / 2**20:.0f} MB; "
          f"conv2d_valid's band: {rows} rows, {C * k * k * rows * side * 4 / 2**20:.1f} MB")
    print(f"at AdaIN's 512x512 test size the whole-image matrix would be "
          f"{C * k * k * 512 * 512 * 4 / 2**20:.0f} MB, per image, for this one layer")
    # Why the order should be loops < im2col < blocked, counted in memory traffic rather
    # than promised. The loops run the same multiply-adds as the GEMM, but one output at
    # a time through the interpreter: several microseconds of Python per output value
    # swamp the C*k*k multiply-adds behind it. Both GEMM ways then spend most of their time in the same
    # BLAS call; what differs is the copy into cols. The whole-image im2col writes
    # C*k*k*H*W*4 bytes (the matrix printed above) to main memory and BLAS reads them back:
    # two trips of that size through DRAM. The blocked way writes the same values into an
    # 8 MB band that is read back while still in cache, so at a size where the matrix is
    # far bigger than the caches it saves those trips (and the memory). When the matrix
    # is small, or the machine's cache is large, or other programs share the cores, the
    # two GEMM ways are within noise of each other and either can come first. torch's CPU
    # convolution (oneDNN) packs blocks for its own micro-kernels, multithreaded; whether
    # it beats one BLAS call here depends on the thread count and the load as well.
    measured = sorted(big_results, key=big_results.get)
    print("measured order at this size, fastest first: " + " < ".join(measured))
    matrix_mb = C * k * k * side * side * 4 / 2**20
    if big_results["conv2d_valid"] > big_results["im2col + GEMM"]:
        print(f"(here the whole-image im2col was not slower: its {matrix_mb:.0f} MB matrix and "
              "this machine's caches and load did not make the DRAM trips dominate)")

    # %% ------------------------------------------------------------------------------
    # Figures.
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), gridspec_kw={"width_ratios": [1, 1.4]})
    axes[0].imshow(tiny[0], cmap="viridis")
    for (i, j), v in np.ndenumerate(tiny[0]):
        axes[0].text(j, i, int(v), ha="center", va="center", color="w")
    axes[0].add_patch(plt.Rectangle((-0.45, -0.45), 2.9, 2.9, fill=False, color="red", lw=2))
    axes[0].set_title("4x4 image; the red window is output (0, 0)")
    axes[1].imshow(tiny_cols, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(tiny_cols):
        axes[1].text(j, i, int(v), ha="center", va="center", color="w", fontsize=8)
    axes[1].add_patch(plt.Rectangle((-0.45, -0.45), 0.9, 8.9, fill=False, color="red", lw=2))
    axes[1].set_xlabel("output position (i, j)")
    axes[1].set_ylabel("kernel offset (ky, kx)")
    axes[1].set_title("im2col: each window becomes a column")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    lesson.save_figure(fig, "02_im2col.png")

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
    colors = {"loops": "C3", "im2col + GEMM": "C0", "conv2d_valid": "C2", "torch conv2d": "C7"}
    panels = ((axes[0], small_results, flops_small, "log",
               f"{small[1]}->{small[2]} channels, {small[3]}x{small[4]}"),
              (axes[1], big_results, flops_big, "linear", f"VGG conv1_2, 64->64 channels, {side}x{side}"))
    for ax, res, flops, scale, title in panels:
        names = list(res)
        gflops = [flops / res[n] / 1e9 for n in names]
        ax.barh(names, gflops, color=[colors[n] for n in names])
        ax.set_xscale(scale)
        ax.set_xlim(right=max(gflops) * (8 if scale == "log" else 1.35))
        ax.set_xlabel(f"GFLOP/s ({scale} scale)")
        ax.set_title(title)
        for i, (n, g) in enumerate(zip(names, gflops)):
            ax.text(g, i, f" {res[n] * 1e3:.3g} ms", va="center")
    fig.suptitle("one conv layer, three ways (this machine's CPU)")
    fig.tight_layout()
    lesson.save_figure(fig, "02_timings.png")

    # %% ------------------------------------------------------------------------------
    # Checks, in float64 so that any difference is a bug and not rounding: summing the
    # same C*k*k products in another order changes a float64 result by ~1e-16 of its size
    # times the number of terms, far below the 1e-12 bound; a wrong index gives ~1.
    heading("checks")
    x64, w64, b64 = (a.astype(np.float64) for a in (x, w, b))
    y_loops = conv_loops(x64, w64, b64)
    y_im2col = conv_im2col(x64, w64, b64)
    y_fast = conv2d_valid(x64, w64, b64)
    if torch is not None:
        reference = torch.nn.functional.conv2d(torch.from_numpy(x64), torch.from_numpy(w64),
                                               torch.from_numpy(b64)).numpy()
        label = "torch"
    else:
        reference, label = y_loops, "loops"
    for name, y in (("loops", y_loops), ("im2col", y_im2col), ("conv2d_valid", y_fast)):
        if name != label:
            lesson.check(f"max |{name} - {label}| (float64)", max_abs(y, reference), 1e-12)
    # The big layer in float32: BLAS and torch sum the 576 products in different orders, so
    # they differ by ~1e-6 of the output's scale; 1e-5 leaves room and still catches a bug.
    y_big = conv2d_valid(x_big, w_big, b_big)
    if torch is not None:
        with torch.no_grad():
            ref_big = torch.nn.functional.conv2d(xt, wt, bt).numpy()
        lesson.check("conv1_2 float32: max |conv2d_valid - torch| / max |torch|",
                     rel_error(y_big, ref_big), 1e-5)
    else:
        lesson.check("conv1_2 float32: max |conv2d_valid - im2col| / max |im2col|",
                     rel_error(y_big, conv_im2col(x_big, w_big, b_big)), 1e-5)
    return lesson.finish()


# %% [markdown]
# What to try
# - Time the three ways at several image sides and find where the whole-image im2col stops
#   fitting your caches.
# - Change BLOCK_BYTES in adain_np/conv.py (try 1 MB and 64 MB) and time conv2d_valid
#   again.
# - Exercises: `--exercises` (im2col by hand, the conv as one GEMM, im2col's memory).


if __name__ == "__main__":
    sys.exit(run(main))
