"""`continue` in loops of a block, lowered to a flag (AutoGraph's
continue_statements); see break_statements for why.

    while test:                  while test:
        A                            dn__continue_1 = False
        if c:              ->        A
            continue                 if c:
        B                                dn__continue_1 = True
                                     if not dn__continue_1:
                                         B
"""

import gast

from dynnet.converter import templates
from dynnet.converter.passes.break_statements import _holds, guard_jumps
from dynnet.converter.transformer import Base


class ContinueTransformer(Base):
    def _lower(self, node):
        self.generic_visit(node)
        if not any(_holds(stmt, gast.Continue) for stmt in node.body):
            return node
        flag = self.ctx.namer.new_symbol("continue")
        node.body = templates.replace("flag = False", flag=flag) + guard_jumps(
            node.body, gast.Continue, flag)
        return node

    visit_While = visit_For = _lower


def transform(node, ctx):
    return ContinueTransformer(ctx).visit(node)
