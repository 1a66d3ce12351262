"""f-strings: a lazy value is formatted as the unconverted code would format it.

    f"loss {loss:.3f}"   ->   f"loss {<pause point>(dn__.value_of(loss)):.3f}"

`dn__.value_of(v)` returns `v` unless it holds lazy tensors; then the example
pauses until they are computed and resumes with their values. In code that
cannot pause it waits at once (`dn__.value_of_now`).
"""

from dynnet.converter.transformer import Base, pause_point, runtime_call


class FormattedValueTransformer(Base):
    def visit_FormattedValue(self, node):
        self.generic_visit(node)
        if self.can_yield[-1]:
            node.value = pause_point(runtime_call("value_of", [node.value]))
        else:
            node.value = runtime_call("value_of_now", [node.value])
        return node


def transform(node, ctx):
    return FormattedValueTransformer(ctx).visit(node)
