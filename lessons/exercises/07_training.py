"""Exercises for lesson 07: the optimiser and the learning-rate schedule.

Each function below raises NotImplementedError: replace that line with your code.
Its docstring says the task; the grader runs the lesson's checks against it and
prints pass/fail, the error, and a hint on failure.

Grade them with:  python lessons/07_training.py --exercises
"""
import numpy as np  # noqa: F401  (you will want it)


def adam_step(param, grad, m, v, lr, step, beta1=0.9, beta2=0.999, eps=1e-8):
    """One step of torch.optim.Adam (no weight decay). `step` counts from 1.

    Returns the new (param, m, v); the arrays passed in may be changed or not.
    """
    raise NotImplementedError("exercise: write this function")


def learning_rate(lr, lr_decay, iteration):
    """The learning rate of pytorch-AdaIN's train.py at 0-based `iteration`."""
    raise NotImplementedError("exercise: write this function")
