"""Control flow of a block (a module's forward run on a stacked batch).

In a block the condition of an `if` or `while` may hold one value per row, so
the statements become calls of runtime helpers that take the branches and the
loop body as functions (AutoGraph's functional form):

    if c:                         def dn__if_true_1():
        y = a                         nonlocal y
    else:             ->              y = a
        y = b                     def dn__if_false_1(): ...      # likewise
                                  def dn__get_1():
                                      return (y,)
                                  def dn__set_1(dn__state_1):
                                      nonlocal y
                                      (y,) = dn__state_1
                                  dn__.if_stmt(c, dn__if_true_1, dn__if_false_1,
                                               dn__get_1, dn__set_1)

`while` becomes `dn__.while_stmt(test, body, get, set)`; a `while`'s `else`
runs after it. The state of a statement is the names its branches (or body, or
test) assign; they are set to `dn__.Undefined` at the start of the function so
that the branch functions can declare them `nonlocal`. `a if c else b` becomes
`dn__.if_exp(c, lambda: a, lambda: b)`; `assert c, m` becomes
`dn__.assert_stmt(c, lambda: m)`.

An `if` or `while` whose body holds a `return` (one that return_statements could
not move), a `break` or `continue` leaving it (break_statements and
continue_statements lower those first), `yield`, or `nonlocal` stays a Python
statement, with its test checked by `dn__.static_test`: right while every row
agrees, an error saying why when rows differ.
"""

import gast

from dynnet.converter import templates
from dynnet.converter.analysis.activity import (
    assigned_names,
    contains,
    declared,
    loop_exits,
)
from dynnet.converter.transformer import RUNTIME, Base, runtime_call

_BLOCKERS = (gast.Return, gast.Nonlocal, gast.Yield, gast.YieldFrom)


def _name(id_, ctx=None):
    return gast.Name(id=id_, ctx=ctx or gast.Load(), annotation=None, type_comment=None)


class BlockControlFlowTransformer(Base):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.state_names = {}
        self.globals = set()
        self.entered = False

    def visit_FunctionDef(self, node):
        if self.entered:  # a def nested in the forward is left as it is
            return node
        self.entered = True
        self.globals = declared(node.body, gast.Global)
        node.body = self.visit_block(node.body)
        params = {a.id for a in node.args.args + node.args.posonlyargs + node.args.kwonlyargs}
        params |= {a.id for a in (node.args.vararg, node.args.kwarg) if a is not None}
        undefined = [n for n in self.state_names if n not in params]
        if undefined:
            init = templates.replace(" = ".join(undefined) + " = dn__.Undefined")
            node.body = init + node.body
        return node

    def _functional(self, stmts):
        return not (contains(stmts, _BLOCKERS) or loop_exits(stmts))

    def _state(self, nodes):
        names = [n for n in assigned_names(nodes) if n not in self.globals]
        self.state_names.update(dict.fromkeys(names))
        return names

    def _def(self, base, body, state, args=()):
        """A local function named after `base`, declaring `state` nonlocal."""
        name = self.ctx.namer.new_symbol(base)
        decls = [gast.Nonlocal(names=list(state))] if state else []
        globals_ = sorted(self.globals & set(assigned_names(body)))
        decls += [gast.Global(names=globals_)] if globals_ else []
        fn = templates.replace(f"def {name}({', '.join(args)}):\n    pass")[0]
        fn.body = decls + (body or [gast.Pass()])
        return name, fn

    def _accessors(self, state):
        value = self.ctx.namer.new_symbol("state")
        get_body = templates.replace("return (" + "".join(f"{n}, " for n in state) + ")")
        set_body = templates.replace("(" + "".join(f"{n}, " for n in state) + ") = v",
                                     v=value) if state else [gast.Pass()]
        get_name, get_fn = self._def("get", get_body, ())
        set_name, set_fn = self._def("set", set_body, state, (value,))
        return [get_fn, set_fn], [_name(get_name), _name(set_name)]

    def visit_If(self, node):
        functional = self._functional(node.body + node.orelse)
        state = self._state(node.body + node.orelse) if functional else []
        self.generic_visit(node)
        if not functional:
            node.test = runtime_call("static_test", [node.test])
            return node
        true_name, true_fn = self._def("if_true", node.body, state)
        false_name, false_fn = self._def("if_false", node.orelse, state)
        defs, accessors = self._accessors(state)
        call = runtime_call("if_stmt", [node.test, _name(true_name), _name(false_name)]
                            + accessors)
        return [true_fn, false_fn] + defs + [gast.Expr(value=call)]

    def visit_While(self, node):
        functional = self._functional(node.body)
        state = self._state([node.test] + node.body) if functional else []
        test_state = assigned_names([node.test])
        self.generic_visit(node)
        if not functional:
            node.test = runtime_call("static_test", [node.test])
            return node
        test_name, test_fn = self._def("loop_test", [gast.Return(value=node.test)], test_state)
        body_name, body_fn = self._def("loop_body", node.body, state)
        defs, accessors = self._accessors(state)
        call = runtime_call("while_stmt", [_name(test_name), _name(body_name)] + accessors)
        return [test_fn, body_fn] + defs + [gast.Expr(value=call)] + node.orelse

    def visit_IfExp(self, node):
        self.generic_visit(node)
        return templates.replace_as_expression(
            f"{RUNTIME}.if_exp(test, lambda: body, lambda: orelse)",
            test=node.test, body=node.body, orelse=node.orelse)

    def visit_Assert(self, node):
        self.generic_visit(node)
        args = [node.test]
        if node.msg is not None:
            args.append(templates.replace_as_expression("lambda: msg", msg=node.msg))
        return gast.Expr(value=runtime_call("assert_stmt", args))


def transform(node, ctx):
    return BlockControlFlowTransformer(ctx).visit(node)
