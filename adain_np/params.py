"""The two architectures as data, their parameter shapes, and seeded initialisers.

Both networks are transcribed module by module from pytorch-AdaIN's net.py, so a
module's index here is its index in the torch ``nn.Sequential`` and parameter
dicts are keyed exactly like the published state dicts ('0.weight', '2.bias', ...).

Each layer is a tuple:
    ("conv", Cin, Cout, k)   Conv2d(Cin, Cout, (k, k)), stride 1, no padding
    ("pad",)                 ReflectionPad2d((1, 1, 1, 1))
    ("relu",)                ReLU
    ("pool",)                MaxPool2d(2, 2, ceil_mode=True)
    ("up",)                  Upsample(scale_factor=2, mode='nearest')
"""
import numpy as np


def _vgg_layers():
    # (Cin, Cout) of each 3x3 conv, with "M" where a max-pool sits.
    plan = [(3, 64), (64, 64), "M", (64, 128), (128, 128), "M",
            (128, 256), (256, 256), (256, 256), (256, 256), "M",
            (256, 512), (512, 512), (512, 512), (512, 512), "M",
            (512, 512), (512, 512), (512, 512), (512, 512)]
    layers = [("conv", 3, 3, 1)]  # index 0: the preprocessing 1x1 conv
    for item in plan:
        if item == "M":
            layers.append(("pool",))
        else:
            layers += [("pad",), ("conv", item[0], item[1], 3), ("relu",)]
    return tuple(layers)


def _decoder_layers():
    plan = [(512, 256), "U", (256, 256), (256, 256), (256, 256), (256, 128), "U",
            (128, 128), (128, 64), "U", (64, 64), (64, 3)]
    layers = []
    for item in plan:
        if item == "U":
            layers.append(("up",))
        else:
            layers += [("pad",), ("conv", item[0], item[1], 3), ("relu",)]
    return tuple(layers[:-1])  # the decoder ends on a conv: no final ReLU


VGG_LAYERS = _vgg_layers()          # all 53 modules of pytorch-AdaIN's `vgg`
DECODER_LAYERS = _decoder_layers()  # all 29 modules of pytorch-AdaIN's `decoder`
assert len(VGG_LAYERS) == 53 and len(DECODER_LAYERS) == 29

# The encoder is vgg[:31] (up to relu4_1), cut into the four slices of net.Net.
ENCODER_SLICES = ((0, 4), (4, 11), (11, 18), (18, 31))  # enc_1 .. enc_4
ENCODER_END = 31


# Smallest image side the encoder takes. Each ceil-mode pool before relu4_1 halves a side
# (rounding up), and the reflection pad of the first conv after the last pool needs at
# least 2 positions; a side of 2**pools + 1 is the least that keeps 2. The relu4_1 map
# then has >= 2x2 positions, enough for the unbiased std.
ENCODER_POOLS = sum(layer[0] == "pool" for layer in VGG_LAYERS[:ENCODER_END])
MIN_IMAGE_SIDE = 2 ** ENCODER_POOLS + 1
assert MIN_IMAGE_SIDE == 9


def param_shapes(layers, end=None):
    """{'<i>.weight': (Cout, Cin, k, k), '<i>.bias': (Cout,)} for the convs in layers[:end]."""
    shapes = {}
    for i, layer in enumerate(layers[:end]):
        if layer[0] == "conv":
            _, cin, cout, k = layer
            shapes[f"{i}.weight"] = (cout, cin, k, k)
            shapes[f"{i}.bias"] = (cout,)
    return shapes


VGG_SHAPES = param_shapes(VGG_LAYERS)                    # 34 tensors, the full published dict
ENCODER_SHAPES = param_shapes(VGG_LAYERS, ENCODER_END)   # the 20 tensors the encoder uses
DECODER_SHAPES = param_shapes(DECODER_LAYERS)            # 18 tensors


def check_params(params, expected_shapes, what, allow_extra=False):
    """Raise ValueError naming the first missing, unexpected or mis-shaped key."""
    for key, shape in expected_shapes.items():
        if key not in params:
            raise ValueError(f"{what}: missing key '{key}' (expected shape {shape})")
        found = tuple(np.shape(params[key]))
        if found != tuple(shape):
            raise ValueError(f"{what}: key '{key}' has shape {found}, expected {tuple(shape)}")
    if not allow_extra:
        extra = sorted(set(params) - set(expected_shapes))
        if extra:
            raise ValueError(f"{what}: unexpected key '{extra[0]}'"
                             f" ({len(extra)} unexpected keys in all)")


def check_vgg_params(params):
    """A vgg dict may be the full 53-module one (published file) or just vgg[:31]."""
    check_params(params, ENCODER_SHAPES, "vgg weights", allow_extra=True)
    extra = sorted(set(params) - set(VGG_SHAPES))
    if extra:
        raise ValueError(f"vgg weights: unexpected key '{extra[0]}'")
    for key in set(params) & set(VGG_SHAPES):
        found = tuple(np.shape(params[key]))
        if found != VGG_SHAPES[key]:
            raise ValueError(f"vgg weights: key '{key}' has shape {found}, expected {VGG_SHAPES[key]}")


def check_decoder_params(params):
    check_params(params, DECODER_SHAPES, "decoder weights")


# The published vgg_normalised's first layer: RGB in [0,1] -> BGR*255 - ImageNet mean (Caffe).
BGR_MEAN = np.array([103.939, 116.779, 123.68])


def init_vgg_params(seed=0, dtype=np.float32, full=False):
    """A seeded random stand-in for vgg_normalised.pth.

    Layer 0 is the real preprocessing (RGB->BGR, x255, minus the mean) so inputs in
    [0, 1] look as they would to the published network. The 3x3 convs use He-normal
    weights scaled by 1/255 on the first layer, so activations keep a sane scale
    through the depth instead of exploding or vanishing.
    """
    rng = np.random.default_rng(seed)
    shapes = VGG_SHAPES if full else ENCODER_SHAPES
    params = {}
    for key, shape in shapes.items():
        index = int(key.split(".")[0])
        if key.endswith("bias"):
            params[key] = (-BGR_MEAN if index == 0 else 0.01 * rng.standard_normal(shape)).astype(dtype)
            continue
        if index == 0:
            w = np.zeros(shape)
            for out_c, in_c in enumerate((2, 1, 0)):  # BGR output from RGB input
                w[out_c, in_c, 0, 0] = 255.0
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            w = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            if index == 2:
                w /= 64.0  # inputs are ~[-124, 152] after layer 0, not unit scale
        params[key] = w.astype(dtype)
    return params


def init_decoder_params(seed=0, dtype=np.float32):
    """He-normal weights and small biases, the usual start for a ReLU decoder."""
    rng = np.random.default_rng(seed + 1_000_003)
    params = {}
    for key, shape in DECODER_SHAPES.items():
        if key.endswith("bias"):
            params[key] = (0.01 * rng.standard_normal(shape)).astype(dtype)
        else:
            fan_in = shape[1] * shape[2] * shape[3]
            params[key] = (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(dtype)
    return params
