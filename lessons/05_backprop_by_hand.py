"""Lesson 05: backprop by hand, and how to know it is right.

Run:  python lessons/05_backprop_by_hand.py [--quick] [--out FOLDER]

adain_np has no autograd. Every op is a pair: ``forward(inputs) -> (out, cache)``
and ``backward(dout, cache) -> dinputs``, where dout is dL/dout for whatever
scalar loss L sits downstream, and the backward returns dL/dinputs (the chain
rule, one op at a time). The cache holds what the forward saw and the backward
needs. A network's backward is then the backwards of its ops in reverse order.

A backward written by hand is easy to get subtly wrong, so each one is checked
against centred differences of its own forward:

    dL/dx[i]  ~=  (L(x + h e_i) - L(x - h e_i)) / (2h),   L(x) = sum(forward(x) * dout)

Prints: the derivation of each backward and its error against finite
differences; the error as h shrinks. Draws: 05_gradcheck_h.png.
Check: every backward against finite differences, and a small chain against torch autograd.
"""
import sys

from _common import Lesson, heading, import_torch, plt, rel_error, run

import numpy as np

# The checker itself is ten lines in adain_np/gradient_check.py (cs231n's gradient_check.py):
# nudge one input element by +h and -h, difference the summed outputs weighted by dout,
# divide by 2h; compare with |a - n| / (|a| + |n|). Read it before going on.
from adain_np.gradient_check import max_relative_error, numerical_gradient
from adain_np.conv import conv2d_backward, conv2d_forward
from adain_np.layers import (maxpool2d_backward, maxpool2d_forward, reflection_pad2d_backward,
                             reflection_pad2d_forward, relu_backward, relu_forward)
from adain_np.stats import adain_backward, adain_forward, calc_mean_std_backward, calc_mean_std_forward






# In float64 with h = 1e-5 the centred difference has truncation error ~h^2 = 1e-10 and
# round-off ~1e-16/h = 1e-11, both relative to the gradient's scale; an element whose true
# gradient is small next to its neighbours can show ~1e-7. A wrong backward (a missing
# term, a transposed index) gives 1e-2 or more. So 1e-6 separates the two.
GRADCHECK_TOL = 1e-6


