"""Builtins with a meaning for lazy values (AutoGraph's py_builtins).

Each overload keeps exact Python semantics for Python values and pauses the
example when it needs a lazy value: `int(x)`, `float(x)`, `bool(x)`,
`range(n)` on a lazy `n`; `print` writes what the unconverted function would
print, buffered per example and emitted in example order when the batch ends;
`str`, `repr` and `format` of a lazy value wait for it; `isinstance(x,
torch.Tensor)` is true for lazy tensors and `type(x)` is `torch.Tensor`.

Builtins that compare or test their items (`max`, `min`, `sorted`, `filter`,
`any`, `all`, and a list's `sort`) wait once for every lazy item (or key) they were
given, then let the builtin decide on the values, and return the original items (so
gradients flow through the chosen ones). `map` over lists and tuples makes its calls
at once, as converted code calls (a function of the user's can wait for values).
Overloads that need values run as small generators (`Suspend(gen=...)`), so that any
error they raise passes through the user's frame and points at the user's line.
`len`, `abs`, `sum`, `enumerate`, `zip`, `list` and `reversed` need no value: a lazy
tensor has a static length and iterates over its rows.
"""

import builtins
import io
import numbers

import torch

from dynnet import tracing
from dynnet.converter.transformer import RUNTIME
from dynnet.lazy import LazyTensor, collect_lazy
from dynnet.runtime import Suspend, complete

tracing.register_internal_file(__file__)


def _substitute(obj, values):
    cls = obj.__class__
    if cls is LazyTensor:
        return next(values)
    if cls is list or cls is tuple:
        return cls(_substitute(x, values) for x in obj)
    if cls is dict:
        return {k: _substitute(v, values) for k, v in obj.items()}
    return obj


def _values(values):
    return values


def with_values(args, kwargs, fn):
    """Calls `fn(*args, **kwargs)` once every lazy tensor inside them has a value."""
    lazies = []
    collect_lazy(args, lazies)
    collect_lazy(kwargs, lazies)
    if not lazies:
        return fn(*args, **kwargs)
    return Suspend(gen=_with_values(args, kwargs, fn, tuple(lazies)))


def _with_values(args, kwargs, fn, lazies):
    values = iter((yield Suspend(lazies=lazies, post=_values)))
    return fn(*_substitute(args, values), **_substitute(kwargs, values))


def _first(*values):
    return values[0]


def value_of(obj):
    """`obj`, or a `Suspend` that resumes with `obj`'s lazy tensors replaced by values."""
    return with_values((obj,), {}, _first)


def value_of_now(obj):
    """`value_of` for code that cannot pause: waits at once."""
    result = value_of(obj)
    return complete(result) if result.__class__ is Suspend else result


def _scalar(convert):
    def overload(args, kwargs):
        if args and args[0].__class__ is not LazyTensor and isinstance(args[0], torch.Tensor):
            tracing.note_value_read()
        if len(args) == 1 and not kwargs and args[0].__class__ is LazyTensor:
            x = args[0]
            if x.shape.numel() != 1:
                convert(torch.zeros(x.shape, dtype=x.dtype))  # raises torch's own error
            return Suspend(lazies=args, post=lambda v: convert(v[0]), scalar=convert)
        return convert(*args, **kwargs)

    return overload


def _has_lazy(items):
    for x in items:
        if x.__class__ is LazyTensor:
            return True
    return False


def _holds_lazy(items):
    lazies = []
    collect_lazy(items, lazies)
    return bool(lazies)


def _keys(items, key):
    """Generator: `key(x)` for each item, calling `key` as converted code does."""
    if key is None:
        return items
    return (yield from _calls(key, [(x,) for x in items]))


def _calls(fn, rows):
    """Generator: `[fn(*row) for row in rows]`, calling `fn` as converted code does
    (a call that pauses is waited for)."""
    from dynnet.converter.operators.call import call

    if getattr(getattr(fn, "__code__", None), "co_freevars", ()).count(RUNTIME):
        call = _call_as_is  # a lambda of converted code: converted already
    out = []
    for row in rows:
        r = call(fn, *row)
        if r.__class__ is Suspend:
            r = yield r
        out.append(r)
    return out


