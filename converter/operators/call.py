"""The `call` helper: what every converted call goes through.

`call(fn, *args, **kwargs)` returns the call's value, or a `Suspend` that the
converted code yields to the driver:
- torch functions, tensor methods and modules applied to lazy values are recorded
  (one node each); factory calls like `torch.tensor(i)` become per-example constants;
- dynnet functions, nested functions of converted code and other user functions
  (converted on first use) are run resumably: `Suspend(gen=...)`;
- builtins with overloads (print, int, float, bool, range, isinstance) keep their
  Python meaning, pausing when they need a lazy value;
- anything else (library code) is called as is.
"""

import functools
import sysconfig
import types

import torch

from dynnet import lazy, tracing
from dynnet.errors import ConversionError
from dynnet.lazy import LazyMethod, LazyTensor
from dynnet.runtime import Suspend, complete, run_nested

tracing.register_internal_file(__file__)
lazy._CALLS_FILE[0] = __file__  # a value asked for from here: a callee not converted

CO_GENERATOR = 0x20
_LIBRARY_PACKAGES = {
    "torch", "numpy", "builtins", "functools", "itertools", "collections", "typing", "math",
    "re", "abc", "copy", "json", "os", "sys", "random", "operator", "tqdm", "safetensors",
    "gast", "inspect", "contextlib", "dataclasses", "enum", "hypothesis", "_pytest", "pytest",
    "numbers", "warnings", "logging", "statistics", "string", "textwrap", "pathlib", "heapq",
    "bisect", "weakref", "types", "io", "time", "datetime"}
_LIBRARY_DIRS = tuple({sysconfig.get_paths()[k] for k in ("stdlib", "platstdlib", "purelib",
                                                          "platlib")})


class LocalFunction:
    """A function defined inside converted code (already converted).

    From converted code it runs resumably; called by library code, it runs to
    completion.
    """

    __slots__ = ("fn", "is_generator")

    def __init__(self, fn):
        self.fn = fn
        self.is_generator = bool(fn.__code__.co_flags & CO_GENERATOR)

    @property
    def __name__(self):
        return self.fn.__name__

    @property
    def __wrapped__(self):
        return self.fn

    def __repr__(self):
        return f"<converted local function {self.fn.__qualname__}>"

    def __call__(self, *args, **kwargs):
        if not self.is_generator:
            return self.fn(*args, **kwargs)
        if tracing.current() is None:
            from dynnet.runtime import run_batch

            results, _ = run_batch(lambda a: self.fn(*a, **kwargs), [args])
            from dynnet.outputs import materialize

            return materialize(results[0])
        return run_nested(self.fn(*args, **kwargs))

    def __get__(self, obj, objtype=None):
        return self if obj is None else types.MethodType(self, obj)

    def start(self, args, kwargs):
        if self.is_generator:
            return Suspend(gen=self.fn(*args, **kwargs))
        return self.fn(*args, **kwargs)


def local(fn):
    return LocalFunction(fn)


@functools.lru_cache(maxsize=4096)
def _is_library_module(module):
    if not module:
        return True
    top = module.split(".", 1)[0]
    if top == "dynnet":
        return not module.startswith("dynnet.models")
    return top in _LIBRARY_PACKAGES


_NOT_CONVERTED_FLAGS = 0x20 | 0x80 | 0x100 | 0x200  # generator, coroutine, async generator


def is_user_function(fn):
    """True for Python functions dynnet should convert (not library code).

    User generator and async functions are called as they are: calling them only
    creates a generator or coroutine object.
    """
    if _is_library_module(getattr(fn, "__module__", None)):
        return False
    code = fn.__code__
    if code.co_flags & _NOT_CONVERTED_FLAGS or "dn__" in code.co_freevars:
        return False  # generators and coroutines; lambdas of converted code
    filename = fn.__code__.co_filename
    if filename.startswith(_LIBRARY_DIRS) and "site-packages" in filename:
        return False
    return not filename.startswith("<")


def _has_lazy(args, kwargs):
    for a in args:
        cls = a.__class__
        if cls is LazyTensor:
            return True
        if (cls is list or cls is tuple) and any(x.__class__ is LazyTensor for x in a):
            return True
    for a in kwargs.values():
        if a.__class__ is LazyTensor:
            return True
    return False


def call(fn, /, *args, **kwargs):
    """Calls `fn` as converted code means it; see the module docstring."""
    cls = fn.__class__
    if cls is LazyMethod:
        need = _METHOD_NEEDS.get(fn.name)
        if need is not None:
            return need(fn.tensor, args, kwargs)
        return tracing.record_method(fn.name, fn.tensor, args, kwargs)
    handler = _UNCACHED.get(cls)
    if handler is not None:
        return handler(fn, args, kwargs)
    try:
        handler = _handlers[fn]
    except KeyError:
        handler = _classify(fn)
        # bound builtin methods (`xs.append`) are new objects each time: not cached
        if (cls in _CACHEABLE and (cls is not _BUILTIN or isinstance(
                getattr(fn, "__self__", None), (types.ModuleType, type(None))))) \
                or isinstance(fn, torch.nn.Module):
            if len(_handlers) > 50_000:
                _handlers.clear()
            _handlers[fn] = handler
    except TypeError:  # unhashable callable
        handler = _classify(fn)
    return handler(fn, args, kwargs)


_handlers = {}  # stable callable -> how to call it


