"""Lesson 04: instance statistics and AdaIN, the one new layer of the paper.

Run:  python lessons/04_instance_stats_and_adain.py [--quick] [--out FOLDER]

Huang and Belongie's observation: much of what we call "style" is carried by
the mean and standard deviation of each feature channel, taken over the
positions of ONE image ("instance" statistics). Adaptive Instance Normalization
gives the content features the style's statistics:

    AdaIN(c, s) = std(s) * (c - mean(c)) / std(c) + mean(s)      per channel

It has no weights to learn. This lesson computes the statistics, applies
AdaIN to VGG features and to raw pixels, and shows what the blend weight alpha
does:  t = alpha * AdaIN(c, s) + (1 - alpha) * c.

The VGG weights are random (seeded), not the published ImageNet ones, so the
feature statistics are those of a random network: the arithmetic is the same,
the numbers are not the paper's. The pixel-space picture needs no weights at all.

Prints: statistics of content, style and AdaIN output, how alpha moves them.
Draws: 04_channel_stats.png, 04_alpha_stats.png, 04_pixel_adain.png.
Check: calc_mean_std and AdaIN against torch (or a float64 NumPy formula).
"""
import sys

from _common import Lesson, heading, import_torch, max_abs, plt, rel_error, run

import numpy as np

import adain_np
from adain_np.images import load_image, resize_exact, sample_path, to_tensor
from adain_np.stats import adain_forward, calc_mean_std


def load(name, size):
    return to_tensor(resize_exact(load_image(sample_path(name)), (size, size)))[None]  # (1, 3, s, s)


