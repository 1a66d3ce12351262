"""Source of user functions as gast trees, and back to readable Python."""

import ast
import inspect
import textwrap

import gast

from dynnet.errors import ConversionError


def function_source(fn):
    """`(source, filename, first_line)` of `fn`, dedented; ConversionError if absent."""
    # the code object's source: `inspect.getsourcelines(fn)` follows `__wrapped__`, so
    # a decorator's wrapper (`functools.wraps`) would be converted as the function it
    # wraps, and run without what the wrapper adds
    target = getattr(fn, "__code__", fn)
    try:
        lines, first_line = inspect.getsourcelines(target)
        filename = inspect.getsourcefile(target) or inspect.getfile(target)
    except (OSError, TypeError) as e:
        code = getattr(fn, "__code__", None)
        at = f" defined at {code.co_filename}:{code.co_firstlineno}" if code else ""
        raise ConversionError(
            f"cannot convert {getattr(fn, '__qualname__', fn)!r}{at}: its source code is not "
            f"available ({e}). Define it in a .py file, or call it outside dynnet.") from None
    return textwrap.dedent("".join(lines)), filename, first_line


def parse_function(fn):
    """Parses `fn` into a gast FunctionDef (a lambda becomes `def dn__lambda(...)`).

    Returns `(node, filename, first_line)`; line numbers in `node` are file lines.
    """
    source, filename, first_line = function_source(fn)
    if _code_name(fn) == "<lambda>":
        return _find_lambda(fn, filename, first_line), filename, first_line
    module = gast.parse(source)
    node = _find_function(module, fn, filename, first_line)
    ast.increment_lineno(node, first_line - 1)
    return node, filename, first_line


def _find_lambda(fn, filename, first_line):
    """The lambda `fn` in its whole file: by line, then parameters, then column."""
    import linecache

    module = gast.parse("".join(linecache.getlines(filename)))
    code = fn.__code__
    params = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    candidates = [n for n in gast.walk(module) if isinstance(n, gast.Lambda)
                  and n.lineno == first_line
                  and tuple(a.id for a in n.args.posonlyargs + n.args.args
                            + n.args.kwonlyargs) == params]
    if len(candidates) > 1:
        columns = {p[2] for p in code.co_positions() if p[2] is not None}
        candidates = [n for n in candidates
                      if n.body.col_offset <= min(columns, default=-1) < n.body.end_col_offset
                      or (n.body.lineno, n.body.col_offset) == (first_line, min(columns))]
    if len(candidates) != 1:
        raise ConversionError(
            f"{filename}:{first_line}: cannot tell which lambda on this line to convert; "
            "give the function a name with def")
    lam = candidates[0]
    node = gast.FunctionDef(name="dn__lambda", args=lam.args,
                            body=[gast.Return(value=lam.body)], decorator_list=[],
                            returns=None, type_comment=None, type_params=[])
    return gast.copy_location(node, lam)


def _code_name(fn):
    """The name `fn` was defined with (`functools.wraps` changes `__name__`)."""
    code = getattr(fn, "__code__", None)
    return code.co_name if code is not None else fn.__name__


def _find_function(module, fn, filename, first_line):
    name = _code_name(fn)
    for node in module.body:
        if isinstance(node, (gast.FunctionDef, gast.AsyncFunctionDef)) and node.name == name:
            return node
    for node in gast.walk(module):
        if isinstance(node, (gast.FunctionDef, gast.AsyncFunctionDef)) and node.name == name:
            return node
    raise ConversionError(f"{filename}:{first_line}: could not find the definition of {name}")


def unparse(node):
    """Readable Python for a gast node."""
    return ast.unparse(gast.gast_to_ast(node))


def parse_expression(source):
    return gast.parse(source, mode="eval").body
