"""`assert`: the test can pause the example; the message is evaluated on failure.

    assert cond, msg   ->   assert <pause point>(dn__.assert_test(cond, lambda: msg))

`dn__.assert_test` raises `AssertionError(msg)` for a false Python value, as
Python does; for a lazy value the example pauses, and on failure the error
carries the message, the example's index and the user's file:line. The
statement stays an `assert`, so `python -O` removes it as it removes the
original. In code that cannot pause the test waits at once.
"""

from dynnet.converter import templates
from dynnet.converter.passes.control_flow import truth_test
from dynnet.converter.transformer import Base, pause_point, runtime_call


class AssertTransformer(Base):
    def visit_Assert(self, node):
        self.generic_visit(node)
        if not self.can_yield[-1]:
            node.test = truth_test(node.test, False)
            return node
        args = [node.test]
        if node.msg is not None:
            args.append(templates.replace_as_expression("lambda: msg", msg=node.msg))
        node.test = pause_point(runtime_call("assert_test", args))
        node.msg = None
        return node


def transform(node, ctx):
    return AssertTransformer(ctx).visit(node)
