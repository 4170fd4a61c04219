"""Lesson 12: why AdaIN works, matching a style's channel statistics by optimising pixels.

Run:  python lessons/12_why_adain_works.py [--quick] [--out FOLDER]

AdaIN's bet is that a style lives in the per-channel means and standard deviations of
VGG features: give the content features a style's statistics, decode, and the picture
takes on the style. Gatys et al. had earlier described a style by the Gram matrices of
the same features (every pair of channels: how often they fire together). Both claims
can be tested without any decoder: start from noise and change the PIXELS, by gradient
descent, until the image's features at relu1_1..relu4_1 have the style's statistics.
Whatever the resulting picture shows is what those statistics carry.

The gradient with respect to the pixels is lesson 05's and 06's machinery run one
step further: the style loss's backward through the statistics, then the encoder's
backward down to the input (Net.backward stops at the decoder's input; here there is
no decoder and the encoder's backward continues to the image).

What the random encoder can and cannot show. The encoder here is a seeded RANDOM VGG
(the published weights cannot be downloaded in this setting). Random 3x3 filters still
respond to colour and brightness, so matching their statistics moves the image's
colours to the style's (the run prints the RGB means), and both losses come down to a
few percent of where they started or less. But the pictures keep the noise's pixel-scale grain:
with this encoder, low losses do not mean the style's shapes. It cannot show strokes,
motifs or the texture a trained VGG's channels respond to: the channels of a random
network do not pick out such patterns, so neither its statistics nor its Gram matrices
describe them. What it does show is the mechanism, and that the 2C numbers of mean and
std and the C^2 of the Gram matrices pull the image the same way (each result also
lowers the other loss; the run prints by how much). With the published weights
(``python -m adain_np.weights download``, then load them with adain_np.weights) the same
optimisation reproduces the style's textures; that is the result AdaIN rests on.

Prints: the two losses as the optimisation runs, and each result's distance in the
other description. Draws: 12_why_adain_works.png.
Check: the pixel gradient of both losses against finite differences, and that each
optimisation lowered its own loss.
"""
import sys

from _common import Lesson, heading, plt, run

import numpy as np

import adain_np
from adain_np.backend import NumpyBackend
from adain_np.gradient_check import max_relative_error
from adain_np.images import load_image, resize_exact, sample_path, to_tensor
from adain_np.losses import style_loss_backward, style_loss_forward
from adain_np.net import backprop_layers
from adain_np.optim import Adam
from adain_np.params import ENCODER_SLICES


def load(name, size):
    return to_tensor(resize_exact(load_image(sample_path(name)), (size, size)))[None]  # (1, 3, S, S)


def gram(feat):
    """F F^T / L per image: (N, C, H, W) -> (N, C, C)."""
    N, C = feat.shape[:2]
    flat = feat.reshape(N, C, -1)                                    # (N, C, L)
    return flat @ flat.transpose(0, 2, 1) / flat.shape[2]


def gram_loss_forward(feats, target_grams):
    """sum over layers of mean((G - G_s)^2) / mean(G_s^2): each layer weighted to count alike."""
    loss, caches = 0.0, []
    for feat, target in zip(feats, target_grams):
        scale = 1.0 / np.mean(target ** 2)
        diff = gram(feat) - target                                   # (N, C, C)
        loss += scale * np.mean(diff ** 2)
        caches.append((feat, diff, scale))
    return loss, caches


def gram_loss_backward(caches):
    # d/dF of mean((F F^T / L - G_s)^2): dG = 2 diff / size, dF = (dG + dG^T) F / L
    d_feats = []
    for feat, diff, scale in caches:
        N, C = feat.shape[:2]
        flat = feat.reshape(N, C, -1)
        d_gram = scale * 2 * diff / diff.size
        d_flat = (d_gram + d_gram.transpose(0, 2, 1)) @ flat / flat.shape[2]
        d_feats.append(d_flat.reshape(feat.shape))
    return d_feats


