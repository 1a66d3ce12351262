"""Comparison chains: each link's truth test can pause the example.

    a < b < c   ->   (t < c) if <pp>(dn__.test((r := a < (t := b)))) else r

Every operand is evaluated once and in order, the chain stops at the first link
that is not true and its value is that link's result, as in Python. A single
comparison needs no truth test and is left alone, but for `in` and `not in`, which
test each element: `x in xs` -> `<pp>(dn__.contains(x, xs))`. In code that cannot pause the
chain becomes `dn__.compare_chain(lambda: a, '<', lambda: b, '<', lambda: c)`.
"""

import gast

from dynnet.converter import templates
from dynnet.converter.passes.control_flow import truth_test
from dynnet.converter.transformer import Base, pause_point, runtime_call

SYMBOLS = {gast.Lt: "<", gast.LtE: "<=", gast.Gt: ">", gast.GtE: ">=", gast.Eq: "==",
           gast.NotEq: "!=", gast.Is: "is", gast.IsNot: "is not", gast.In: "in",
           gast.NotIn: "not in"}


def _thunk(node):
    return templates.replace_as_expression("lambda: x", x=node)


class ComparisonTransformer(Base):
    def visit_Compare(self, node):
        self.generic_visit(node)
        if len(node.ops) == 1:
            op = node.ops[0]
            if isinstance(op, (gast.In, gast.NotIn)):
                args = [node.left, node.comparators[0]]  # evaluated in Python's order
                found = pause_point(runtime_call("contains", args)) if self.can_yield[-1] \
                    else runtime_call("contains_now", args)
                return gast.UnaryOp(op=gast.Not(), operand=found) \
                    if isinstance(op, gast.NotIn) else found
            return node
        if not self.can_yield[-1]:
            links = []
            for op, right in zip(node.ops, node.comparators):
                links += [gast.Constant(value=SYMBOLS[type(op)], kind=None), _thunk(right)]
            return runtime_call("compare_chain", [_thunk(node.left)] + links)
        return self._chain(node.left, node.ops, node.comparators)

    def _chain(self, left, ops, rights):
        if len(ops) == 1:
            return gast.Compare(left=left, ops=ops, comparators=rights)
        middle = self.ctx.namer.new_symbol("cmp")
        result = self.ctx.namer.new_symbol("r")
        link = templates.replace_as_expression(
            "(r := (left == (m := right)))", r=result, left=left, m=middle, right=rights[0])
        link.value.ops = [ops[0]]
        rest = self._chain(gast.Name(id=middle, ctx=gast.Load(), annotation=None,
                                     type_comment=None), ops[1:], rights[1:])
        return templates.replace_as_expression(
            "rest if test else r", rest=rest, test=truth_test(link, True), r=result)


def transform(node, ctx):
    return ComparisonTransformer(ctx).visit(node)
