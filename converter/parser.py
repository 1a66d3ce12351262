"""Source of user functions as gast trees, and back to readable Python."""

import ast
import inspect
import textwrap

import gast

from dynnet.errors import ConversionError


def function_source(fn):
    """`(source, filename, first_line)` of `fn`, dedented; ConversionError if absent."""
    try:
        lines, first_line = inspect.getsourcelines(fn)
        filename = inspect.getsourcefile(fn) or inspect.getfile(fn)
    except (OSError, TypeError) as e:
        code = getattr(fn, "__code__", None)
        at = f" defined at {code.co_filename}:{code.co_firstlineno}" if code else ""
        raise ConversionError(
            f"cannot convert {getattr(fn, '__qualname__', fn)!r}{at}: its source code is not "
            f"available ({e}). Define it in a .py file, or call it outside dynnet.") from None
    return textwrap.dedent("".join(lines)), filename, first_line


def parse_function(fn):
    """Parses `fn` into a gast FunctionDef (a lambda becomes `def <name>(...): return`).

    Returns `(node, filename, first_line)`; line numbers in `node` are file lines.
    """
    source, filename, first_line = function_source(fn)
    try:
        module = gast.parse(source)
    except SyntaxError:
        # a lambda or a def inside an expression: parse the line alone
        module = gast.parse(_strip_to_statement(source))
    node = _find_function(module, fn, filename, first_line)
    ast.increment_lineno(node, first_line - 1)
    return node, filename, first_line


def _strip_to_statement(source):
    text = source.strip()
    while text and text[-1] in ",)":
        try:
            gast.parse(text)
            break
        except SyntaxError:
            text = text[:-1]
    return "(" + text + ")" if not text.startswith(("def", "async", "@")) else text


def _find_function(module, fn, filename, first_line):
    name = fn.__name__
    if name == "<lambda>":
        lambdas = [n for n in gast.walk(module) if isinstance(n, gast.Lambda)]
        if len(lambdas) != 1:
            raise ConversionError(
                f"{filename}:{first_line}: cannot tell which of the {len(lambdas)} lambdas "
                "on this line to convert; give the function a name with def")
        lam = lambdas[0]
        node = gast.FunctionDef(name="dn__lambda", args=lam.args,
                                body=[gast.Return(value=lam.body)], decorator_list=[],
                                returns=None, type_comment=None, type_params=[])
        return gast.copy_location(node, lam) if hasattr(lam, "lineno") else node
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
