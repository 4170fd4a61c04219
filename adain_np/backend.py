"""Where the heavy ops run. The network code (net.py) calls only the methods of ``Backend``.

``NumpyBackend`` is the reference: it composes the op pairs of layers.py, conv.py
and stats.py on NumPy arrays. The kernel backend implements the same interface with
the CUDA kernels in kernels/, on CuPy arrays (a GPU) or on NumPy arrays (the CPU
emulator). All arrays are NCHW.
"""
from typing import Any, Protocol

import numpy as np

from . import layers, optim, stats, winograd
from .stats import EPS


class Backend(Protocol):
    """The interface net.py and optim.py use; both backends provide it."""

    name: str  # "numpy", "cupy", "emulator"
    xp: Any    # the array module: numpy or cupy

    def asarray(self, host_array):
        """host array -> array on the backend, C-contiguous, in the backend's dtype."""

    def to_host(self, array):
        """array on the backend -> np.ndarray."""

    def conv_forward(self, x, w, b, reflect_pad, relu):
        """-> (y, cache). x (N, C, H, W), w (F, C, k, k), b (F,). k=3 comes with
        reflect_pad=True (ReflectionPad2d(1) folded in, y is (N, F, H, W)); k=1 with
        reflect_pad=False. relu=True applies the ReLU to y."""

    def conv_backward(self, dy, cache, need_dx=True, need_dw=True):
        """-> (dx | None, dw | None, db | None). dy is the gradient of y (after the ReLU
        when relu=True); it may be overwritten."""

    def maxpool_forward(self, x):
        """-> (y, cache): 2x2, stride 2, ceil mode."""

    def maxpool_backward(self, dy, cache):
        """-> dx."""

    def upsample_forward(self, x):
        """-> (y, cache): nearest, x2."""

    def upsample_backward(self, dy, cache):
        """-> dx."""

    def mean_std(self, feat, eps=EPS):
        """feat (N, C, H, W) -> (mean, std), (N, C, 1, 1) each (unbiased std + eps)."""

    def mean_std_backward(self, dmean, dstd, feat, mean, std):
        """-> dfeat (N, C, H, W); dmean or dstd may be None."""

    def adain_forward(self, content, style_mean, style_std, alpha):
        """-> (t, cache): alpha * AdaIN(content) with the style's stats + (1 - alpha) * content."""

    def adam_step(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        """One Adam step on one tensor, in place (optim.adam_update)."""


class DeviceError(RuntimeError):
    """The device asked for cannot be used; the message says why, in one line."""


def load_kernel_backend(kind):
    """The CUDA-kernel backend on 'gpu' or 'emulator'; imported only when asked for."""
    from .cuda import make_kernel_backend
    return make_kernel_backend(kind)


def select_backend(device):
    """(backend, fallback) for device cpu | auto | gpu | emulator (cli.DEVICE_CHOICES).

    auto means the CUDA kernels on a GPU when one is usable, else NumPy; `fallback` is then
    a one-line reason for the command to show ("no usable GPU (...)"), and None otherwise.
    An explicit gpu or emulator that cannot start raises DeviceError ("gpu is not usable: ...").
    """
    if device == "cpu":
        return NumpyBackend(), None
    try:
        return load_kernel_backend("emulator" if device == "emulator" else "gpu"), None
    except Exception as err:  # no CuPy, no driver, no GPU, a kernel that does not build: all say why
        reason = " ".join(str(err).split()) or type(err).__name__
        if device != "auto":
            raise DeviceError(f"{device} is not usable: {reason}") from None
        if not reason.lower().startswith("no usable gpu"):
            reason = f"no usable GPU ({reason})"
        return NumpyBackend(), reason


class NumpyBackend:
    name = "numpy"
    xp = np

    def __init__(self, dtype=np.float32, conv_mode=None):
        self.dtype = np.dtype(dtype)
        # Which 3x3 conv path each layer takes (winograd.conv_path); default: ADAIN_CONV or auto.
        self.conv_mode = conv_mode or winograd.conv_mode_from_env()

    def asarray(self, host_array):
        return np.ascontiguousarray(host_array, dtype=self.dtype)

    def to_host(self, array):
        return np.asarray(array)

    def conv_forward(self, x, w, b, reflect_pad, relu):
        padded = layers.reflection_pad2d_forward(x, 1)[0] if reflect_pad else x
        path = winograd.conv_path(self.conv_mode, w.shape[1], w.shape[0], x.shape[2], x.shape[3], w.shape[2])
        y = winograd.valid_conv(path)[0](padded, w, b, relu=relu)
        # The padded copy is not kept: the backward rebuilds it, which costs one
        # cheap copy and saves holding a second activation per layer.
        return y, (x, w, y if relu else None, reflect_pad, path)

    def conv_backward(self, dy, cache, need_dx=True, need_dw=True):
        x, w, y, reflect_pad, path = cache
        if y is not None:
            np.multiply(dy, y > 0, out=dy)  # ReLU backward, in place: dy is ours to reuse
        dx = dw = db = None
        if need_dw:
            padded = layers.reflection_pad2d_forward(x, 1)[0] if reflect_pad else x
            dw = winograd.weight_grad(padded, dy, w.shape[2])  # im2col; over the pool if one is set
            db = dy.sum(axis=(2, 3)).sum(axis=0)
        if need_dx:
            dx = winograd.valid_conv(path)[1](dy, w)
            if reflect_pad:
                dx = layers.reflection_pad2d_backward(dx, (x.shape, 1))
        return dx, dw, db

    def maxpool_forward(self, x):
        return layers.maxpool2d_forward(x)

    def maxpool_backward(self, dy, cache):
        return layers.maxpool2d_backward(dy, cache)

    def upsample_forward(self, x):
        return layers.upsample_nearest2d_forward(x)

    def upsample_backward(self, dy, cache):
        return layers.upsample_nearest2d_backward(dy, cache)

    def mean_std(self, feat, eps=EPS):
        return stats.calc_mean_std(feat, eps)

    def mean_std_backward(self, dmean, dstd, feat, mean, std):
        return stats.calc_mean_std_backward(dmean, dstd, (feat, mean, std))

    def adain_forward(self, content, style_mean, style_std, alpha):
        return stats.adain_with_stats_forward(content, style_mean, style_std, alpha)

    def adam_step(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        optim.adam_update(param, grad, m, v, lr, beta1, beta2, eps, step)
