"""`and`, `or`, `not`: short circuit kept, each truth test a pause point.

Where Python only tests the result (the test of `if`, `while`, a conditional
expression, the operand of `not`), the operands are tested one by one:

    if a and not b:   ->   if <pp>(dn__.test(a)) and not <pp>(dn__.test(b)):

Where the value itself is used, the result is an operand, as in Python, and the
left operand is evaluated once (a namer-made temporary):

    y = a or b        ->   y = (t if <pp>(dn__.test((t := a))) else b)

In code that cannot pause (lambdas, class bodies) the operands become functions
of the runtime helpers: `dn__.and_(lambda: a, lambda: b)`, `dn__.not_(a)`; unless an
operand holds `:=`, whose name the later operands read: then the first form, with
`dn__.test_now` (a test that waits at once) in place of the pause point.
"""

import gast

from dynnet.converter import templates
from dynnet.converter.passes.control_flow import is_test_of, pause_call, truth_test
from dynnet.converter.transformer import Base, runtime_call

_HELPERS = {gast.And: "and_", gast.Or: "or_"}


def _thunk(node):
    return templates.replace_as_expression("lambda: x", x=node)


class LogicalExpressionTransformer(Base):
    def visit_IfExp(self, node):
        call = pause_call(node)
        if call is None or not is_test_of(node, "test"):
            return self.generic_visit(node)
        operand = call.args[0]
        if isinstance(operand, gast.BoolOp):
            return self._test_each(operand)
        if isinstance(operand, gast.UnaryOp) and isinstance(operand.op, gast.Not):
            return gast.UnaryOp(op=gast.Not(), operand=self._tested(operand.operand))
        self.generic_visit(call)
        return node

    def _tested(self, node):
        """`node` truth-tested, with `and`/`or`/`not` inside expanded."""
        return self.visit(truth_test(node, True))

    def _test_each(self, node):
        return gast.BoolOp(op=node.op, values=[self._tested(v) for v in node.values])

    def visit_BoolOp(self, node):
        self.generic_visit(node)
        walrus = any(isinstance(n, gast.NamedExpr) for n in gast.walk(node))
        if not self.can_yield[-1] and not walrus:
            result = node.values[-1]
            for value in reversed(node.values[:-1]):
                result = runtime_call(_HELPERS[type(node.op)], [_thunk(value), _thunk(result)])
            return result
        # an operand's `:=` must bind where the operands after it can read it: not in a
        # lambda of its own (then, where code cannot pause, each test waits at once)
        temp = self.ctx.namer.new_symbol("t")
        result = node.values[-1]
        for value in reversed(node.values[:-1]):
            bound = templates.replace_as_expression("(t := v)", t=temp, v=value)
            test = truth_test(bound, True) if self.can_yield[-1] else \
                runtime_call("test_now", [bound])
            template = "rest if test else t" if isinstance(node.op, gast.And) else \
                "t if test else rest"
            result = templates.replace_as_expression(template, rest=result, test=test, t=temp)
        return result

    def visit_UnaryOp(self, node):
        if not isinstance(node.op, gast.Not):
            return self.generic_visit(node)
        if not self.can_yield[-1]:
            self.generic_visit(node)
            return runtime_call("not_", [node.operand])
        node.operand = self._tested(node.operand)
        return node


def transform(node, ctx):
    return LogicalExpressionTransformer(ctx).visit(node)
