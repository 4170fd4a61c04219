"""A torch transcription of pytorch-AdaIN's net.py / function.py: the reference for tests and bench.

It lives in tests/ because torch is a test-only dependency: the library never imports it.
The tests, the lessons' optional torch checks and the torch side of the benchmarks
(tools/) import it from here.
`make_vgg` and `make_decoder` are written out module by module from net.py, on purpose
independent of our layer tables (params.py): a misplaced layer in those tables then shows
up as a mismatch against torch instead of on both sides. tests/test_net.py checks that the
tables build the same modules.
"""
import numpy as np
import torch
import torch.nn as nn


def _pad():
    return nn.ReflectionPad2d((1, 1, 1, 1))


def _conv(cin, cout):
    return nn.Conv2d(cin, cout, (3, 3))


def _pool():
    return nn.MaxPool2d((2, 2), (2, 2), (0, 0), ceil_mode=True)


def _up():
    return nn.Upsample(scale_factor=2, mode="nearest")


def make_vgg():
    """net.vgg: all 53 modules of vgg_normalised (index = state-dict key prefix)."""
    return nn.Sequential(
        nn.Conv2d(3, 3, (1, 1)),                 # 0: RGB [0,1] -> Caffe BGR, mean removed
        _pad(), _conv(3, 64), nn.ReLU(),         # 1-3: relu1_1
        _pad(), _conv(64, 64), nn.ReLU(),        # 4-6: relu1_2
        _pool(),                                 # 7
        _pad(), _conv(64, 128), nn.ReLU(),       # 8-10: relu2_1
        _pad(), _conv(128, 128), nn.ReLU(),      # 11-13: relu2_2
        _pool(),                                 # 14
        _pad(), _conv(128, 256), nn.ReLU(),      # 15-17: relu3_1
        _pad(), _conv(256, 256), nn.ReLU(),      # 18-20: relu3_2
        _pad(), _conv(256, 256), nn.ReLU(),      # 21-23: relu3_3
        _pad(), _conv(256, 256), nn.ReLU(),      # 24-26: relu3_4
        _pool(),                                 # 27
        _pad(), _conv(256, 512), nn.ReLU(),      # 28-30: relu4_1, the last module the encoder uses
        _pad(), _conv(512, 512), nn.ReLU(),      # 31-33: relu4_2
        _pad(), _conv(512, 512), nn.ReLU(),      # 34-36: relu4_3
        _pad(), _conv(512, 512), nn.ReLU(),      # 37-39: relu4_4
        _pool(),                                 # 40
        _pad(), _conv(512, 512), nn.ReLU(),      # 41-43: relu5_1
        _pad(), _conv(512, 512), nn.ReLU(),      # 44-46: relu5_2
        _pad(), _conv(512, 512), nn.ReLU(),      # 47-49: relu5_3
        _pad(), _conv(512, 512), nn.ReLU(),      # 50-52: relu5_4
    )


def make_decoder():
    """net.decoder: all 29 modules, ending on a conv (no final ReLU)."""
    return nn.Sequential(
        _pad(), _conv(512, 256), nn.ReLU(),      # 0-2
        _up(),                                   # 3
        _pad(), _conv(256, 256), nn.ReLU(),      # 4-6
        _pad(), _conv(256, 256), nn.ReLU(),      # 7-9
        _pad(), _conv(256, 256), nn.ReLU(),      # 10-12
        _pad(), _conv(256, 128), nn.ReLU(),      # 13-15
        _up(),                                   # 16
        _pad(), _conv(128, 128), nn.ReLU(),      # 17-19
        _pad(), _conv(128, 64), nn.ReLU(),       # 20-22
        _up(),                                   # 23
        _pad(), _conv(64, 64), nn.ReLU(),        # 24-26
        _pad(), _conv(64, 3),                    # 27-28
    )


# net.Net's encoder cut: input -> relu1_1 -> relu2_1 -> relu3_1 -> relu4_1.
ENCODER_CUTS = ((0, 4), (4, 11), (11, 18), (18, 31))


def load(seq, params, dtype=torch.float32):
    """Copy a numpy state dict into seq; keys seq lacks (vgg[31:] into vgg[:31]) are skipped,
    a key it needs and params lack is an error (torch's random init must never slip through)."""
    own = seq.state_dict()
    state = {k: torch.tensor(np.asarray(v), dtype=dtype) for k, v in params.items() if k in own}
    seq.load_state_dict(state, strict=True)
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
        vgg = load(make_vgg()[:ENCODER_CUTS[-1][1]], vgg_params, dtype)
        self.enc = nn.ModuleList([vgg[a:b] for a, b in ENCODER_CUTS])
        for p in self.enc.parameters():
            p.requires_grad = False
        self.decoder = load(make_decoder(), decoder_params, dtype)
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
