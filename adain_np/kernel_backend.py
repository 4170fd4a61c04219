"""The Backend interface (see backend.py) on the CUDA kernels of kernels/*.cu.

``KernelBackend(launcher)`` runs the kernels through a launcher: ``gpu.CupyLauncher``
(CuPy arrays on a GPU) or ``gpu.EmulatorLauncher`` (NumPy arrays, the kernels compiled
for the CPU by adain_np.emulator). This module never imports CuPy: arrays come from
``launcher.xp``.

Kernels receive raw pointers and cannot check anything, so every wrapper here asserts
float32 and C-contiguity, computes the launch shape, and passes each scalar as
np.int32 / np.float32 (CuPy would pass a Python int as 64 bits).

Launcher interface:
    name, xp
    kernel(cu_file, kernel_name) -> callable(grid, block, args, shared_mem=0)
"""
import math
import os
import re

import numpy as np

KERNELS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kernels")
CU_FILES = ("conv2d_forward.cu", "conv2d_backward.cu", "instance_stats.cu", "adain.cu",
            "pool_upsample.cu", "adam.cu")
MAX_ELEMENTS = 2**31 - 1  # the kernels index tensors with int
THREADS = 256  # block size of the elementwise kernels and of every tiled conv kernel

# The numbered versions of each conv kernel and their (M, column) tile, for the tests and timings.
CONV_FORWARD_TILES = {1: None, 2: (16, 16), 3: (64, 64), 4: (128, 128)}
# (M, N, threads). v4: an 8-row tile for Cin <= 8 (conv1_1's backward-data).
CONV_BACKWARD_DATA_TILES = {1: None, 2: (64, 64, 256), 3: (128, 128, 256), 4: (8, 128, 64)}
# (M, N, BK, threads). v4-v7 use the stepping core (gemm_tile_kstep): v4 128x128; v5 64x128
# for Cout <= 64; v6 64x32 for Cin*k*k <= 32 (conv1_1); v7 8x128 for Cout <= 8 (last decoder conv).
CONV_BACKWARD_WEIGHT_TILES = {1: None, 2: (64, 64, 16, 256), 3: (128, 128, 8, 256),
                              4: (128, 128, 8, 256), 5: (64, 128, 8, 128),
                              6: (64, 32, 16, 128), 7: (8, 128, 8, 64)}
CONV_OPS = ("forward", "bwd_data", "bwd_weight")
CONV_BACKWARD_BIAS_VERSIONS = (1, 2)
INSTANCE_STATS_VERSIONS = (1, 2)

_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"\s*$')


class KernelCompileError(RuntimeError):
    """A kernel source failed to compile; the message names the .cu file and line."""


def kernel_source(cu_file):
    """The source of kernels/<cu_file> with its local #include "..." files inlined.

    Inlining (instead of -I) keeps NVRTC and the emulator's g++ on one self-contained
    text; #line markers make compiler messages name the original file and line.
    """
    path = os.path.join(KERNELS_DIR, cu_file)
    return _expand(path, seen=())


def _expand(path, seen):
    if path in seen:
        raise KernelCompileError(f"{path}: #include cycle")
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    out = [f'#line 1 "{_display_path(path)}"']
    for number, line in enumerate(lines, start=1):
        match = _INCLUDE.match(line)
        if match:
            included = os.path.join(os.path.dirname(path), match.group(1))
            if not os.path.exists(included):
                raise KernelCompileError(
                    f"{_display_path(path)}:{number}: included file {match.group(1)!r} not found")
            out.append(_expand(included, seen + (path,)))
            out.append(f'#line {number + 1} "{_display_path(path)}"')
        else:
            out.append(line)
    return "\n".join(out) + "\n"


def _display_path(path):
    # kernels/<file>: short, and the same wherever the repository lives.
    return os.path.join("kernels", os.path.relpath(path, KERNELS_DIR))


_LOG_ERROR = re.compile(r'^(?P<file>[^\s(:]+\.cuh?)\((?P<line>\d+)\): (?:catastrophic )?error: (?P<msg>.*)$'
                        r'|^(?P<file2>[^\s:]+\.cuh?):(?P<line2>\d+):(?:\d+:)? error: (?P<msg2>.*)$',
                        re.MULTILINE)


def first_compile_error(log):
    """'kernels/x.cu:LINE: message' for the first error in an NVRTC or g++ log, else None."""
    match = _LOG_ERROR.search(log or "")
    if not match:
        return None
    if match.group("file"):
        return f"{match.group('file')}:{match.group('line')}: {match.group('msg').strip()}"
    return f"{match.group('file2')}:{match.group('line2')}: {match.group('msg2').strip()}"


