"""Lesson 01: tensors, the NCHW layout, and reflection padding.

Run:  python lessons/01_tensors_and_padding.py [--quick] [--out FOLDER]

Everything in adain_np is a 4-D array in the layout PyTorch uses, NCHW:
N images, C channels, H rows, W columns. Before any network, this lesson looks
at what that means in memory, and at the one thing every 3x3 convolution of
AdaIN does first: mirror the image by one pixel on every side
(``nn.ReflectionPad2d(1)``), so the convolution has a full 3x3 window even at
the border.

Prints: shapes, strides, a padded 4x5 example, how many times each pixel is
copied by the padding. Draws: 01_padding.png, 01_border_blur.png.
Check: the padding against NumPy's np.pad and against torch (forward and backward).
"""
import sys

from _common import Lesson, heading, import_torch, max_abs, plt, run

import numpy as np

from adain_np.conv import conv2d_valid
from adain_np.images import load_image, resize_shorter, sample_path, to_tensor
from adain_np.layers import reflection_pad2d_backward, reflection_pad2d_forward
from adain_np.params import init_vgg_params


def main():
    lesson = Lesson(__doc__)

    # %% ------------------------------------------------------------------------------
    # 1. An image as a tensor.
    # to_tensor does what torchvision's ToTensor does: (H, W, 3) uint8 -> (3, H, W)
    # float32 in [0, 1]. A network wants a batch, so one more axis goes in front.
    heading("1. an image as an NCHW tensor")
    img = load_image(sample_path("chelsea"))
    img = resize_shorter(img, 128 if lesson.quick else 256)
    chw = to_tensor(img)                                              # (3, H, W)
    x = chw.reshape((1,) + chw.shape)                                 # (1, 3, H, W)
    N, C, H, W = x.shape
    print(f"chelsea.jpg as a tensor: shape {x.shape}, dtype {x.dtype}, "
          f"values in [{x.min():.2f}, {x.max():.2f}]")

    # In memory the array is one flat run of N*C*H*W floats. The strides say how many
    # bytes to step for +1 along each axis: a whole image, a whole channel plane, a row,
    # one float. So element (n, c, h, w) sits at flat index ((n*C + c)*H + h)*W + w.
    print(f"strides in bytes: {x.strides}  (= 4 * ({C * H * W}, {H * W}, {W}, 1))")
    n, c, h, w = 0, 2, 17, 40
    flat_index = ((n * C + c) * H + h) * W + w
    print(f"x[0, 2, 17, 40] = {x[n, c, h, w]:.4f}, flat[{flat_index}] = {x.reshape(-1)[flat_index]:.4f}")

    # A channel plane is contiguous: that is why NCHW suits per-channel work such as the
    # instance statistics of AdaIN (lesson 04), which reduce over one plane at a time.
    # NHWC ("channels last", what PIL and matplotlib use) is the same numbers in another
    # order. transpose() only changes the strides; nothing is copied, and the result is
    # no longer C-contiguous, which is why the library calls np.ascontiguousarray at its edges.
    nhwc = x.transpose(0, 2, 3, 1)                                    # (1, H, W, 3), a view
    print(f"as NHWC: shape {nhwc.shape}, strides {nhwc.strides}, "
          f"C-contiguous {nhwc.flags.c_contiguous}, shares memory {np.shares_memory(x, nhwc)}")

    # Weights follow torch too: a conv weight is (F, C, kh, kw), F output channels
    # ("filters"), each a C x kh x kw block that is slid over the input.
    vgg = init_vgg_params(seed=0)
    print(f"vgg conv1_1 weight '2.weight': {vgg['2.weight'].shape}  (F=64 filters of 3x3x3)")

    # %% ------------------------------------------------------------------------------
    # 2. Reflection padding on a tiny example.
    # ReflectionPad2d mirrors the border WITHOUT repeating the edge pixel: padding the row
    # [a b c d] by one gives [b a b c d c]. np.pad calls this mode "reflect" ("symmetric"
    # would repeat the edge). So the pad must be smaller than H and W.
    heading("2. reflection padding, 4x5 example")
    small = np.arange(20, dtype=np.float64).reshape(1, 1, 4, 5)      # (1, 1, 4, 5)
    padded, cache = reflection_pad2d_forward(small, pad=1)           # (1, 1, 6, 7)
    print("input:\n", small[0, 0].astype(int))
    print("reflection padded by 1:\n", padded[0, 0].astype(int))
    zero = np.pad(small, ((0, 0), (0, 0), (1, 1), (1, 1)))           # (1, 1, 6, 7)

    # What a 3x3 conv sees at the top-left output pixel: the 3x3 window of the padded
    # input. With zero padding 5 of its 9 inputs are 0 and the output is pulled towards
    # black; with reflection padding every input is a real pixel value.
    print("3x3 window at the top-left corner, reflection:\n", padded[0, 0, :3, :3].astype(int))
    print("3x3 window at the top-left corner, zeros:\n", zero[0, 0, :3, :3].astype(int))

    # %% ------------------------------------------------------------------------------
    # 3. The backward pass of padding.
    # Padding copies pixels, so its gradient adds: each input pixel gets the gradients of
    # every padded position that holds a copy of it. With an upstream gradient of ones,
    # the result counts the copies. The mirror copies the pixels one step IN from each edge
    # (not the edge itself), so those count 2, the four one step in from a corner 4, the
    # rest 1.
    heading("3. the gradient of padding counts the copies")
    copies = reflection_pad2d_backward(np.ones_like(padded), cache)  # (1, 1, 4, 5)
    print(copies[0, 0].astype(int))

    # %% ------------------------------------------------------------------------------
    # 4. Why it matters: a blur at the border.
    # A 3x3 box blur, applied again and again, with each kind of padding. Zero padding
    # leaks black in from outside on every pass, so a dark frame grows; reflection keeps
    # the border as bright as the image. The same happens in every conv layer of VGG and
    # of the decoder, which is why style-transfer networks use reflection padding.
    heading("4. repeated 3x3 blur with zero vs reflection padding")
    box = np.zeros((C, C, 3, 3), dtype=np.float32)                   # (F=3, C=3, 3, 3)
    for ch in range(C):
        box[ch, ch] = 1.0 / 9.0                                      # each channel blurs itself
    passes = 4 if lesson.quick else 12
    blur_reflect, blur_zero = x, x
    for _ in range(passes):
        blur_reflect = conv2d_valid(reflection_pad2d_forward(blur_reflect, 1)[0], box)
        blur_zero = conv2d_valid(np.pad(blur_zero, ((0, 0), (0, 0), (1, 1), (1, 1))), box)
    edge = slice(0, 3)
    print(f"mean brightness of the 3-pixel frame after {passes} passes: "
          f"original {x[:, :, edge].mean():.3f}, reflection {blur_reflect[:, :, edge].mean():.3f}, "
          f"zeros {blur_zero[:, :, edge].mean():.3f}")

    # %% ------------------------------------------------------------------------------
    # Figures.
    big_pad = H // 5
    show = lambda t: np.clip(t[0].transpose(1, 2, 0), 0, 1)          # (1, 3, H, W) -> (H, W, 3)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4.6))
    axes[0].imshow(show(x))
    axes[0].set_title(f"input {H}x{W}")
    axes[1].imshow(show(reflection_pad2d_forward(x, big_pad)[0]))
    axes[1].set_title(f"reflection pad {big_pad} (mirrored, edge not repeated)")
    axes[2].imshow(show(np.pad(x, ((0, 0), (0, 0), (big_pad,) * 2, (big_pad,) * 2))))
    axes[2].set_title(f"zero pad {big_pad}")
    for ax in axes[1:]:
        ax.add_patch(plt.Rectangle((big_pad - 0.5, big_pad - 0.5), W, H, fill=False, color="red"))
    for ax in axes:
        ax.axis("off")
    fig.suptitle("AdaIN pads by 1 before each 3x3 conv; a large pad makes the rule visible")
    fig.tight_layout()
    lesson.save_figure(fig, "01_padding.png")

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    axes[0].imshow(show(blur_reflect))
    axes[0].set_title(f"{passes} box blurs, reflection padding")
    axes[1].imshow(show(blur_zero))
    axes[1].set_title(f"{passes} box blurs, zero padding")
    for ax in axes[:2]:
        ax.axis("off")
    row = H // 2
    gray = lambda t: t[0, :, row, :].mean(axis=0)                   # (W,) brightness of one row
    axes[2].plot(gray(x), color="0.7", label="input")
    axes[2].plot(gray(blur_reflect), label="reflection")
    axes[2].plot(gray(blur_zero), "--", label="zeros")
    axes[2].set_title(f"brightness along row {row}")
    axes[2].set_xlabel("column")
    axes[2].legend()
    fig.tight_layout()
    lesson.save_figure(fig, "01_border_blur.png")

    # %% ------------------------------------------------------------------------------
    # Checks. The forward against np.pad's "reflect" (the same rule, written by someone
    # else), then against torch. The backward is checked with the adjoint identity: for
    # any x and g, <pad(x), g> = <x, pad_backward(g)>, because the backward of a linear map
    # is its transpose. Both sides are sums of the same products, so in float64 they agree
    # to ~1e-15 of their size; an index error shows up at ~1e-1.
    heading("checks")
    rng = np.random.default_rng(0)
    x64 = rng.standard_normal((2, 3, 7, 6))                          # (2, 3, 7, 6)
    for pad in (1, 2, 5):
        mine, pad_cache = reflection_pad2d_forward(x64, pad)
        reference = np.pad(x64, ((0, 0), (0, 0), (pad, pad), (pad, pad)), mode="reflect")
        lesson.check(f"pad {pad}: max |mine - np.pad(reflect)|", max_abs(mine, reference), 1e-15)
        g = rng.standard_normal(mine.shape)
        left, right = np.sum(mine * g), np.sum(x64 * reflection_pad2d_backward(g, pad_cache))
        lesson.check(f"pad {pad}: adjoint |<pad(x), g> - <x, pad_backward(g)>| / |<pad(x), g>|",
                     abs(left - right) / abs(left), 1e-12)

    torch = import_torch()
    if torch is not None:
        # float32 on both sides; padding only copies values, so the results are bit-identical.
        x32 = torch.tensor(x64.astype(np.float32), requires_grad=True)
        out = torch.nn.functional.pad(x32, (1, 1, 1, 1), mode="reflect")
        g = rng.standard_normal(tuple(out.shape)).astype(np.float32)
        out.backward(torch.tensor(g))
        mine, pad_cache = reflection_pad2d_forward(x64.astype(np.float32), 1)
        lesson.check("forward: max |mine - torch|", max_abs(mine, out.detach().numpy()), 1e-12)
        # The backward sums up to 4 copies in float32, in the same order as torch or not:
        # a few ulps of values of size ~1 at most.
        lesson.check("backward: max |mine - torch|",
                     max_abs(reflection_pad2d_backward(g, pad_cache), x32.grad.numpy()), 1e-6)
    return lesson.finish()


# %% [markdown]
# What to try
# - Pad with mode 'symmetric' (the edge pixel repeated) instead of reflection and rerun
#   the blur: which border artefact comes back?
# - Make a non-contiguous view with x.transpose(0, 2, 3, 1) and print its strides; then
#   np.ascontiguousarray it and compare.
# - Exercises: `python lessons/01_tensors_and_padding.py --exercises` (strides, reflection
#   pad and its backward by hand).


if __name__ == "__main__":
    sys.exit(run(main))