_SIZED = (list, tuple, range, dict, str, LazyTensor)


def _may_need_values(fn, iterables):
    """Whether `map`/`filter` of `fn` over `iterables` should make its calls at once,
    as converted code makes them: over sized containers only (a generator or
    `itertools.count()` stays Python's lazy iterator), and when an item is lazy or
    `fn` is code of the user's (which may test values and pause). Otherwise Python's
    own: calls made as the result is read."""
    if not all(isinstance(a, _SIZED) for a in iterables):
        return False
    if any(a.__class__ is LazyTensor or (a.__class__ in (list, tuple) and _holds_lazy(a))
           for a in iterables):
        return True
    from dynnet.converter.operators.call import is_user_function

    target = getattr(fn, "__func__", fn)  # a bound method's function
    if hasattr(target, "start"):  # a dynnet function, a local function of converted code
        return True
    return getattr(target, "__code__", None) is not None and is_user_function(target)


def map_(args, kwargs):
    """`map(fn, *iterables)`: where it may need values (see `_may_need_values`) every
    call is made at once, each as converted code makes it (a `fn` of the user's is
    converted and can wait for values), and the results are iterated."""
    if len(args) < 2 or kwargs or not _may_need_values(args[0], args[1:]):
        return map(*args, **kwargs)
    return Suspend(gen=_lazy_map(args[0], list(zip(*args[1:]))))


def _lazy_map(fn, rows):
    return iter((yield from _calls(fn, rows)))


def _call_as_is(fn, *args):
    return fn(*args)


def _concrete(keys):
    """Generator: `keys` with every lazy leaf replaced by its value (one pause)."""
    lazies = []
    collect_lazy(keys, lazies)
    if not lazies:
        return keys
    values = yield Suspend(lazies=tuple(lazies), post=_values)
    return _substitute(keys, iter(values))


def _extremum(builtin):
    """`max` or `min`: the first item whose key is largest (smallest)."""

    def overload(args, kwargs):
        items = list(args[0]) if len(args) == 1 else list(args)
        key = kwargs.get("key")
        if (key is None and not _holds_lazy(items)) or not items or \
                set(kwargs) - {"key", "default"}:
            return builtin(items, **kwargs) if len(args) == 1 else builtin(*args, **kwargs)
        return Suspend(gen=_lazy_extremum(builtin, items, key))

    return overload


def _lazy_extremum(builtin, items, key):
    keys = yield from _concrete((yield from _keys(items, key)))
    return items[builtin(range(len(items)), key=keys.__getitem__)]


def sorted_(args, kwargs):
    if len(args) != 1 or set(kwargs) - {"key", "reverse"}:
        return sorted(*args, **kwargs)
    items = list(args[0])
    key = kwargs.get("key")
    reverse = kwargs.get("reverse", False)
    if key is None and not _holds_lazy(items):
        return sorted(items, **kwargs)
    return Suspend(gen=_lazy_sorted(items, key, reverse))


def _lazy_sorted(items, key, reverse):
    keys = yield from _concrete((yield from _keys(items, key)))
    order = sorted(range(len(items)), key=keys.__getitem__, reverse=reverse)
    return [items[i] for i in order]


def list_sort(items, args, kwargs):
    """`items.sort(key=..., reverse=...)`: sorted in place by the keys' values."""
    if args or set(kwargs) - {"key", "reverse"}:
        return items.sort(*args, **kwargs)
    key = kwargs.get("key")
    if key is None and not _holds_lazy(items):
        return items.sort(**kwargs)
    return Suspend(gen=_lazy_sort_in_place(items, key, kwargs.get("reverse", False)))


def _lazy_sort_in_place(items, key, reverse):
    items[:] = yield from _lazy_sorted(list(items), key, reverse)


def filter_(args, kwargs):
    """`filter(pred, items)`: where it may need values (see `_may_need_values`) it
    tests every item first (pausing once for the lazy answers), then iterates over the
    kept ones: `pred` runs before the first item is taken, not as the result is read."""
    if len(args) != 2 or kwargs or not _may_need_values(args[0], args[1:]):
        return filter(*args, **kwargs)
    return Suspend(gen=_lazy_filter(list(args[1]), args[0]))


