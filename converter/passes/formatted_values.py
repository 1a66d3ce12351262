"""Formatting: a lazy value is formatted as the unconverted code would format it.

    f"loss {loss:.3f}"          ->   f"loss {<pause point>(dn__.value_of(loss)):.3f}"
    "loss %.3f" % loss          ->   "loss %.3f" % <pause point>(dn__.value_of(loss))
    "loss {:.3f}".format(loss)  ->   "loss {:.3f}".format(<pause point>(dn__.value_of(loss)))

`dn__.value_of(v)` returns `v` unless it holds lazy tensors; then the example
pauses until they are computed and resumes with their values. In code that
cannot pause it waits at once (`dn__.value_of_now`). `%` and `.format` are
converted only on a string literal, where they are known to format (`x % 2` on a
tensor is arithmetic). `str`, `repr` and `format` are converted as calls
(converter/operators/py_builtins.py).
"""

import gast

from dynnet.converter.transformer import Base, pause_point, runtime_call


def _is_text(node):
    return isinstance(node, gast.Constant) and isinstance(node.value, str)


class FormattedValueTransformer(Base):
    def _valued(self, node):
        if self.can_yield[-1]:
            return pause_point(runtime_call("value_of", [node]))
        return runtime_call("value_of_now", [node])

    def visit_FormattedValue(self, node):
        self.generic_visit(node)
        node.value = self._valued(node.value)
        return node

    def visit_BinOp(self, node):
        self.generic_visit(node)
        if isinstance(node.op, gast.Mod) and _is_text(node.left):
            node.right = self._valued(node.right)
        return node

    def visit_Call(self, node):
        self.generic_visit(node)
        f = node.func
        if isinstance(f, gast.Attribute) and f.attr == "format" and _is_text(f.value):
            for a in node.args:
                if isinstance(a, gast.Starred):
                    a.value = self._valued(a.value)  # *args: a tuple or list of values
            node.args = [a if isinstance(a, gast.Starred) else self._valued(a)
                         for a in node.args]
            for k in node.keywords:  # `**mapping` too: value_of reads into dicts
                k.value = self._valued(k.value)
        return node


def transform(node, ctx):
    return FormattedValueTransformer(ctx).visit(node)
