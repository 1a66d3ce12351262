"""The source-to-source converter (built on gast).

`converted_function(fn)` parses `fn`, runs the passes below in order, compiles the
result with the user's file name and line numbers (so tracebacks point at user
code) and returns a `ConvertedFunction`. Results are cached per code object.

Pass order, and why:
1. functions: rejects what cannot be converted (async, generators) before any pass
   adds `yield`s; marks nested defs.
2. comprehensions: lowers comprehensions to local functions with loops, so that the
   calls and tests inside them become pause points in the passes below.
2b. segments: outlines straight-line runs of tensor statements (recorded as one node
   each); after comprehensions, whose lowered calls end runs, and before the passes
   below, which convert the guarded original statements but skip the segment bodies.
3. asserts, control_flow, conditional_expressions: wrap the truth tests of
   `assert`, `if`/`while` and `a if c else b` in `dn__.test` pause points.
4. logical_expressions: after them, so that an `and`/`or`/`not` that a test of
   step 3 wraps is expanded into one test per operand (its result is only tested),
   while one whose value is used keeps Python's result.
5. comparisons: after 4, as comparisons are the operands of `and`/`or`; a chain
   becomes conditional expressions whose tests are already pause points (steps 3
   and 4 leave pause points alone, so their order relative to 5 does not matter).
6. formatted_values: f-strings format the values of lazy tensors.
7. call_trees: routes every call through `dn__.call`, so that it also sees the
   calls that earlier passes moved around; it leaves the `dn__.*` helper calls the
   passes above made, but converts the calls inside their arguments.
8. module_attributes: in methods of nn.Module subclasses, reads of `self.<name>`
   (submodules, parameters) become `dn__.module_attr` calls; last, so that it also
   rewrites the reads that the passes above moved into helper arguments.
"""

import inspect
import types
import weakref

import gast

from dynnet import tracing
from dynnet.converter import parser, templates
from dynnet.converter.direct import direct_twin
from dynnet.converter.naming import Namer
from dynnet.converter.passes import (
    asserts,
    call_trees,
    comparisons,
    comprehensions,
    conditional_expressions,
    control_flow,
    formatted_values,
    functions,
    logical_expressions,
    module_attributes,
    segments,
)
from dynnet.converter.transformer import RUNTIME, Context
from dynnet.errors import ConversionError
from dynnet.runtime import Suspend, direct_depth, inline_depth, waited

PASSES = [functions, segments, comprehensions, asserts, control_flow, conditional_expressions,
          logical_expressions, comparisons, formatted_values, call_trees, module_attributes]
CO_GENERATOR = 0x20


class ConvertedFunction:
    """A user function and its converted twins.

    Attributes:
      original: the user's function.
      function: the converted function (a generator function when it can pause).
      source: the converted source, readable Python (what `dynnet.to_code` shows).
      direct: the direct twin (converter/direct.py) once calls have shown that the
        function does not pause, else None.
    """

    def __init__(self, original, function, source, direct_twin=None):
        self.original = original
        self.function = function
        self.source = source
        self.is_generator = bool(function.__code__.co_flags & CO_GENERATOR)
        self.direct = None
        self._twin = direct_twin if self.is_generator else None
        self._finished_inline = 0  # calls that ran to the end in their first step
        self._pauses = False  # a call paused: stay resumable

    def start(self, args, kwargs):
        """Begins a call: the value itself, or a `Suspend(gen=...)` for the driver.

        The callee's first step runs at once, on Python's stack (up to a small depth,
        so deep recursion still lives on the driver's explicit stack): a call that
        finishes without pausing or calling further (a leaf) returns its value directly.
        After `_ARM_AFTER` calls that all finished in their first step, calls run the
        direct twin instead (up to `_MAX_DIRECT` of them nested); if one of those has
        to wait for a value, the function goes back to resumable calls.
        """
        if not self.is_generator:
            return self.function(*args, **kwargs)
        direct = self.direct
        if direct is not None:
            depth = direct_depth[0]
            if depth < _MAX_DIRECT:
                direct_depth[0] = depth + 1
                outer = waited[0]
                waited[0] = False
                try:
                    return direct(*args, **kwargs)
                finally:
                    direct_depth[0] = depth
                    if waited[0]:
                        self.direct = None
                        self._pauses = True
                    waited[0] = outer or waited[0]
        gen = self.function(*args, **kwargs)
        depth = inline_depth[0]
        if depth >= _MAX_INLINE:
            return Suspend(gen=gen)
        inline_depth[0] = depth + 1
        try:
            first = gen.send(None)
        except StopIteration as stop:
            if not self._pauses:
                self._finished_inline += 1
                if self._finished_inline >= _ARM_AFTER:
                    self.direct = self._twin
            return stop.value
        finally:
            inline_depth[0] = depth
        if first.gen is None:  # it waits for a value
            self._pauses = True
        return Suspend(gen=gen, first=first)


