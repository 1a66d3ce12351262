"""Builtins with a meaning for lazy values.

Each overload keeps exact Python semantics for Python values and pauses the
example when it needs a lazy value: `int(x)`, `float(x)`, `bool(x)`,
`range(n)` on a lazy `n`; `print` writes what the unconverted function would
print, buffered per example and emitted in example order when the batch ends;
`isinstance(x, torch.Tensor)` is true for lazy tensors.
"""

import builtins
import io

import torch

from dynnet import tracing
from dynnet.lazy import LazyTensor
from dynnet.runtime import Suspend


def _collect(obj, out):
    cls = obj.__class__
    if cls is LazyTensor:
        out.append(obj)
    elif cls is list or cls is tuple:
        for x in obj:
            _collect(x, out)
    elif cls is dict:
        for x in obj.values():
            _collect(x, out)


def _substitute(obj, values):
    cls = obj.__class__
    if cls is LazyTensor:
        return next(values)
    if cls is list or cls is tuple:
        return cls(_substitute(x, values) for x in obj)
    if cls is dict:
        return {k: _substitute(v, values) for k, v in obj.items()}
    return obj


def with_values(args, kwargs, fn):
    """Calls `fn(*args, **kwargs)` once every lazy tensor inside them has a value."""
    lazies = []
    _collect(args, lazies)
    _collect(kwargs, lazies)
    if not lazies:
        return fn(*args, **kwargs)

    def post(values):
        it = iter(values)
        return fn(*_substitute(args, it), **_substitute(kwargs, it))

    return Suspend(lazies=tuple(lazies), post=post)


def _scalar(convert):
    def overload(args, kwargs):
        if len(args) == 1 and not kwargs and args[0].__class__ is LazyTensor:
            return Suspend(lazies=args, post=lambda v: convert(v[0]), scalar=convert)
        return convert(*args, **kwargs)

    return overload


def print_(args, kwargs):
    trace = tracing.current()
    if trace is None:
        return builtins.print(*args, **kwargs)
    index = trace.instance
    kwargs = dict(kwargs)
    file = kwargs.pop("file", None)

    def emit(*values, **kw):
        buffer = io.StringIO()
        builtins.print(*values, file=buffer, **kw)
        trace.write(index, file, buffer.getvalue())

    return with_values(args, kwargs, emit)


def range_(args, kwargs):
    return with_values(args, kwargs, range)


def isinstance_(args, kwargs):
    obj, classinfo = args
    if obj.__class__ is LazyTensor:
        classes = classinfo if isinstance(classinfo, tuple) else (classinfo,)
        if any(c is torch.Tensor or c is LazyTensor for c in classes):
            return True
    return isinstance(obj, classinfo)


OVERLOADS = {
    builtins.print: print_,
    builtins.int: _scalar(int),
    builtins.float: _scalar(float),
    builtins.bool: _scalar(bool),
    builtins.range: range_,
    builtins.isinstance: isinstance_,
}
