"""Augmented assignments in a block: a tensor gets a new value, not an in-place change.

    x += y   ->   x = dn__.augmented_assign("+", x, y)

In a block (a module's forward on a stacked batch, see backends/blocks.py), a tensor
variable holds every row. An in-place `x += 1` inside a branch or a masked loop would
change the rows that the branch or loop must leave alone (and the state the masked
loop keeps for rows that finished), so a tensor gets `x + y` instead, which the
branch or loop then selects per row. Other values (a list, a Python number) keep
Python's in-place operator. Only names are rewritten: `self.n += 1` and `a[i] += 1`
stay as they are.
"""

import gast

from dynnet.converter.transformer import Base, runtime_call

SYMBOLS = {gast.Add: "+", gast.Sub: "-", gast.Mult: "*", gast.Div: "/", gast.FloorDiv: "//",
           gast.Mod: "%", gast.Pow: "**", gast.MatMult: "@", gast.BitAnd: "&",
           gast.BitOr: "|", gast.BitXor: "^", gast.LShift: "<<", gast.RShift: ">>"}


class AugmentedAssignmentTransformer(Base):
    def visit_AugAssign(self, node):
        self.generic_visit(node)
        if not isinstance(node.target, gast.Name):
            return node
        read = gast.Name(id=node.target.id, ctx=gast.Load(), annotation=None,
                         type_comment=None)
        symbol = gast.Constant(value=SYMBOLS[type(node.op)], kind=None)
        value = runtime_call("augmented_assign", [symbol, read, node.value])
        return gast.copy_location(
            gast.Assign(targets=[node.target], value=value, type_comment=None), node)


def transform(node, ctx):
    return AugmentedAssignmentTransformer(ctx).visit(node)