_MAX_INLINE = 16  # first steps nested on Python's stack (per run of the driver)
_MAX_DIRECT = 48  # direct calls nested on Python's stack (in all)
_ARM_AFTER = 32


_code_cache = {}  # original code object -> (converted code, source, direct twin code)
_function_cache = weakref.WeakKeyDictionary()


def converted_function(fn):
    """The `ConvertedFunction` of plain Python function `fn` (cached)."""
    converted = _function_cache.get(fn)
    if converted is None:
        converted = _function_cache[fn] = _instantiate(fn)
    return converted


def convert_code(fn):
    """Converts `fn`'s source; returns `(code object, readable source, code object of
    the direct twin)` (cached; see converter/direct.py)."""
    entry = _code_cache.get(fn.__code__)
    if entry is None:
        entry = _code_cache[fn.__code__] = _convert(fn)
        tracing.note_converted_code(entry[0])
        tracing.note_converted_code(entry[2])
    return entry


def _convert(fn):
    node, filename, _ = parser.parse_function(fn)
    ctx = Context(Namer(node), filename, getattr(fn, "__qualname__", fn.__name__),
                  namespace=_namespace(fn), class_methods=_class_methods(fn), owner=_owner(fn),
                  receiver=_receiver(fn))
    try:
        for p in PASSES:
            node = p.transform(node, ctx)
    except ConversionError as error:  # it names the user's file:line: the passes' frames
        raise error.with_traceback(None) from None  # inside the converter add nothing
    node = templates.fix_locations(node)
    source = parser.unparse(node)
    freevars = [v for v in fn.__code__.co_freevars if v != RUNTIME]
    code = _compile(node, freevars, filename)
    return code, source, _share_nested_code(_compile(direct_twin(node), freevars, filename),
                                            code)


def _share_nested_code(twin, code):
    """`twin` holding `code`'s own code objects for the functions defined in both (the
    twin leaves nested functions as they are). Segments are looked up by code object:
    equal but distinct ones would cost a full comparison per lookup."""
    nested = {c: c for c in code.co_consts if isinstance(c, types.CodeType)}
    return twin.replace(co_consts=tuple(nested.get(c, c) if isinstance(c, types.CodeType)
                                        else c for c in twin.co_consts))


def _compile(node, freevars, filename):
    """The code object of converted function `node` (compiled inside a factory that
    binds the runtime and `freevars`, so they are its closure variables)."""
    factory = templates.replace(f"def dn__factory({', '.join([RUNTIME] + freevars)}):\n"
                                "    pass")[0]
    # a function that calls itself by name must find itself as a global, not as the
    # wrapper's local
    factory.body = ([gast.Global(names=[node.name])] if node.name not in freevars else []) \
        + [node]
    module = gast.Module(body=[factory], type_ignores=[])
    tree = templates.fix_locations(gast.gast_to_ast(module))
    code = compile(tree, filename, "exec")
    factory_code = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    return next(c for c in factory_code.co_consts
                if isinstance(c, types.CodeType) and c.co_name == node.name)


def _namespace(fn):
    """The objects `fn` can name: its globals and closure (for static decisions only)."""
    names = dict(fn.__globals__)
    for name, cell in zip(fn.__code__.co_freevars, fn.__closure__ or ()):
        try:
            names[name] = cell.cell_contents
        except ValueError:  # an empty cell
            pass
    return names


def _owner(fn):
    """The class that defines method `fn`, or None."""
    owner = getattr(fn, "__dynnet_owner__", None)
    if owner is None:
        owner = fn.__globals__
        qualname = getattr(fn.__code__, "co_qualname", fn.__qualname__)  # not wraps'
        for part in qualname.split(".")[:-1]:
            owner = owner.get(part) if isinstance(owner, dict) else getattr(owner, part, None)
            if owner is None or part == "<locals>":
                return None
    return owner if isinstance(owner, type) else None


def _receiver(fn):
    """The name of method `fn`'s first parameter (its `self`, whatever it is called),
    or None for a function, a staticmethod or a method without parameters."""
    owner = _owner(fn)
    code = fn.__code__
    if owner is None or not code.co_argcount:
        return None
    if isinstance(inspect.getattr_static(owner, code.co_name, None), staticmethod):
        return None
    return code.co_varnames[0]


def _class_methods(fn):
    """Names of the functions defined on the class that defines method `fn`."""
    owner = _owner(fn)
    if owner is None:
        return {fn.__name__}
    return {fn.__name__} | {name for klass in owner.__mro__ for name, value in vars(klass).items()
            if callable(value) or isinstance(value, (staticmethod, classmethod))}


def _instantiate(fn):
    from dynnet.converter import operators

    code, source, direct_code = convert_code(fn)
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
    cells[RUNTIME] = types.CellType(operators)

    def build(code):
        closure = tuple(cells[name] for name in code.co_freevars)
        function = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__,
                                      closure or None)
        function.__kwdefaults__ = fn.__kwdefaults__
        function.__qualname__ = fn.__qualname__
        return function

    return ConvertedFunction(fn, build(code), source, build(direct_code))