def _lazy_filter(items, pred):
    keys = yield from _concrete((yield from _keys(items, pred)))
    return iter([x for x, keep in zip(items, keys) if keep])


def contains(item, container):
    """`item in container` (the `in` operator in converted code): for a list or tuple
    holding lazy values, or a lazy item, every comparison up to the item itself
    (Python's `is` first) is made here, in the user's frame, and they wait in one
    pause; then Python's answer on the values."""
    if container.__class__ not in (list, tuple) or not (
            item.__class__ is LazyTensor or _has_lazy(container)):
        return item in container
    tests = []
    for x in container:
        if x is item:
            tests.append(True)
            break
        tests.append(_equal(item, x))
    lazies = []
    collect_lazy(tests, lazies)
    if not lazies:
        return any(tests)
    return Suspend(lazies=tuple(lazies),
                   post=lambda values: any(_substitute(tests, iter(values))))


def _equal(a, b):
    """`a == b` as Python's `in` makes it; a tensor compared with something that is
    neither a tensor nor a number (a string, None) is not equal (torch's answer)."""
    lazy = a.__class__ is LazyTensor or b.__class__ is LazyTensor
    if lazy and not all(isinstance(v, (LazyTensor, torch.Tensor, numbers.Number))
                        for v in (a, b)):
        return False
    return a == b


def contains_now(item, container):
    """`contains` for code that cannot pause: waits at once."""
    result = contains(item, container)
    return complete(result) if result.__class__ is Suspend else result


def _truth_test(builtin):
    """`any` or `all`: Python's answer on the items' values (one pause for all)."""

    def overload(args, kwargs):
        if len(args) != 1 or kwargs:
            return builtin(*args, **kwargs)
        if not isinstance(args[0], (list, tuple)):  # a generator: read as Python reads it
            return Suspend(gen=_stepwise_truth_test(builtin is any, iter(args[0])))
        items = list(args[0])
        if not _has_lazy(items):
            return builtin(items)
        return Suspend(gen=_lazy_truth_test(builtin, items))

    return overload


def _stepwise_truth_test(wanted, items):
    """`any` (`wanted` True) or `all` of an iterator, item by item: it stops where
    Python stops, so the items after the deciding one are never made (a generator's
    side effects, its `:=`); a lazy item pauses for its value."""
    for x in items:
        if x.__class__ is LazyTensor:
            x = (yield Suspend(lazies=(x,), post=_values))[0]
        if bool(x) is wanted:
            return wanted
    return not wanted


def _lazy_truth_test(builtin, items):
    lazies = tuple(x for x in items if x.__class__ is LazyTensor)
    values = iter((yield Suspend(lazies=lazies, post=_values)))
    return builtin(next(values) if x.__class__ is LazyTensor else x for x in items)


def _text(builtin):
    """`str`, `repr`, `format`: the text of the value the unconverted code would see."""

    def overload(args, kwargs):
        return with_values(args, kwargs, builtin)

    return overload


def reversed_(args, kwargs):
    if len(args) == 1 and not kwargs and args[0].__class__ is LazyTensor:
        x = args[0]
        return x if not x.shape else tracing.record(torch.flip, (x, (0,)), {})
    return reversed(*args, **kwargs)


def round_(args, kwargs):
    if args and args[0].__class__ is LazyTensor:
        raise TypeError("type Tensor doesn't define __round__ method")
    return round(*args, **kwargs)


def type_(args, kwargs):
    if len(args) == 1 and not kwargs and args[0].__class__ is LazyTensor:
        return torch.Tensor
    return type(*args, **kwargs)


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
    builtins.max: _extremum(max),
    builtins.min: _extremum(min),
    builtins.sorted: sorted_,
    builtins.filter: filter_,
    builtins.map: map_,
    builtins.any: _truth_test(any),
    builtins.all: _truth_test(all),
    builtins.str: _text(str),
    builtins.repr: _text(repr),
    builtins.format: _text(format),
    builtins.reversed: reversed_,
    builtins.round: round_,
    builtins.type: type_,
}
