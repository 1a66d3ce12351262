"""Code generation from templates: parse a snippet, substitute names by nodes."""

import copy

import gast


class _Replacer(gast.NodeTransformer):
    def __init__(self, replacements):
        self.replacements = replacements

    def visit_Name(self, node):
        new = self.replacements.get(node.id)
        if new is None:
            return node
        if isinstance(new, str):
            return gast.Name(id=new, ctx=node.ctx, annotation=None, type_comment=None)
        new = copy.deepcopy(new)
        if hasattr(new, "ctx"):
            new.ctx = node.ctx
        return new

    def visit_FunctionDef(self, node):
        new = self.replacements.get(node.name)
        if isinstance(new, str):
            node.name = new
        self.generic_visit(node)
        return node

    def visit_arg(self, node):
        return node


_LOCATION = ("lineno", "col_offset", "end_lineno", "end_col_offset")


def _strip_locations(node):
    """Template nodes take their location from the user code around them."""
    for n in gast.walk(node):
        for attr in _LOCATION:
            if hasattr(n, attr):
                delattr(n, attr)
    return node


def replace(template, **replacements):
    """The statements of `template` with each name in `replacements` substituted.

    A replacement is a node (deep-copied, its ctx adjusted) or a str (a new name).
    Generated nodes carry no location; `fix_locations` gives them their parent's.
    """
    module = _strip_locations(gast.parse(template))
    return [_Replacer(replacements).visit(stmt) for stmt in module.body]


def replace_as_expression(template, **replacements):
    """Like `replace`, for a template that is one expression."""
    node = _strip_locations(gast.parse(template, mode="eval").body)
    return _Replacer(replacements).visit(node)


def fix_locations(node):
    """Gives every node without a location the location of its parent."""
    import ast

    return ast.fix_missing_locations(node)
