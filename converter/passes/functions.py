"""Functions: reject what cannot be converted, prepare nested definitions.

The converted function's own decorators are dropped (dynnet applies them: the
function is already wrapped). Nested `def`s become resumable too; the innermost
decorator `dn__.local` lets them be called both from converted code (resumable)
and from library code (run to completion).
"""

import gast

from dynnet.converter.transformer import RUNTIME, Base


class FunctionTransformer(Base):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.depth = 0

    def visit_FunctionDef(self, node):
        if self.depth == 0:
            node.decorator_list = []
        else:
            node.decorator_list = node.decorator_list + [gast.Attribute(
                value=gast.Name(id=RUNTIME, ctx=gast.Load(), annotation=None,
                                type_comment=None), attr="local", ctx=gast.Load())]
        self.depth += 1
        try:
            return self.scoped(node, True)
        finally:
            self.depth -= 1

    def visit_AsyncFunctionDef(self, node):
        raise self.ctx.error(node, f"async function {node.name!r} cannot be converted")

    def visit_Await(self, node):
        raise self.ctx.error(node, "'await' cannot be converted")

    def visit_AsyncFor(self, node):
        raise self.ctx.error(node, "'async for' cannot be converted")

    def visit_AsyncWith(self, node):
        raise self.ctx.error(node, "'async with' cannot be converted")

    def visit_Yield(self, node):
        raise self.ctx.error(node, "generator functions ('yield') cannot be converted")

    def visit_YieldFrom(self, node):
        raise self.ctx.error(node, "generator functions ('yield from') cannot be converted")


def transform(node, ctx):
    return FunctionTransformer(ctx).visit(node)
