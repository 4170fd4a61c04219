"""Lesson 03: max-pool with ceil mode, nearest upsampling, and the shapes through the encoder and decoder.

Run:  python lessons/03_pool_upsample_shapes.py [--quick] [--out FOLDER]

The encoder halves the image three times with a 2x2 max-pool, the decoder
doubles it three times with nearest-neighbour upsampling. Both are simple;
the one subtlety is odd sizes. pytorch-AdaIN's pools use ``ceil_mode=True``:
an odd side gets one more output, whose window hangs over the edge. Going
down and up again therefore does not always give back the size you started
with: a side h comes back as 8 * ceil(h / 8).

Prints: a 5x5 pool worked out, the routing of its gradient, the shape after
every layer of the encoder and decoder. Draws: 03_pool_windows.png, 03_shapes.png.
Check: pool and upsample, forward and backward, against torch (or finite differences).
"""
import math
import sys

from _common import Lesson, heading, import_torch, max_abs, plt, run

import numpy as np

import adain_np
from adain_np.layers import (maxpool2d_backward, maxpool2d_forward, upsample_nearest2d_backward,
                             upsample_nearest2d_forward)
from adain_np.gradient_check import numerical_gradient
from adain_np.params import DECODER_LAYERS, ENCODER_END, VGG_LAYERS


def layer_name(layer):
    kind = layer[0]
    if kind == "conv":
        return f"conv {layer[1]}->{layer[2]} {layer[3]}x{layer[3]}"
    return {"pad": "reflection pad 1", "relu": "ReLU", "pool": "max-pool 2x2 ceil",
            "up": "upsample x2 nearest"}[kind]


def shape_after(layer, shape):
    """The output shape of one layer, by the rules, without running it."""
    N, C, H, W = shape
    kind = layer[0]
    if kind == "conv":
        k = layer[3]
        return (N, layer[2], H - k + 1, W - k + 1)
    if kind == "pad":
        return (N, C, H + 2, W + 2)
    if kind == "pool":
        return (N, C, math.ceil(H / 2), math.ceil(W / 2))
    if kind == "up":
        return (N, C, 2 * H, 2 * W)
    return shape




