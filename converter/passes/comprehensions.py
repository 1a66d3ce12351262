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

Only the first iterable is evaluated outside, as in Python. A generator expression
becomes a list, except where that would read differently: assigned to a name, given
to `next`, `iter`, `any` or `all` (which stop early), or holding `:=`; there it stays a
Python generator, computed when read, unless it tests values itself (a filter, a
conditional expression, `and`/`or`: a generator could not wait for them); then it is
made at once and read through an iterator over it (`next(x for x in xs if x.sum() >
0)` works; every item is tested first, where Python would stop at the first). A
comprehension holding `:=` is inlined or stays Python's (the name binds in the
enclosing function).
Comprehensions in lambdas and class bodies stay as they are.

A list, set or dict comprehension in an assignment, `return` or expression
statement, with no call evaluated before it in that statement, is inlined instead:
the loop runs just before the statement, with fresh names for its targets, so no
function or generator is made per evaluation:

    xs = [f(c) for c in cs]   ->   dn__out_1 = []
                                   for dn__c_1 in cs:
                                       dn__out_1.append(f(dn__c_1))
                                   xs = dn__out_1
"""

import builtins

import gast

from dynnet.converter import templates
from dynnet.converter.transformer import RUNTIME, Base, runtime_call

_INLINE_IN = (gast.Assign, gast.AugAssign, gast.AnnAssign, gast.Return, gast.Expr)

_INIT = {gast.ListComp: "[]", gast.GeneratorExp: "[]", gast.SetComp: "set()",
         gast.DictComp: "{}"}
# builtins that read a generator item by item, or not at all (see `_stays_generator`)
_LAZY_READERS = {"next", "iter", "any", "all"}


def _tests_values(node):
    """Whether a comprehension tests values itself: a filter, `a if c else b`,
    `and`/`or` (a generator, run as Python runs it, could not wait for them)."""
    return any(g.ifs for g in node.generators) or any(
        isinstance(n, (gast.IfExp, gast.BoolOp)) for n in gast.walk(node))


class ComprehensionTransformer(Base):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.hoisted = []
        self.statement = None  # the statement whose comprehensions may be inlined
        self.parents = {}

    def visit_block(self, stmts):
        out = []
        for stmt in stmts:
            saved, self.hoisted = self.hoisted, []
            saved_statement = self.statement
            self.statement = stmt if isinstance(stmt, _INLINE_IN) else None
            self.parents = {id(c): p for p in gast.walk(stmt) for c in gast.iter_child_nodes(p)}
            new = self.visit(stmt)
            self.statement = saved_statement
            out.extend(self.hoisted)
            self.hoisted = saved
            if new is not None:
                out.extend(new if isinstance(new, list) else [new])
        return out

    def _stays_generator(self, node):
        """Whether generator expression `node` stays a Python generator (see the module
        docstring): where a list made at once would read differently (assigned to a
        name, given to `next`, `iter`, `any` or `all`, or holding `:=`), unless it tests
        values itself (a filter, a conditional expression, `and`/`or`), which a
        generator, run as Python runs it, could not wait for."""
        if any(isinstance(n, gast.NamedExpr) for n in gast.walk(node)):
            return True
        if _tests_values(node):
            return False
        return self._read_as_iterator(node)

    def _read_as_iterator(self, node):
        """Whether the generator expression's result is read as an iterator: assigned
        to a name, or given to `next`, `iter`, `any` or `all`."""
        parent = self.parents.get(id(node))
        if isinstance(parent, (gast.Assign, gast.AnnAssign)) and parent.value is node:
            return True
        if not (isinstance(parent, gast.Call) and parent.args and parent.args[0] is node
                and isinstance(parent.func, gast.Name) and parent.func.id in _LAZY_READERS):
            return False
        name = parent.func.id  # the builtin, not a name of the module's
        namespace = getattr(self.ctx, "namespace", None) or {}
        return namespace.get(name, getattr(builtins, name)) is getattr(builtins, name)

    def _inlinable(self, node):
        """No call of the statement runs before `node` (its enclosing calls aside)."""
        if self.statement is None or isinstance(node, gast.GeneratorExp):
            return False
        ancestors, parent = set(), self.parents.get(id(node))
        while parent is not None:
            ancestors.add(id(parent))
            parent = self.parents.get(id(parent))
        if any(isinstance(p, (gast.Lambda, gast.ListComp, gast.SetComp, gast.DictComp,
                              gast.GeneratorExp, gast.IfExp, gast.BoolOp))
               for p in gast.walk(self.statement) if id(p) in ancestors):
            return False  # (inside `a if c else b` or `a or b` it may not run at all)
        here = (node.lineno, node.col_offset)
        return not any(isinstance(n, gast.Call) and id(n) not in ancestors
                       and (n.lineno, n.col_offset) < here for n in gast.walk(self.statement))

    def _visit_comprehension(self, node):
        if not self.can_yield[-1] or any(g.is_async for g in node.generators):
            return self._python_s(node)
        if isinstance(node, gast.GeneratorExp):
            if self._stays_generator(node):
                return self._python_s(node)  # a generator: lazy, as Python's
            if self._read_as_iterator(node):
                # it tests values, so it is made at once; read as what it was, an
                # iterator (`next(x for x in xs if x.sum() > 0)`)
                made = self._made(node)
                return gast.Call(func=gast.Attribute(
                    value=gast.Name(id=RUNTIME, ctx=gast.Load(), annotation=None,
                                    type_comment=None),
                    attr="iterate", ctx=gast.Load()), args=[made], keywords=[])
        return self._made(node)

    def _python_s(self, node):
        """The comprehension kept as Python's own, whose filters cannot pause: each
        test on a lazy value waits at once (`dn__.test_now`)."""
        node = self.scoped(node, False)
        for gen in node.generators:
            gen.ifs = [runtime_call("test_now", [cond]) for cond in gen.ifs]
        return node

    def _made(self, node):
        """The comprehension's value made at once: inlined before its statement, or
        by a local function."""
        if self._inlinable(node):
            return self._inline(node)
        if any(isinstance(n, gast.NamedExpr) for n in gast.walk(node)):
            return self._python_s(node)  # `:=` binds in the enclosing function
        # the first iterable is evaluated outside; everything else inside the function,
        # so comprehensions nested there are hoisted into the function's body
        first = node.generators[0]
        first.iter = self.visit(first.iter)
        inner = self._visit_inside(node)
        name = self.ctx.namer.new_symbol("comp")
        iter_name = self.ctx.namer.new_symbol("iter")
        out_name = self.ctx.namer.new_symbol("out")
        body = self._loops(node, out_name, gast.Name(id=iter_name, ctx=gast.Load(),
                                                    annotation=None, type_comment=None))
        fn = templates.replace(
            f"@dn__.local\ndef {name}({iter_name}):\n    out = {_INIT[type(node)]}\n"
            "    body\n    return out",
            out=out_name)[0]
        fn.body = [fn.body[0]] + inner + body + [fn.body[2]]
        self.hoisted.append(fn)
        return gast.Call(func=gast.Name(id=name, ctx=gast.Load(), annotation=None,
                                        type_comment=None), args=[first.iter], keywords=[])

    def _inline(self, node):
        """The comprehension as a loop before the statement; returns its result name."""
        first = node.generators[0]
        first.iter = self.visit(first.iter)
        statement, self.statement = self.statement, None  # nested ones use functions
        renames = {}
        for gen in node.generators:
            for name in gast.walk(gen.target):
                if isinstance(name, gast.Name):
                    renames[name.id] = self.ctx.namer.new_symbol(name.id)
        scope = [getattr(node, f) for f in ("elt", "key", "value") if hasattr(node, f)]
        for k, gen in enumerate(node.generators):
            scope += [gen.target] + gen.ifs + ([gen.iter] if k else [])
        for part in scope:  # not the first iterable: it is evaluated outside
            for sub in gast.walk(part):
                if isinstance(sub, gast.Name) and sub.id in renames:
                    sub.id = renames[sub.id]
        inner = self._visit_inside(node)
        self.statement = statement
        out_name = self.ctx.namer.new_symbol("out")
        body = self._loops(node, out_name, first.iter)
        init = templates.replace(f"out = {_INIT[type(node)]}", out=out_name)
        for stmt in init + inner + body:
            gast.copy_location(stmt, node)
        self.hoisted.extend(init + inner + body)
        return gast.Name(id=out_name, ctx=gast.Load(), annotation=None, type_comment=None)

    def _visit_inside(self, node):
        """Visits what a comprehension evaluates per element; returns what that hoists."""
        saved, self.hoisted = self.hoisted, []
        for field in ("elt", "key", "value"):
            if hasattr(node, field):
                setattr(node, field, self.visit(getattr(node, field)))
        for k, gen in enumerate(node.generators):
            if k:
                gen.iter = self.visit(gen.iter)
            gen.ifs = [self.visit(cond) for cond in gen.ifs]
        inner, self.hoisted = self.hoisted, saved
        return inner

    def _loops(self, node, out_name, first_iter):
        """`for` loops (and `if`s) that add each element to `out_name`."""
        if isinstance(node, gast.DictComp):
            add = templates.replace("out[key] = value", out=out_name, key=node.key,
                                    value=node.value)
        elif isinstance(node, gast.SetComp):
            add = templates.replace("out.add(elt)", out=out_name, elt=node.elt)
            add[0].value.dn_nowrap = True
        else:
            add = templates.replace("out.append(elt)", out=out_name, elt=node.elt)
            add[0].value.dn_nowrap = True
        body = add
        for k in reversed(range(len(node.generators))):
            gen = node.generators[k]
            for cond in reversed(gen.ifs):
                body = [gast.If(test=cond, body=body, orelse=[])]
            it = first_iter if k == 0 else gen.iter
            body = [gast.For(target=gen.target, iter=it, body=body, orelse=[],
                             type_comment=None)]
        return body

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
