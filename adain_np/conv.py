"""conv2d, stride 1 and no padding of its own, as a row-blocked im2col + GEMM.

Why blocked: a whole-image im2col for a 3x3 conv at 512x512x64 is 600 MB. Here
the im2col buffer covers only as many output rows as fit in ``BLOCK_BYTES`` and
is reused from one call to the next (fresh big buffers cost page faults here).

Dimension names: N batch, C input channels, F output channels (filters),
H/W input size, Ho/Wo output size (H-k+1, W-k+1), k kernel size, R rows in a block.
"""
import numpy as np

from .xp import get_array_module

BLOCK_BYTES = 8 << 20  # measured best of 2-16 MB here: big enough for GEMM, small enough to stay cached
_workspaces = {}       # (array module, dtype) -> 1-D scratch buffer, grown on demand


def _workspace(xp, dtype, size):
    key = (xp.__name__, np.dtype(dtype).str)
    buf = _workspaces.get(key)
    if buf is None or buf.size < size:
        buf = xp.empty(size, dtype=dtype)
        _workspaces[key] = buf
    return buf[:size]


def release_workspaces():
    """Free the scratch buffers (they are otherwise kept for the next call)."""
    _workspaces.clear()


def block_rows(C, k, Wo, Ho, itemsize, budget=None):
    """Output rows per im2col block: as many as fit in budget (default BLOCK_BYTES), 1 to Ho."""
    budget = BLOCK_BYTES if budget is None else budget
    return int(max(1, min(Ho, budget // (C * k * k * Wo * itemsize))))


def _column_blocks(x, k, Ho, Wo):
    """Yield (n, row0, R, cols) over images and blocks of output rows.

    cols: (C*k*k, R*Wo), the im2col of rows row0..row0+R of image n. For k=1 it is a
    view of x itself; otherwise it lives in the shared workspace, valid until the next yield.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    rows = block_rows(C, k, Wo, Ho, x.dtype.itemsize)
    buf = _workspace(xp, x.dtype, C * k * k * rows * Wo) if k > 1 else None
    for n in range(N):
        for row0 in range(0, Ho, rows):
            r = min(rows, Ho - row0)
            if k == 1:
                cols = x[n].reshape(C, H * W)[:, row0 * W:(row0 + r) * W]
            else:
                cols = im2col_rows(x[n], k, row0, r, Wo, buf[:C * k * k * r * Wo])
            yield n, row0, r, cols


def im2col_rows(x_n, k, row0, rows, Wo, buf):
    # x_n: (C, H, W) -> cols: (C*k*k, R*Wo), ordered (c, ky, kx) like w.reshape(F, C*k*k)
    C = x_n.shape[0]
    cols = buf.reshape(C, k, k, rows, Wo)
    for ky in range(k):
        for kx in range(k):
            cols[:, ky, kx] = x_n[:, row0 + ky:row0 + ky + rows, kx:kx + Wo]
    return buf.reshape(C * k * k, rows * Wo)


def conv2d_valid(x, w, b=None, relu=False, out=None):
    """y = conv(x, w) + b, optionally followed by ReLU, with no padding.

    x: (N, C, H, W), w: (F, C, k, k), b: (F,) or None -> y: (N, F, Ho, Wo)
    Bias and ReLU are applied block by block while the block is still in cache.
    """
    xp = get_array_module(x)
    N, C, H, W = x.shape
    F, C2, k, k2 = w.shape
    assert C == C2 and k == k2, (x.shape, w.shape)
    Ho, Wo = H - k + 1, W - k + 1
    y = xp.empty((N, F, Ho, Wo), dtype=x.dtype) if out is None else out
    w_mat = w.reshape(F, C * k * k)                                  # (F, C*k*k)
    bias = None if b is None else b.reshape(F, 1)                    # (F, 1)
    for n, row0, r, cols in _column_blocks(x, k, Ho, Wo):
        y_block = y[n].reshape(F, Ho * Wo)[:, row0 * Wo:(row0 + r) * Wo]  # (F, R*Wo)
        xp.matmul(w_mat, cols, out=y_block)
        if bias is not None:
            y_block += bias
        if relu:
            xp.maximum(y_block, 0, out=y_block)
    return y


def conv2d_weight_grad(x, dy, k):
    """dw = sum over n, positions of dy * im2col(x): (F, C, k, k); x: (N, C, H, W), dy: (N, F, Ho, Wo)."""
    xp = get_array_module(x)
    N, C, H, W = x.shape
    F, Ho, Wo = dy.shape[1:]
    dw = xp.zeros((F, C * k * k), dtype=x.dtype)                     # (F, C*k*k)
    partial = xp.empty_like(dw)
    for n, row0, r, cols in _column_blocks(x, k, Ho, Wo):
        dy_block = dy[n].reshape(F, Ho * Wo)[:, row0 * Wo:(row0 + r) * Wo]  # (F, R*Wo)
        xp.matmul(dy_block, cols.T, out=partial)
        dw += partial
    return dw.reshape(F, C, k, k)


def conv2d_input_grad(dy, w):
    """dx of a valid conv = full correlation of dy with the flipped, transposed kernel.

    dy: (N, F, Ho, Wo), w: (F, C, k, k) -> dx: (N, C, Ho+k-1, Wo+k-1). This reuses
    the forward's blocked GEMM instead of a scatter-add col2im.
    """
    xp = get_array_module(dy)
    N, F, Ho, Wo = dy.shape
    k = w.shape[2]
    if k == 1:
        w_t = xp.ascontiguousarray(w[:, :, 0, 0].T)[:, :, None, None]  # (C, F, 1, 1)
        return conv2d_valid(dy, w_t)
    q = k - 1
    dy_padded = xp.zeros((N, F, Ho + 2 * q, Wo + 2 * q), dtype=dy.dtype)
    dy_padded[:, :, q:q + Ho, q:q + Wo] = dy
    w_flipped = xp.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])  # (C, F, k, k)
    return conv2d_valid(dy_padded, w_flipped)


# ----------------------------------------------------------------------------
# The op as a forward/backward pair.

def conv2d_forward(x, w, b):
    # x: (N, C, H, W), w: (F, C, k, k), b: (F,) -> out: (N, F, H-k+1, W-k+1)
    out = conv2d_valid(x, w, b)
    return out, (x, w)


def conv2d_backward(dout, cache):
    # dout: (N, F, Ho, Wo) -> dx (N, C, H, W), dw (F, C, k, k), db (F,)
    x, w = cache
    dx = conv2d_input_grad(dout, w)
    dw = conv2d_weight_grad(x, dout, w.shape[2])
    db = dout.sum(axis=(2, 3)).sum(axis=0)
    return dx, dw, db