def main():
    lesson = Lesson(__doc__)
    size = 64 if lesson.quick else 160
    content = load("chelsea", size)                                  # (1, 3, size, size)
    style = load("swirls", size)                              # (1, 3, size, size)

    # %% ------------------------------------------------------------------------------
    # 1. Instance statistics. For each image n and channel c, over its L = H*W positions:
    #     mean = sum(x) / L,   std = sqrt(sum((x - mean)^2) / (L - 1) + eps)
    # L - 1 because pytorch-AdaIN calls torch's var(), which is unbiased by default, and
    # eps = 1e-5 inside the root so a constant channel does not divide by zero later.
    heading("1. instance statistics of relu4_1 features")
    net = adain_np.Net(adain_np.init_vgg_params(seed=0), adain_np.init_decoder_params(seed=0))
    content_feat = net.encode(content)                               # (1, 512, size/8, size/8)
    style_feat = net.encode(style)                                   # (1, 512, size/8, size/8)
    c_mean, c_std = calc_mean_std(content_feat)                      # (1, 512, 1, 1) each
    s_mean, s_std = calc_mean_std(style_feat)
    print(f"features {content_feat.shape}: one (mean, std) pair per channel -> {c_mean.shape}")
    print(f"content: channel means in [{c_mean.min():.3f}, {c_mean.max():.3f}], "
          f"stds in [{c_std.min():.3f}, {c_std.max():.3f}]")
    print(f"style:   channel means in [{s_mean.min():.3f}, {s_mean.max():.3f}], "
          f"stds in [{s_std.min():.3f}, {s_std.max():.3f}]")

    # %% ------------------------------------------------------------------------------
    # 2. AdaIN. Normalise each content channel to mean 0 and std 1, then scale and shift
    # it to the style's std and mean. The spatial pattern (WHERE a channel fires) stays the
    # content's; HOW STRONGLY and around what level it fires become the style's.
    heading("2. AdaIN gives the content features the style's statistics")
    t = adain_np.adaptive_instance_normalization(content_feat, style_feat)  # (1, 512, h, w)
    t_mean, t_std = calc_mean_std(t)
    print(f"max |mean(AdaIN) - mean(style)| = {max_abs(t_mean, s_mean):.1e}")
    # The std needs a closer look, because of eps. calc_mean_std adds eps = 1e-5 to every
    # variance, and AdaIN divides by the content's std and multiplies by the style's, so
    #     std(t) = sqrt(std_s^2 * var_c / (var_c + eps) + eps)    (var_c without eps)
    # which is std_s only when var_c >> eps and var_s >> eps. A random VGG has many weak,
    # nearly dead ReLU channels where that fails: a weak content channel is normalised to
    # less than unit std (ratio < 1), a dead style channel gets eps twice (ratio up to 1.41).
    eps = 1e-5
    var_c = (c_std.ravel().astype(np.float64) ** 2 - eps).clip(0)    # (512,) content variance
    std_ratio = (t_std / s_std).ravel()                               # (512,)
    predicted = np.sqrt(s_std.ravel() ** 2 * var_c / (var_c + eps) + eps) / s_std.ravel()
    off = np.abs(std_ratio - 1) > 1e-2
    print(f"std(AdaIN) / std(style): within 1% of 1 for {(~off).sum()} channels, "
          f"from {std_ratio.min():.2f} to {std_ratio.max():.2f} for the {off.sum()} weak ones")
    print(f"max |std(AdaIN)/std(style) - the eps formula| = {np.max(np.abs(std_ratio - predicted)):.1e}")
    strong = ~off
    flat_c, flat_t = content_feat.reshape(512, -1), t.reshape(512, -1)  # (512, h*w)
    live = flat_c.std(axis=1) > 1e-3                                  # channels that are not constant
    # The correlation of each channel's map with the content's is 1: AdaIN is an affine map
    # per channel, so the content's spatial structure is untouched.
    corr = [np.corrcoef(a, b)[0, 1] for a, b in zip(flat_c[live], flat_t[live])]
    print(f"per-channel correlation of AdaIN output with content: min {np.min(corr):.6f} "
          f"over {live.sum()} non-constant channels")

    # %% ------------------------------------------------------------------------------
    # 3. Alpha, the content-style trade-off of test.py: t = alpha*AdaIN(c, s) + (1-alpha)*c.
    # Both terms are affine maps of the same centred content channel, so the blend is too:
    # its mean is exactly alpha*mean(s) + (1-alpha)*mean(c), and its std (up to eps) is
    # alpha*std(s) + (1-alpha)*std(c). Alpha walks the statistics along a straight line.
    heading("3. alpha interpolates the statistics linearly")
    alphas = np.linspace(0, 1, 5 if lesson.quick else 11)
    blend_means, blend_stds = [], []
    for alpha in alphas:
        t_alpha, _ = adain_forward(content_feat, style_feat, alpha)
        m, s = calc_mean_std(t_alpha)
        blend_means.append(m.ravel())
        blend_stds.append(s.ravel())
    blend_means, blend_stds = np.array(blend_means), np.array(blend_stds)  # (alphas, 512)
    line_means = alphas[:, None] * s_mean.ravel() + (1 - alphas[:, None]) * c_mean.ravel()
    line_stds = alphas[:, None] * s_std.ravel() + (1 - alphas[:, None]) * c_std.ravel()
    print(f"max |mean(t_alpha) - straight line| = {max_abs(blend_means, line_means):.1e}")
    print(f"max |std(t_alpha) - straight line| = {max_abs(blend_stds[:, strong], line_stds[:, strong]):.1e} "
          "over the channels within 1% above")

    # %% ------------------------------------------------------------------------------
    # 4. AdaIN on pixels. The three RGB channels are features too: AdaIN on the image itself
    # moves each colour channel's mean and contrast to the style's. That is a crude colour
    # transfer, not style transfer (no texture moves), but it shows what the layer does
    # with no network in the way. The paper does the same on 512 VGG channels, where the
    # channels respond to textures and patterns instead of colours.
    heading("4. AdaIN on raw pixels: colour and contrast transfer")
    pixel_alphas = (0.0, 0.5, 1.0)
    pixel_results = [np.clip(adain_forward(content, style, a)[0], 0, 1) for a in pixel_alphas]
    for a, img in zip(pixel_alphas, pixel_results):
        print(f"alpha {a:.1f}: RGB means {np.round(img.mean(axis=(0, 2, 3)), 3)}")
    print(f"style RGB means        {np.round(style.mean(axis=(0, 2, 3)), 3)}")

    # %% ------------------------------------------------------------------------------
    # Figures.
    shown = np.argsort(s_mean.ravel())[-48:]                          # 48 channels, by style mean
    order = shown[np.argsort(s_mean.ravel()[shown])]
    fig, axes = plt.subplots(2, 2, figsize=(13, 7), gridspec_kw={"width_ratios": [2.2, 1]})
    for row, (name, c, s, tt) in enumerate((("mean", c_mean, s_mean, t_mean),
                                            ("std", c_std, s_std, t_std))):
        ax = axes[row, 0]
        xs = np.arange(len(order))
        ax.plot(xs, c.ravel()[order], "o", ms=4, label="content")
        ax.plot(xs, s.ravel()[order], "s", ms=7, mfc="none", label="style")
        ax.plot(xs, tt.ravel()[order], "x", ms=5, color="C3", label="AdaIN output")
        ax.set_ylabel(f"channel {name}")
        ax.set_xlabel("channel (48 of 512, sorted by style mean)")
        ax.legend(loc="upper left")
        ax = axes[row, 1]
        ax.plot(s.ravel(), c.ravel(), "o", ms=2, alpha=0.5, label="content")
        ax.plot(s.ravel(), tt.ravel(), "x", ms=3, color="C3", label="AdaIN output")
        lim = [min(s.min(), c.min()), max(s.max(), c.max())]
        ax.plot(lim, lim, color="0.5", lw=0.8)
        ax.set_xlabel(f"style {name}")
        ax.set_ylabel(f"{name}")
        ax.set_title(f"all 512 channels: AdaIN {name} = style {name}")
        ax.legend(loc="upper left")
    fig.suptitle("relu4_1 statistics per channel (random VGG weights)")
    fig.tight_layout()
    lesson.save_figure(fig, "04_channel_stats.png")

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, values, name in ((axes[0], blend_means, "mean"), (axes[1], blend_stds, "std")):
        for ch in order[-6:]:
            ax.plot(alphas, values[:, ch], "o-", ms=3)
        ax.set_xlabel("alpha")
        ax.set_ylabel(f"channel {name} of t")
        ax.set_title(f"{name} of 6 channels: straight from content (0) to style (1)")
    fig.tight_layout()
    lesson.save_figure(fig, "04_alpha_stats.png")

    fig, axes = plt.subplots(1, 5, figsize=(15, 3.4))
    show = lambda x: np.clip(x[0].transpose(1, 2, 0), 0, 1)
    panels = [(content, "content"), (style, "style")] + [
        (img, f"pixel AdaIN, alpha {a}") for a, img in zip(pixel_alphas, pixel_results)]
    for ax, (img, title) in zip(axes, panels):
        ax.imshow(show(img))
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle("AdaIN applied to the RGB channels: each channel's mean and std become the style's")
    fig.tight_layout(rect=(0, 0, 1, 0.94))
    lesson.save_figure(fig, "04_pixel_adain.png")

    # %% ------------------------------------------------------------------------------
    # Checks.
    heading("checks")
    # What AdaIN promises, checked on its own output (float32 sums over h*w values: ~1e-7).
    lesson.check("max |mean(AdaIN) - mean(style)| / max |mean(style)|", rel_error(t_mean, s_mean), 1e-5)
    lesson.check("max |std(AdaIN)/std(style) - the eps formula|",
                 float(np.max(np.abs(std_ratio - predicted))), 1e-5)
    torch = import_torch()
    if torch is not None:
        import torch_reference
        # The same float32 features through torch's var/mean: both sides sum ~h*w float32
        # terms in different orders, ~1e-7 relative; 1e-5 leaves room and catches a bug
        # (a biased variance alone would be off by 1/(2L) ~ 1e-3 here).
        ct, st = torch.from_numpy(content_feat), torch.from_numpy(style_feat)
        ref_mean, ref_std = torch_reference.calc_mean_std(ct)
        lesson.check("calc_mean_std mean: max |mine - torch| / max |torch|",
                     rel_error(c_mean, ref_mean.numpy()), 1e-5)
        lesson.check("calc_mean_std std: max |mine - torch| / max |torch|",
                     rel_error(c_std, ref_std.numpy()), 1e-5)
        ref_t = torch_reference.adaptive_instance_normalization(ct, st).numpy()
        lesson.check("AdaIN: max |mine - torch| / max |torch|", rel_error(t, ref_t), 1e-5)
    else:
        # The textbook formula in float64 with NumPy's own std (ddof=1: unbiased).
        flat = content_feat.astype(np.float64).reshape(512, -1)
        ref_std = np.sqrt(flat.std(axis=1, ddof=1) ** 2 + 1e-5)
        lesson.check("calc_mean_std std: max |mine - numpy float64| / max",
                     rel_error(c_std.ravel(), ref_std), 1e-5)
    return lesson.finish()


# %% [markdown]
# What to try
# - Set eps to 0 and to 1e-2 and watch the weak channels of relu4_1.
# - Why AdaIN works: lesson 12 optimises pixels until their relu1_1..relu4_1 mean and std
#   match a style's, beside Gram-matrix matching. Try other styles there.
# - Exercises: `--exercises` (instance statistics and AdaIN).


if __name__ == "__main__":
    sys.exit(run(main))
