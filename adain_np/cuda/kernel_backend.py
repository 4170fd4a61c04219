"""The Backend interface (see backend.py) on the CUDA kernels of kernels/*.cu: the launch wrappers.

``KernelBackend(launcher)`` runs the kernels through a launcher: ``gpu.CupyLauncher``
(CuPy arrays on a GPU) or ``emulator_launcher.EmulatorLauncher`` (NumPy arrays, the
kernels compiled for the CPU). This module never imports CuPy: arrays come from
``launcher.xp``. Which version runs, and its tile, comes from versions.py.

Kernels receive raw pointers and cannot check anything, so every wrapper here asserts
float32, C-contiguity and alignment, computes the launch shape, keeps every size below
the kernels' 32-bit int indexing, and passes each scalar as np.int32 / np.float32 (CuPy
would pass a Python int as 64 bits).

Launcher interface:
    name, xp
    kernel(cu_file, kernel_name) -> callable(grid, block, args, shared_mem=0)
"""
import math

import numpy as np

from ..stats import EPS
from . import versions
from .versions import CONV_BACKWARD_DATA_TILES, CONV_BACKWARD_WEIGHT_TILES, CONV_FORWARD_TILES

THREADS = 256  # block size of the elementwise kernels
MAX_BLOCK = 1024  # CUDA's limit on threads per block
# The kernels compute a thread's index as blockIdx.x * blockDim.x + threadIdx.x in 32 bits
# and index tensors with int. Every launched thread index must fit in an int (else it wraps
# negative and passes the `idx >= n` test), so a grid's x-extent times the block is capped
# at 2^31, and so tensors at 2^31 - MAX_BLOCK elements: rounded up to whole blocks, they
# still fit.
MAX_THREADS_X = 2**31
MAX_ELEMENTS = 2**31 - MAX_BLOCK
ALIGNMENT = 16  # bytes: the widest global access (float4) any kernel may make


def _i32(value):
    return np.int32(value)


def _f32(value):
    return np.float32(value)


def _data_address(array):
    data = getattr(array, "data", None)
    ptr = getattr(data, "ptr", None)  # cupy
    return int(ptr) if ptr is not None else array.ctypes.data


def _blocks(count, threads=THREADS):
    return (max(1, math.ceil(count / threads)),)


class KernelBackend:
    """The Backend interface on the CUDA kernels (see module docstring).

    conv_version / backward_data_version / backward_weight_version: None picks by shape
    (the fastest version we expect for it); an int forces that version (tests, timings).
    tuned_versions: optional {(op, Cin, Cout, H, W, k): version}, op one of
    "forward", "bwd_data", "bwd_weight", consulted
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

    pick_gemm_version = staticmethod(versions.pick_gemm_version)
    pick_forward_version = staticmethod(versions.pick_forward_version)
    pick_backward_data_version = staticmethod(versions.pick_backward_data_version)
    pick_backward_weight_version = staticmethod(versions.pick_backward_weight_version)
    split_k = staticmethod(versions.split_k)

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
            if arg.size and _data_address(arg) % ALIGNMENT:
                raise ValueError(f"{name}: an array argument is not {ALIGNMENT}-byte aligned")
        grid = tuple(int(g) for g in grid)
        block = tuple(int(b) for b in block)
        if grid[0] * block[0] > MAX_THREADS_X:
            raise ValueError(f"{name}: {grid[0]} x {block[0]} threads overflow the kernels' "
                             "32-bit thread index")
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
            grid = (math.ceil(N * H * W / tile.bn), math.ceil(Cout / tile.bm))
            block = (tile.threads,)
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
            dw, db = self._conv_backward_weight(dy, mask, x, dims, weight_version)
            if db is not None:  # fused into the weight kernel
                return dx, dw, db
            db = self._empty((Cout,))
            args = (dy, mask, db, _i32(N), _i32(Cout), _i32(H * W), _i32(relu))
            if bias_version == 1:
                self._launch("conv2d_backward.cu", "conv2d_backward_bias_v1", _blocks(Cout),
                             (THREADS,), args)
            elif bias_version == 2:
                self._launch("conv2d_backward.cu", "conv2d_backward_bias_v2", (Cout,),
                             (THREADS,), args)
            else:
                self._conv_backward_bias_v3(dy, mask, db, N, Cout, H * W, relu)
        return dx, dw, db

    bias_chunk = 4 * 4 * THREADS  # pixels per bias_v3 block: four unrolled steps of the block

    def _conv_backward_bias_v3(self, dy, mask, db, N, Cout, HW, relu):
        # Partials per (image, pixel chunk), then sum_splits: (Cout, N, chunks) blocks.
        chunks = math.ceil(HW / self.bias_chunk)
        splits = N * chunks
        part = db if splits == 1 else self._empty((splits, Cout))
        self._launch("conv2d_backward.cu", "conv2d_backward_bias_v3", (Cout, N, chunks),
                     (THREADS,), (dy, mask, part, _i32(N), _i32(Cout), _i32(HW), _i32(relu),
                                  _i32(self.bias_chunk)))
        if splits > 1:
            self._launch("conv2d_backward.cu", "sum_splits", _blocks(Cout), (THREADS,),
                         (part, db, _i32(splits), _i32(Cout)))

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
        grid = (math.ceil(N * Hp * Wp / tile.bn), math.ceil(Cin / tile.bm))
        self._launch("conv2d_backward.cu", f"conv2d_backward_data_v{version}", grid, (tile.threads,),
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
            return dw, None
        bm, bn, bk, threads = tile.bm, tile.bn, tile.bk, tile.threads
        cols = Cin * k * k
        pixels = N * H * W
        splits, k_chunk = self.split_k(math.ceil(Cout / bm) * math.ceil(cols / bn), pixels, bk,
                                       min_chunk=self.split_k_min_chunk)
        part = dw if splits == 1 else self._empty((splits, Cout, Cin, k, k))  # per-split dw
        grid = (math.ceil(cols / bn), math.ceil(Cout / bm), splits)
        args = (dy, mask, x, part) + dims + (_i32(k_chunk),)
        db = part_db = None
        if tile.macro == versions.KSTEP_BIAS:  # db partials (splits, Cout) from column tile 0
            db = self._empty((Cout,))
            part_db = db if splits == 1 else self._empty((splits, Cout))
            args += (part_db,)
        self._launch("conv2d_backward.cu", f"conv2d_backward_weight_v{version}", grid,
                     (threads,), args)
        if splits > 1:
            count = Cout * cols
            self._launch("conv2d_backward.cu", "sum_splits", _blocks(count), (THREADS,),
                         (part, dw, _i32(splits), _i32(count)))
            if db is not None:
                self._launch("conv2d_backward.cu", "sum_splits", _blocks(Cout), (THREADS,),
                             (part_db, db, _i32(splits), _i32(Cout)))
        return dw, db

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

    # ---------------------------------------------------------------- statistics, AdaIN

    def mean_std(self, feat, eps=EPS, version=2):
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
