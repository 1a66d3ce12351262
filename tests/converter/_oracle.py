"""Oracles shared by the converter tests.

`same_as_original(f, *args)`: the converted function, run by dynnet on Python
values, returns what the original returns (or raises the same exception type
and message). `batch_matches(f, examples)`: batched results equal running the
original example by example, values and gradients (tests/helpers.py).
"""

import inspect

import dynnet
from tests.helpers import assert_batch_matches_loop

__all__ = ["assert_batch_matches_loop", "batch_matches", "line_of", "same_as_original"]


def _outcome(call):
    try:
        return "value", call()
    except Exception as e:  # compared by type and message
        return "error", (type(e), str(e))


def same_as_original(f, *args, **kwargs):
    """Asserts dynnet's run of `f` on Python values equals the original's."""
    original = f.fn if isinstance(f, dynnet.api.DynFunction) else f
    converted = dynnet.function(original)
    want = _outcome(lambda: original(*args, **kwargs))
    got = _outcome(lambda: converted(*args, **kwargs))
    assert got == want, f"{original.__name__}{args}: converted {got} != original {want}"
    return want[1]


def batch_matches(f, examples, params=(), **kwargs):
    """Batched == example by example (values atol 1e-5, gradients atol 1e-4)."""
    return assert_batch_matches_loop(f, examples, params=params, **kwargs)


def line_of(fn, text):
    """The file line of the first line of `fn`'s source containing `text`."""
    fn = getattr(fn, "fn", fn)
    lines, first = inspect.getsourcelines(fn)
    return first + next(i for i, line in enumerate(lines) if text in line)
