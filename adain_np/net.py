"""pytorch-AdaIN's Net: a frozen VGG encoder, a trainable decoder, and the two losses.

The networks are walked from the layer tables in params.py. A reflection pad, the
conv after it and the ReLU after that run as one backend call: the CUDA kernels fold
the padding into their indexing, NumPy pads into a temporary it does not keep, and
both apply the ReLU while the output block is hot. The results equal the three torch
modules.

Dimension names: N batch, H/W image size, C_i channels at relu{i}_1.
"""

import numpy as np

from .backend import NumpyBackend
from .losses import (content_loss_backward, content_loss_forward, style_loss_backward,
                     style_loss_forward)
from .params import (DECODER_LAYERS, DECODER_SHAPES, ENCODER_SHAPES, ENCODER_SLICES,
                     VGG_LAYERS, check_decoder_params, check_vgg_params)


def adain_target(backend, content_feat, style_stats, alpha=1.0, weights=None, mask=None):
    """The decoder's input: AdaIN of the content features with the styles' statistics.

    content_feat (N, C, h, w); style_stats: one (mean, std) per style, each (Ns, C, 1, 1).
      one style:          alpha * AdaIN(c, s) + (1 - alpha) * c  (train.py, test.py)
      weights (per style): alpha * sum_i w_i AdaIN(c, s_i) + (1 - alpha) * c  (test.py)
      mask (h, w) bool:   style 0 where True, style 1 elsewhere, then the blend (masked.py)
    Returns (N, C, h, w) on the backend.
    """
    if not 0.0 <= alpha <= 1.0:  # also refuses NaN
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if mask is not None:
        from .masked import masked_adain  # masked.py reads mask images, a CLI matter
        return masked_adain(content_feat, style_stats, mask, alpha)
    if weights is None:
        if len(style_stats) != 1:
            raise ValueError(f"{len(style_stats)} styles need interpolation weights or a mask")
        return backend.adain_forward(content_feat, *style_stats[0], alpha)[0]
    if len(weights) != len(style_stats):
        raise ValueError("one interpolation weight per style is needed")
    feat = 0
    for w, (mean, std) in zip(weights, style_stats):
        feat = feat + w * backend.adain_forward(content_feat, mean, std, 1.0)[0]
    return feat * alpha + content_feat * (1 - alpha)


def compute_dtype(*param_dicts):
    """float64 when the parameters are float64, else float32 (what the kernels compute in)."""
    dtypes = [np.dtype(getattr(p, "dtype", np.float32)) for d in param_dicts for p in d.values()]
    return np.float64 if np.result_type(*dtypes) == np.float64 else np.float32


def run_layers(backend, layers, params, x, start, end, keep_cache=False):
    """Forward through layers[start:end]. Returns (out, caches) (caches empty unless kept)."""
    caches = []
    i = start
    while i < end:
        kind = layers[i][0]
        if kind in ("pad", "conv"):
            conv_index = i + 1 if kind == "pad" else i
            fuse_relu = conv_index + 1 < end and layers[conv_index + 1][0] == "relu"
            w, b = params[f"{conv_index}.weight"], params[f"{conv_index}.bias"]
            x, cache = backend.conv_forward(x, w, b, reflect_pad=(kind == "pad"), relu=fuse_relu)
            entry = ("conv", conv_index, cache)
            i = conv_index + (2 if fuse_relu else 1)
        elif kind == "pool":
            x, cache = backend.maxpool_forward(x)
            entry = ("pool", i, cache)
            i += 1
        elif kind == "up":
            x, cache = backend.upsample_forward(x)
            entry = ("up", i, cache)
            i += 1
        else:  # a lone ReLU never occurs in these two networks
            raise ValueError(f"unexpected layer {layers[i]} at {i}")
        if keep_cache:
            caches.append(entry)
    return x, caches


def backprop_layers(backend, caches, dout, need_dx=True, grads=None):
    """Backward through cached layers. Fills `grads` with conv dw/db when given; returns dx."""
    d = dout
    for position in range(len(caches) - 1, -1, -1):
        kind, index, cache = caches[position]
        first = position == 0
        if kind == "conv":
            d, dw, db = backend.conv_backward(d, cache, need_dx=(need_dx or not first),
                                              need_dw=grads is not None)
            if grads is not None:
                grads[f"{index}.weight"], grads[f"{index}.bias"] = dw, db
        elif kind == "pool":
            d = backend.maxpool_backward(d, cache)
        elif kind == "up":
            d = backend.upsample_backward(d, cache)
    return d


