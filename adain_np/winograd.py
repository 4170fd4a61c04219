"""3x3 conv2d by Winograd minimal filtering (Lavin & Gray 2015), beside conv.py's im2col.

F(m x m, 3 x 3) computes an m x m output tile from an (m+2) x (m+2) input tile with
(m+2)^2 multiplications per (input channel, output channel) pair instead of 9 m^2:
2.25x fewer for F(2,3), 4x fewer for F(4,3). With a = m + 2 (the input tile side):

    U = G g G^T            filter transform,  (a, a) per (F, C) pair, once per call
    V = B^T d B            input transform,   (a, a) per (C, tile)
    M[e] = U[e] @ V[e]     a^2 GEMMs over channels: (F, C) @ (C, tiles), most of the FLOPs
    Y = A^T M A            output transform,  (m, m) per (F, tile)

The transforms run as GEMMs on flattened tiles: vec(B^T d B) = kron(B^T, B^T) vec(d),
so each is one (a^2, a^2) @ (a^2, C*tiles) matmul that uses every core, where the same
work as elementwise NumPy ops runs on one thread at memory speed. The image is
processed in blocks of tile rows whose buffers are reused (no whole-image gather or
transpose copies), like conv.py's row-blocked im2col.

Same semantics as conv.conv2d_valid (stride 1, no padding of its own: the reflection
pad is done by the caller) with the fused bias/ReLU. Only k=3; a 1x1 conv is a plain
GEMM and stays on conv.py. Dimension names as in conv.py; T tiles in a block, a the
input tile side, m the output tile side.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction

import numpy as np

from . import conv
from .cli import CONV_CHOICES

# Interpolation points of each tile size (the last point, infinity, is implicit).
# Small points keep the transform entries small, which keeps the float error small.
TILE_POINTS = {2: (0, 1, -1), 4: (0, 1, -1, 2, -2), 6: (0, 1, -1, 2, -2, Fraction(1, 2), Fraction(-1, 2))}
TILES = (2, 4)                    # the ones the backend may use; 6 is in the lesson only (error too big)
BLOCK_BYTES = conv.BLOCK_BYTES    # per-block buffer budget, the same trade-off as im2col


def cook_toom_matrices(m, points, r=3):
    """(AT, G, BT) as Fractions for F(m, r) from m + r - 2 finite points (+ infinity).

    AT (m, n): AT[i, j] = p_j^i, the infinity column [0, ..., 0, 1].
    G  (n, r): G[j, k] = p_j^k / prod_{l != j} (p_j - p_l), the infinity row [0, ..., 0, 1].
    BT (n, n): the unique matrix making y = AT [(G g) * (BT d)] the correlation
      y_i = sum_k g_k d_{i+k}, solved exactly from those m*r*n linear equations.
    """
    p = [Fraction(v) for v in points]
    n = m + r - 1
    assert len(p) == n - 1, (m, points)
    AT = [[p[j] ** i for j in range(n - 1)] + [Fraction(int(i == m - 1))] for i in range(m)]
    G = []
    for j in range(n - 1):
        scale = Fraction(1)
        for l in range(n - 1):
            if l != j:
                scale *= p[j] - p[l]
        G.append([p[j] ** k / scale for k in range(r)])
    G.append([Fraction(int(k == r - 1)) for k in range(r)])
    # sum_j AT[i,j] G[j,k] BT[j,s] = [s == i + k] for all i, k: one system per column s of BT.
    K = [[AT[i][j] * G[j][k] for j in range(n)] for i in range(m) for k in range(r)]  # (m*r, n)
    E = [[Fraction(int(s == i + k)) for s in range(n)] for i in range(m) for k in range(r)]
    BT_t = _solve_exact(K, E)  # (n, n): BT[j, s]
    return AT, G, BT_t


def _solve_exact(K, E):
    """X with K X = E (K tall, full column rank, system consistent), by Gauss-Jordan on Fractions."""
    rows = [list(kr) + list(er) for kr, er in zip(K, E)]
    n = len(K[0])
    for col in range(n):
        pivot = next(i for i in range(col, len(rows)) if rows[i][col] != 0)
        rows[col], rows[pivot] = rows[pivot], rows[col]
        piv = rows[col][col]
        rows[col] = [v / piv for v in rows[col]]
        for i in range(len(rows)):
            if i != col and rows[i][col] != 0:
                f = rows[i][col]
                rows[i] = [a - f * b for a, b in zip(rows[i], rows[col])]
    assert all(v == 0 for row in rows[n:] for v in row), "inconsistent Cook-Toom system"
    return [row[n:] for row in rows[:n]]


def transform_matrices(m, dtype=np.float64):
    """(AT (m, a), G (a, 3), BT (a, a)) as arrays of dtype."""
    return tuple(np.array([[float(v) for v in row] for row in mat], dtype=dtype)
                 for mat in cook_toom_matrices(m, TILE_POINTS[m]))


_kron_cache = {}  # (m, dtype) -> (AA (m^2, a^2), GG (a^2, 9), BB (a^2, a^2))


def _krons(m, dtype):
    key = (m, np.dtype(dtype).str)
    if key not in _kron_cache:
        AT, G, BT = transform_matrices(m)  # built in float64, rounded once to dtype
        _kron_cache[key] = tuple(np.ascontiguousarray(np.kron(M, M), dtype=dtype) for M in (AT, G, BT))
    return _kron_cache[key]


def filter_transform(w, m):
    """w: (F, C, 3, 3) -> U: (a^2, F, C), U[e] the e-th entry of G g G^T for every (F, C)."""
    F, C = w.shape[:2]
    _, GG, _ = _krons(m, w.dtype)                                   # (a^2, 9)
    return (GG @ w.reshape(F * C, 9).T).reshape(-1, F, C)           # (a^2, F, C)


# ----------------------------------------------------------------------------
# Threads: a small pool over blocks, each GEMM single-threaded (threadpoolctl), instead of
# OpenBLAS's own threads. Measured on 2 cores (README, "Speed (CPU)"): about as fast on a
# quiet machine, and with one busy process on the cores a stylize slowed 1.3x instead of
# 3.8x, because OpenBLAS's threads spin at their barriers while a peer is descheduled.
# ADAIN_CONV_THREADS=N sets the pool size; 0 hands the threading back to OpenBLAS.

def default_pool_threads():
    """The pool size when ADAIN_CONV_THREADS is not set: the BLAS thread count the user or
    launcher asked for (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS), else the usable cores."""
    for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        text = os.environ.get(name, "")
        if text.isdigit() and int(text) > 0:
            return min(int(text), 64)
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores, 64)


def pool_threads_from_env():
    """ADAIN_CONV_THREADS (default: default_pool_threads()); a bad value is a ValueError."""
    text = os.environ.get("ADAIN_CONV_THREADS", "")
    if text == "":
        return default_pool_threads()
    if not text.isdigit() or int(text) > 64:
        raise ValueError(f"ADAIN_CONV_THREADS={text!r}: give a whole number of threads, 0 to 64")
    return int(text)


_local = threading.local()  # per-thread scratch: each pool thread needs its own block buffers
_pool = None
_pool_size = [0]  # the pool's thread count
_blas_controller = None


def _scratch(key, shape, dtype):
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    size = int(np.prod(shape))
    k = (key, np.dtype(dtype).str)
    buf = bufs.get(k)
    if buf is None or buf.size < size:
        buf = bufs[k] = np.empty(size, dtype=dtype)
    return buf[:size].reshape(shape)


def release_workspaces():
    """Free this thread's block buffers (the pool threads' are freed with the pool)."""
    global _pool
    _local.bufs = {}
    if _pool is not None:
        _pool.shutdown()
        _pool = None


def _run_blocks(jobs, threads):
    """Run the callables in jobs: in this thread, or over a pool with 1-thread BLAS."""
    global _pool, _blas_controller
    if threads <= 1 or len(jobs) == 1:
        for job in jobs:
            job()
        return
    from threadpoolctl import ThreadpoolController
    if _blas_controller is None:
        _blas_controller = ThreadpoolController()
    if _pool is None or _pool_size[0] != threads:
        if _pool is not None:
            _pool.shutdown()
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="adain-conv")
        _pool_size[0] = threads
    with _blas_controller.limit(limits=1, user_api="blas"):
        for future in [_pool.submit(job) for job in jobs]:
            future.result()


def weight_grad(x, dy, k, threads=None):
    """conv.conv2d_weight_grad, its row blocks spread over the pool when ADAIN_CONV_THREADS > 1.

    x: (N, C, H, W), dy: (N, F, Ho, Wo) -> dw: (F, C, k, k). Each job sums its share of the
    blocks into its own partial, with its own im2col buffer; the partials are added at the end.
    """
    threads = pool_threads_from_env() if threads is None else threads
    N, C, H, W = x.shape
    F, Ho, Wo = dy.shape[1:]
    if threads <= 1 or k == 1:
        return conv.conv2d_weight_grad(x, dy, k)
    # The threads share the im2col budget, so the scratch in use is that of one buffer.
    rows = conv.block_rows(C, k, Wo, Ho, x.dtype.itemsize, conv.BLOCK_BYTES // threads)
    if N * -(-Ho // rows) < 2 * threads:  # too few blocks: split the rows finer
        rows = max(1, Ho // -(-2 * threads // N))
    blocks = [(n, row0, min(rows, Ho - row0)) for n in range(N) for row0 in range(0, Ho, rows)]
    shares = [blocks[i::2 * threads] for i in range(min(2 * threads, len(blocks)))]
    # One partial per share, added in share order: which thread runs a share varies from run
    # to run, and a per-thread sum would make dw (and a resumed run) differ in the last bits.
    partials = [None] * len(shares)

    def job(i):
        dw = partials[i] = np.zeros((F, C * k * k), dtype=x.dtype)   # (F, C*k*k)
        part = _scratch("wgrad_part", (F, C * k * k), x.dtype)
        buf = _scratch("wgrad", (C * k * k * rows * Wo,), x.dtype)
        for n, row0, r in shares[i]:
            cols = conv.im2col_rows(x[n], k, row0, r, Wo, buf[:C * k * k * r * Wo])  # (C*k*k, r*Wo)
            dy_block = dy[n].reshape(F, Ho * Wo)[:, row0 * Wo:(row0 + r) * Wo]     # (F, r*Wo)
            np.matmul(dy_block, cols.T, out=part)
            dw += part
    _run_blocks([(lambda i=i: job(i)) for i in range(len(shares))], threads)
    return sum(partials[1:], partials[0]).reshape(F, C, k, k)


# ----------------------------------------------------------------------------
# Forward.

def _block_tile_rows(C, F, a, m, tiles_w, itemsize, budget):
    # The block's scratch (two regions, see _forward_block) per tile row; all of it stays
    # within BLOCK_BYTES, so it is no bigger than im2col's one buffer.
    per_tile_row = (max(C * m * (tiles_w * m + 2), a * a * C * tiles_w, m * m * F * tiles_w)
                    + a * a * max(C, F) * tiles_w) * itemsize
    return max(1, budget // per_tile_row)


def conv2d_valid(x, w, b=None, relu=False, m=4, out=None, threads=None):
    """y = conv(x, w) + b, optionally ReLU, no padding; the 3x3 conv by Winograd F(m, 3).

    x: (N, C, H, W) with H, W >= 3, w: (F, C, 3, 3), b: (F,) or None -> y: (N, F, H-2, W-2).
    Same contract as conv.conv2d_valid.
    """
    N, C, H, W = x.shape
    F, C2, k, k2 = w.shape
    assert C == C2 and k == k2 == 3 and H >= 3 and W >= 3, (x.shape, w.shape)
    a = m + 2
    Ho, Wo = H - 2, W - 2
    th, tw = -(-Ho // m), -(-Wo // m)                                 # tiles down and across
    y = np.empty((N, F, Ho, Wo), dtype=x.dtype) if out is None else out
    U = filter_transform(w, m)                                       # (a^2, F, C)
    AA, _, BB = _krons(m, x.dtype)                                   # (m^2, a^2), (a^2, a^2)
    threads = pool_threads_from_env() if threads is None else threads
    # Each pool thread has a block of the full budget: halving it was measured slower.
    R = int(min(th, _block_tile_rows(C, F, a, m, tw, x.dtype.itemsize, BLOCK_BYTES)))
    if threads > 1:  # at least two blocks per thread, so a thread that is slowed down is waited for less
        R = max(1, min(R, th // -(-2 * threads // N)))
    jobs = [(lambda n=n, r0=r0: _forward_block(x, U, b, relu, m, AA, BB, y, n, r0, min(R, th - r0), tw))
            for n in range(N) for r0 in range(0, th, R)]
    _run_blocks(jobs, threads)
    return y


def _forward_block(x, U, b, relu, m, AA, BB, y, n, r0, R, tw):
    """Tile rows r0 .. r0+R of image n: gather, transform, a^2 GEMMs, inverse transform, scatter."""
    C, H, W = x.shape[1:]
    F = U.shape[1]
    a = m + 2
    Ho, Wo = H - 2, W - 2
    T = R * tw
    # Input rows of this block, zero-padded below/right where the last tiles overhang.
    rows_in = R * m + 2
    top = r0 * m
    have_h, have_w = min(rows_in, H - top), min(tw * m + 2, W)
    # One scratch buffer in two regions, each reused as soon as its last reader is done:
    # region 1 holds slab, then V, then Y; region 2 holds d, then M.
    size1 = max(C * rows_in * (tw * m + 2), a * a * C * T, m * m * F * T)
    size2 = a * a * max(C, F) * T
    scratch = _scratch("block", (size1 + size2,), x.dtype)
    region1, region2 = scratch[:size1], scratch[size1:]
    slab = region1[:C * rows_in * (tw * m + 2)].reshape(C, rows_in, tw * m + 2)  # (C, R*m+2, tw*m+2)
    slab[:, :have_h, :have_w] = x[n, :, top:top + have_h, :have_w]
    if have_h < rows_in:
        slab[:, have_h:] = 0
    if have_w < tw * m + 2:
        slab[:, :, have_w:] = 0
    d = region2[:a * a * C * T].reshape(a, a, C, R, tw)              # (a, a, C, R, tw): tiles, by tile entry
    for i in range(a):
        for j in range(a):
            d[i, j] = slab[:, i:i + R * m:m, j:j + tw * m:m]
    V = region1[:a * a * C * T].reshape(a * a, C, T)                 # (a^2, C, T); slab is dead
    np.matmul(BB, d.reshape(a * a, C * T), out=V.reshape(a * a, C * T))
    M = region2[:a * a * F * T].reshape(a * a, F, T)                 # (a^2, F, T); d is dead
    np.matmul(U, V, out=M)
    Y = region1[:m * m * F * T].reshape(m, m, F, R, tw)              # (m, m, F, R, tw); V is dead
    np.matmul(AA, M.reshape(a * a, F * T), out=Y.reshape(m * m, F * T))
    # Scatter the m x m tile entries back to image rows; the overhang is cropped.
    out_rows = min(R * m, Ho - top)
    y_block = y[n, :, top:top + out_rows, :]                         # (F, rows, Wo)
    for p in range(m):
        for q in range(m):
            rr, cc = -(-(out_rows - p) // m), -(-(Wo - q) // m)      # tiles whose entry (p, q) is inside
            if rr > 0 and cc > 0:
                y_block[:, p::m, q::m] = Y[p, q, :, :rr, :cc]
    if b is not None:
        y_block += b.reshape(F, 1, 1)
    if relu:
        np.maximum(y_block, 0, out=y_block)


def conv2d_input_grad(dy, w, m=4, threads=None):
    """dx of a valid 3x3 conv: the full correlation of dy with the flipped, transposed kernel,
    itself a 3x3 valid conv on dy zero-padded by 2, so it runs by Winograd too.

    dy: (N, F, Ho, Wo), w: (F, C, 3, 3) -> dx: (N, C, Ho+2, Wo+2)
    """
    N, F, Ho, Wo = dy.shape
    dy_padded = np.zeros((N, F, Ho + 4, Wo + 4), dtype=dy.dtype)     # (N, F, Ho+4, Wo+4)
    dy_padded[:, :, 2:2 + Ho, 2:2 + Wo] = dy
    w_flipped = np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # (C, F, 3, 3)
    return conv2d_valid(dy_padded, w_flipped, m=m, threads=threads)


# ----------------------------------------------------------------------------
# The op as a forward/backward pair (backward-weight stays on im2col: see conv_rule).

def conv2d_forward(x, w, b, m=4):
    # x: (N, C, H, W), w: (F, C, 3, 3), b: (F,) -> out: (N, F, H-2, W-2)
    return conv2d_valid(x, w, b, m=m), (x, w, m)


def conv2d_backward(dout, cache):
    # dout: (N, F, Ho, Wo) -> dx (N, C, H, W) by Winograd, dw (F, C, 3, 3) by im2col, db (F,)
    x, w, m = cache
    dx = conv2d_input_grad(dout, w, m=m)
    dw = weight_grad(x, dout, 3)
    db = dout.sum(axis=(2, 3)).sum(axis=0)
    return dx, dw, db


# ----------------------------------------------------------------------------
# Which path each conv takes: the one place the rule lives.
#
# CONV_RULE maps (Cin, Cout) of a 3x3 conv to "im2col", "f2" or "f4" for its forward and
# backward-data convs; pairs not in the table take DEFAULT_PATH. Keyed by channels only:
# within one network each (Cin, Cout) pair sits at one map size per image size, and the
# benchmark measures them at the stylize size. `python -m adain_np.bench convs` measures
# every path per VGG/decoder layer in one process and prints a table in this format.
# Measured 2026-12-03 on a quiet 2-core AMD EPYC (AVX-512), 512x512, best of 3: F(4,3) wins
# every inner layer by 1.2-2.0x (forward) and 1.1-1.8x (backward-data); the 3-channel ends
# stay on im2col (a 3-channel GEMM is too thin for the transforms to pay). OpenBLAS's own
# threads beat the 2-thread block pool on every shape but the first, so the pool stays off.
CONV_RULE = {
    (64, 64): "f4", (64, 128): "f4", (128, 128): "f4", (128, 256): "f4", (256, 256): "f4",
    (256, 512): "f4", (512, 256): "f4", (256, 128): "f4", (128, 64): "f4",
}
DEFAULT_PATH = "im2col"
CONV_MODES = CONV_CHOICES  # ADAIN_CONV / --conv values (cli.py owns the list)
PATHS = ("im2col", "f2", "f4")


def conv_mode_from_env():
    """ADAIN_CONV (default auto); a bad value is a ValueError naming the choices."""
    mode = os.environ.get("ADAIN_CONV", "auto") or "auto"
    if mode not in CONV_MODES:
        raise ValueError(f"ADAIN_CONV={mode!r}: choose from {', '.join(CONV_MODES)}")
    return mode


def conv_path(mode, C, F, H, W, k):
    """"im2col", "f2" or "f4" for a conv of Cin=C, Cout=F, k x k on an (unpadded) H x W map.

    winograd means F(4,3) (4x fewer multiplications, error in the table of bench conv-errors);
    a 1x1 conv always takes im2col (it is a plain GEMM). H and W are passed so that a rule
    keyed by map size can be added in this one place.
    """
    if k != 3:
        return "im2col"
    if mode == "auto":
        return CONV_RULE.get((C, F), DEFAULT_PATH)
    return {"im2col": "im2col", "winograd": "f4", "f2": "f2", "f4": "f4"}[mode]


def valid_conv(path):
    """(conv2d_valid, conv2d_input_grad) for a path: conv.py's or this module's with m fixed."""
    if path == "im2col":
        return conv.conv2d_valid, conv.conv2d_input_grad
    m = {"f2": 2, "f4": 4}[path]
    return (lambda x, w, b=None, relu=False: conv2d_valid(x, w, b, relu, m=m),
            lambda dy, w: conv2d_input_grad(dy, w, m=m))
