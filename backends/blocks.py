"""Blocks: user modules called on lazy values, run as one node on the stacked batch.

A call of an `nn.Module` on lazy values records ONE node; a group of such nodes
runs the module's forward once on the stacked batch. Modules known to be
row-wise run directly (backends/modules.py); every other module runs here.

Design. The forward runs under `torch.func.vmap`, so straight-line code keeps
per-example semantics by construction (every op sees one example). What vmap
cannot run is Python control flow on batched values (`if x.sum() > 0:` needs one
bool, the batch has one per row). So the forward of a user module is converted
first, in block mode (AutoGraph's functional form; converter/passes/block_*.py):

- `if c: ... else: ...` becomes `dn__.if_stmt(c, true_fn, false_fn, get, set)`.
  When `c` is batched, both branches run (on all rows) and each variable they
  assign is selected per row with `torch.where`; when every row agrees only that
  branch runs; when `c` is a Python value or an unbatched tensor, Python's `if`.
- `while c: ...` becomes `dn__.while_stmt(test_fn, body_fn, get, set)`: once the
  test is batched the loop runs masked (rows that finished keep their state)
  until no row is active. The "is any row active" question is the one thing a
  vmapped function cannot ask; the helper asks it by unwrapping the batched
  tensor (`torch._C._functorch._unwrap_batched`), which escapes vmap only to
  read that one bool.
- `a if c else b`, `and`/`or`/`not`, comparison chains and `assert` select or
  check per row the same way; returns inside branches move to the function's end;
  `break` and `continue` become flags (AutoGraph's lowering).
- calls go through `block_call`: user modules and user functions called by the
  forward are converted the same way (recursively); `nn.Sequential` applies its
  children through `block_call`; library modules and functions run as they are.

Conversion is cached per forward (code object). Limits, as in AutoGraph: a
branch that selects per row runs both branches, so their side effects (list
appends, attribute writes, prints) happen for every row; variables must hold
tensors or Python values equal in both branches; Python numbers changed by a
masked loop become tensors; `int(x)`, `x.item()` and other Python conversions of
batched values still fail under vmap; a `return` inside a loop is not moved (the
`if`s around it stay Python: right while all rows agree, an error when they
differ). Module hooks are not called on the converted path. Rows that
finished a masked loop still run its body (results discarded), so a body that
produces inf/nan on finished rows can poison gradients (0 * nan).
"""

import types

import gast
import torch

from dynnet.converter import parser, templates
from dynnet.converter.naming import Namer
from dynnet.converter.passes import (
    augmented_assignments,
    block_calls,
    block_control_flow,
    break_statements,
    comparisons,
    continue_statements,
    functions,
    logical_expressions,
    return_statements,
)
from dynnet.converter.transformer import RUNTIME, Context
from dynnet.errors import ConversionError
from dynnet.tracing import rebuild


class _NoPause:
    """A per-example pass run as for code that cannot pause (the form blocks need)."""

    def __init__(self, transformer):
        self.transformer = transformer

    def transform(self, node, ctx):
        transformer = self.transformer(ctx)
        transformer.visit_FunctionDef = lambda n: transformer.scoped(n, False)
        return transformer.visit(node)


# Block passes, in order:
# 1. functions: rejects async and generators.
# 1b. augmented_assignments: `x += y` on a tensor becomes `x = x + y`, which branches
#    and masked loops select per row (an in-place change would reach every row).
# 2. return_statements: moves returns out of branches, before branches become functions.
# 2b. break_statements, continue_statements: lower break/continue to flags, so that the
#    loops and branches around them can become functions; before 3, after 2 (a loop
#    that holds a return is left alone either way).
# 3. block_control_flow: if/while/ternary/assert become runtime calls on functions.
# 4. logical_expressions, comparisons (in their no-pause form): and/or/not and
#    comparison chains become `dn__.and_(lambda: a, lambda: b)`, ... which select per
#    row; after 3, which leaves these operators in place inside the tests it moves.
# 5. block_calls: last, so it also routes the calls inside the code made above.
BLOCK_PASSES = [functions, augmented_assignments, return_statements, break_statements,
                continue_statements, block_control_flow,
                _NoPause(logical_expressions.LogicalExpressionTransformer),
                _NoPause(comparisons.ComparisonTransformer), block_calls]


