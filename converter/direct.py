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

from dynnet.converter.passes.control_flow import pause_call
from dynnet.converter.transformer import runtime_call


class _PausePoints(gast.NodeTransformer):
    """Turns the pause points of one function body into waits; nested functions,
    lambdas and classes keep theirs."""

    def _keep(self, node):
        return node

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = visit_ClassDef = _keep

    def visit_IfExp(self, node):
        self.generic_visit(node)
        if pause_call(node) is not None:
            node.body = runtime_call("wait", [node.body.value])
        return node


def direct_twin(function_node):
    """A copy of converted `function_node` whose own pause points wait instead."""
    node = copy.deepcopy(function_node)
    node.body = [_PausePoints().visit(stmt) for stmt in node.body]
    return node
