"""A torch transcription of pytorch-AdaIN's net.py / function.py: the reference for tests and bench.

It lives in tests/ because torch is a test-only dependency: the library never imports it.
The tests, the lessons' optional torch checks and the torch side of the benchmarks
(tools/) import it from here.
It is built from our layer tables (params.py) so both sides walk the same architecture;
the torch modules themselves (ReflectionPad2d, Conv2d, MaxPool2d ceil_mode, Upsample)
are torch's own.
"""
import numpy as np
import torch
import torch.nn as nn

from adain_np.params import DECODER_LAYERS, ENCODER_END, ENCODER_SLICES, VGG_LAYERS


def build_sequential(layers):
    modules = []
    for layer in layers:
        kind = layer[0]
        if kind == "conv":
            modules.append(nn.Conv2d(layer[1], layer[2], (layer[3], layer[3])))
        elif kind == "pad":
            modules.append(nn.ReflectionPad2d((1, 1, 1, 1)))
        elif kind == "relu":
            modules.append(nn.ReLU())
        elif kind == "pool":
            modules.append(nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True))
        elif kind == "up":
            modules.append(nn.Upsample(scale_factor=2, mode="nearest"))
    return nn.Sequential(*modules)


def load(seq, params, dtype=torch.float32):
    state = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in params.items()}
    seq.load_state_dict(state, strict=False)
    return seq.to(dtype)


def calc_mean_std(feat, eps=1e-5):
    size = feat.size()
    N, C = size[:2]
    feat_var = feat.view(N, C, -1).var(dim=2) + eps
    feat_std = feat_var.sqrt().view(N, C, 1, 1)
    feat_mean = feat.view(N, C, -1).mean(dim=2).view(N, C, 1, 1)
    return feat_mean, feat_std


def adaptive_instance_normalization(content_feat, style_feat):
    size = content_feat.size()
    style_mean, style_std = calc_mean_std(style_feat)
    content_mean, content_std = calc_mean_std(content_feat)
    normalized = (content_feat - content_mean.expand(size)) / content_std.expand(size)
    return normalized * style_std.expand(size) + style_mean.expand(size)


class TorchNet(nn.Module):
    """pytorch-AdaIN's Net: frozen encoder slices, trainable decoder, content + style loss."""

    def __init__(self, vgg_params, decoder_params, dtype=torch.float32):
        super().__init__()
        vgg = load(build_sequential(VGG_LAYERS[:ENCODER_END]),
                   {k: v for k, v in vgg_params.items() if int(k.split(".")[0]) < ENCODER_END}, dtype)
        self.enc = nn.ModuleList([vgg[a:b] for a, b in ENCODER_SLICES])
        for p in self.enc.parameters():
            p.requires_grad = False
        self.decoder = load(build_sequential(DECODER_LAYERS), decoder_params, dtype)
        self.mse_loss = nn.MSELoss()

    def encode_with_intermediate(self, x):
        results = [x]
        for enc in self.enc:
            results.append(enc(results[-1]))
        return results[1:]

    def encode(self, x):
        for enc in self.enc:
            x = enc(x)
        return x

    def calc_style_loss(self, input, target):
        input_mean, input_std = calc_mean_std(input)
        target_mean, target_std = calc_mean_std(target)
        return self.mse_loss(input_mean, target_mean) + self.mse_loss(input_std, target_std)

    def forward(self, content, style, alpha=1.0):
        style_feats = self.encode_with_intermediate(style)
        content_feat = self.encode(content)
        t = adaptive_instance_normalization(content_feat, style_feats[-1])
        t = alpha * t + (1 - alpha) * content_feat
        g_t = self.decoder(t)
        g_t_feats = self.encode_with_intermediate(g_t)
        loss_c = self.mse_loss(g_t_feats[-1], t)
        loss_s = self.calc_style_loss(g_t_feats[0], style_feats[0])
        for i in range(1, 4):
            loss_s = loss_s + self.calc_style_loss(g_t_feats[i], style_feats[i])
        return loss_c, loss_s

    def decoder_grads(self, content, style, alpha=1.0, content_weight=1.0, style_weight=10.0):
        self.decoder.zero_grad()
        loss_c, loss_s = self(content, style, alpha)
        (content_weight * loss_c + style_weight * loss_s).backward()
        grads = {k: p.grad.detach().numpy().copy() for k, p in self.decoder.named_parameters()}
        return loss_c.item(), loss_s.item(), grads
