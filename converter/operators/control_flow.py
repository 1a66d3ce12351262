"""Truth tests and control flow, as converted code calls them.

Per-example level (`@dynnet.function` code): `if`, `while`, conditional
expressions, `and`/`or`/`not` and comparison chains stay Python statements and
expressions; only their truth tests go through `test`:

    if x.sum() > 0:   ->   if <pause point>(dn__.test(x.sum() > 0)):

`test(v)` returns `v` itself when it is not lazy (Python then tests it, exactly as
the unconverted code would) and a `Suspend` when it is lazy: the example pauses
until the batch has computed `v`, then resumes with `bool(v)`.

Block level (a module's forward run on a stacked batch under `torch.func.vmap`,
see `dynnet.backends.blocks`): `if_stmt` and `while_stmt` take the branches and
the loop body as functions. When the condition is a Python value, or a tensor that
is not batched, they run as Python runs them (`_py_*`). When it is batched (one
value per row), `if_stmt` runs both branches and selects each state variable per
row with `torch.where`, and `while_stmt` runs a masked loop until no row is active;
rows that finished keep their state (`_batched_*`).
"""

import operator

import torch
import torch._C._functorch as _functorch

from dynnet import tracing
from dynnet.lazy import LazyTensor
from dynnet.runtime import Suspend, complete

tracing.register_internal_file(__file__)


# -------------------- per-example level: truth tests that pause --------------------


def _truth(values):
    return bool(values[0])


def test(value):
    """`value` for a Python truth test: itself, or a `Suspend` when it is lazy.

    A lazy value with other than one element raises what `bool()` of such a torch
    tensor raises.
    """
    cls = value.__class__
    if cls is not LazyTensor:
        if cls is not bool and isinstance(value, torch.Tensor):
            tracing.note_value_read()
        return value
    if value.shape.numel() != 1:
        bool(torch.zeros(value.shape, dtype=value.dtype))  # raises torch's own error
    return Suspend(lazies=(value,), post=_truth, scalar=bool)


def test_now(value):
    """`test` for code that cannot pause (lambdas, class bodies): waits at once."""
    result = test(value)
    if result.__class__ is Suspend:
        return complete(result)
    return result


# -------------------- block level: batched conditions --------------------


class _UndefinedType:
    """The value of a variable that no path has assigned yet (block conversion)."""

    __slots__ = ()

    def __repr__(self):
        return "Undefined"


Undefined = _UndefinedType()


def is_batched(value):
    """True for a tensor that holds one value per row of the running vmap."""
    return isinstance(value, torch.Tensor) and _functorch.is_batchedtensor(value)


def _all_rows(value):
    """The underlying tensor of a (possibly nested) batched tensor, every row."""
    while _functorch.is_batchedtensor(value):
        value, _ = _functorch._unwrap_batched(value, _functorch.maybe_get_level(value))
    return value


def _row_truth(cond):
    """Per-row truth of a batched condition, as a bool tensor (batched)."""
    if cond.numel() != 1:
        bool(torch.zeros(cond.shape, dtype=cond.dtype))  # raises torch's own error
    cond = cond.reshape(())
    return cond if cond.dtype is torch.bool else cond != 0


def any_row(mask):
    """True if `mask` (per-row bools) is true in some row, across every vmap level."""
    return bool(_all_rows(mask).any())


def all_rows(mask):
    """True if `mask` (per-row bools) is true in every row."""
    return bool(_all_rows(mask).all())


def select(mask, a, b):
    """Per row: `a` where `mask` is true, else `b` (recursively through tuples, lists).

    `Undefined` on one side takes the other side: rows that did not define the
    variable would have failed on reading it.
    """
    if a is b or b is Undefined:
        return a
    if a is Undefined:
        return b
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return torch.where(mask, a, b)
    if isinstance(a, (bool, int, float)) and isinstance(b, (bool, int, float)):
        if a == b and type(a) is type(b):
            return a
        return torch.where(mask, torch.as_tensor(a), torch.as_tensor(b))
    if isinstance(a, (tuple, list)) and type(a) is type(b) and len(a) == len(b):
        return type(a)(select(mask, x, y) for x, y in zip(a, b))
    if a == b:
        return a
    raise ValueError(
        f"a branch or loop that depends on tensor values leaves different Python values "
        f"({a!r} and {b!r}) in one variable; rows of a batch cannot hold different Python "
        "objects; keep such values as tensors")


