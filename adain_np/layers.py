"""Reflection padding, ReLU, 2x2 max-pool (ceil mode) and nearest x2 upsampling.

Each op is a forward/backward pair (llm.c style): ``*_forward`` returns
``(out, cache)`` and ``*_backward(dout, cache)`` returns the input gradient.
All arrays are NCHW and work with NumPy or CuPy (the module comes from the data).

Dimension names used in shape comments:
    N batch, C channels, H/W input height/width, Ho/Wo output height/width, p pad.
"""
from .xp import get_array_module


# ----------------------------------------------------------------------------
# Reflection padding, as nn.ReflectionPad2d((p, p, p, p)): the border is mirrored
# without repeating the edge pixel, so p must be smaller than H and W.

def reflection_pad2d_forward(x, pad=1):
    # x: (N, C, H, W) -> out: (N, C, H+2p, W+2p)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    p = pad
    if not (0 <= p < H and p < W):
        raise ValueError(f"reflection pad {p} needs H and W > {p}, got {H}x{W}")
    out = xp.empty((N, C, H + 2 * p, W + 2 * p), dtype=x.dtype)
    out[:, :, p:p + H, p:p + W] = x
    if p:
        # Rows first (interior columns only), then whole columns, which fills the corners.
        out[:, :, :p, p:p + W] = x[:, :, p:0:-1, :]
        out[:, :, p + H:, p:p + W] = x[:, :, H - 2:H - 2 - p:-1, :] if H - 2 - p >= 0 \
            else x[:, :, H - 2::-1, :]
        out[:, :, :, :p] = out[:, :, :, 2 * p:p:-1]
        out[:, :, :, p + W:] = out[:, :, :, p + W - 2:W - 2:-1]  # W >= 2 since p < W
    return out, (x.shape, p)


def reflection_pad2d_backward(dout, cache):
    # dout: (N, C, H+2p, W+2p) -> dx: (N, C, H, W). Each mirrored pixel adds its
    # gradient back onto the pixel it copied: padded column p-k copied column k,
    # padded column p+W-1+k copied column W-1-k (k = 1..p); rows likewise.
    (N, C, H, W), p = cache
    if p == 0:
        return dout.copy()
    cols = dout[:, :, :, p:p + W].copy()                       # (N, C, H+2p, W)
    cols[:, :, :, 1:p + 1] += dout[:, :, :, :p][:, :, :, ::-1]
    cols[:, :, :, W - 1 - p:W - 1] += dout[:, :, :, p + W:][:, :, :, ::-1]
    dx = cols[:, :, p:p + H, :].copy()                         # (N, C, H, W)
    dx[:, :, 1:p + 1, :] += cols[:, :, :p, :][:, :, ::-1, :]
    dx[:, :, H - 1 - p:H - 1, :] += cols[:, :, p + H:, :][:, :, ::-1, :]
    return dx


# ----------------------------------------------------------------------------
# ReLU

def relu_forward(x):
    xp = get_array_module(x)
    out = xp.maximum(x, 0)
    return out, out  # the output alone tells where the input was positive


def relu_backward(dout, cache):
    out = cache
    return dout * (out > 0)


# ----------------------------------------------------------------------------
# Max-pool 2x2, stride 2, ceil_mode=True: an odd H or W gets one more output
# row/column whose window hangs over the edge and only sees the real pixels.

def maxpool2d_forward(x):
    # x: (N, C, H, W) -> out: (N, C, Ho, Wo), Ho = ceil(H/2), Wo = ceil(W/2)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    Ho, Wo = (H + 1) // 2, (W + 1) // 2
    if (H, W) != (2 * Ho, 2 * Wo):
        # Pad to even size with -inf so the overhanging window never picks padding.
        padded = xp.full((N, C, 2 * Ho, 2 * Wo), -xp.inf, dtype=x.dtype)
        padded[:, :, :H, :W] = x
    else:
        padded = x
    # Window order is row-major (top-left, top-right, bottom-left, bottom-right);
    # a strict '>' keeps the first maximum, the element torch routes the gradient to.
    out = padded[:, :, 0::2, 0::2].copy()                      # (N, C, Ho, Wo)
    argmax = xp.zeros(out.shape, dtype=xp.uint8)               # (N, C, Ho, Wo)
    for k, (dy, dx) in enumerate(((0, 1), (1, 0), (1, 1)), start=1):
        candidate = padded[:, :, dy::2, dx::2]
        better = candidate > out
        xp.copyto(out, candidate, where=better)
        xp.copyto(argmax, xp.uint8(k), where=better)  # masked copy: boolean indexing is ~10x slower
    return out, (x.shape, argmax)


def maxpool2d_backward(dout, cache):
    # dout: (N, C, Ho, Wo) -> dx: (N, C, H, W)
    (N, C, H, W), argmax = cache
    xp = get_array_module(dout)
    Ho, Wo = dout.shape[2:]
    dpadded = xp.empty((N, C, 2 * Ho, 2 * Wo), dtype=dout.dtype)
    for k, (dy, dx) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
        dpadded[:, :, dy::2, dx::2] = dout * (argmax == k)
    return dpadded[:, :, :H, :W] if (H, W) != (2 * Ho, 2 * Wo) else dpadded


# ----------------------------------------------------------------------------
# Nearest-neighbour upsampling by 2, as nn.Upsample(scale_factor=2, mode='nearest').

def upsample_nearest2d_forward(x):
    # x: (N, C, H, W) -> out: (N, C, 2H, 2W)
    xp = get_array_module(x)
    N, C, H, W = x.shape
    out = xp.empty((N, C, 2 * H, 2 * W), dtype=x.dtype)
    for dy in (0, 1):
        for dx in (0, 1):
            out[:, :, dy::2, dx::2] = x
    return out, x.shape


def upsample_nearest2d_backward(dout, cache):
    # dout: (N, C, 2H, 2W) -> dx: (N, C, H, W): each input pixel was copied four times.
    return (dout[:, :, 0::2, 0::2] + dout[:, :, 0::2, 1::2]
            + dout[:, :, 1::2, 0::2] + dout[:, :, 1::2, 1::2])
