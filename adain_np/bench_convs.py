"""Per-layer measurements of the 3x3 conv paths (im2col, Winograd F(2,3), F(4,3)), ours only.

    python -m adain_np.bench convs         speed per VGG/decoder layer shape, in one process,
                                           and the winograd.CONV_RULE table that follows from it
    python -m adain_np.bench conv-errors   max abs and norm-relative error against float64

Speed is compared within one process because it is ours against ours (no other library's
threads are loaded). Each path is also timed with the thread pool (as ADAIN_CONV_THREADS:
blocks over threads, 1-thread BLAS) against OpenBLAS's own threads. The error table is
deterministic (seeded inputs and weights).
"""
import contextlib
import os
import time

import numpy as np

from . import conv, winograd
from .params import DECODER_LAYERS, VGG_LAYERS, ENCODER_END, init_decoder_params, init_vgg_params


def layer_shapes(size=512):
    """[(name, layer key, Cin, Cout, H, W)] of every 3x3 conv of the encoder (to relu4_1) and
    the decoder, when stylizing a size x size image; H, W is the unpadded input map."""
    shapes, h = [], size
    for i, layer in enumerate(VGG_LAYERS[:ENCODER_END]):
        if layer[0] == "pool":
            h = -(-h // 2)
        elif layer[0] == "conv" and layer[3] == 3:
            shapes.append((f"vgg {i}", f"{i}.weight", layer[1], layer[2], h, h))
    for i, layer in enumerate(DECODER_LAYERS):
        if layer[0] == "up":
            h *= 2
        elif layer[0] == "conv":
            shapes.append((f"dec {i}", f"{i}.weight", layer[1], layer[2], h, h))
    return shapes


def _unique(shapes):
    seen, out = set(), []
    for row in shapes:
        if row[2:] not in seen:
            seen.add(row[2:])
            out.append(row)
    return out


def conv_errors(size=512, side_cap=48):
    """[(name, C, F, H, {path: (max abs, norm rel)})] of the forward against float64.

    Weights: the seeded initialisers (params.py); inputs: uniform [0, 1), like post-ReLU
    maps. Each output sums the same 9*C terms whatever the map size, so the maps are cut
    to side_cap (keeps the float64 reference cheap); the error depends on C and the path.
    """
    params = {"vgg": init_vgg_params(0), "dec": init_decoder_params(0)}
    rng = np.random.default_rng(0)
    rows = []
    for name, key, C, F, H, W in _unique(layer_shapes(size)):
        w64 = params[name.split()[0]][key].astype(np.float64)       # (F, C, 3, 3)
        h = min(H, side_cap) + 2
        x64 = rng.random((1, C, h, h))                              # (1, C, h, h), already padded
        ref = conv.conv2d_valid(x64, w64)                           # (1, F, h-2, h-2)
        x32, w32 = x64.astype(np.float32), w64.astype(np.float32)
        results = {}
        for path in winograd.PATHS:
            y = winograd.valid_conv(path)[0](x32, w32).astype(np.float64)
            results[path] = (float(np.abs(y - ref).max()), float(np.linalg.norm(y - ref) / np.linalg.norm(ref)))
        rows.append((name, C, F, H, results))
    return rows


def print_conv_errors(size=512):
    rows = conv_errors(size)
    print(f"float32 forward against float64, per layer shape at {size}x{size} (max abs | norm rel)")
    print("| layer | Cin→Cout @ map | " + " | ".join(winograd.PATHS) + " |")
    print("|---|---|" + "---|" * len(winograd.PATHS))
    for name, C, F, H, results in rows:
        cells = " | ".join(f"{results[p][0]:.1e} \\| {results[p][1]:.1e}" for p in winograd.PATHS)
        print(f"| {name} | {C}→{F} @ {H}² | {cells} |")


def _best_time(fn, repeats):
    fn()  # warm-up: workspaces, first-touch page faults
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


@contextlib.contextmanager
def _openblas_threads():
    saved = os.environ.get("ADAIN_CONV_THREADS")
    os.environ["ADAIN_CONV_THREADS"] = "0"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["ADAIN_CONV_THREADS"]
        else:
            os.environ["ADAIN_CONV_THREADS"] = saved


def bench_convs(size=512, repeats=3, pool_threads=None):
    """Time forward and backward-data of every path per unique layer shape; print the table
    and the CONV_RULE that picks the fastest path per shape (forward + backward-data)."""
    pool_threads = pool_threads or os.cpu_count()
    rng = np.random.default_rng(0)
    rule = {}
    print(f"per-layer conv times at {size}x{size}, batch 1, float32, best of {repeats}; "
          f"'pool' = {pool_threads} threads over blocks with 1-thread BLAS")
    print(f"{'layer':<8} {'Cin→Cout @ map':<18} " + " ".join(f"{p + ' fwd':>10} {p + ' dx':>10}" for p in winograd.PATHS)
          + f" {'f4 pool fwd':>12}  best")
    for name, _, C, F, H, W in _unique(layer_shapes(size)):
        x = rng.random((1, C, H + 2, W + 2), dtype=np.float32)      # (1, C, H+2, W+2), padded
        w = rng.standard_normal((F, C, 3, 3)).astype(np.float32)    # (F, C, 3, 3)
        dy = rng.standard_normal((1, F, H, W)).astype(np.float32)   # (1, F, H, W)
        times = {}
        with _openblas_threads():  # the path columns: OpenBLAS's own threads, no pool
            for path in winograd.PATHS:
                fwd, dx = winograd.valid_conv(path)
                times[path] = (_best_time(lambda: fwd(x, w), repeats), _best_time(lambda: dx(dy, w), repeats))
        pool = _best_time(lambda: winograd.conv2d_valid(x, w, m=4, threads=pool_threads), repeats)
        best = min(winograd.PATHS, key=lambda p: sum(times[p]))
        if best != winograd.DEFAULT_PATH:
            rule[(C, F)] = best
        print(f"{name:<8} {f'{C}→{F} @ {H}²':<18} "
              + " ".join(f"{times[p][0]:10.4f} {times[p][1]:10.4f}" for p in winograd.PATHS)
              + f" {pool:12.4f}  {best}", flush=True)
        conv.release_workspaces()
        winograd.release_workspaces()
    print("\n# paste into adain_np/winograd.py (shapes not listed take DEFAULT_PATH):")
    print("CONV_RULE = {")
    for key, path in rule.items():
        print(f"    {key}: {path!r},")
    print("}")
    return rule
