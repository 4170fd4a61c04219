"""Exercises for lesson 07: the optimiser and the learning-rate schedule.

Grade them with:  python lessons/07_training.py --exercises
"""
import numpy as np


def adam_step(param, grad, m, v, lr, step, beta1=0.9, beta2=0.999, eps=1e-8):
    """One step of torch.optim.Adam (no weight decay). `step` counts from 1.

    Returns the new (param, m, v); the arrays passed in may be changed or not.
    """
    m = beta1 * m + (1 - beta1) * grad
    v = beta2 * v + (1 - beta2) * grad * grad
    m_hat = m / (1 - beta1 ** step)
    v_hat = v / (1 - beta2 ** step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def learning_rate(lr, lr_decay, iteration):
    """The learning rate of pytorch-AdaIN's train.py at 0-based `iteration`."""
    return lr / (1.0 + lr_decay * iteration)
