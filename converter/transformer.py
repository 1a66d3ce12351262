"""Base class of the conversion passes, and the pause-point expression they share."""

import gast

from dynnet.converter import templates
from dynnet.errors import ConversionError

RUNTIME = "dn__"  # the name converted code sees the runtime helpers under
RESULT = "dn__r"  # holds a helper's result while testing whether it is a Suspend


class Context:
    """What every pass of one conversion shares."""

    def __init__(self, namer, filename, function_name, namespace=None, class_methods=(),
                 owner=None, receiver=None):
        self.namer = namer
        self.filename = filename
        self.function_name = function_name
        self.namespace = namespace or {}  # names the function can see -> objects
        self.class_methods = set(class_methods)  # method names of the defining class
        self.owner = owner  # the class that defines the function (a method), or None
        self.receiver = receiver  # a method's first parameter (`self`, whatever its name)

    def error(self, node, what):
        line = getattr(node, "lineno", "?")
        return ConversionError(f"{self.filename}:{line}: {what} in {self.function_name}")


class Base(gast.NodeTransformer):
    """A pass: `visit` one tree; keeps track of whether the current scope may yield.

    Converted functions are generator functions, so a pause point (a `yield`) may
    appear in their bodies, but not in lambdas, class bodies or comprehensions.
    """

    def __init__(self, ctx):
        self.ctx = ctx
        self.can_yield = [False]

    def visit(self, node):
        if isinstance(node, list):
            raise ValueError('to visit lists of nodes, use "visit_block" instead')
        if getattr(node, "dn_skip", False):  # generated code that later passes leave alone
            return node
        return super().visit(node)

    def visit_block(self, stmts):
        out = []
        for stmt in stmts:
            new = self.visit(stmt)
            if new is None:
                continue
            out.extend(new if isinstance(new, list) else [new])
        return out

    def generic_visit(self, node):
        """Visits children; statement lists go through `visit_block` (which a pass may
        override to add statements around each one)."""
        for field, value in gast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], gast.stmt):
                setattr(node, field, self.visit_block(value))
            elif isinstance(value, list):
                new = []
                for v in value:
                    if not isinstance(v, gast.AST):  # e.g. None in kw_defaults
                        new.append(v)
                        continue
                    v = self.visit(v)
                    if v is not None:
                        new.extend(v if isinstance(v, list) else [v])
                setattr(node, field, new)
            elif isinstance(value, gast.AST):
                setattr(node, field, self.visit(value))
        return node

    def scoped(self, node, can_yield):
        self.can_yield.append(can_yield)
        try:
            self.generic_visit(node)
        finally:
            self.can_yield.pop()
        return node

    def visit_FunctionDef(self, node):
        return self.scoped(node, True)

    def visit_Lambda(self, node):
        return self.scoped(node, False)

    def visit_ClassDef(self, node):
        return self.scoped(node, False)

    def _visit_comprehension(self, node):
        return self.scoped(node, False)

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension


def pause_point(helper_call):
    """`helper_call` as an expression that yields the helper's result to the driver
    when it is a `Suspend`, and evaluates to the sent-back value (or the result)."""
    return templates.replace_as_expression(
        f"((yield {RESULT}) if ({RESULT} := call).__class__ is {RUNTIME}.Suspend else {RESULT})",
        call=helper_call)


def runtime_call(name, args, keywords=()):
    """A call of the runtime helper `dn__.<name>(*args, **keywords)`."""
    return gast.Call(
        func=gast.Attribute(value=gast.Name(id=RUNTIME, ctx=gast.Load(), annotation=None,
                                            type_comment=None), attr=name, ctx=gast.Load()),
        args=list(args), keywords=list(keywords))


def is_runtime_call(node):
    f = node.func
    return (isinstance(f, gast.Attribute) and isinstance(f.value, gast.Name)
            and f.value.id == RUNTIME)
