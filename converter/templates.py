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


def replace(template, **replacements):
    """The statements of `template` with each name in `replacements` substituted.

    A replacement is a node (deep-copied, its ctx adjusted) or a str (a new name).
    """
    module = gast.parse(template)
    return [_Replacer(replacements).visit(stmt) for stmt in module.body]


def replace_as_expression(template, **replacements):
    """Like `replace`, for a template that is one expression."""
    node = gast.parse(template, mode="eval").body
    return _Replacer(replacements).visit(node)
