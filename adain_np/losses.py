"""The losses of pytorch-AdaIN's Net, each a forward/backward pair.

content loss: MSE(relu4_1(g(t)), t)
style loss:   sum over relu1_1..relu4_1 of MSE(mean(g_i), mean(s_i)) + MSE(std(g_i), std(s_i))
"""
from .stats import calc_mean_std, calc_mean_std_backward


def mse_forward(input, target):
    # input, target: same shape -> loss: 0-d array, mean over every element
    diff = input - target
    return (diff * diff).mean(), (diff,)


def mse_backward(dloss, cache):
    # -> dinput, dtarget (same shape as input)
    (diff,) = cache
    dinput = diff * (2.0 * dloss / diff.size)
    return dinput, -dinput


def content_loss_forward(g_feat, t):
    # g_feat: relu4_1 of the decoded image (N, C, H, W); t: the AdaIN target (no gradient)
    return mse_forward(g_feat, t)


def content_loss_backward(dloss, cache):
    dg_feat, _ = mse_backward(dloss, cache)
    return dg_feat


def _calc_mean_std_backward(dmean, dstd, feat, mean, std):
    return calc_mean_std_backward(dmean, dstd, (feat, mean, std))


def style_loss_forward(g_feats, style_stats, mean_std=calc_mean_std,
                       mean_std_backward=_calc_mean_std_backward):
    # g_feats: list of (N, C_i, H_i, W_i); style_stats: list of (mean, std), each (N, C_i, 1, 1).
    # mean_std / mean_std_backward let a backend supply its own (kernel) statistics.
    loss = 0.0
    caches = []
    for g_feat, (style_mean, style_std) in zip(g_feats, style_stats):
        g_mean, g_std = mean_std(g_feat)
        stats_cache = (mean_std_backward, g_feat, g_mean, g_std)
        loss_mean, mean_cache = mse_forward(g_mean, style_mean)
        loss_std, std_cache = mse_forward(g_std, style_std)
        loss = loss + loss_mean + loss_std
        caches.append((stats_cache, mean_cache, std_cache))
    return loss, caches


def style_loss_backward(dloss, caches):
    # -> list of dg_feat, one per layer
    dg_feats = []
    for stats_cache, mean_cache, std_cache in caches:
        dg_mean, _ = mse_backward(dloss, mean_cache)
        dg_std, _ = mse_backward(dloss, std_cache)
        backward, g_feat, g_mean, g_std = stats_cache
        dg_feats.append(backward(dg_mean, dg_std, g_feat, g_mean, g_std))
    return dg_feats