class PixelObjective:
    """A style loss of an image's relu1_1..relu4_1 features, and its gradient for the pixels."""

    def __init__(self, net, style, kind):
        self.net, self.kind = net, kind
        style_feats = net.encode_with_intermediate(style)
        if kind == "stats":
            self.targets = [net.backend.mean_std(f) for f in style_feats]
        else:
            self.targets = [gram(f) for f in style_feats]

    def loss(self, x):
        feats = self.net.encode_with_intermediate(x)
        if self.kind == "stats":
            return float(style_loss_forward(feats, self.targets)[0])
        return float(gram_loss_forward(feats, self.targets)[0])

    def loss_and_grad(self, x):
        feats, caches = self.net.encode_with_intermediate(x, keep_cache=True)
        if self.kind == "stats":
            loss, loss_cache = style_loss_forward(feats, self.targets)
            d_feats = style_loss_backward(1.0, loss_cache)
        else:
            loss, loss_cache = gram_loss_forward(feats, self.targets)
            d_feats = gram_loss_backward(loss_cache)
        # As in Net.backward: from relu4_1 down, adding each level's own gradient on the way.
        d = None
        for level in range(len(ENCODER_SLICES) - 1, -1, -1):
            d = d_feats[level] if d is None else d + d_feats[level]
            d = backprop_layers(self.net.backend, caches[level], d)
        return float(loss), d                                        # d: (1, 3, S, S)


def optimise(objective, start, steps, lr):
    """Adam on the pixels, kept in [0, 1] after each step. Returns the image and the losses."""
    x = start.copy()
    params = {"x": x}
    adam = Adam(params, lr=lr)
    losses = []
    for _ in range(steps):
        loss, grad = objective.loss_and_grad(params["x"])
        losses.append(loss)
        adam.step({"x": grad})
        np.clip(params["x"], 0.0, 1.0, out=params["x"])
    losses.append(objective.loss(params["x"]))
    return params["x"], np.array(losses)


