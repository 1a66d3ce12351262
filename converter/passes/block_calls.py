"""Calls in a block (a module's forward run on a stacked batch).

    f(a, *b, k=c)   ->   dn__.call(f, a, *b, k=c)

In a block, `dn__.call` (backends/blocks.py `block_call`) converts user modules'
forwards and user functions for block execution (so their own data-dependent
`if`/`while` select per row as well) and calls everything else as it is. Calls
of the runtime's helpers, zero-argument `super()` and frame-introspecting
builtins are left alone.
"""

import gast

from dynnet.converter.transformer import Base, is_runtime_call, runtime_call

_FRAME_BUILTINS = {"super", "locals", "globals", "vars", "eval", "exec"}


class BlockCallTransformer(Base):
    def visit_Call(self, node):
        self.generic_visit(node)
        if is_runtime_call(node):
            return node
        if isinstance(node.func, gast.Name) and node.func.id in _FRAME_BUILTINS:
            return node
        return runtime_call("call", [node.func] + node.args, node.keywords)


def transform(node, ctx):
    return BlockCallTransformer(ctx).visit(node)
