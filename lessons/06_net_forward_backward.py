"""Lesson 06: the encoder, the decoder and the two losses, one full forward and backward pass of Net.

Run:  python lessons/06_net_forward_backward.py [--quick] [--out FOLDER]

AdaIN's network (pytorch-AdaIN's net.Net) has three parts:
  - an encoder f: VGG-19 up to relu4_1, FROZEN (its weights never change);
  - AdaIN (lesson 04), which has no weights;
  - a decoder g, the mirror of the encoder, the only thing that is trained.
Training asks g to turn t = AdaIN(f(c), f(s)) back into an image g(t) whose
features have
  - content loss: relu4_1 features equal to t:  L_c = MSE(f(g(t)), t)
  - style loss: at relu1_1, 2_1, 3_1 and 4_1, the style's instance statistics:
        L_s = sum_i MSE(mean(f_i(g(t))), mean(f_i(s))) + MSE(std(f_i(g(t))), std(f_i(s)))
and the total is L_c + 10 * L_s (train.py's weights).

This lesson does the forward by hand, step by step, checks it against
``Net.forward``, then runs ``Net.backward`` and looks at the gradient that reaches
each decoder layer. The weights are random (seeded): g(t) is not a picture yet,
and that is what training (lesson 07) is for.

Prints: shapes and values at each step, the losses, the time of each pass, the
gradient norm of every decoder layer. Draws: 06_forward.png, 06_decoder_grads.png.
Check: losses and all 18 decoder gradients against the torch transcription of
pytorch-AdaIN's Net (or finite differences in float64 without torch).
"""
import sys
import time

from _common import Lesson, heading, import_torch, plt, rel_error, run

import numpy as np

import adain_np
from adain_np.backend import NumpyBackend
from adain_np.images import load_image, resize_exact, sample_path, to_tensor
from adain_np.params import DECODER_LAYERS, DECODER_SHAPES
from adain_np.stats import adaptive_instance_normalization, calc_mean_std


def load(name, size):
    return to_tensor(resize_exact(load_image(sample_path(name)), (size, size)))[None]  # (1, 3, s, s)


def mse(a, b):
    return float(np.mean((a.astype(np.float64) - b) ** 2))


