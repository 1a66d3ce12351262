"""Calls: every call goes through the runtime's `call` helper.

    f(a, *b, k=c)   ->   <pause point>(dn__.call(f, a, *b, k=c))

so the runtime sees torch functions and module calls on lazy values (recorded),
user functions (converted and run resumably), and builtins with overloads
(print, int, float, ...). In lambdas and class bodies, where the code cannot
pause, `dn__.call_now` runs the callee to completion instead. Calls of the
runtime's own helpers, zero-argument `super()` and frame-introspecting builtins
are left alone.
"""

import gast

from dynnet.converter.transformer import Base, is_runtime_call, pause_point, runtime_call

_FRAME_BUILTINS = {"super", "locals", "globals", "vars", "eval", "exec"}


class CallTransformer(Base):
    def visit_Call(self, node):
        self.generic_visit(node)
        if is_runtime_call(node) or getattr(node, "dn_nowrap", False):
            return node
        if isinstance(node.func, gast.Name) and node.func.id in _FRAME_BUILTINS:
            return node
        if self.can_yield[-1]:
            return pause_point(runtime_call("call", [node.func] + node.args, node.keywords))
        return runtime_call("call_now", [node.func] + node.args, node.keywords)


def transform(node, ctx):
    return CallTransformer(ctx).visit(node)
