"""The direct twin of a converted function: the same code without its pause points.

A converted function is a generator function, so that the driver can pause it. Most
calls of most functions never pause: they run their first step to the end. For
those, creating, starting and finishing a generator is pure overhead (about 0.4 µs
a call). The direct twin is the converted function with every pause point

    ((yield dn__r) if (dn__r := call).__class__ is dn__.Suspend else dn__r)

turned into

    (dn__.wait(dn__r) if (dn__r := call).__class__ is dn__.Suspend else dn__r)

in the function's own body (nested functions keep theirs). `dn__.wait` obtains the
value at once: it runs a callee that did not finish inline on the driver's explicit
stack, and when the value must be computed first (a real pause), it executes the
pending graph right there. That is correct but batches less, so `wait` reports it
and the function goes back to resumable calls for good (converter/__init__.py,
`ConvertedFunction.start`).
"""

import copy

import gast

from dynnet.converter.transformer import RESULT, RUNTIME


class _PausePoints(gast.NodeTransformer):
    def __init__(self):
        self.depth = 0

    def visit_FunctionDef(self, node):
        self.depth += 1
        if self.depth == 1:
            self.generic_visit(node)
        self.depth -= 1
        return node

    def visit_Lambda(self, node):
        return node

    def visit_ClassDef(self, node):
        return node

    def visit_IfExp(self, node):
        self.generic_visit(node)
        body = node.body
        if isinstance(body, gast.Yield) and isinstance(body.value, gast.Name) \
                and body.value.id == RESULT:
            node.body = gast.Call(
                func=gast.Attribute(value=gast.Name(id=RUNTIME, ctx=gast.Load(),
                                                    annotation=None, type_comment=None),
                                    attr="wait", ctx=gast.Load()),
                args=[body.value], keywords=[])
        return node


def direct_twin(function_node):
    """A copy of converted `function_node` whose own pause points wait instead."""
    node = copy.deepcopy(function_node)
    return _PausePoints().visit(node)