def _classify(fn):
    """The handler `(fn, args, kwargs) -> result or Suspend` for callable `fn`."""
    cls = fn.__class__
    if cls is _BUILTIN:
        overload = _OVERLOADS.get(fn)
        if overload is not None:
            return lambda fn, args, kwargs: overload(args, kwargs)
        owner = getattr(fn, "__self__", None)
        if fn.__name__ == "sort" and isinstance(owner, list):
            return lambda fn, args, kwargs: list_sort(fn.__self__, args, kwargs)
        if fn.__name__ in _VALUE_READS and isinstance(owner, torch.Tensor):
            return _reading_value
        if (fn.__module__ or "").startswith("torch"):
            return _record
        return _direct
    if cls is _METHOD_DESCRIPTOR:
        return _record if fn.__objclass__ in _TENSOR_CLASSES else _direct
    if isinstance(fn, _STARTABLE):
        return _start
    if cls is types.FunctionType:
        if is_user_function(fn):
            from dynnet.converter import converted_function

            try:
                start = converted_function(fn).start
            except ConversionError:
                if fn.__code__ in tracing.converted_codes:
                    # a lambda that converted code made (two on one line: its source is
                    # ambiguous); it was converted with that code, to run at once
                    return _direct
                raise
            return lambda fn, args, kwargs: start(args, kwargs)
        if (fn.__module__ or "").startswith("torch"):
            return _record_if_lazy
        return _direct
    if isinstance(fn, torch.nn.Module):
        forward = getattr(type(fn), "forward", None)
        if isinstance(forward, _STARTABLE):
            return lambda fn, args, kwargs: forward.start((fn,) + args, kwargs)
        return _record_if_lazy
    if cls is type:
        overload = _OVERLOADS.get(fn)
        if overload is not None:
            return lambda fn, args, kwargs: overload(args, kwargs)
        return _direct
    if cls is functools.partial:  # of a function of the user's: converted as it
        return _partial
    # an instance of the user's own class with a `__call__` of theirs: converted, as
    # `forward` is for modules (through the bound `fn.__call__`: a staticmethod or
    # classmethod binds as Python binds it)
    if _method_start(getattr(cls, "__call__", None)) is not None:
        return lambda fn, args, kwargs: call(fn.__call__, *args, **kwargs)
    return _direct


def _partial(fn, args, kwargs):
    return call(fn.func, *fn.args, *args, **{**fn.keywords, **kwargs})


def _record(fn, args, kwargs):
    return tracing.record(fn, args, kwargs)


# methods of a (non-lazy) tensor that read its value into Python
_VALUE_READS = {"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__"}


def _reading_value(fn, args, kwargs):
    tracing.note_value_read()
    return fn(*args, **kwargs)


def _record_if_lazy(fn, args, kwargs):
    if _has_lazy(args, kwargs):
        return tracing.record(fn, args, kwargs)
    return fn(*args, **kwargs)


def _direct(fn, args, kwargs):
    return fn(*args, **kwargs)


def _start(fn, args, kwargs):
    return fn.start(args, kwargs)


def _method(fn, args, kwargs):
    func = fn.__func__
    try:
        start = _method_starts[func]
    except KeyError:
        start = _method_start(func)
        if len(_method_starts) > 50_000:
            _method_starts.clear()
        _method_starts[func] = start
    except TypeError:  # unhashable
        start = _method_start(func)
    if start is None:
        return fn(*args, **kwargs)
    return start((fn.__self__,) + args, kwargs)


_method_starts = {}  # function behind bound methods -> its `start`, or None: call it


def _method_start(func):
    """How calls of methods bound to `func` begin: `func`'s (or its conversion's)
    `start(args, kwargs)`, or None when they are plain calls."""
    if isinstance(func, _STARTABLE):
        return func.start
    if func.__class__ is types.FunctionType and is_user_function(func):
        from dynnet.converter import converted_function

        return converted_function(func).start
    return None


def call_now(fn, /, *args, **kwargs):
    """`call` for code that cannot pause (lambdas, class bodies): runs to completion."""
    result = call(fn, *args, **kwargs)
    if result.__class__ is Suspend:
        return complete(result)
    return result


_BUILTIN = type(len)
_CACHEABLE = {_BUILTIN, type(torch.Tensor.add), types.FunctionType, type}
_TENSOR_CLASSES = (torch.Tensor, torch._C.TensorBase)
_METHOD_DESCRIPTOR = type(torch.Tensor.add)
_STARTABLE = (LocalFunction,)  # extended by dynnet.api with DynFunction


# callables made anew for each call -> how to call them (`cls.start(fn, args, kwargs)` is
# `fn.start(args, kwargs)`, one frame less)
_UNCACHED = {LocalFunction: LocalFunction.start, types.MethodType: _method}


def register_startable(cls, cacheable=True):
    """Declares that calls of `cls` instances start resumable runs (`fn.start`)."""
    global _STARTABLE
    _STARTABLE = _STARTABLE + (cls,)
    if cacheable:
        _CACHEABLE.add(cls)
    else:
        _UNCACHED[cls] = cls.start


# -------------------- values needed from lazy tensors --------------------


def _python_scalar(dtype):
    if dtype.is_floating_point:
        return float
    if dtype is torch.bool:
        return bool
    if dtype.is_complex:
        return complex
    return int


def _item(tensor, args, kwargs):
    """`x.item()`: pause until the value is known; resume with the Python scalar."""
    convert = _python_scalar(tensor.dtype)
    return Suspend(lazies=(tensor,), post=lambda values: convert(values[0]), scalar=convert)


def _tolist(tensor, args, kwargs):
    return Suspend(lazies=(tensor,), post=lambda values: values[0].tolist())


def _numpy(tensor, args, kwargs):
    return Suspend(lazies=(tensor,), post=lambda values: values[0].detach().cpu().numpy())


_METHOD_NEEDS = {"item": _item, "tolist": _tolist, "numpy": _numpy}

from dynnet.converter.operators.py_builtins import OVERLOADS as _OVERLOADS  # noqa: E402
from dynnet.converter.operators.py_builtins import list_sort  # noqa: E402