def main():
    lesson = Lesson(__doc__)
    rng = np.random.default_rng(0)

    # %% ------------------------------------------------------------------------------
    # 1. Max-pool 2x2, stride 2, ceil mode, on a 5x5 input.
    # Floor mode (the default elsewhere) would give 2x2 and simply drop the last row and
    # column. Ceil mode gives 3x3: the windows of the last row and column hang over the
    # edge and take the max of the real pixels they cover (1 or 2 of them, not 4).
    heading("1. max-pool 2x2 with ceil mode on 5x5")
    x = rng.permutation(25).astype(np.float64).reshape(1, 1, 5, 5)   # (1, 1, 5, 5), distinct values
    pooled, pool_cache = maxpool2d_forward(x)                        # (1, 1, 3, 3)
    print("input:\n", x[0, 0].astype(int))
    print("pooled (3x3, ceil mode):\n", pooled[0, 0].astype(int))
    print("floor mode would keep only:\n", pooled[0, 0, :2, :2].astype(int))

    # The gradient of a max flows only to the element that won: the others did not change
    # the output, so their derivative is 0. The cache holds which of the 4 window positions
    # won (0 top-left .. 3 bottom-right), so the backward is a routing, not a computation.
    dpooled = np.arange(1, 10, dtype=np.float64).reshape(1, 1, 3, 3)  # (1, 1, 3, 3)
    dx = maxpool2d_backward(dpooled, pool_cache)                     # (1, 1, 5, 5)
    print("upstream gradient 1..9 routed back to the winners:\n", dx[0, 0].astype(int))

    # %% ------------------------------------------------------------------------------
    # 2. Nearest upsampling x2: every pixel becomes a 2x2 block. Its backward sums the
    # gradients of the 4 copies (the same rule as padding in lesson 01: copies add).
    heading("2. nearest upsampling x2")
    small = np.array([[1.0, 2.0], [3.0, 4.0]]).reshape(1, 1, 2, 2)  # (1, 1, 2, 2)
    up, up_cache = upsample_nearest2d_forward(small)                 # (1, 1, 4, 4)
    print("2x2 ->\n", up[0, 0].astype(int))
    print("backward of ones (each pixel has 4 copies):\n",
          upsample_nearest2d_backward(np.ones_like(up), up_cache)[0, 0].astype(int))

    # %% ------------------------------------------------------------------------------
    # 3. Shapes through the networks. The encoder is vgg[:31]: a 1x1 conv (the colour
    # preprocessing), then blocks of pad+conv+ReLU separated by 3 pools, up to relu4_1 with
    # 512 channels at 1/8 of the size. The decoder mirrors it with 3 upsamplings and ends
    # on a conv to 3 channels with no ReLU. Reflection pad 1 + 3x3 conv keeps the size, so
    # only pools and upsamplings change H and W.
    heading("3. shapes through encoder and decoder")
    H, W = (37, 50) if lesson.quick else (100, 75)
    shape = (1, 3, H, W)
    print(f"{'':>3} {'layer':<24} output shape")
    print(f"{'':>3} {'input':<24} {shape}")
    encoder_shapes = [shape]
    for i, layer in enumerate(VGG_LAYERS[:ENCODER_END]):
        shape = shape_after(layer, shape)
        if layer[0] != "pad":
            encoder_shapes.append(shape)
        if layer[0] in ("pool", "conv") and (layer[0] == "pool" or i in (0, 2)):
            print(f"{i:>3} {layer_name(layer):<24} {shape}")
    print(f"    ... relu4_1 (encoder output)  {shape}")
    decoder_shapes = [shape]
    for i, layer in enumerate(DECODER_LAYERS):
        shape = shape_after(layer, shape)
        if layer[0] != "pad":
            decoder_shapes.append(shape)
        if layer[0] == "up" or i == len(DECODER_LAYERS) - 1:
            print(f"{i:>3} {layer_name(layer):<24} {shape}")
    print(f"a {H}x{W} image comes back as {shape[2]}x{shape[3]} = 8*ceil(h/8) x 8*ceil(w/8)")

    # Now run the real networks (random seeded weights: the values mean nothing, the
    # shapes are what we look at) and compare with the shapes predicted above.
    vgg, decoder = adain_np.init_vgg_params(seed=0), adain_np.init_decoder_params(seed=0)
    net = adain_np.Net(vgg, decoder)
    image = rng.random((1, 3, H, W), dtype=np.float32)               # (1, 3, H, W)
    feats = net.encode_with_intermediate(image)                      # relu1_1 .. relu4_1
    decoded = net.decode(feats[-1])                                  # (1, 3, 8*ceil(H/8), ...)
    print("ran Net: relu1_1..relu4_1", [f.shape for f in feats], "decoded", decoded.shape)

    # %% ------------------------------------------------------------------------------
    # Figures: the pool windows on the 5x5 example, and the sizes through both networks.
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    hanging = np.full((6, 6), np.nan)                                # the 5x5 input and the overhang
    hanging[:5, :5] = x[0, 0]
    cmap = plt.get_cmap("Blues").copy()
    cmap.set_bad("0.85")                                             # the overhang: no pixels there
    axes[0].imshow(hanging, cmap=cmap)
    for (i, j), v in np.ndenumerate(x[0, 0]):
        axes[0].text(j, i, int(v), ha="center", va="center")
    for i in range(3):
        for j in range(3):
            axes[0].add_patch(plt.Rectangle((2 * j - 0.45, 2 * i - 0.45), 1.9, 1.9, fill=False,
                                            color="red" if 2 in (i, j) else "black", lw=2))
    axes[0].set_title("2x2 windows; red ones hang over the edge")
    axes[1].imshow(pooled[0, 0], cmap="Blues")
    for (i, j), v in np.ndenumerate(pooled[0, 0]):
        axes[1].text(j, i, int(v), ha="center", va="center")
    axes[1].set_title("pooled 3x3 (ceil mode)")
    axes[2].imshow(dx[0, 0], cmap="Oranges")
    for (i, j), v in np.ndenumerate(dx[0, 0]):
        axes[2].text(j, i, int(v), ha="center", va="center")
    axes[2].set_title("gradient 1..9 routed to the winners")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    lesson.save_figure(fig, "03_pool_windows.png")

    fig, ax = plt.subplots(figsize=(11, 4))
    all_shapes = encoder_shapes + decoder_shapes[1:]
    steps = np.arange(len(all_shapes))
    ax.plot(steps, [s[2] for s in all_shapes], "o-", label="height")
    ax.plot(steps, [s[3] for s in all_shapes], "s-", label="width")
    ax.set_ylabel("pixels")
    ax.set_xlabel("layer (pads omitted)")
    ax.axvline(len(encoder_shapes) - 1, color="0.5", ls="--")
    ax.set_ylim(0, 1.3 * max(max(s[2], s[3]) for s in all_shapes))
    ax.text(len(encoder_shapes) - 1, 1, " relu4_1", va="bottom")
    ax2 = ax.twinx()
    ax2.bar(steps, [s[1] for s in all_shapes], color="C2", alpha=0.25)
    ax2.set_ylabel("channels (green bars)")
    ax.set_zorder(ax2.get_zorder() + 1)  # lines over bars
    ax.patch.set_visible(False)
    ax.legend(loc="upper center", ncol=2)
    ax.set_title(f"{H}x{W} in, {all_shapes[-1][2]}x{all_shapes[-1][3]} out: "
                 "ceil-mode pools round up, upsampling doubles")
    fig.tight_layout()
    lesson.save_figure(fig, "03_shapes.png")

    # %% ------------------------------------------------------------------------------
    # Checks. Pool and upsample only select and copy values, so the forwards must agree
    # with torch exactly; the backwards add at most 4 float64 terms (~1e-16 relative).
    heading("checks")
    predicted = (1, 3, 8 * math.ceil(H / 8), 8 * math.ceil(W / 8))
    lesson.check("decoded shape vs walked and 8*ceil(side/8): max difference (pixels)",
                 float(max(np.abs(np.subtract(decoded.shape, predicted)).max(),
                           np.abs(np.subtract(decoded.shape, shape)).max())), 0.5)
    xs = rng.standard_normal((2, 3, 7, 6))                           # odd H: ceil mode in play
    ups = rng.standard_normal((2, 3, 4, 5))
    out_p, cache_p = maxpool2d_forward(xs)
    out_u, cache_u = upsample_nearest2d_forward(ups)
    g_p, g_u = rng.standard_normal(out_p.shape), rng.standard_normal(out_u.shape)
    torch = import_torch()
    if torch is not None:
        xt = torch.tensor(xs, requires_grad=True)
        yt = torch.nn.functional.max_pool2d(xt, 2, 2, ceil_mode=True)
        yt.backward(torch.tensor(g_p))
        lesson.check("max-pool forward: max |mine - torch|", max_abs(out_p, yt.detach().numpy()), 1e-15)
        lesson.check("max-pool backward: max |mine - torch|",
                     max_abs(maxpool2d_backward(g_p, cache_p), xt.grad.numpy()), 1e-15)
        ut = torch.tensor(ups, requires_grad=True)
        vt = torch.nn.functional.interpolate(ut, scale_factor=2, mode="nearest")
        vt.backward(torch.tensor(g_u))
        lesson.check("upsample forward: max |mine - torch|", max_abs(out_u, vt.detach().numpy()), 1e-15)
        lesson.check("upsample backward: max |mine - torch|",
                     max_abs(upsample_nearest2d_backward(g_u, cache_u), ut.grad.numpy()), 1e-14)
    else:
        # Centred differences are exact for a function that is linear around x (the max is,
        # as long as no two values in a window are within h of each other): what is left is
        # round-off, ~1e-16/h = 1e-10.
        num_p = numerical_gradient(lambda v: maxpool2d_forward(v)[0], xs, g_p)
        lesson.check("max-pool backward: max |mine - finite differences|",
                     max_abs(maxpool2d_backward(g_p, cache_p), num_p), 1e-8)
        num_u = numerical_gradient(lambda v: upsample_nearest2d_forward(v)[0], ups, g_u)
        lesson.check("upsample backward: max |mine - finite differences|",
                     max_abs(upsample_nearest2d_backward(g_u, cache_u), num_u), 1e-8)
    return lesson.finish()


# %% [markdown]
# What to try
# - Feed a 37x53 image through the encoder and decoder and predict the output size before
#   you run it.
# - Switch the pools to floor mode in your head: which sizes lose pixels, and where?
# - Exercises: `--exercises` (floor-mode pooling, the shape rule, upsampling's backward).


if __name__ == "__main__":
    sys.exit(run(main))
