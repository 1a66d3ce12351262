"""Groups that differ only in a Python number: one batched call with a column of numbers.

`x / n` records `operator.truediv` with `n` as a static argument, so examples with
different numbers (a loss divided by each sentence's length) make as many
signatures, hence as many groups. `merge` joins, within one level of a schedule,
the groups of `+ - * / **` (or `torch.add`, `torch.pow`, ...) between one lazy tensor
and a Python number that differ only in that number. The joined group passes the
numbers as a tensor with the dtype the op gives the number next to that tensor
(`torch.result_type`), one row
per example, so every example computes what it would alone.
"""

import operator

import torch

from dynnet import tracing
from dynnet.backends.gather import to_device
from dynnet.tracing import SLOT, Signature

_OPS = {operator.add, operator.sub, operator.mul, operator.truediv, operator.pow,
        torch.add, torch.sub, torch.mul, torch.div, torch.true_divide, torch.pow}
_DTYPES = {torch.float32, torch.float64, torch.int64}
_joined = {}  # relaxed key -> the joined Signature
tracing._forget_hooks.append(_joined.clear)


class NumberColumn:
    """`fn(x, n)` (or `fn(n, x)`, `position` 0) with one number per row."""

    def __init__(self, fn, position):
        self.fn = fn
        self.position = position  # where the number stands among the two arguments

    def number_of(self, sig):
        """The number in `sig`, a signature of this column's family (its own op)."""
        return sig.template[0][self.position]

    def run_batched(self, slots, size, numbers):
        """`slots[0]` stacked; `numbers[i]` is row i's number."""
        x = slots[0]
        dtype = torch.result_type(torch.empty((), dtype=x.dtype), numbers[0])
        column = to_device(torch.tensor(numbers, dtype=dtype), x.device)
        column = column.reshape(size, *([1] * (x.dim() - 1)))
        return self.fn(column, x) if self.position == 0 else self.fn(x, column)


def relaxed_key(sig):
    """What `sig` shares with signatures that differ from it only in a number."""
    if sig.kind != "op" or sig.fn not in _OPS or len(sig.in_avals) != 1:
        return None
    args, kwargs = sig.template
    if kwargs or len(args) != 2:
        return None
    position = 1 if args[0] is SLOT else 0
    if args[1 - position] is not SLOT or args[position].__class__ not in (int, float):
        return None
    aval = sig.in_avals[0]
    if aval.dtype not in _DTYPES:
        return None
    return (sig.fn, position, args[position].__class__, aval, sig.out_avals,
            sig.grad_enabled)


def merge(level):
    """`level` (signature -> nodes, one depth) with such groups joined."""
    keys = {sig: relaxed_key(sig) for sig in level}
    counts = {}
    for key in keys.values():
        if key is not None:
            counts[key] = counts.get(key, 0) + 1
    if all(n < 2 for n in counts.values()):
        return level
    out = {}
    for sig, nodes in level.items():
        key = keys[sig]
        if key is None or counts[key] < 2:
            out[sig] = nodes
        else:
            out.setdefault(_joined_signature(key, sig), []).extend(nodes)
    return out


def known_joined(sig, known):
    """The joined signature of `sig`'s family when it has a serial below `known` (it
    existed when a worker was forked, see dynnet/plans.py), else None."""
    key = relaxed_key(sig)
    joined = _joined.get(key) if key is not None else None
    return joined if joined is not None and joined.serial < known else None


def _joined_signature(key, example):
    joined = _joined.get(key)
    if joined is None:
        fn, position = key[0], key[1]
        joined = Signature("numbers", NumberColumn(fn, position),
                           f"{example.name} (a number per example)", None,
                           example.in_avals, example.origin)
        joined.out_avals = example.out_avals
        joined.grad_enabled = example.grad_enabled
        if len(_joined) > 10_000:
            _joined.clear()
        _joined[key] = joined
    return joined