def main():
    lesson = Lesson(__doc__)
    rng = np.random.default_rng(0)
    H, W = (5, 6) if lesson.quick else (7, 8)

    def gradcheck(name, forward, backward, inputs, which, dout_seed=1, h=1e-5):
        """Compare backward's gradient of input `which` with centred differences of forward."""
        out, cache = forward(*inputs)
        dout = np.random.default_rng(dout_seed).standard_normal(np.shape(out))
        grads = backward(dout.copy(), cache)
        grads = grads if isinstance(grads, tuple) else (grads,)
        for i in which:
            def f(xi, i=i):
                args = list(inputs)
                args[i] = xi
                return forward(*args)[0]
            numeric = numerical_gradient(f, inputs[i].copy(), dout, h)
            lesson.check(f"{name}, d/d input {i}: max rel error vs finite differences",
                         max_relative_error(grads[i], numeric), GRADCHECK_TOL)

    # %% ------------------------------------------------------------------------------
    # ReLU: out = max(x, 0), so dout/dx is 1 where x > 0 and 0 elsewhere:
    #     dx = dout * (x > 0)
    # The cache is the output itself (out > 0 exactly where x > 0). Keep inputs away from
    # 0 for the check: at the kink the centred difference straddles both slopes.
    heading("ReLU: dx = dout * (x > 0)")
    x = rng.standard_normal((2, 3, H, W))
    x[np.abs(x) < 0.05] = 0.5
    gradcheck("relu", relu_forward, relu_backward, [x], which=[0])

    # %% ------------------------------------------------------------------------------
    # Reflection pad: a copy, so its backward adds each copy's gradient to its source
    # (lesson 01).
    heading("reflection pad: each copy's gradient goes back to its source")
    gradcheck("reflection pad", lambda v: reflection_pad2d_forward(v, 1),
              reflection_pad2d_backward, [rng.standard_normal((2, 2, H, W))], which=[0])

    # %% ------------------------------------------------------------------------------
    # Convolution (valid, stride 1):  y[n,f,i,j] = b[f] + sum_{c,ky,kx} w[f,c,ky,kx] x[n,c,i+ky,j+kx]
    #   db[f]          = sum_{n,i,j} dy[n,f,i,j]
    #   dw[f,c,ky,kx]  = sum_{n,i,j} dy[n,f,i,j] * x[n,c,i+ky,j+kx]
    #                    (a correlation of x with dy: in im2col terms dW = dY @ cols^T)
    #   dx[n,c,p,q]    = sum_{f,ky,kx} dy[n,f,p-ky,q-kx] * w[f,c,ky,kx]
    #                    (a "full" correlation of dy, zero-padded by k-1, with the kernel
    #                    flipped in both axes and its F and C axes swapped; adain_np computes
    #                    it with the same blocked GEMM as the forward, see adain_np/conv.py)
    heading("conv: db = sum dy, dw = dy (x) x, dx = full correlation of dy with the flipped kernel")
    x = rng.standard_normal((2, 3, H, W))                            # (N, C, H, W)
    w = rng.standard_normal((4, 3, 3, 3)) / 3                        # (F, C, 3, 3)
    b = rng.standard_normal(4)                                       # (F,)
    gradcheck("conv", conv2d_forward, lambda d, c: conv2d_backward(d, c), [x, w, b], which=[0, 1, 2])

    # %% ------------------------------------------------------------------------------
    # Max-pool: the output is one of the inputs, so the gradient is routed to that input
    # (the argmax saved in the cache) and every other input gets 0. Values must be distinct
    # within a window, or the max is not differentiable. Between its kinks the max is
    # linear, so a larger step (h = 1e-3, still far below the 0.1 gap between values) has
    # no truncation error and less round-off.
    heading("max-pool (ceil mode): route dout to the argmax of each window")
    x = rng.permutation(2 * 3 * H * W).reshape(2, 3, H, W) / 10.0    # distinct values
    gradcheck("max-pool", maxpool2d_forward, maxpool2d_backward, [x], which=[0], h=1e-3)
    # Two cases finite differences cannot judge:
    #  - Ties. With equal values in a window the max has no derivative; torch (and
    #    adain_np) send the whole gradient to the FIRST maximum in the window's row-major
    #    order (top-left, top-right, bottom-left, bottom-right), because the argmax is
    #    updated only on a strict '>'. After a ReLU ties are common: a window of zeros.
    #  - Ceil mode's overhanging windows. For an odd side the last window hangs over the
    #    edge; the missing pixels are padded with -inf, not 0, so the max is always a real
    #    pixel. With 0 padding an all-negative window would output 0 and send its gradient
    #    nowhere. (pytorch-AdaIN pools after ReLUs, so its inputs are >= 0 there and the
    #    difference would hide; the checks below use negative values so it cannot.)
    ties = rng.integers(0, 3, size=(1, 2, H, W)).astype(np.float64) - 3.0  # ties, all negative
    ties_out, ties_cache = maxpool2d_forward(ties)
    ties_dout = rng.standard_normal(ties_out.shape)
    ties_dx = maxpool2d_backward(ties_dout, ties_cache)
    print(f"a {H}x{W} input of values in {{-3, -2, -1}}: {int(np.sum(ties_dx != 0))} inputs receive "
          f"gradient, one per window ({ties_out.size} windows)")

    # %% ------------------------------------------------------------------------------
    # Instance statistics, per (n, c) over L = H*W positions:
    #   mean = sum(x)/L                        -> dx += dmean / L
    #   var  = sum((x - mean)^2)/(L - 1),  std = sqrt(var + eps)
    #   dstd/dvar = 1/(2 std);  dvar/dx = 2 (x - mean)/(L - 1)   (the path through mean
    #   drops out: sum(x - mean) = 0)
    #                                          -> dx += dstd * (x - mean) / ((L - 1) std)
    heading("instance mean/std: dx = dmean/L + dstd*(x - mean)/((L-1)*std)")

    def stats_forward(v):
        (mean, std), cache = calc_mean_std_forward(v)
        return np.concatenate([mean, std], axis=1), cache           # (N, 2C, 1, 1): both outputs

    def stats_backward(d, cache):
        C = d.shape[1] // 2
        return calc_mean_std_backward(d[:, :C], d[:, C:], cache)

    gradcheck("instance mean/std", stats_forward, stats_backward,
              [rng.standard_normal((2, 3, H, W)) * 2 + 1], which=[0])

    # %% ------------------------------------------------------------------------------
    # AdaIN = std_s * (c - mean_c)/std_c + mean_s: the statistics above, composed.
    # Write n = (c - mean_c) / std_c (the normalised content) and g = dL/dt. Per (n, c)
    # plane, summing over its positions p:
    #   t_p = std_s * n_p + mean_s
    #     => dL/dmean_s = sum_p g_p                  dL/dstd_s = sum_p g_p * n_p
    #     => dL/dstyle  = the mean/std backward above, fed with those two
    #   the content reaches t three ways: directly through n_p, and through mean_c and
    #   std_c, which every n_p uses. With dn_p = g_p * std_s:
    #     direct:   dn_p / std_c
    #     mean_c:   dL/dmean_c = -sum_p dn_p / std_c
    #     std_c:    dL/dstd_c  = -sum_p dn_p * (c_p - mean_c) / std_c^2 = -sum_p dn_p * n_p / std_c
    #   and the last two go through the mean/std backward of the content:
    #     dL/dc_p = dn_p / std_c + dL/dmean_c / L + dL/dstd_c * (c_p - mean_c) / ((L - 1) std_c)
    #   With alpha, t = alpha * AdaIN + (1 - alpha) * c: g is scaled by alpha, and the
    #   content gets (1 - alpha) * g on top. This is adain_with_stats_backward in
    #   adain_np/stats.py, line for line.
    # Training never uses this backward in full. Net.forward computes t = AdaIN(f(c), f(s))
    # and then treats t as a FIXED target (pytorch-AdaIN's Net does the same: the content
    # loss compares f(g(t)) with t, and only the decoder g is trained; the encoder is
    # frozen). So Net.backward stops at t: neither the content nor the style image gets a
    # gradient. The full backward matters when the inputs are what you optimise, as in
    # lesson 12, which optimises an image's pixels.
    heading("AdaIN: the gradient flows to both content and style")
    gradcheck("AdaIN (alpha 0.6)", lambda c, s: adain_forward(c, s, 0.6), adain_backward,
              [rng.standard_normal((1, 3, H, W)), rng.standard_normal((1, 3, H + 1, W - 1)) * 2],
              which=[0, 1])

    # %% ------------------------------------------------------------------------------
    # A chain, done by hand: pad -> conv -> ReLU -> pool -> instance std -> squared error.
    # That is a style loss on one layer in miniature. The backward calls the backwards in
    # reverse order, each taking the gradient the next op produced.
    heading("a chain by hand: pad -> conv -> ReLU -> pool -> std -> loss")
    x_chain = rng.standard_normal((1, 2, H + 1, W + 1))
    w_chain = rng.standard_normal((3, 2, 3, 3)) / 2
    b_chain = rng.standard_normal(3) * 0.1
    target_std = np.abs(rng.standard_normal((1, 3, 1, 1)))

    def chain_forward(w_):
        padded, pad_cache = reflection_pad2d_forward(x_chain, 1)
        y, conv_cache = conv2d_forward(padded, w_, b_chain)
        r, relu_cache = relu_forward(y)
        p, pool_cache = maxpool2d_forward(r)
        (_, std), stats_cache = calc_mean_std_forward(p)
        loss = np.mean((std - target_std) ** 2)
        return loss, (pad_cache, conv_cache, relu_cache, pool_cache, stats_cache, std)

    def chain_backward(cache):
        pad_cache, conv_cache, relu_cache, pool_cache, stats_cache, std = cache
        dstd = 2 * (std - target_std) / std.size                     # d mean((std - t)^2) / d std
        dp = calc_mean_std_backward(None, dstd, stats_cache)
        dr = maxpool2d_backward(dp, pool_cache)
        dy = relu_backward(dr, relu_cache)
        dpadded, dw, db = conv2d_backward(dy, conv_cache)
        return dw

    loss, cache = chain_forward(w_chain)
    dw_chain = chain_backward(cache)
    numeric = numerical_gradient(lambda v: np.array(chain_forward(v)[0]), w_chain.copy(), 1.0)
    print(f"loss {loss:.6f}")
    lesson.check("chain, d loss / d conv weight: max rel error vs finite differences",
                 max_relative_error(dw_chain, numeric), GRADCHECK_TOL)

    # %% ------------------------------------------------------------------------------
    # How small should h be? Error vs h for the chain's weight gradient, in float64 and
    # float32. Large h: truncation error ~h^2 dominates (the function is not linear over
    # the step). Small h: round-off ~eps_machine/h dominates (the two losses agree in most
    # of their digits, and their difference keeps only the rest). The sweet spot is near
    # eps_machine^(1/3): ~1e-5 in float64, but ~1e-2 in float32, where even the best error
    # is several orders of magnitude worse. That is why gradient checks run in float64.
    heading("finite-difference error vs step size h")
    hs = np.logspace(-10, -1, 7 if lesson.quick else 19)
    i_big = np.unravel_index(np.argmax(np.abs(dw_chain)), dw_chain.shape)
    errors = {}
    for dtype in (np.float64, np.float32):
        x_saved = x_chain
        x_chain = x_saved.astype(dtype)
        w_d = w_chain.astype(dtype)
        errs = []
        for h in hs:
            old = w_d[i_big]
            w_d[i_big] = old + dtype(h)
            plus = chain_forward(w_d)[0]
            w_d[i_big] = old - dtype(h)
            minus = chain_forward(w_d)[0]
            w_d[i_big] = old
            numeric_one = (float(plus) - float(minus)) / (2 * h)
            errs.append(abs(numeric_one - dw_chain[i_big]) / abs(dw_chain[i_big]))
        errors[np.dtype(dtype).name] = errs
        x_chain = x_saved
        best = int(np.argmin(errs))
        print(f"{np.dtype(dtype).name}: best h {hs[best]:.0e}, relative error {errs[best]:.1e}")

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, errs in errors.items():
        ax.loglog(hs, np.maximum(errs, 1e-17), "o-", label=name)
    ax.set_xlabel("step h")
    ax.set_ylabel("relative error of one gradient entry")
    ax.set_title("centred differences: truncation (right) vs round-off (left)")
    ax.legend()
    ax.grid(True, which="major", alpha=0.3)
    fig.tight_layout()
    lesson.save_figure(fig, "05_gradcheck_h.png")

    # %% ------------------------------------------------------------------------------
    # The same chain in torch, differentiated by autograd: a second, independent answer.
    heading("the chain against torch autograd")
    torch = import_torch()
    if torch is not None:
        F = torch.nn.functional
        wt = torch.tensor(w_chain, requires_grad=True)
        y = F.conv2d(F.pad(torch.tensor(x_chain), (1, 1, 1, 1), mode="reflect"), wt,
                     torch.tensor(b_chain))
        p = F.max_pool2d(F.relu(y), 2, 2, ceil_mode=True)
        std = (p.flatten(2).var(dim=2) + 1e-5).sqrt()[:, :, None, None]
        loss_t = ((std - torch.tensor(target_std)) ** 2).mean()
        loss_t.backward()
        # Both in float64, differing only in summation order: ~1e-15 relative.
        lesson.check("chain loss: |mine - torch| / |torch|", abs(loss - loss_t.item()) / abs(loss_t.item()),
                     1e-12)
        lesson.check("chain d loss / d w: max |mine - torch| / max |torch|",
                     rel_error(dw_chain, wt.grad.numpy()), 1e-12)
        # Max-pool with ties and negative values at an odd size, against torch's routing.
        # A routing difference moves a whole gradient entry: an error of ~1, not rounding.
        xt = torch.tensor(ties, requires_grad=True)
        out_t = F.max_pool2d(xt, 2, 2, ceil_mode=True)
        out_t.backward(torch.tensor(ties_dout))
        lesson.check("max-pool with ties, all negative, odd size: max |out - torch|",
                     float(np.max(np.abs(ties_out - out_t.detach().numpy()))), 1e-12)
        lesson.check("max-pool with ties: max |dx - torch's| (first maximum wins)",
                     float(np.max(np.abs(ties_dx - xt.grad.numpy()))), 1e-12)
    return lesson.finish()


# %% [markdown]
# What to try
# - Break calc_mean_std_backward (L instead of L - 1) in a copy and see which check
#   catches it and by how much.
# - Run the gradient check in float32 and find the h where it is best (the figure predicts
#   it).
# - Exercises: `--exercises` (mean/std backward, AdaIN's backward for the style, max-pool
#   ties).


if __name__ == "__main__":
    sys.exit(run(main))