def _i32(value):
    return np.int32(value)


def _f32(value):
    return np.float32(value)


def _blocks(count, threads=THREADS):
    return (max(1, math.ceil(count / threads)),)


class KernelBackend:
    """The Backend interface on the CUDA kernels (see module docstring).

    conv_version / backward_data_version / backward_weight_version: None picks by shape
    (the fastest version we expect for it); an int forces that version (tests, timings).
    tuned_versions: optional {(op, Cin, Cout, H, W, k): version}, op in CONV_OPS, consulted
    before the shape rule (e.g. the per-shape winners that tools/bench_gpu.py measured).
    """

    dtype = np.dtype(np.float32)
    split_k_min_chunk = 1024  # pixels summed by one backward-weight block at least

    def __init__(self, launcher, conv_version=None, backward_data_version=None,
                 backward_weight_version=None, tuned_versions=None):
        self.launcher = launcher
        self.name = launcher.name
        self.xp = launcher.xp
        self.conv_version = conv_version
        self.backward_data_version = backward_data_version
        self.backward_weight_version = backward_weight_version
        self.tuned_versions = dict(tuned_versions or {})

    def _tuned(self, op, Cin, Cout, H, W, k):
        return self.tuned_versions.get((op, int(Cin), int(Cout), int(H), int(W), int(k)))

    # ---------------------------------------------------------------- plumbing

    def asarray(self, host_array):
        # Always a copy, as an upload to a GPU is: in-place kernels (adam_step) must not
        # write into the caller's host array on the emulator either.
        return self.xp.array(host_array, dtype=np.float32, order="C", copy=True)

    def to_host(self, array):
        if self.xp is np:
            return np.asarray(array)
        return self.xp.asnumpy(array)

    def _launch(self, cu_file, name, grid, block, args):
        for arg in args:
            if isinstance(arg, (np.int32, np.float32)):
                continue
            if getattr(arg, "flags", None) is None or not arg.flags.c_contiguous:
                raise TypeError(f"{name}: argument {arg!r:.60} is neither an np.int32/np.float32 "
                                "scalar nor a C-contiguous array")
        grid = tuple(int(g) for g in grid)
        block = tuple(int(b) for b in block)
        self.launcher.kernel(cu_file, name)(grid, block, tuple(args))

    def _check(self, array, name, ndim=None):
        if not isinstance(array, self.xp.ndarray):
            raise TypeError(f"{name} must be an {self.xp.__name__} array, got {type(array).__name__}")
        if array.dtype != np.float32:
            raise TypeError(f"{name} must be float32, got {array.dtype}")
        if not array.flags.c_contiguous:
            raise ValueError(f"{name} must be C-contiguous")
        if ndim is not None and array.ndim != ndim:
            raise ValueError(f"{name} must have {ndim} dimensions, got shape {array.shape}")
        if array.size > MAX_ELEMENTS:
            raise ValueError(f"{name} has {array.size} elements; the kernels index with 32-bit ints")
        return array

    def _empty(self, shape):
        if math.prod(shape) > MAX_ELEMENTS:
            raise ValueError(f"a {shape} buffer is too large for the kernels' 32-bit indexing")
        return self.xp.empty(shape, dtype=np.float32)

    # ---------------------------------------------------------------- conv

    @staticmethod
    def pick_gemm_version(M, cols, small, medium, large, min_blocks=256):
        """The tiled version for an (M x cols) output: the smallest tile that M fills, and the
        128x128 tile only when it still gives min_blocks blocks (about two per SM on an H100).

        An untimed guess: tools/gpu_check.sh times every version on the VGG shapes.
        """
        if small is not None and M <= 16:
            return small
        if M > 64 and math.ceil(M / 128) * math.ceil(cols / 128) >= min_blocks:
            return large
        return medium

    # The shape rules below follow the H200 measurements in kernels/PERF.md ("Round 2"):
    # the winner per VGG shape at batch 8, 256^2, generalised by the dimension that decided it.
    @classmethod
    def pick_forward_version(cls, Cout, pixels):
        if Cout <= 8:   # the decoder's last conv (64 -> 3): a tile would be mostly empty
            return 1
        return cls.pick_gemm_version(Cout, pixels, small=2, medium=3, large=4, min_blocks=128)

    @classmethod
    def pick_backward_data_version(cls, Cin, padded_pixels):
        if Cin <= 8:    # conv1_1's input (3 channels): the 8-row tile
            return 4
        return cls.pick_gemm_version(Cin, padded_pixels, None, 2, 3)

    @staticmethod
    def pick_backward_weight_version(Cout, cols):
        if Cout <= 8:   # 8-row tile
            return 7
        if cols < 64:   # Cin*k*k = 27 for conv1_1: the narrow-column tile
            return 6
        return 4        # pixel index stepped, not divided; double-buffered shared memory

    def conv_forward(self, x, w, b, reflect_pad, relu, version=None):
        # x (N, Cin, H, W), w (Cout, Cin, k, k), b (Cout,) -> y (N, Cout, H, W)
        self._check(x, "x", 4)
        self._check(w, "w", 4)
        self._check(b, "b", 1)
        N, Cin, H, W = x.shape
        Cout, wcin, k, k2 = w.shape
        if wcin != Cin or k != k2 or b.shape != (Cout,):
            raise ValueError(f"conv shapes do not match: x {x.shape}, w {w.shape}, b {b.shape}")
        if (k, bool(reflect_pad)) not in ((3, True), (1, False)):
            raise ValueError(f"supported: 3x3 with reflection padding, 1x1 without; got k={k}, "
                             f"reflect_pad={reflect_pad}")
        if reflect_pad and (H < 2 or W < 2):
            raise ValueError(f"reflection pad 1 needs H and W > 1, got {H}x{W}")
        version = (version or self.conv_version or self._tuned("forward", Cin, Cout, H, W, k)
                   or self.pick_forward_version(Cout, N * H * W))
        y = self._empty((N, Cout, H, W))
        args = (x, w, b, y, _i32(N), _i32(Cin), _i32(H), _i32(W), _i32(Cout), _i32(k),
                _i32(bool(relu)))
        tile = CONV_FORWARD_TILES[version]
        if tile is None:
            grid, block = _blocks(N * Cout * H * W), (THREADS,)
        else:
            grid = (math.ceil(N * H * W / tile[1]), math.ceil(Cout / tile[0]))
            block = (THREADS,)
        self._launch("conv2d_forward.cu", f"conv2d_forward_v{version}", grid, block, args)
        return y, (x, w, y if relu else None, bool(reflect_pad))

    def conv_backward(self, dy, cache, need_dx=True, need_dw=True, data_version=None,
                      weight_version=None, bias_version=2):
        # dy (N, Cout, H, W) -> dx (N, Cin, H, W), dw (Cout, Cin, k, k), db (Cout,)
        x, w, y, reflect_pad = cache
        self._check(dy, "dy", 4)
        N, Cin, H, W = x.shape
        Cout, _, k, _ = w.shape
        if dy.shape != (N, Cout, H, W):
            raise ValueError(f"dy shape {dy.shape} does not match the output {(N, Cout, H, W)}")
        relu = y is not None
        mask = y if relu else dy  # not read when relu == 0, but must be a valid pointer
        dims = (N, Cin, H, W, Cout, k, int(relu))
        dx = dw = db = None
        if need_dx:
            dx = self._conv_backward_data(dy, mask, w, dims, data_version)
        if need_dw:
            dw = self._conv_backward_weight(dy, mask, x, dims, weight_version)
            db = self._empty((Cout,))
            args = (dy, mask, db, _i32(N), _i32(Cout), _i32(H * W), _i32(relu))
            if bias_version == 1:
                self._launch("conv2d_backward.cu", "conv2d_backward_bias_v1", _blocks(Cout),
                             (THREADS,), args)
            else:
                self._launch("conv2d_backward.cu", "conv2d_backward_bias_v2", (Cout,),
                             (THREADS,), args)
        return dx, dw, db

    def _conv_backward_data(self, dy, mask, w, dims, version):
        N, Cin, H, W, Cout, k, _ = dims
        dims = tuple(_i32(d) for d in dims)
        version = (version or self.backward_data_version
                   or self._tuned("bwd_data", Cin, Cout, H, W, k)
                   or self.pick_backward_data_version(Cin, N * (H + k - 1) * (W + k - 1)))
        dx = self._empty((N, Cin, H, W))
        tile = CONV_BACKWARD_DATA_TILES[version]
        if tile is None:
            self._launch("conv2d_backward.cu", "conv2d_backward_data_v1",
                         _blocks(N * Cin * H * W), (THREADS,), (dy, mask, w, dx) + dims)
            return dx
        Hp, Wp = H + k - 1, W + k - 1
        # The gradient of the padded input, (N, Cin, H+2, W+2); for k = 1 it is dx itself.
        dxp = dx if k == 1 else self._empty((N, Cin, Hp, Wp))
        grid = (math.ceil(N * Hp * Wp / tile[1]), math.ceil(Cin / tile[0]))
        self._launch("conv2d_backward.cu", f"conv2d_backward_data_v{version}", grid, (tile[2],),
                     (dy, mask, w, dxp) + dims)
        if k == 3:
            self._launch("conv2d_backward.cu", "conv2d_backward_fold_reflect",
                         _blocks(N * Cin * H * W), (THREADS,),
                         (dxp, dx, _i32(N * Cin), _i32(H), _i32(W)))
        return dx

    def _conv_backward_weight(self, dy, mask, x, dims, version):
        N, Cin, H, W, Cout, k, _ = dims
        dims = tuple(_i32(d) for d in dims)
        # Split-K supplies the blocks here, so only the tile's fill matters.
        version = (version or self.backward_weight_version
                   or self._tuned("bwd_weight", Cin, Cout, H, W, k)
                   or self.pick_backward_weight_version(Cout, Cin * k * k))
        dw = self._empty((Cout, Cin, k, k))
        tile = CONV_BACKWARD_WEIGHT_TILES[version]
        if tile is None:
            self._launch("conv2d_backward.cu", "conv2d_backward_weight_v1",
                         _blocks(Cout * Cin * k * k), (THREADS,), (dy, mask, x, dw) + dims)
            return dw
        bm, bn, bk, threads = tile
        cols = Cin * k * k
        pixels = N * H * W
        splits, k_chunk = self.split_k(math.ceil(Cout / bm) * math.ceil(cols / bn), pixels, bk,
                                       min_chunk=self.split_k_min_chunk)
        part = dw if splits == 1 else self._empty((splits, Cout, Cin, k, k))  # per-split dw
        grid = (math.ceil(cols / bn), math.ceil(Cout / bm), splits)
        self._launch("conv2d_backward.cu", f"conv2d_backward_weight_v{version}", grid,
                     (threads,), (dy, mask, x, part) + dims + (_i32(k_chunk),))
        if splits > 1:
            count = Cout * cols
            self._launch("conv2d_backward.cu", "sum_splits", _blocks(count), (THREADS,),
                         (part, dw, _i32(splits), _i32(count)))
        return dw

    @staticmethod
    def split_k(tiles, pixels, bk, target_blocks=512, min_chunk=1024):
        """(splits, k_chunk): enough blocks to fill a GPU, each summing at least min_chunk pixels.

        k_chunk is a multiple of bk; the last split may be shorter.
        """
        splits = max(1, min(math.ceil(target_blocks / tiles), pixels // min_chunk))
        k_chunk = math.ceil(math.ceil(pixels / splits) / bk) * bk
        return math.ceil(pixels / k_chunk), k_chunk

    # ---------------------------------------------------------------- pool / upsample

    def maxpool_forward(self, x):
        # x (N, C, H, W) -> y (N, C, ceil(H/2), ceil(W/2))
        self._check(x, "x", 4)
        N, C, H, W = x.shape
        Ho, Wo = (H + 1) // 2, (W + 1) // 2
        y = self._empty((N, C, Ho, Wo))
        argmax = self.xp.empty((N, C, Ho, Wo), dtype=np.uint8)
        self._launch("pool_upsample.cu", "maxpool2d_forward", _blocks(y.size), (THREADS,),
                     (x, y, argmax, _i32(N * C), _i32(H), _i32(W)))
        return y, (x.shape, argmax)

    def maxpool_backward(self, dy, cache):
        # dy (N, C, Ho, Wo) -> dx (N, C, H, W)
        (N, C, H, W), argmax = cache
        self._check(dy, "dy", 4)
        if dy.shape != argmax.shape:
            raise ValueError(f"dy shape {dy.shape} does not match the pooled {argmax.shape}")
        dx = self._empty((N, C, H, W))
        self._launch("pool_upsample.cu", "maxpool2d_backward", _blocks(dx.size), (THREADS,),
                     (dy, argmax, dx, _i32(N * C), _i32(H), _i32(W)))
        return dx

    def upsample_forward(self, x):
        # x (N, C, H, W) -> y (N, C, 2H, 2W)
        self._check(x, "x", 4)
        N, C, H, W = x.shape
        y = self._empty((N, C, 2 * H, 2 * W))
        self._launch("pool_upsample.cu", "upsample_nearest2d_forward", _blocks(y.size),
                     (THREADS,), (x, y, _i32(N * C), _i32(H), _i32(W)))
        return y, x.shape

    def upsample_backward(self, dy, cache):
        # dy (N, C, 2H, 2W) -> dx (N, C, H, W)
        N, C, H, W = cache
        self._check(dy, "dy", 4)
        if dy.shape != (N, C, 2 * H, 2 * W):
            raise ValueError(f"dy shape {dy.shape} does not match {(N, C, 2 * H, 2 * W)}")
        dx = self._empty((N, C, H, W))
        self._launch("pool_upsample.cu", "upsample_nearest2d_backward", _blocks(dx.size),
                     (THREADS,), (dy, dx, _i32(N * C), _i32(H), _i32(W)))
        return dx

    def relu_backward(self, dy, y):
        # dy, y (any shape, same) -> dx
        self._check(dy, "dy")
        self._check(y, "y")
        if dy.shape != y.shape:
            raise ValueError(f"dy shape {dy.shape} does not match y {y.shape}")
        dx = self._empty(dy.shape)
        self._launch("pool_upsample.cu", "relu_backward", _blocks(dx.size), (THREADS,),
                     (dy, y, dx, _i32(dx.size)))
        return dx

    # ---------------------------------------------------------------- statistics, AdaIN

    def mean_std(self, feat, eps=1e-5, version=2):
        # feat (N, C, H, W) -> mean, std (N, C, 1, 1)
        self._check(feat, "feat", 4)
        N, C, H, W = feat.shape
        mean = self._empty((N, C, 1, 1))
        std = self._empty((N, C, 1, 1))
        args = (feat, mean, std, _i32(N * C), _i32(H * W), _f32(eps))
        if version == 1:
            self._launch("instance_stats.cu", "instance_mean_std_v1", _blocks(N * C, 128), (128,),
                         args)
        else:
            self._launch("instance_stats.cu", "instance_mean_std_v2", (N * C,), (THREADS,), args)
        return mean, std

    def mean_std_backward(self, dmean, dstd, feat, mean, std):
        # dmean, dstd (N, C, 1, 1) or None; feat (N, C, H, W) -> dfeat (N, C, H, W)
        self._check(feat, "feat", 4)
        N, C, H, W = feat.shape
        stats_shape = (N, C, 1, 1)
        zeros = None
        if dmean is None or dstd is None:
            zeros = self.xp.zeros(stats_shape, dtype=np.float32)
        dmean = zeros if dmean is None else dmean
        dstd = zeros if dstd is None else dstd
        for name, a in (("dmean", dmean), ("dstd", dstd), ("mean", mean), ("std", std)):
            self._check(a, name)
            if a.shape != stats_shape:
                raise ValueError(f"{name} shape {a.shape} is not {stats_shape}")
        dfeat = self._empty(feat.shape)
        self._launch("instance_stats.cu", "instance_mean_std_backward", _blocks(feat.size),
                     (THREADS,), (feat, mean, std, dmean, dstd, dfeat, _i32(N * C), _i32(H * W)))
        return dfeat

    def adain_forward(self, content, style_mean, style_std, alpha):
        # content (N, C, H, W); style_mean, style_std (N, C, 1, 1) or (1, C, 1, 1) -> t (N, C, H, W)
        self._check(content, "content", 4)
        N, C, H, W = content.shape
        style_mean = self._stats_like(style_mean, "style_mean", (N, C, 1, 1))
        style_std = self._stats_like(style_std, "style_std", (N, C, 1, 1))
        content_mean, content_std = self.mean_std(content)
        t = self._empty(content.shape)
        self._launch("adain.cu", "adain_forward", _blocks(t.size), (THREADS,),
                     (content, content_mean, content_std, style_mean, style_std, t,
                      _i32(N * C), _i32(H * W), _f32(alpha)))
        return t, (content, content_mean, content_std, style_mean, style_std, alpha)

    def _stats_like(self, a, name, shape):
        self._check(a, name, 4)
        if a.shape != shape:
            if a.shape != (1,) + shape[1:]:
                raise ValueError(f"{name} shape {a.shape} is not {shape}")
            a = self.xp.ascontiguousarray(self.xp.broadcast_to(a, shape))
        return a

    # ---------------------------------------------------------------- optimiser

    def adam_step(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        for name, a in (("param", param), ("grad", grad), ("m", m), ("v", v)):
            self._check(a, name)
            if a.shape != param.shape:
                raise ValueError(f"{name} shape {a.shape} does not match param {param.shape}")
        step_size = lr / (1 - beta1 ** step)
        bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
        self._launch("adam.cu", "adam_step", _blocks(param.size), (THREADS,),
                     (param, grad, m, v, _i32(param.size), _f32(1 - beta1), _f32(beta2),
                      _f32(1 - beta2), _f32(eps), _f32(step_size), _f32(bias_correction2_sqrt)))


def make_backend(device):
    """A KernelBackend for "gpu" (CuPy; raises when no GPU is usable) or "emulator" (the CPU)."""
    from .gpu import make_kernel_backend
    return make_kernel_backend(device)
