"""`and`, `or`, `not` and comparison chains where the converted code cannot pause.

In generator code (the usual case) the passes keep these operators as Python
expressions and only route the truth tests through `dn__.test`. Lambdas, class
bodies and block forwards cannot pause, so there the operands become functions:

    a and b   ->   dn__.and_(lambda: a, lambda: b)

Each helper keeps Python's semantics for Python values (short circuit, the
result is an operand, not a bool), waits for a lazy value at once, and selects
per row when the value is batched (block level: both operands are evaluated).
"""

import operator

import torch

from dynnet import tracing
from dynnet.converter.operators.control_flow import (
    _row_truth,
    all_rows,
    any_row,
    is_batched,
    select,
    test_now,
)
from dynnet.lazy import LazyTensor

tracing.register_internal_file(__file__)


def _truth(value):
    """Python truth of `value`, or per-row truth (a bool tensor) when batched."""
    if value.__class__ is LazyTensor:
        return test_now(value)
    if is_batched(value):
        return _row_truth(value)
    return value


def and_(a, b):
    """`a() and b()`."""
    left = a()
    truth = _truth(left)
    if not is_batched(truth):
        return b() if truth else left
    if not any_row(truth):
        return left
    return select(truth, b(), left)


def or_(a, b):
    """`a() or b()`."""
    left = a()
    truth = _truth(left)
    if not is_batched(truth):
        return left if truth else b()
    if all_rows(truth):
        return left
    return select(truth, left, b())


def not_(a):
    """`not a`: a Python bool, or per-row bools when `a` is batched."""
    truth = _truth(a)
    if is_batched(truth):
        return torch.logical_not(truth)
    return not truth


COMPARISONS = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "==": operator.eq, "!=": operator.ne, "is": operator.is_, "is not": operator.is_not,
    "in": lambda a, b: a in b, "not in": lambda a, b: a not in b,
}


def compare_chain(first, *links):
    """`a op1 b op2 c ...`: `first` and every operand after an op are functions.

    `links` alternates op symbols and operand functions. Each operand is evaluated
    once, in order; the chain stops at the first comparison that is not true and
    returns that comparison's result, as Python does (per row when batched).
    """
    return _chain(first(), links)


def _chain(left, links):
    right = links[1]()
    result = COMPARISONS[links[0]](left, right)
    if len(links) == 2:
        return result
    truth = _truth(result)
    if not is_batched(truth):
        return _chain(right, links[2:]) if truth else result
    if not any_row(truth):
        return result
    return select(truth, _chain(right, links[2:]), result)