def _block_namespace():
    from dynnet.converter import operators

    namespace = types.SimpleNamespace(**{k: getattr(operators, k) for k in operators.__all__})
    namespace.call = block_call
    return namespace


_namespace = None
_converted = {}  # code object -> converted function's (code, source)


def block_source(fn):
    """The block-mode source of `fn` (for reading and tests)."""
    return _convert(fn)[1]


def _convert(fn):
    entry = _converted.get(fn.__code__)
    if entry is None:
        entry = _converted[fn.__code__] = _compile(fn)
    return entry


def _compile(fn):
    node, filename, _ = parser.parse_function(fn)
    ctx = Context(Namer(node), filename, getattr(fn, "__qualname__", fn.__name__))
    for p in BLOCK_PASSES:
        node = p.transform(node, ctx)
    node = templates.fix_locations(node)
    source = parser.unparse(node)
    freevars = list(fn.__code__.co_freevars)
    factory = templates.replace(f"def dn__factory({', '.join([RUNTIME] + freevars)}):\n"
                                "    pass")[0]
    factory.body = [node]
    module = gast.Module(body=[factory], type_ignores=[])
    code = compile(templates.fix_locations(gast.gast_to_ast(module)), filename, "exec")
    factory_code = next(c for c in code.co_consts if isinstance(c, types.CodeType))
    inner = next(c for c in factory_code.co_consts
                 if isinstance(c, types.CodeType) and c.co_name == node.name)
    return inner, source


def converted(fn):
    """`fn` (a plain Python function) converted for block execution."""
    global _namespace
    if _namespace is None:
        _namespace = _block_namespace()
    code, _ = _convert(fn)
    cells = dict(zip(fn.__code__.co_freevars, fn.__closure__ or ()))
    cells[RUNTIME] = types.CellType(_namespace)
    closure = tuple(cells[name] for name in code.co_freevars)
    function = types.FunctionType(code, fn.__globals__, fn.__name__, fn.__defaults__,
                                  closure or None)
    function.__kwdefaults__ = fn.__kwdefaults__
    return function


_functions = {}  # plain function -> its converted twin (or None: call it as it is)


def _block_version(fn):
    """The converted twin of user function `fn`, or None for library code."""
    if fn in _functions:
        return _functions[fn]
    from dynnet.converter.operators.call import is_user_function

    twin = None
    if is_user_function(fn):
        try:
            twin = converted(fn)
        except ConversionError:
            twin = None
    _functions[fn] = twin
    return twin


def block_call(fn, /, *args, **kwargs):
    """Calls `fn` inside a block: user code converted for block execution."""
    if isinstance(fn, torch.nn.Module):
        if type(fn) is torch.nn.Sequential:
            for module in fn:
                args, kwargs = (block_call(module, *args, **kwargs),), {}
            return args[0]
        forward = getattr(type(fn).forward, "fn", type(fn).forward)  # a dynnet.function
        twin = _block_version(forward) if isinstance(forward, types.FunctionType) else None
        return twin(fn, *args, **kwargs) if twin is not None else fn(*args, **kwargs)
    if isinstance(fn, types.MethodType) and isinstance(fn.__func__, types.FunctionType):
        twin = _block_version(fn.__func__)
        if twin is not None:
            return twin(fn.__self__, *args, **kwargs)
    elif isinstance(fn, types.FunctionType):
        twin = _block_version(fn)
        if twin is not None:
            return twin(*args, **kwargs)
    return fn(*args, **kwargs)


def block_rule(module):
    """The batching rule for calls of `module`: `block_call` under torch.func.vmap."""

    def rule(call):
        sig = call.sig

        def per_example(*slots):
            args, kwargs = rebuild(sig.template, iter(slots))
            return block_call(sig.fn, *args, **kwargs)

        return torch.func.vmap(per_example, randomness="different")(*call.slots)

    return rule
