"""Adam, identical to torch.optim.Adam with its defaults (no weight decay, no amsgrad)."""
import math

from .xp import get_array_module


def adam_update(param, grad, m, v, lr, beta1=0.9, beta2=0.999, eps=1e-8, step=1):
    """One Adam step on one tensor, in place. `step` counts from 1, as torch's state['step'].

    m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
    p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
    The order of operations follows torch's single-tensor Adam so float32 results agree closely.
    """
    xp = get_array_module(param)
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad * grad
    bias_correction1 = 1 - beta1 ** step
    bias_correction2_sqrt = math.sqrt(1 - beta2 ** step)
    denom = xp.sqrt(v) / bias_correction2_sqrt + eps
    param -= (lr / bias_correction1) * m / denom


class Adam:
    """Adam over a dict of parameters, with a state that can be saved and restored.

    Every step goes through backend.adam_step (a NumPy backend when none is given).
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, backend=None):
        if backend is None:
            from .backend import NumpyBackend  # backend.py imports this module
            backend = NumpyBackend()
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.backend = backend
        xp = get_array_module(next(iter(params.values())))
        self.m = {k: xp.zeros_like(p) for k, p in params.items()}
        self.v = {k: xp.zeros_like(p) for k, p in params.items()}
        self.step_count = 0

    def step(self, grads):
        self.step_count += 1
        for key, param in self.params.items():
            self.backend.adam_step(param, grads[key], self.m[key], self.v[key], self.lr,
                                   self.beta1, self.beta2, self.eps, self.step_count)