def if_stmt(cond, body, orelse, get_state, set_state):
    """`if cond: body() else: orelse()` over the state variables of a block.

    Args:
      cond: the condition's value.
      body, orelse: the branches, functions of no arguments that assign the state.
      get_state, set_state: read and write the state variables as one tuple.
    """
    if not is_batched(cond):
        return _py_if_stmt(cond, body, orelse)
    return _batched_if_stmt(_row_truth(cond), body, orelse, get_state, set_state)


def _py_if_stmt(cond, body, orelse):
    if cond:
        body()
    else:
        orelse()


def _batched_if_stmt(mask, body, orelse, get_state, set_state):
    if all_rows(mask):
        return body()
    if not any_row(mask):
        return orelse()
    before = get_state()
    body()
    taken = get_state()
    set_state(before)
    orelse()
    set_state(select(mask, taken, get_state()))


def if_exp(cond, body, orelse):
    """`body() if cond else orelse()`; per row when `cond` is batched."""
    if not is_batched(cond):
        return body() if cond else orelse()
    mask = _row_truth(cond)
    if all_rows(mask):
        return body()
    if not any_row(mask):
        return orelse()
    return select(mask, body(), orelse())


def while_stmt(test_fn, body, get_state, set_state):
    """`while test_fn(): body()` over the state variables of a block.

    While the test is a Python value the loop is Python's. Once it is batched, the
    loop runs masked: every iteration runs the body on all rows and keeps the new
    state only in the rows still active; it ends when no row is active.
    """
    cond = test_fn()
    while not is_batched(cond):
        if not cond:
            return
        body()
        cond = test_fn()
    _batched_while_stmt(_row_truth(cond), test_fn, body, get_state, set_state)


def _batched_while_stmt(active, test_fn, body, get_state, set_state):
    while any_row(active):
        before = get_state()
        body()
        set_state(select(active, get_state(), before))
        cond = test_fn()
        if is_batched(cond):
            active = active & _row_truth(cond)
        elif not cond:
            return


def static_test(cond):
    """The test of an `if`/`while` that a block keeps as a Python statement.

    A batched condition is fine while every row agrees (Python's control flow is
    then each row's); rows that disagree raise an error saying why.
    """
    if not is_batched(cond):
        return cond
    mask = _row_truth(cond)
    if all_rows(mask):
        return True
    if not any_row(mask):
        return False
    raise NotImplementedError(
        "this if/while in a module's forward depends on tensor values that differ "
        "between rows, but cannot run as a select of both branches or a masked loop: "
        "its body holds a return inside a loop, with or try, or a nonlocal statement. "
        "Rewrite it without them (e.g. with a flag variable), or call the module from "
        "a @dynnet.function, where any Python code works")


def all_true(flag):
    """True when `flag` holds in every row (or is a true Python value)."""
    if is_batched(flag):
        return all_rows(_row_truth(flag))
    return bool(flag)


_AUGMENTED = {"+": (operator.add, operator.iadd), "-": (operator.sub, operator.isub),
              "*": (operator.mul, operator.imul), "/": (operator.truediv, operator.itruediv),
              "//": (operator.floordiv, operator.ifloordiv), "%": (operator.mod, operator.imod),
              "**": (operator.pow, operator.ipow), "@": (operator.matmul, operator.imatmul),
              "&": (operator.and_, operator.iand), "|": (operator.or_, operator.ior),
              "^": (operator.xor, operator.ixor), "<<": (operator.lshift, operator.ilshift),
              ">>": (operator.rshift, operator.irshift)}


def augmented_assign(symbol, target, value):
    """`target <symbol>= value` in a block (converter/passes/augmented_assignments.py): a
    new tensor for a tensor, so that branches and masked loops select it per row;
    Python's in-place operator for anything else."""
    plain, in_place = _AUGMENTED[symbol]
    if isinstance(target, torch.Tensor):
        return plain(target, value)
    return in_place(target, value)
