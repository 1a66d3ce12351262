"""`break` in loops of a block, lowered to a flag (AutoGraph's break_statements).

A loop whose test holds one value per row runs masked (block_control_flow), and
a branch that selects per row cannot `break`. So, in block conversion:

    while test:                      dn__break_1 = False
        A                            while not dn__break_1 and test:
        if c:                  ->        A
            break                        if c:
        B                                    dn__break_1 = True
    else:                                if not dn__break_1:
        E                                    B
                                     if not dn__break_1:
                                         E

A `for` loop's body becomes `if dn__.all_true(dn__break_1): break` followed by
the body guarded by `if not dn__break_1:` (the loop stops once every row has
broken; until then the rows that broke skip the iterations).
Only breaks that belong to the loop are lowered (not those of inner loops).
"""

import gast

from dynnet.converter import templates
from dynnet.converter.transformer import Base

_LOOPS = (gast.For, gast.While)
_SCOPES = (gast.FunctionDef, gast.AsyncFunctionDef, gast.ClassDef, gast.Lambda)


def _holds(node, kind):
    """True if `node` holds a `kind` statement of the enclosing loop."""
    if isinstance(node, kind):
        return True
    if isinstance(node, _LOOPS + _SCOPES):
        return False
    return any(_holds(child, kind) for child in gast.iter_child_nodes(node))


def _not(flag):
    return templates.replace_as_expression("not flag", flag=flag)


def guard_jumps(stmts, kind, flag):
    """`stmts` with each `kind` statement (Break or Continue) replaced by
    `flag = True` and the statements that follow it guarded by `if not flag:`."""
    out = []
    for k, stmt in enumerate(stmts):
        if isinstance(stmt, kind):
            return out + templates.replace("flag = True", flag=flag)
        if not _holds(stmt, kind):
            out.append(stmt)
            continue
        for field in ("body", "orelse", "finalbody"):
            if isinstance(getattr(stmt, field, None), list):
                setattr(stmt, field, guard_jumps(getattr(stmt, field), kind, flag))
        for handler in getattr(stmt, "handlers", ()):
            handler.body = guard_jumps(handler.body, kind, flag)
        out.append(stmt)
        rest = stmts[k + 1:]
        if rest:
            out.append(gast.If(test=_not(flag), body=guard_jumps(rest, kind, flag), orelse=[]))
        return out
    return out


class BreakTransformer(Base):
    def _lower(self, node):
        self.generic_visit(node)
        if not any(_holds(stmt, gast.Break) for stmt in node.body):
            return node
        flag = self.ctx.namer.new_symbol("break")
        node.body = guard_jumps(node.body, gast.Break, flag)
        if isinstance(node, gast.While):
            node.test = templates.replace_as_expression("not flag and test", flag=flag,
                                                        test=node.test)
        else:  # rows that broke skip the rest of the iterations
            node.body = templates.replace("if dn__.all_true(flag):\n    break",
                                          flag=flag) + [
                gast.If(test=_not(flag), body=node.body, orelse=[])]
        orelse, node.orelse = node.orelse, []
        after = [gast.If(test=_not(flag), body=orelse, orelse=[])] if orelse else []
        return templates.replace("flag = False", flag=flag) + [node] + after

    visit_While = visit_For = _lower


def transform(node, ctx):
    return BreakTransformer(ctx).visit(node)
