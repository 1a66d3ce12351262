"""Module attribute reads: `self.leaf` -> `dn__.module_attr(self, "leaf")`.

In a method of an `nn.Module` subclass, reads of `self.<name>` and
`self.<name>.<name>` (a submodule, a parameter, a submodule's weight) go through
`dn__.module_attr` (operators/attributes.py), which finds submodules, parameters and
buffers without the failed lookup that precedes `Module.__getattr__`: a recursive
model reads a few per call. Names the class defines (methods, properties, class
attributes) stay plain reads, and the pass does nothing in a method that rebinds
`self` or in nested functions with their own `self`. Last pass: it sees the
attribute reads the other passes moved into segment and call arguments.
"""

import gast

from dynnet.converter.transformer import Base, runtime_call


class ModuleAttributeTransformer(Base):
    def __init__(self, ctx, self_name, owner):
        super().__init__(ctx)
        self.self_name = self_name
        self.owner = owner

    def _is_self(self, node):
        return isinstance(node, gast.Name) and node.id == self.self_name

    def _rewritable(self, node):
        """`self.<name>` read, where the class does not define `name`."""
        return (isinstance(node, gast.Attribute) and isinstance(node.ctx, gast.Load)
                and self._is_self(node.value) and not hasattr(self.owner, node.attr))

    def visit_Attribute(self, node):
        if self._rewritable(node):
            return _read(node.value, node.attr)
        if isinstance(node.ctx, gast.Load) and self._rewritable(node.value):
            return _read(_read(node.value.value, node.value.attr), node.attr)
        return self.generic_visit(node)

    def visit_FunctionDef(self, node):
        if self.self_name in _parameter_names(node.args):
            return node  # its own `self`
        return self.generic_visit(node)

    def visit_Lambda(self, node):
        if self.self_name in _parameter_names(node.args):
            return node
        return self.generic_visit(node)


def _read(value, name):
    return runtime_call("module_attr", [value, gast.Constant(value=name, kind=None)])


def _parameter_names(args):
    every = args.posonlyargs + args.args + args.kwonlyargs + \
        [a for a in (args.vararg, args.kwarg) if a is not None]
    return {a.id for a in every}


def _rebinds(node, name):
    return any(isinstance(n, gast.Name) and n.id == name and not isinstance(n.ctx, gast.Load)
               for n in gast.walk(node))


def transform(node, ctx):
    import torch

    owner = ctx.owner
    if not (isinstance(owner, type) and issubclass(owner, torch.nn.Module)):
        return node
    params = node.args.posonlyargs + node.args.args
    if not params:
        return node
    self_name = params[0].id
    if any(_rebinds(stmt, self_name) for stmt in node.body):
        return node
    node.body = [ModuleAttributeTransformer(ctx, self_name, owner).visit(stmt)
                 for stmt in node.body]
    return node
