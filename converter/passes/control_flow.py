"""`if` and `while`: their tests become truth tests that can pause the example.

    if x.sum() > 0:        ->   if <pause point>(dn__.test(x.sum() > 0)):
    while x.norm() > 1:    ->   while <pause point>(dn__.test(x.norm() > 1)):
    match x.sum(): ...     ->   match <pause point>(dn__.value_of(x.sum())): ...
                                (and each `case ... if guard` gets a truth test)

The statements stay Python statements: `elif`, `else`, `break`, `continue` and
`return` keep their meaning, and only the branch an example takes runs. `for`
needs nothing (a lazy tensor iterates over its rows; `range` of a lazy value
pauses in its overload). Where code cannot pause (class bodies) the test waits at
once: `dn__.test_now(...)`. Constant tests (`while True:`) are left alone.

`truth_test` and `pause_call` are shared with the passes for conditional
expressions, logical expressions, comparison chains and asserts.
"""

import gast

from dynnet.converter.transformer import RESULT, RUNTIME, Base, pause_point, runtime_call


def truth_test(node, can_yield):
    """The expression whose value Python tests in place of `node`'s."""
    if isinstance(node, gast.Constant) or pause_call(node) is not None:
        return node
    if can_yield:
        return pause_point(runtime_call("test", [node]))
    return runtime_call("test_now", [node])


def pause_call(node):
    """The helper call inside pause point `node` (see `pause_point`), or None."""
    if not (isinstance(node, gast.IfExp) and isinstance(node.body, gast.Yield)
            and isinstance(node.body.value, gast.Name) and node.body.value.id == RESULT):
        return None
    compare = node.test
    if not isinstance(compare, gast.Compare) or not isinstance(compare.left, gast.Attribute):
        return None
    named = compare.left.value
    return named.value if isinstance(named, gast.NamedExpr) else None


def is_test_of(node, helper):
    """True if `node` is a pause point (or a direct call) of `dn__.<helper>`."""
    call = pause_call(node) or node
    return (isinstance(call, gast.Call) and isinstance(call.func, gast.Attribute)
            and call.func.attr == helper and isinstance(call.func.value, gast.Name)
            and call.func.value.id == RUNTIME)


class ControlFlowTransformer(Base):
    def visit_If(self, node):
        self.generic_visit(node)
        node.test = truth_test(node.test, self.can_yield[-1])
        return node

    visit_While = visit_If

    def visit_Match(self, node):
        """`match`: a lazy subject waits for its value (value patterns compare it with
        `==`, which Python then tests), and each guard is a truth test."""
        self.generic_visit(node)
        if self.can_yield[-1]:
            node.subject = pause_point(runtime_call("value_of", [node.subject]))
        else:
            node.subject = runtime_call("value_of_now", [node.subject])
        for case in node.cases:
            if case.guard is not None:
                case.guard = truth_test(case.guard, self.can_yield[-1])
        return node


def transform(node, ctx):
    return ControlFlowTransformer(ctx).visit(node)