def main():
    lesson = Lesson(__doc__)
    size, steps = (32, 25) if lesson.quick else (48, 60)
    # float64: the finite-difference check below needs it; the optimisation does not care.
    backend = NumpyBackend(np.float64)
    vgg = {k: v.astype(np.float64) for k, v in adain_np.init_vgg_params(seed=0).items()}
    net = adain_np.Net(vgg, adain_np.init_decoder_params(seed=0), backend)
    style = load("stained_glass", size).astype(np.float64)           # (1, 3, S, S)
    rng = np.random.default_rng(0)
    noise = rng.random(style.shape)                                  # the start: uniform noise

    # %% ------------------------------------------------------------------------------
    # 1. The two descriptions of a style, as losses of the image x:
    #   statistics (AdaIN's, the paper's style loss):
    #       sum over relu1_1..relu4_1 of mse(mean(f_i(x)), mean(f_i(s))) + mse(std(f_i(x)), std(f_i(s)))
    #   Gram matrices (Gatys et al.):
    #       sum over the same layers of mse(G_i(x), G_i(s)) / mean(G_i(s)^2),  G = F F^T / L
    #   A channel's mean and std are 2 numbers per channel; a Gram matrix is C^2 (the
    #   diagonal is the mean of the squares, which mean and std determine). AdaIN's claim is
    #   that the 2C numbers already carry most of a style.
    heading("1. two descriptions of a style, and their gradients for the pixels")
    objectives = {kind: PixelObjective(net, style, kind) for kind in ("stats", "gram")}
    # Check both gradients on a few pixels by centred differences (float64, lesson 05).
    probe = noise.copy()
    picks = [tuple(rng.integers(0, n) for n in probe.shape) for _ in range(6)]
    grad_errors = {}
    for kind, objective in objectives.items():
        _, grad = objective.loss_and_grad(probe)
        analytic, numeric = [], []
        for index in picks:
            old = probe[index]
            probe[index] = old + 1e-5
            plus = objective.loss(probe)
            probe[index] = old - 1e-5
            minus = objective.loss(probe)
            probe[index] = old
            analytic.append(grad[index])
            numeric.append((plus - minus) / 2e-5)
        grad_errors[kind] = max_relative_error(np.array(analytic), np.array(numeric))
        print(f"{kind}: d loss / d pixel on 6 pixels, max rel error vs finite differences "
              f"{grad_errors[kind]:.1e}")

    # %% ------------------------------------------------------------------------------
    # 2. Optimise the pixels, once per description, from the same noise.
    heading(f"2. {steps} Adam steps on the pixels of a {size}x{size} noise image")
    results = {}
    for kind, objective in objectives.items():
        image, losses = optimise(objective, noise, steps, lr=0.05)
        results[kind] = (image, losses)
        print(f"{kind:>5} loss: {losses[0]:.4g} -> {losses[-1]:.4g} "
              f"({losses[-1] / losses[0]:.1%} of the start)")
    # Each result measured in the OTHER description: does matching mean/std also bring the
    # Gram matrices closer, and the other way round?
    for kind, other in (("stats", "gram"), ("gram", "stats")):
        before = objectives[other].loss(noise)
        after = objectives[other].loss(results[kind][0])
        print(f"the {kind}-matched image in the {other} loss: {before:.4g} -> {after:.4g} "
              f"({after / before:.1%} of the noise's)")
    for kind in objectives:
        print(f"{kind}-matched image: RGB means {np.round(results[kind][0].mean(axis=(0, 2, 3)), 3)}")
    print(f"style:               RGB means {np.round(style.mean(axis=(0, 2, 3)), 3)}")

    # %% ------------------------------------------------------------------------------
    # Figure: the style, the start, both results; the two loss curves.
    fig = plt.figure(figsize=(12, 3.8))
    grid = fig.add_gridspec(1, 5, width_ratios=[1, 1, 1, 1, 1.6])
    panels = [("style", style), ("start: noise", noise),
              ("mean/std matched\n(AdaIN's statistics)", results["stats"][0]),
              ("Gram matched\n(Gatys et al.)", results["gram"][0])]
    for col, (title, img) in enumerate(panels):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(np.clip(img[0].transpose(1, 2, 0), 0, 1), interpolation="nearest")
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(grid[0, 4])
    for k, kind in enumerate(("stats", "gram")):
        losses = results[kind][1]
        ax.semilogy(losses / losses[0], color=f"C{k}", label=f"{kind} loss")
    ax.set_xlabel("Adam step on the pixels")
    ax.set_ylabel("loss / loss at the start (log)")
    ax.legend(fontsize=8)
    ax.set_title("each optimisation's own loss", fontsize=9)
    fig.suptitle("matching a style's relu1_1..relu4_1 statistics by changing pixels "
                 "(random VGG: the colours move, the texture does not)", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.92))
    lesson.save_figure(fig, "12_why_adain_works.png")

    # %% ------------------------------------------------------------------------------
    # Checks. The gradients: float64 centred differences with h = 1e-5 agree to ~1e-8 on
    # these smooth losses (max-pool and ReLU kinks are rarely straddled by a 1e-5 step at
    # random pixels); a wrong backward is off by 1e-2 or more.
    heading("checks")
    for kind in objectives:
        lesson.check(f"{kind} loss: d loss / d pixel vs finite differences (max rel error)",
                     grad_errors[kind], 1e-5)
    # Each optimisation lowered its own loss: the final loss over the starting one must be
    # below 1 (it is far below; a sign error in the gradient would raise it).
    for kind in objectives:
        losses = results[kind][1]
        lesson.check(f"{kind} optimisation: final loss / starting loss", losses[-1] / losses[0], 1.0)
    return lesson.finish()


# %% [markdown]
# What to try
# - Start from the content image instead of noise: the statistics move, the layout stays.
#   That is what AdaIN does in one step, in feature space, and the decoder learns to draw.
# - Match only relu1_1 or only relu4_1 and compare the pictures: which scale does each carry?
# - Load the published VGG (`python -m adain_np.weights download`) and run again: the
#   statistics now carry the style's textures.


if __name__ == "__main__":
    sys.exit(run(main))
