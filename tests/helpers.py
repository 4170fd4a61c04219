"""Shared test helpers: compare an op pair with torch, and check a backward by finite differences."""
import numpy as np
import torch

from adain_np.gradient_check import max_relative_error, numerical_gradient, rel_error  # noqa: F401

# Tolerances, by dtype, for one op against torch on the same inputs.
# float32: both sides round each product/sum to 24 bits but sum in different orders
#   (BLAS blocking vs torch's kernels); over K <= 4608 terms that is ~1e-6 relative.
# float64: the same argument at 53 bits gives ~1e-14; 1e-10 leaves room and still
#   catches any real indexing error (which shows up at 1e-1 or more).
RTOL = {np.float32: 2e-5, np.float64: 1e-10}


def check_against_torch(forward, backward, torch_fn, inputs, dtype=np.float64, seed=0):
    """Run our op pair and torch autograd on the same inputs and upstream gradient.

    forward(*inputs) -> (out, cache); backward(dout, cache) -> grad or tuple of grads
    (one per input). Asserts forward and every gradient agree within RTOL[dtype].
    """
    inputs = [np.asarray(x, dtype=dtype) for x in inputs]
    out, cache = forward(*[x.copy() for x in inputs])
    dout = np.random.default_rng(seed).standard_normal(np.shape(out)).astype(dtype)
    grads = backward(dout.copy(), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    tensors = [torch.tensor(x, requires_grad=True) for x in inputs]
    out_t = torch_fn(*tensors)
    out_t.backward(torch.tensor(dout))
    tol = RTOL[dtype]
    assert np.shape(out) == tuple(out_t.shape), (np.shape(out), tuple(out_t.shape))
    err = rel_error(out, out_t.detach().numpy())
    assert err < tol, f"forward rel error {err:.2e} >= {tol:.0e}"
    for i, (g, t) in enumerate(zip(grads, tensors)):
        expected = np.zeros_like(g) if t.grad is None else t.grad.numpy()
        err = rel_error(g, expected)
        assert err < tol, f"grad of input {i}: rel error {err:.2e} >= {tol:.0e}"






# Centred differences with h=1e-5 in float64 have truncation error ~h^2 and
# round-off ~1e-16/h = 1e-11 relative; element-wise, small gradients near
# cancellation can reach ~1e-6, so 1e-5 is the bound. A wrong backward gives >1e-2.
GRADCHECK_TOL = 1e-5


def gradcheck(forward, backward, inputs, which=None, seed=0):
    """Check backward's gradients against centred differences of forward, in float64."""
    inputs = [np.asarray(x, dtype=np.float64).copy() for x in inputs]
    out, cache = forward(*inputs)
    dout = np.random.default_rng(seed).standard_normal(np.shape(out))
    grads = backward(dout.copy(), cache)
    grads = grads if isinstance(grads, tuple) else (grads,)
    for i in (range(len(inputs)) if which is None else which):
        def f(xi, i=i):
            args = list(inputs)
            args[i] = xi
            return forward(*args)[0]
        num = numerical_gradient(f, inputs[i], dout)
        err = max_relative_error(grads[i], num)
        assert err < GRADCHECK_TOL, f"input {i}: max rel error {err:.2e} >= {GRADCHECK_TOL:.0e}"
