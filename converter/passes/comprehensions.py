"""Comprehensions: lowered to local functions with loops, so that calls inside them
can pause (Python forbids `yield` in a comprehension).

    [f(x) for x in xs if p(x)]
becomes
    @dn__.local
    def dn__comp_1(dn__iter_1):
        dn__out_1 = []
        for x in dn__iter_1:
            if p(x):
                dn__out_1.append(f(x))
        return dn__out_1
    ... dn__comp_1(xs) ...

Only the first iterable is evaluated outside, as in Python. Generator expressions
become lists (their elements are computed eagerly). Comprehensions in lambdas and
class bodies stay as they are.
"""

import gast

from dynnet.converter import templates
from dynnet.converter.transformer import Base

_INIT = {gast.ListComp: "[]", gast.GeneratorExp: "[]", gast.SetComp: "set()",
         gast.DictComp: "{}"}


class ComprehensionTransformer(Base):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.hoisted = []

    def visit_block(self, stmts):
        out = []
        for stmt in stmts:
            saved, self.hoisted = self.hoisted, []
            new = self.visit(stmt)
            out.extend(self.hoisted)
            self.hoisted = saved
            if new is not None:
                out.extend(new if isinstance(new, list) else [new])
        return out

    def generic_visit(self, node):
        for field, value in gast.iter_fields(node):
            if isinstance(value, list) and value and isinstance(value[0], gast.stmt):
                setattr(node, field, self.visit_block(value))
            elif isinstance(value, list):
                setattr(node, field, [self.visit(v) if isinstance(v, gast.AST) else v
                                      for v in value])
            elif isinstance(value, gast.AST):
                setattr(node, field, self.visit(value))
        return node

    def _visit_comprehension(self, node):
        if not self.can_yield[-1] or any(g.is_async for g in node.generators):
            return self.scoped(node, False)
        # the first iterable is evaluated outside; everything else inside the function,
        # so comprehensions nested there are hoisted into the function's body
        first = node.generators[0]
        first.iter = self.visit(first.iter)
        saved, self.hoisted = self.hoisted, []
        for field in ("elt", "key", "value"):
            if hasattr(node, field):
                setattr(node, field, self.visit(getattr(node, field)))
        for k, gen in enumerate(node.generators):
            if k:
                gen.iter = self.visit(gen.iter)
            gen.ifs = [self.visit(cond) for cond in gen.ifs]
        inner, self.hoisted = self.hoisted, saved
        name = self.ctx.namer.new_symbol("comp")
        iter_name = self.ctx.namer.new_symbol("iter")
        out_name = self.ctx.namer.new_symbol("out")
        if isinstance(node, gast.DictComp):
            add = templates.replace("out[key] = value", out=out_name, key=node.key,
                                    value=node.value)
        elif isinstance(node, gast.SetComp):
            add = templates.replace("out.add(elt)", out=out_name, elt=node.elt)
        else:
            add = templates.replace("out.append(elt)", out=out_name, elt=node.elt)
        body = add
        for k in reversed(range(len(node.generators))):
            gen = node.generators[k]
            for cond in reversed(gen.ifs):
                body = [gast.If(test=cond, body=body, orelse=[])]
            it = gast.Name(id=iter_name, ctx=gast.Load(), annotation=None,
                           type_comment=None) if k == 0 else gen.iter
            body = [gast.For(target=gen.target, iter=it, body=body, orelse=[],
                             type_comment=None)]
        fn = templates.replace(
            f"@dn__.local\ndef {name}({iter_name}):\n    out = {_INIT[type(node)]}\n"
            "    body\n    return out",
            out=out_name)[0]
        fn.body = [fn.body[0]] + inner + body + [fn.body[2]]
        self.hoisted.append(fn)
        return gast.Call(func=gast.Name(id=name, ctx=gast.Load(), annotation=None,
                                        type_comment=None), args=[first.iter], keywords=[])

    visit_ListComp = visit_SetComp = visit_DictComp = visit_GeneratorExp = _visit_comprehension

    def visit_FunctionDef(self, node):
        self.can_yield.append(True)
        try:
            self.generic_visit(node)
        finally:
            self.can_yield.pop()
        return node


def transform(node, ctx):
    return ComprehensionTransformer(ctx).visit(node)
