"""`assert` in converted code.

    assert cond, msg   ->   assert <pause point>(dn__.assert_test(cond, lambda: msg))

`assert_test` behaves as Python's `assert` for Python values (it raises
`AssertionError(msg)` itself, so the message is evaluated only on failure, and
`python -O` still removes the whole statement). For a lazy `cond` the example
pauses until the batch has computed it; on failure the `AssertionError` carries
the user's message, the example's index and the user's file:line. In block
forwards (`assert_stmt`) a batched condition must hold in every row.
"""

import torch

from dynnet import tracing
from dynnet.converter.operators.control_flow import _all_rows, _row_truth, _truth, is_batched
from dynnet.errors import where
from dynnet.lazy import LazyTensor
from dynnet.runtime import Suspend

tracing.register_internal_file(__file__)


def _fail(msg, where_text=None):
    if msg is None:
        args = () if where_text is None else (f"assertion failed ({where_text})",)
    else:
        text = msg()
        args = (text,) if where_text is None else (f"{text} ({where_text})",)
    error = AssertionError(*args)
    if where_text is not None:  # the message says where: no note to repeat it
        error._dynnet_noted = True
    raise error


def assert_test(cond, msg=None):
    """Checks `cond` as `assert cond, msg()` does; pauses when `cond` is lazy.

    Returns True when the assertion holds (or a `Suspend` that resumes with True).
    """
    if cond.__class__ is not LazyTensor:
        if not cond:
            _fail(msg)
        return True
    if cond.shape.numel() != 1:
        bool(torch.zeros(cond.shape, dtype=cond.dtype))  # raises torch's own error
    trace = tracing.current()
    index = trace.instance if trace is not None else 0
    return Suspend(gen=_lazy_assert(cond, msg, index, tracing.user_origin(2)))


def _lazy_assert(cond, msg, index, origin):
    holds = yield Suspend(lazies=(cond,), post=_truth, scalar=bool)
    if not holds:
        _fail(msg, f"example {index} of the batch, at {where(origin)}")
    return True


def assert_stmt(cond, msg=None):
    """`assert cond, msg()` in a block forward: a batched `cond` must hold in every row."""
    if not is_batched(cond):
        if not cond:
            _fail(msg)
        return
    rows = _all_rows(_row_truth(cond)).reshape(-1)
    if not bool(rows.all()):
        failing = int(torch.nonzero(~rows)[0, 0])
        _fail(msg, f"row {failing} of the block's batch")