class Net:
    """Mirrors pytorch-AdaIN's net.Net: forward returns (loss_c, loss_s); backward gives decoder grads.

    Without a backend it computes with NumPy in the parameters' dtype: float64 parameters
    give a float64 network, anything else float32. A given backend computes in its own
    dtype (NumpyBackend(np.float64) for float64; the CUDA kernels are float32 only).
    """

    def __init__(self, vgg_params, decoder_params, backend=None):
        check_vgg_params(vgg_params)
        check_decoder_params(decoder_params)
        self.backend = backend or NumpyBackend(compute_dtype(vgg_params, decoder_params))
        b = self.backend
        # Modules after relu4_1 (index 30) are not part of the encoder and are dropped.
        # Copies, as torch's load_state_dict makes: training updates these in place and
        # must not write into the caller's dicts.
        self.vgg_params = {k: b.asarray(vgg_params[k]).copy() for k in ENCODER_SHAPES}
        self.decoder_params = {k: b.asarray(decoder_params[k]).copy() for k in DECODER_SHAPES}
        self._saved = None

    # --- the three networks of net.py -------------------------------------------------
    def encode_with_intermediate(self, x, keep_cache=False):
        """[relu1_1, relu2_1, relu3_1, relu4_1] of x: (N, 3, H, W) in [0, 1]."""
        feats, caches = [], []
        for start, end in ENCODER_SLICES:
            x, slice_caches = run_layers(self.backend, VGG_LAYERS, self.vgg_params, x,
                                         start, end, keep_cache)
            feats.append(x)
            caches.append(slice_caches)
        return (feats, caches) if keep_cache else feats

    def encode(self, x):
        """relu4_1 of x: (N, 3, H, W) -> (N, 512, H/8, W/8) (ceil at each pool)."""
        return self.encode_with_intermediate(x)[-1]

    def decode(self, t, keep_cache=False):
        """(N, 512, h, w) -> (N, 3, 8h, 8w)."""
        out, caches = run_layers(self.backend, DECODER_LAYERS, self.decoder_params, t,
                                 0, len(DECODER_LAYERS), keep_cache)
        return (out, caches) if keep_cache else out

    # --- training -------------------------------------------------------------------
    def forward(self, content, style, alpha=1.0):
        """content, style: (N, 3, H, W) in [0, 1] -> (loss_c, loss_s) as Python floats."""
        b = self.backend
        content, style = b.asarray(content), b.asarray(style)
        style_feats = self.encode_with_intermediate(style)
        style_stats = [b.mean_std(f) for f in style_feats]            # [(N, C_i, 1, 1) x2]
        del style_feats
        content_feat = self.encode(content)                            # (N, 512, h, w)
        t = adain_target(b, content_feat, style_stats[-1:], alpha)     # (N, 512, h, w)
        del content_feat
        g_t, decoder_caches = self.decode(t, keep_cache=True)          # (N, 3, 8h, 8w)
        g_feats, encoder_caches = self.encode_with_intermediate(g_t, keep_cache=True)
        loss_c, content_cache = content_loss_forward(g_feats[-1], t)
        loss_s, style_cache = style_loss_forward(
            g_feats, style_stats, mean_std=b.mean_std, mean_std_backward=b.mean_std_backward)
        self._saved = (decoder_caches, encoder_caches, content_cache, style_cache)
        return float(loss_c), float(loss_s)

    def backward(self, content_weight=1.0, style_weight=10.0):
        """Gradient of content_weight*loss_c + style_weight*loss_s for every decoder parameter."""
        if self._saved is None:
            raise RuntimeError("Net.backward() needs a Net.forward() first")
        decoder_caches, encoder_caches, content_cache, style_cache = self._saved
        self._saved = None  # the caches are freed as the backward walks them
        d_feats = style_loss_backward(style_weight, style_cache)       # [(N, C_i, H_i, W_i)]
        d_feats[-1] += content_loss_backward(content_weight, content_cache)
        d = None
        for level in range(len(ENCODER_SLICES) - 1, -1, -1):
            d = d_feats[level] if d is None else d + d_feats[level]
            d_feats[level] = None
            d = backprop_layers(self.backend, encoder_caches[level], d)
            encoder_caches[level] = None
        grads = {}
        backprop_layers(self.backend, decoder_caches, d, need_dx=False, grads=grads)
        return {k: grads[k] for k in DECODER_SHAPES}

    # --- test.py ---------------------------------------------------------------------
    def style_transfer(self, content, style, alpha=1.0, interpolation_weights=None):
        """test.py's style_transfer on this network; see the module-level style_transfer."""
        b = self.backend
        content_f = self.encode(b.asarray(content))                    # (Nc, 512, h, w)
        style_f = self.encode(b.asarray(style))                        # (Ns, 512, hs, ws)
        style_mean, style_std = b.mean_std(style_f)                    # (Ns, 512, 1, 1) each
        if interpolation_weights is None:
            feat = adain_target(b, content_f, [(style_mean, style_std)], alpha)
        else:
            style_stats = [(style_mean[i:i + 1], style_std[i:i + 1]) for i in range(style_f.shape[0])]
            feat = adain_target(b, content_f[:1], style_stats, alpha, interpolation_weights)
        return b.to_host(self.decode(feat))


def style_transfer(vgg_params, decoder_params, content, style, alpha=1.0,
                   interpolation_weights=None, backend=None):
    """test.py's style_transfer: decode alpha*AdaIN(f(c), f(s)) + (1-alpha)*f(c).

    content: (1, 3, H, W) (or (N, 3, H, W) without interpolation), style: (N, 3, Hs, Ws).
    With interpolation_weights (one per style), content is repeated by the caller as in
    test.py or given once; the target is sum_i w_i AdaIN(f(c), f(s_i)).
    Returns the decoded image (N or 1, 3, 8*ceil(H/8), 8*ceil(W/8)) as a host array.
    With a Net already built, call its style_transfer method instead.
    """
    net = Net(vgg_params, decoder_params, backend)
    return net.style_transfer(content, style, alpha, interpolation_weights)
