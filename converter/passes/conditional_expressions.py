"""Conditional expressions: the test can pause the example.

    a if c else b   ->   a if <pause point>(dn__.test(c)) else b

Only the chosen operand is evaluated, as in Python. Pause points made by other
passes are conditional expressions too; they are recognized and left alone
(their arguments are still visited).
"""

from dynnet.converter.passes.control_flow import pause_call, truth_test
from dynnet.converter.transformer import Base


class ConditionalExpressionTransformer(Base):
    def visit_IfExp(self, node):
        call = pause_call(node)
        if call is not None:
            self.generic_visit(call)
            return node
        self.generic_visit(node)
        node.test = truth_test(node.test, self.can_yield[-1])
        return node


def transform(node, ctx):
    return ConditionalExpressionTransformer(ctx).visit(node)
