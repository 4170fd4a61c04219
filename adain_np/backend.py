"""Where the heavy ops run. The network code (net.py) calls only these methods.

``NumpyBackend`` is the reference: it composes the op pairs of layers.py, conv.py
and stats.py on NumPy arrays. ``adain_np.kernel_backend.KernelBackend`` implements
the same interface with the CUDA kernels in kernels/, on CuPy arrays (a GPU) or on
NumPy arrays (the CPU emulator). All arrays are NCHW.

Interface:
    name, xp
    asarray(host_array) -> array            on the backend, C-contiguous, in self.dtype
    to_host(array) -> np.ndarray
    conv_forward(x, w, b, reflect_pad, relu) -> (y, cache)
        x (N, C, H, W), w (F, C, k, k), b (F,). k=3 comes with reflect_pad=True
        (ReflectionPad2d(1) folded in, y is (N, F, H, W)); k=1 with reflect_pad=False.
    conv_backward(dy, cache, need_dx=True, need_dw=True) -> (dx | None, dw | None, db | None)
        dy is the gradient of y (after the ReLU when relu=True). May overwrite dy.
    maxpool_forward(x) -> (y, cache);  maxpool_backward(dy, cache) -> dx   (2x2, stride 2, ceil mode)
    upsample_forward(x) -> (y, cache); upsample_backward(dy, cache) -> dx  (nearest, x2)
    mean_std(feat, eps=1e-5) -> (mean, std)                                (N, C, 1, 1) each
    mean_std_backward(dmean, dstd, feat, mean, std) -> dfeat
    adain_forward(content, style_mean, style_std, alpha) -> (t, cache)
    adam_step(param, grad, m, v, lr, beta1, beta2, eps, step)              in place
"""
import numpy as np

from . import conv, layers, optim, stats
from .cli import UserError


def select_backend(device):
    """(backend, fallback) for --device cpu | auto | gpu | emulator.

    auto means the CUDA kernels on a GPU when one is usable, else NumPy; `fallback` is then
    a one-line reason for the command to show ("no usable GPU (...)"), and None otherwise.
    An explicit gpu or emulator that cannot start is a UserError.
    """
    if device == "cpu":
        return NumpyBackend(), None
    try:
        from .kernel_backend import make_backend
        return make_backend("emulator" if device == "emulator" else "gpu"), None
    except Exception as err:  # no CuPy, no driver, no GPU, a kernel that does not build: all say why
        reason = " ".join(str(err).split()) or type(err).__name__
        if device != "auto":
            raise UserError(f"--device {device} is not usable: {reason}") from None
        if not reason.lower().startswith("no usable gpu"):
            reason = f"no usable GPU ({reason})"
        return NumpyBackend(), reason


class NumpyBackend:
    name = "numpy"
    xp = np

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)

    def asarray(self, host_array):
        return np.ascontiguousarray(host_array, dtype=self.dtype)

    def to_host(self, array):
        return np.asarray(array)

    def conv_forward(self, x, w, b, reflect_pad, relu):
        padded = layers.reflection_pad2d_forward(x, 1)[0] if reflect_pad else x
        y = conv.conv2d_valid(padded, w, b, relu=relu)
        # The padded copy is not kept: the backward rebuilds it, which costs one
        # cheap copy and saves holding a second activation per layer.
        return y, (x, w, y if relu else None, reflect_pad)

    def conv_backward(self, dy, cache, need_dx=True, need_dw=True):
        x, w, y, reflect_pad = cache
        if y is not None:
            np.multiply(dy, y > 0, out=dy)  # ReLU backward, in place: dy is ours to reuse
        dx = dw = db = None
        if need_dw:
            padded = layers.reflection_pad2d_forward(x, 1)[0] if reflect_pad else x
            dw = conv.conv2d_weight_grad(padded, dy, w.shape[2])
            db = dy.sum(axis=(2, 3)).sum(axis=0)
        if need_dx:
            dx = conv.conv2d_input_grad(dy, w)
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

    def mean_std(self, feat, eps=1e-5):
        return stats.calc_mean_std(feat, eps)

    def mean_std_backward(self, dmean, dstd, feat, mean, std):
        return stats.calc_mean_std_backward(dmean, dstd, (feat, mean, std))

    def adain_forward(self, content, style_mean, style_std, alpha):
        return stats.adain_with_stats_forward(content, style_mean, style_std, alpha)

    def adam_step(self, param, grad, m, v, lr, beta1, beta2, eps, step):
        optim.adam_update(param, grad, m, v, lr, beta1, beta2, eps, step)