def main():
    lesson = Lesson(__doc__)
    size = 32 if lesson.quick else 128
    content = load("astronaut", size)                                # (1, 3, size, size)
    style = load("stained_glass", size)                              # (1, 3, size, size)
    vgg = adain_np.init_vgg_params(seed=0)
    decoder = adain_np.init_decoder_params(seed=0)
    net = adain_np.Net(vgg, decoder)

    # %% ------------------------------------------------------------------------------
    # The forward, one step at a time (what Net.forward does inside).
    heading("forward, step by step")
    # 1. The style's features at four depths, and their statistics: the style targets.
    style_feats = net.encode_with_intermediate(style)                # [relu1_1 .. relu4_1]
    style_stats = [calc_mean_std(f) for f in style_feats]            # [(mean, std)], (1, C_i, 1, 1)
    for name, f in zip(("relu1_1", "relu2_1", "relu3_1", "relu4_1"), style_feats):
        print(f"style {name}: {f.shape}")
    # 2. The content's relu4_1 features, and 3. AdaIN: the target t the decoder must invert.
    content_feat = net.encode(content)                               # (1, 512, size/8, size/8)
    t = adaptive_instance_normalization(content_feat, style_feats[-1])
    print(f"content relu4_1 {content_feat.shape} -> t = AdaIN(content, style) {t.shape}")
    # 4. Decode t into an image, and 5. encode that image again.
    g_t = net.decode(t)                                              # (1, 3, size, size)
    g_feats = net.encode_with_intermediate(g_t)
    print(f"g(t): {g_t.shape}, values in [{g_t.min():.2f}, {g_t.max():.2f}] "
          "(random decoder: not yet an image in [0, 1])")
    # 6. The losses.
    loss_c = mse(g_feats[-1], t)
    loss_s = sum(mse(m_g, m_s) + mse(s_g, s_s)
                 for (m_g, s_g), (m_s, s_s) in zip(map(calc_mean_std, g_feats), style_stats))
    print(f"by hand:     loss_c {loss_c:.6f}  loss_s {loss_s:.6f}")

    # The same through Net.forward, which also keeps the caches the backward needs.
    start = time.perf_counter()
    net_loss_c, net_loss_s = net.forward(content, style)
    forward_seconds = time.perf_counter() - start
    print(f"Net.forward: loss_c {net_loss_c:.6f}  loss_s {net_loss_s:.6f}  ({forward_seconds:.2f} s)")

    # %% ------------------------------------------------------------------------------
    # The backward. The loss depends on the decoder's weights through g(t), and g(t)
    # reaches the loss through the encoder, so the gradient flows BACK THROUGH THE FROZEN
    # ENCODER (its input gradient, lesson 05) without ever computing gradients for the
    # encoder's weights. The four style terms enter the encoder at four depths and add up
    # on the way down. Then it flows through the decoder, which does compute dw and db.
    heading("backward")
    start = time.perf_counter()
    grads = net.backward(content_weight=1.0, style_weight=10.0)      # {'1.weight': (256, 512, 3, 3), ...}
    backward_seconds = time.perf_counter() - start
    print(f"Net.backward: {len(grads)} decoder gradients ({backward_seconds:.2f} s)")
    conv_keys = [k for k in DECODER_SHAPES if k.endswith("weight")]
    norms = {}
    for key in conv_keys:
        index = int(key.split(".")[0])
        _, cin, cout, _ = DECODER_LAYERS[index]
        norms[key] = float(np.linalg.norm(grads[key]))
        print(f"decoder conv {index:>2} ({cin:>3}->{cout:>3}): |dL/dw| = {norms[key]:.3e}, "
              f"|dL/db| = {np.linalg.norm(grads[key.replace('weight', 'bias')]):.3e}")

    # %% ------------------------------------------------------------------------------
    # Figures.
    fig, axes = plt.subplots(2, 4, figsize=(13, 6.5))
    show = lambda x: np.clip(x[0].transpose(1, 2, 0), 0, 1)
    axes[0, 0].imshow(show(content))
    axes[0, 0].set_title("content c")
    axes[0, 1].imshow(show(style))
    axes[0, 1].set_title("style s")
    shown = (g_t - g_t.min()) / (g_t.max() - g_t.min())              # stretched to [0, 1] to be seen
    axes[0, 2].imshow(show(shown))
    axes[0, 2].set_title("g(t), random decoder (stretched)")
    axes[0, 3].imshow(t[0].std(axis=0), cmap="magma")
    axes[0, 3].set_title(f"t: std over 512 channels ({t.shape[2]}x{t.shape[3]})")
    content_feats = net.encode_with_intermediate(content)
    for ax, name, f in zip(axes[1], ("relu1_1", "relu2_1", "relu3_1", "relu4_1"), content_feats):
        channel = int(np.argmax(f[0].std(axis=(1, 2))))              # the most varied channel
        ax.imshow(f[0, channel], cmap="viridis")
        ax.set_title(f"content {name}, channel {channel}\n{f.shape[1]} ch, {f.shape[2]}x{f.shape[3]}")
    for ax in axes.ravel():
        ax.axis("off")
    fig.suptitle("one forward pass (random seeded weights: the mechanics, not the paper's pictures)")
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    lesson.save_figure(fig, "06_forward.png")

    fig, ax = plt.subplots(figsize=(9, 3.8))
    labels = [f"{k.split('.')[0]}\n{DECODER_LAYERS[int(k.split('.')[0])][1]}->"
              f"{DECODER_LAYERS[int(k.split('.')[0])][2]}" for k in conv_keys]
    ax.bar(labels, [norms[k] for k in conv_keys], color="C0")
    ax.set_yscale("log")
    ax.set_ylabel("|dL/dw| (log)")
    ax.set_xlabel("decoder conv (module index, channels); the image comes out of the last one")
    ax.set_title("gradient reaching each decoder layer, L = L_c + 10 L_s")
    fig.tight_layout()
    lesson.save_figure(fig, "06_decoder_grads.png")

    # %% ------------------------------------------------------------------------------
    # Checks.
    heading("checks")
    # The hand-written forward in float64 vs Net's float32: float32 rounding, ~1e-6.
    lesson.check("loss_c: |by hand - Net.forward| / |Net.forward|",
                 abs(loss_c - net_loss_c) / abs(net_loss_c), 1e-4)
    lesson.check("loss_s: |by hand - Net.forward| / |Net.forward|",
                 abs(loss_s - net_loss_s) / abs(net_loss_s), 1e-4)
    # The float64 checks run on smaller images (float64 is slower, and the sizes do not
    # change the arithmetic).
    check_size = 16 if lesson.quick else 64
    content, style = load("astronaut", check_size), load("stained_glass", check_size)
    torch = import_torch()
    if torch is not None:
        # The whole Net in float64 on both sides, so any difference is a bug, not rounding:
        # float64 over this depth agrees to ~1e-12; 1e-8 is a wide margin.
        from torch_reference import TorchNet
        vgg64 = {k: v.astype(np.float64) for k, v in vgg.items()}
        dec64 = {k: v.astype(np.float64) for k, v in decoder.items()}
        net64 = adain_np.Net(vgg64, dec64, NumpyBackend(np.float64))
        mine_c, mine_s = net64.forward(content, style)
        mine_grads = net64.backward(1.0, 10.0)
        ref = TorchNet(vgg64, dec64, dtype=torch.float64)
        ref_c, ref_s, ref_grads = ref.decoder_grads(torch.tensor(content, dtype=torch.float64),
                                                    torch.tensor(style, dtype=torch.float64))
        lesson.check("float64 loss_c: |mine - torch| / |torch|", abs(mine_c - ref_c) / abs(ref_c), 1e-8)
        lesson.check("float64 loss_s: |mine - torch| / |torch|", abs(mine_s - ref_s) / abs(ref_s), 1e-8)
        worst = max(rel_error(mine_grads[k], ref_grads[k]) for k in DECODER_SHAPES)
        lesson.check("float64, worst of 18 decoder gradients: max |mine - torch| / max |torch|",
                     worst, 1e-8)
    else:
        # Centred differences in float64 on the largest-gradient entries of the last conv.
        vgg64 = {k: v.astype(np.float64) for k, v in vgg.items()}
        dec64 = {k: v.astype(np.float64) for k, v in decoder.items()}
        net64 = adain_np.Net(vgg64, dec64, NumpyBackend(np.float64))
        net64.forward(content, style)
        g64 = net64.backward(1.0, 10.0)["28.weight"].reshape(-1)
        w = net64.decoder_params["28.weight"].reshape(-1)
        worst = 0.0
        for i in np.argsort(np.abs(g64))[-3:]:
            old, h = w[i], 1e-5
            w[i] = old + h
            plus = np.dot(net64.forward(content, style), [1.0, 10.0])
            w[i] = old - h
            minus = np.dot(net64.forward(content, style), [1.0, 10.0])
            w[i] = old
            numeric = (plus - minus) / (2 * h)
            worst = max(worst, abs(g64[i] - numeric) / (abs(g64[i]) + abs(numeric)))
        lesson.check("float64 decoder 28.weight, 3 entries: max rel error vs finite differences",
                     worst, 1e-6)
    return lesson.finish()


# %% [markdown]
# What to try
# - Set style_weight to 0 and to 100 and compare the decoder gradient norms per layer.
# - Check by finite differences one decoder weight's gradient through the whole Net.
# - Exercises: `--exercises` (the MSE backward, the style loss).


if __name__ == "__main__":
    sys.exit(run(main))
