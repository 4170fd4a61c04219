"""adain_np: AdaIN arbitrary style transfer (Huang & Belongie, ICCV 2017) from scratch in NumPy.

The public API mirrors pytorch-AdaIN's net.py, function.py and test.py.
"""
from .net import Net, style_transfer
from .params import init_decoder_params, init_vgg_params
from .stats import adaptive_instance_normalization, calc_mean_std

__all__ = ["Net", "style_transfer", "calc_mean_std", "adaptive_instance_normalization",
           "init_vgg_params", "init_decoder_params"]
__version__ = "0.1.0"
