"""Segments: straight-line runs of tensor code recorded as ONE node.

A run of consecutive simple statements (assignments to names, a final `return`)
whose expressions are only calls, operators, attributes, subscripts, names and
constants becomes a local function and one call:

    i, o, u = torch.chunk(self.leaf(x), 3)        def dn__seg_1(self, x):
    c = torch.sigmoid(i) * torch.tanh(u)              i, o, u = dn__.seg_call(torch.chunk, ...)
    return torch.sigmoid(o) * torch.tanh(c)   ->      ...
                                                      return (c, i, o, u, <returned value>)
                                                  c, i, o, u, dn__seg_2 = dn__.segment(
                                                      dn__seg_1, (self, x))
                                                  return dn__seg_2

At run time (dynnet/segments.py) the first call with given input avals runs the
segment once, capturing the ops it records; later calls record one node whose
group execution replays those ops on the stacked batch. When the run turns out
not to be straight-line tensor code (it calls user code, pauses, has side
effects, or reads a per-example Python object), the function simply runs, its
calls completing at once (`dn__.seg_call` then acts as `dn__.call_now`).

Comprehensions without `if` and a few pure builtins (`sum(h for h, _ in states)`,
`torch.stack([h for h in hs])`, `len(states)`) may be part of a run: the key holds the
structure of the lists and tuples they read. (This pass runs before the one that
lowers comprehensions to loops; segments keep theirs.)

Modules picked by index (`self.layers[k](x)`, `self.heads[name](x)`) are evaluated at
the call site and enter the segment as inputs, like `self.a.b` reads: their identity
is part of the key, so replacing one is never replayed stale.

`torch.tensor(w)` of any plain read (a parameter's attribute, a loop variable, a local)
is per-example data: a data input of the segment, stacked by the replay, not a value
in its key (one template per token); so is a flat list of numbers
(`torch.tensor(targets)`). `len(x)` of a plain read is evaluated at the call site, so
that `x` itself need not be an input. Statements without ops at either end of a run
(`prev = w`, `return h, c`) stay outside it.

Local names assigned once from a module's attribute or a torch function (`lin =
self.lin`, `emb, leaf = self.emb, self.leaf`, `layer = getattr(self, "lin")`, `act =
torch.tanh`) are callees like `self.lin`, inputs of the segment; a method's receiver
is its first parameter whatever its name (`def enc(m, tree)`).

Statically excluded, to keep segments likely to succeed: calls of names that do
not resolve to torch, calls of the class's own methods (`self.encode(...)`),
mutating and value-reading methods (`xs.append(h)`, `x.item()`), and factory calls
fed by the function's parameters (`torch.tensor(tree.word_id)`: a per-example
constant).
"""

import builtins
import types

import gast

from dynnet.converter import templates
from dynnet.converter.transformer import RUNTIME, Base, runtime_call

_ALLOWED = (gast.Name, gast.Attribute, gast.Call, gast.BinOp, gast.UnaryOp, gast.Subscript,
            gast.Slice, gast.Constant, gast.Tuple, gast.List, gast.keyword, gast.Starred,
            gast.Load, gast.Store, gast.operator, gast.unaryop, gast.expr_context,
            gast.ListComp, gast.GeneratorExp, gast.comprehension)
_COMPREHENSIONS = (gast.ListComp, gast.GeneratorExp)
# builtins a segment may call: pure, and deterministic given the key (which holds the
# structure of the tuples and lists they read)
_PURE_BUILTINS = {"sum", "len", "zip", "enumerate", "range", "reversed", "tuple", "list"}
_OPS = (gast.Call, gast.BinOp, gast.UnaryOp, gast.Subscript)
_MUTATORS = {"append", "extend", "insert", "pop", "remove", "update", "add", "setdefault",
             "clear", "write", "discard", "sort", "reverse", "popitem", "copy_", "fill_",
             "zero_", "add_", "mul_", "item", "tolist", "numpy", "backward"}
_FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "empty", "arange", "eye",
              "linspace", "rand", "randn", "randint", "randperm", "from_numpy"}
MIN_OPS = 3
# comparisons a segment statement may hold (`torch.where(a > b, a, b)`, `x * (x > 0)`):
# recorded like any op on lazy values; `is` and `in` stay Python's own
_ORDER_COMPARISONS = (gast.Lt, gast.LtE, gast.Gt, gast.GtE, gast.Eq, gast.NotEq)


def _targets_are_names(target):
    if isinstance(target, gast.Name):
        return True
    if isinstance(target, (gast.Tuple, gast.List)):
        return all(_targets_are_names(t) for t in target.elts)
    return False


def _names(node, ctx_type):
    return [n.id for n in gast.walk(node) if isinstance(n, gast.Name) and
            isinstance(n.ctx, ctx_type)]


# attributes of a tensor that its per-example shape, dtype and device fix, or views of it
_TENSOR_FACTS = {"shape", "dtype", "device", "ndim", "is_cuda", "requires_grad", "layout",
                 "T", "mT", "H", "mH", "real", "imag", "data"}
# modules whose attributes are the library's, not settings of the user's
_LIBRARIES = {"torch", "numpy", "math", "operator", "functools", "itertools",
              "collections", "builtins", "dynnet", "random", "typing"}


class SegmentTransformer(Base):
    def __init__(self, ctx):
        super().__init__(ctx)
        self.namespace = getattr(ctx, "namespace", {}) or {}
        self.methods = getattr(ctx, "class_methods", set())
        self.params = set()
        self.self_name = None
        self.depth = 0  # functions entered (the converted one is the first)
        self.aliases = set()  # local names of modules and torch functions (see below)
        self.loads = {}  # name -> number of loads in the current function
        self.loops = 0  # how many loops enclose the current statement

    # -------------------- which statements qualify --------------------
    def _call_ok(self, call):
        func = call.func
        if isinstance(func, gast.Name):
            if func.id in self.aliases:  # `lin = self.lin` ... `lin(x)`: a segment input
                return True
            obj = self.namespace.get(func.id, getattr(builtins, func.id, None))
            if func.id in _PURE_BUILTINS and obj is getattr(builtins, func.id):
                # range(n) needs n's value, which a segment cannot pause for: only
                # constants and lengths (`range(len(hs) - 1)`)
                return func.id != "range" or all(_static_count(a) for a in call.args)
            return _is_torch(obj)
        if isinstance(func, gast.Subscript):
            return _indexed_callee(func)
        if not isinstance(func, gast.Attribute):
            return False
        if func.attr in _MUTATORS:
            return False
        base = func.value
        if isinstance(base, gast.Constant) and isinstance(base.value, str):
            return False  # "{:.3f}".format(x): formatting reads values
        if isinstance(base, gast.Name):
            if base.id == self.self_name and func.attr in self.methods:
                return False
            obj = self.namespace.get(base.id)
            if isinstance(obj, types.ModuleType):
                if not obj.__name__.startswith("torch"):
                    return False
                if func.attr in _FACTORIES and self.params & set(_names(call, gast.Load)):
                    return self._data_argument(call) is not None
        return True

    def _data_argument(self, call):
        """For `torch.tensor(tree.word_id, ...)`: the per-example Python data argument.

        It must be a plain read (name, attribute, constant subscript) and the call's only
        use of the parameters; it becomes a data input of the segment (a scalar that
        varies per example, stacked by the replay).
        """
        if call.func.attr not in ("tensor", "as_tensor") or len(call.args) != 1:
            return None
        data = call.args[0]
        if not _plain_read(data):
            return None
        rest = [n for kw in call.keywords for n in _names(kw.value, gast.Load)]
        if self.params & set(rest):
            return None
        return data

    def _torch_factory(self, call):
        """`torch.tensor(...)`-like: the factory is read from a torch module."""
        base = call.func.value
        obj = self.namespace.get(base.id) if isinstance(base, gast.Name) else None
        return isinstance(obj, types.ModuleType) and obj.__name__.startswith("torch")

    def _qualifies(self, stmt):
        if isinstance(stmt, gast.Assign):
            if not all(_targets_are_names(t) for t in stmt.targets):
                return False
            value = stmt.value
        elif isinstance(stmt, gast.AugAssign):
            if not isinstance(stmt.target, gast.Name):
                return False
            value = stmt
        elif isinstance(stmt, gast.Return):
            if stmt.value is None:
                return False
            value = stmt.value
        else:
            return False
        return self._expression_ok(value, compare=_ORDER_COMPARISONS)

    def _expression_ok(self, expr, compare=()):
        """Only straight-line tensor code, and one-link comparisons whose operator is
        one of the `compare` types (a while test allows any)."""
        for node in gast.walk(expr):
            if isinstance(node, gast.Compare) and len(node.ops) == 1 and \
                    isinstance(node.ops[0], compare):
                continue
            if isinstance(node, gast.cmpop) and isinstance(node, compare):
                continue
            if not isinstance(node, _ALLOWED) or isinstance(node, gast.Not):
                return False  # `not x` needs x's value: a test that pauses, outside
            if isinstance(node, gast.Call) and not self._call_ok(node):
                return False
            if isinstance(node, gast.BinOp) and isinstance(node.op, gast.Mod) and \
                    isinstance(node.left, gast.Constant) and isinstance(node.left.value, str):
                return False  # "%.3f" % x: formatting reads values
            if isinstance(node, gast.Name) and node.id.startswith(RUNTIME):
                return False
            if isinstance(node, gast.comprehension) and (node.ifs or node.is_async):
                return False  # a filter decides per element: it needs values
            if isinstance(node, _COMPREHENSIONS) and any(
                    isinstance(n, gast.Call) and (isinstance(n.func, gast.Subscript) or (
                        isinstance(n.func, gast.Attribute) and n.func.attr in _FACTORIES
                        and self.params & set(_names(n, gast.Load))))
                    for n in gast.walk(node)):
                # per-example data read inside is not a data input of the run, and a
                # callee picked by an index the comprehension binds cannot be hoisted
                return False
        return True

    # -------------------- runs --------------------
    def visit_FunctionDef(self, node):
        saved = (self.params, self.self_name, self.loads, self.loops, self.aliases)
        self.loads, self.loops = {}, 0
        for name in _names(node, gast.Load):
            self.loads[name] = self.loads.get(name, 0) + 1
        args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
        names = [a.id for a in args]
        for extra in (node.args.vararg, node.args.kwarg):
            if extra is not None:
                names.append(extra.id)
        # the receiver of a method, whatever its name (`def enc(m, t)`): its attribute
        # reads are the model's, its methods' calls the model's own
        receiver = getattr(self.ctx, "receiver", None) if self.depth == 0 else None
        self.self_name = names[0] if names and names[0] in ("self", receiver) else None
        self.aliases = _callee_aliases(node, self.self_name, self.namespace, self.methods)
        self.depth += 1
        self.params = set(names) - {self.self_name}
        self.can_yield.append(True)
        try:
            node.body = self.visit_block(node.body)
            for field in ("decorator_list",):
                setattr(node, field, [self.visit(d) for d in getattr(node, field)])
        finally:
            self.can_yield.pop()
            self.depth -= 1
            self.params, self.self_name, self.loads, self.loops, self.aliases = saved
        return node

    def _visit_loop(self, node):
        self.loops += 1
        try:
            return self.generic_visit(node)
        finally:
            self.loops -= 1

    visit_For = _visit_loop

    def visit_While(self, node):
        replacement = self._while_segment(node) if self.can_yield[-1] else None
        if replacement is None:
            return self._visit_loop(node)
        return replacement

    def _while_segment(self, node):
        """`while test: body` of straight-line tensor code as one masked batched loop.

            while x.norm() > 1:             def dn__test_1(x, dn__attr_1): return ...
                x = self.cell(x)      ->    def dn__body_1(x, dn__attr_1): ...; return (x,)
                                            dn__loop_1 = dn__.while_segment(
                                                dn__test_1, dn__body_1, (x,), (self.cell,))
                                            if dn__loop_1 is None:
                                                <the original loop>
                                            else:
                                                x, = dn__loop_1

        The state is the names the body assigns; each must be read before it is
        assigned (a loop-carried value), so it exists before the loop.
        """
        if node.orelse or not node.body or \
                not self._expression_ok(node.test, compare=gast.cmpop):
            return None
        if not all(isinstance(s, (gast.Assign, gast.AugAssign)) and self._qualifies(s)
                   for s in node.body):
            return None
        if any(isinstance(n, _COMPREHENSIONS) or isinstance(n, gast.Call) and (
                isinstance(n.func, gast.Subscript)  # its index may change per iteration
                or isinstance(n.func, gast.Attribute) and n.func.attr in _FACTORIES)
               for s in [node.test] + node.body for n in gast.walk(s)):
            return None
        read_first = set(_names(node.test, gast.Load))  # read before assigned
        written = []
        for stmt in node.body:
            value = stmt if isinstance(stmt, gast.AugAssign) else stmt.value
            reads = set(_names(value, gast.Load))
            if isinstance(stmt, gast.AugAssign):
                reads.add(stmt.target.id)
            read_first |= reads - set(written)
            targets = stmt.targets if isinstance(stmt, gast.Assign) else [stmt.target]
            written += [n for t in targets for n in _names(t, gast.Store) if n not in written]
        carried = [n for n in written if n in read_first]
        in_loop = {}
        for n in _names(node, gast.Load):
            in_loop[n] = in_loop.get(n, 0) + 1
        if any(self.loads.get(n, 0) > in_loop.get(n, 0) for n in written if n not in carried):
            return None  # a temporary of the body is read after the loop
        if not carried:
            return None
        test_body = [gast.Return(value=_clone(node.test))]
        body = [_clone(s) for s in node.body]
        attr_names, attr_exprs = self._hoist_self_attributes(test_body + body, set(written))
        reads = []
        for stmt in test_body + body:
            for name in _names(stmt, gast.Load):
                if name not in reads and name not in carried and name not in attr_names \
                        and not self._is_global(name):
                    reads.append(name)
        params = carried + reads + attr_names
        test_name = self.ctx.namer.new_symbol("test")
        body_name = self.ctx.namer.new_symbol("body")
        result = self.ctx.namer.new_symbol("loop")
        test_fn = templates.replace(f"def {test_name}({', '.join(params)}):\n    pass")[0]
        test_fn.body = [_to_seg_calls(s) for s in test_body]
        body_fn = templates.replace(f"def {body_name}({', '.join(params)}):\n"
                                    f"    return ({', '.join(carried)},)")[0]
        body_fn.body = [_to_seg_calls(s) for s in body] + body_fn.body
        test_fn.dn_skip = body_fn.dn_skip = True
        consts = "".join(n + ", " for n in reads) + "".join(
            f"dn__attr_expr_{k}, " for k in range(len(attr_exprs)))
        exprs = {f"dn__attr_expr_{k}": e for k, e in enumerate(attr_exprs)}
        call = templates.replace(
            f"{result} = {RUNTIME}.while_segment({test_name}, {body_name}, "
            f"({''.join(n + ', ' for n in carried)}), ({consts}))\n"
            f"if {result} is None:\n    pass\nelse:\n"
            f"    {', '.join(carried)}, = {result}", **exprs)
        self._visit_loop(node)
        call[1].body = [node]
        for stmt in [test_fn, body_fn] + call:
            gast.copy_location(stmt, node)
        return [test_fn, body_fn] + call

    def visit_block(self, stmts):
        stmts = [self.visit(s) for s in stmts]
        out, run = [], []

        def close():
            # statements with no op at either end (`prev = w`, `return h, c`) stay
            # outside: inside, the Python values they move would be inputs keyed by value
            first, last = 0, len(run)
            while first < last and _count_ops(run[first:first + 1]) == 0:
                first += 1
            while last > first and _count_ops(run[last - 1:last]) == 0:
                last -= 1
            if _count_ops(run) >= MIN_OPS and self.can_yield[-1]:
                out.extend(run[:first] + self._segment(run[first:last]) + run[last:])
            else:
                out.extend(run)
            run.clear()

        for stmt in stmts:
            if isinstance(stmt, list):
                close()
                out.extend(stmt)
                continue
            if self._qualifies(stmt):
                run.append(stmt)
                if isinstance(stmt, gast.Return):
                    close()
            else:
                close()
                out.append(stmt)
        close()
        return out

    def _segment(self, run):
        """The statements replacing `run`: the segment function and its call site."""
        written, read = [], []
        for stmt in run:
            value = stmt if isinstance(stmt, gast.AugAssign) else stmt.value
            for name in _free_loads(value):
                if name not in written and name not in read and not self._is_global(name):
                    read.append(name)
            if isinstance(stmt, gast.AugAssign) and stmt.target.id not in written:
                if stmt.target.id not in read:
                    read.append(stmt.target.id)
            targets = stmt.targets if isinstance(stmt, gast.Assign) else (
                [stmt.target] if isinstance(stmt, gast.AugAssign) else [])
            for t in targets:
                for name in _names(t, gast.Store):
                    if name not in written:
                        written.append(name)
        read_first = set(read)  # read before the run assigns them
        returns = isinstance(run[-1], gast.Return)
        fn_name = self.ctx.namer.new_symbol("seg")
        result = self.ctx.namer.new_symbol("returned")
        body = [_clone(s) for s in run]
        data_names, data_exprs = [], []
        assigned = set()  # names the run assigns before the current statement
        for stmt in body:  # per-example data of factory calls become data inputs
            for call in _calls_outside_comprehensions(stmt):
                if not (isinstance(call.func, gast.Attribute) and self._torch_factory(call)
                        and self._data_argument(call) is not None
                        and not assigned & set(_names(call.args[0], gast.Load))):
                    continue
                name = self.ctx.namer.new_symbol("data")
                data_names.append(name)
                data_exprs.append(call.args[0])
                call.args[0] = gast.Name(id=name, ctx=gast.Load(), annotation=None,
                                         type_comment=None)
            targets = stmt.targets if isinstance(stmt, gast.Assign) else (
                [stmt.target] if isinstance(stmt, gast.AugAssign) else [])
            assigned.update(n for t in targets for n in _names(t, gast.Store))
        callees = _hoist_indexed_callees(body, self.ctx.namer)
        if any(n in written for _, e in callees for n in _names(e, gast.Load)):
            return run  # the callee's index is computed in the run itself
        callees += _hoist_lengths(body, self.ctx.namer, set(written))
        attr_names, attr_exprs = self._hoist_self_attributes(body, set(written))
        attr_names += [n for n, _ in callees]
        attr_exprs += [e for _, e in callees]
        still_read = {n for stmt in body for n in _free_loads(stmt)}
        read = [n for n in read if n in still_read] + attr_names
        body = [_to_seg_calls(s) for s in body]
        if returns:
            body[-1] = gast.Assign(targets=[gast.Name(id=result, ctx=gast.Store(),
                                                      annotation=None, type_comment=None)],
                                   value=body[-1].value, type_comment=None)
        if returns:  # nothing after a return reads the run's other names
            written, out_names = [], [result]
        else:  # names read again: elsewhere in the function, or in the run by a loop
            in_run = {}
            for stmt in run:
                for name in _names(stmt, gast.Load):
                    in_run[name] = in_run.get(name, 0) + 1
            # In a loop, the next iteration's run reads a name again only when it
            # reads it before assigning it (`h`, `total`; not a `target` it makes first).
            written = [n for n in written if self.loads.get(n, 0) > in_run.get(n, 0)
                       or (self.loops and n in read_first)]
            out_names = written
        if not out_names:
            return run
        fn = templates.replace(f"def {fn_name}({', '.join(read + data_names)}):\n"
                               f"    return ({', '.join(out_names)},)")[0]
        fn.body = body + fn.body
        fn.dn_skip = True  # later passes leave the segment's own body alone
        inputs = "".join(n + ", " for n in read[:len(read) - len(attr_names)])
        inputs += "".join(f"dn__attr_expr_{k}, " for k in range(len(attr_exprs)))
        data = "".join(f"dn__data_expr_{k}, " for k in range(len(data_exprs)))
        exprs = {f"dn__data_expr_{k}": e for k, e in enumerate(data_exprs)}
        exprs.update({f"dn__attr_expr_{k}": e for k, e in enumerate(attr_exprs)})
        args = f"{fn_name}, ({inputs})" + (f", ({data})" if data_exprs else "")
        if returns:
            targets = ", ".join(written + [result])
            call = templates.replace(f"{targets}, = {RUNTIME}.segment({args})\n"
                                     f"return {result}", **exprs)
        else:
            call = templates.replace(f"{', '.join(written)}, = {RUNTIME}.segment("
                                     f"{args})[:{len(written)}]", **exprs)
        for stmt in [fn] + call:
            gast.copy_location(stmt, run[0])
        return [fn] + call

    def _hoist_self_attributes(self, body, written=()):
        """`self.a.b` read in the run becomes an input (its value enters the key), so
        a replaced module or a changed `self.scale` is never replayed stale. So do the
        settings read from other objects (`model.temperature` of a parameter `model`,
        `cfg.SCALE` of a global module of the user's), but not what the call does
        with them: not a chain that is called (`model.cell(x)`: the object is an input
        already, or a module function), not a tensor's static facts or views
        (`x.shape`, `x.T`), not names the run assigns (`written`)."""
        chains = {}
        parents = {id(c): p for stmt in body for p in gast.walk(stmt)
                   for c in gast.iter_child_nodes(p)}
        for stmt in body:
            for node in list(gast.walk(stmt)):
                if not (isinstance(node, gast.Attribute) and isinstance(node.ctx, gast.Load)):
                    continue
                parent = parents.get(id(node))
                if isinstance(parent, gast.Attribute):
                    continue  # not the longest chain
                root = node
                while isinstance(root, gast.Attribute):
                    root = root.value
                if not isinstance(root, gast.Name):
                    continue
                if root.id != self.self_name and not self._setting_chain(
                        node, root.id, parent, written):
                    continue
                text = templates.unparse_expression(node) if hasattr(
                    templates, "unparse_expression") else _unparse(node)
                if text not in chains:
                    chains[text] = (self.ctx.namer.new_symbol("attr"), _clone(node))
                name = chains[text][0]
                replacement = gast.Name(id=name, ctx=gast.Load(), annotation=None,
                                        type_comment=None)
                for field, value in gast.iter_fields(parent):
                    if value is node:
                        setattr(parent, field, replacement)
                    elif isinstance(value, list):
                        setattr(parent, field, [replacement if v is node else v for v in value])
        return [n for n, _ in chains.values()], [e for _, e in chains.values()]

    def _setting_chain(self, chain, root, parent, written):
        """Whether `chain` (an attribute chain on the name `root`, inside `parent`)
        reads a setting of an object other than `self`: see `_hoist_self_attributes`."""
        if isinstance(parent, gast.Call) and parent.func is chain:
            return False
        if chain.attr in _TENSOR_FACTS or root in written:
            return False
        if root in self.params:
            return True
        obj = self.namespace.get(root)  # a module of the user's settings (`import cfg`)
        return isinstance(obj, types.ModuleType) and \
            obj.__name__.split(".")[0] not in _LIBRARIES

    def _is_global(self, name):
        """Names the segment reads directly: torch-like modules, builtins."""
        obj = self.namespace.get(name, getattr(builtins, name, None))
        return isinstance(obj, types.ModuleType) or (name not in self.namespace
                                                     and hasattr(builtins, name))


def _calls_outside_comprehensions(node):
    """The calls in `node`, except inside comprehensions (their names are local)."""
    if isinstance(node, _COMPREHENSIONS):
        return []
    calls = [node] if isinstance(node, gast.Call) else []
    return calls + [c for child in gast.iter_child_nodes(node)
                    for c in _calls_outside_comprehensions(child)]


def _free_loads(node):
    """The names `node` reads from the enclosing scope, in order: like `_names(node,
    gast.Load)`, without the names a comprehension binds for itself (`h` in
    `sum(h for h, _ in states)`)."""
    if isinstance(node, _COMPREHENSIONS):
        out, bound = [], set()
        for k, gen in enumerate(node.generators):
            out += [n for n in _free_loads(gen.iter) if k == 0 or n not in bound]
            bound.update(_names(gen.target, gast.Store))
            out += [n for cond in gen.ifs for n in _free_loads(cond) if n not in bound]
        return out + [n for n in _free_loads(node.elt) if n not in bound]
    if isinstance(node, gast.Name):
        return [node.id] if isinstance(node.ctx, gast.Load) else []
    return [n for child in gast.iter_child_nodes(node) for n in _free_loads(child)]


def _hoist_lengths(body, namer, written):
    """Replaces `len(x)` of a plain read the run does not assign (`len(targets)`) with
    a new name; returns `[(name, expression)]`. The length then enters the key as a
    number, while `x` itself (a list of per-example token ids, say) need not be an
    input at all: a list of numbers would make the call unsegmentable."""
    hoisted = {}

    class Lengths(gast.NodeTransformer):
        def visit_ListComp(self, node):
            return node  # names bound inside cannot be read outside

        visit_GeneratorExp = visit_ListComp

        def visit_Call(self, node):
            self.generic_visit(node)
            if not (isinstance(node.func, gast.Name) and node.func.id == "len"
                    and len(node.args) == 1 and not node.keywords
                    and _plain_read(node.args[0])
                    and not written & set(_names(node.args[0], gast.Load))):
                return node
            text = _unparse(node)
            if text not in hoisted:
                hoisted[text] = (namer.new_symbol("len"), _clone(node))
            return gast.Name(id=hoisted[text][0], ctx=gast.Load(), annotation=None,
                             type_comment=None)

    for k, stmt in enumerate(body):
        body[k] = Lengths().visit(stmt)
    return list(hoisted.values())


def _plain_read(node):
    """A name, or attributes and plain indices of one (`tree.children`, `ids[0]`)."""
    while isinstance(node, (gast.Attribute, gast.Subscript)):
        if isinstance(node, gast.Subscript) and not _is_index(node.slice):
            return False
        node = node.value
    return isinstance(node, gast.Name) and not node.id.startswith(RUNTIME)


def _static_count(node):
    """True for an int known without a tensor's value: constants and `len(...)`,
    combined by arithmetic."""
    if isinstance(node, gast.Constant):
        return isinstance(node.value, int)
    if isinstance(node, gast.Call):
        return isinstance(node.func, gast.Name) and node.func.id == "len"
    if isinstance(node, gast.BinOp):
        return _static_count(node.left) and _static_count(node.right)
    if isinstance(node, gast.UnaryOp):
        return _static_count(node.operand)
    return False


def _callee_aliases(function, self_name, namespace, methods=()):
    """Names that `function` assigns once, from a module's attribute (`lin = self.lin`,
    `emb, leaf = self.emb, self.leaf`, `layer = getattr(self, "lin")`) or a torch
    function (`act = torch.tanh`): a call of one may be part of a run, the callee an
    input of the segment (its identity in the key, as for `self.layers[k]`)."""
    stores = {}
    for n in gast.walk(function):
        if isinstance(n, gast.Name) and isinstance(n.ctx, gast.Store):
            stores[n.id] = stores.get(n.id, 0) + 1
    pairs = []
    for stmt in gast.walk(function):
        if not (isinstance(stmt, gast.Assign) and len(stmt.targets) == 1):
            continue
        target, value = stmt.targets[0], stmt.value
        if isinstance(target, gast.Name):
            pairs.append((target, value))
        elif isinstance(target, gast.Tuple) and isinstance(value, gast.Tuple) and \
                len(target.elts) == len(value.elts):
            pairs += list(zip(target.elts, value.elts))
    return {t.id for t, v in pairs if isinstance(t, gast.Name) and stores.get(t.id) == 1
            and _callee_source(v, self_name, namespace, methods)}


def _callee_source(value, self_name, namespace, methods=()):
    """`self.a.b`, `getattr(self, "a")` or `torch.x` / `F.x`; not the class's own
    methods (`enc = self.encode`: user code, which a segment would run op by op)."""
    if isinstance(value, gast.Call):
        return (isinstance(value.func, gast.Name) and value.func.id == "getattr"
                and namespace.get("getattr", getattr) is getattr and len(value.args) == 2
                and isinstance(value.args[0], gast.Name) and value.args[0].id == self_name
                and isinstance(value.args[1], gast.Constant)
                and isinstance(value.args[1].value, str) and value.args[1].value not in methods)
    if not isinstance(value, gast.Attribute):
        return False
    if isinstance(value.value, gast.Name) and value.value.id == self_name and \
            value.attr in methods:
        return False
    root = value
    while isinstance(root, gast.Attribute):
        root = root.value
    if not isinstance(root, gast.Name):
        return False
    if self_name is not None and root.id == self_name:
        return True
    obj = namespace.get(root.id)
    return isinstance(obj, types.ModuleType) and obj.__name__.startswith("torch")


def _name_attribute(node):
    """`a.b.c`: an attribute chain read from a name (`self.kind`)."""
    if not isinstance(node, gast.Attribute):
        return False
    while isinstance(node, gast.Attribute):
        node = node.value
    return isinstance(node, gast.Name) and not node.id.startswith(RUNTIME)


def _indexed_callee(node):
    """True for a callee picked by index from a name's attributes: `self.layers[k]`,
    `heads[name]`, `self.blocks[i + 1].attn`, `self.cells[self.kind]` (plain indices,
    attributes of a name, or string keys)."""
    while isinstance(node, (gast.Subscript, gast.Attribute)):
        if isinstance(node, gast.Subscript) and not (
                _is_index(node.slice) or _name_attribute(node.slice)
                or isinstance(node.slice, gast.Constant) and isinstance(node.slice.value, str)):
            return False
        node = node.value
    return isinstance(node, gast.Name) and not node.id.startswith(RUNTIME)


def _hoist_indexed_callees(body, namer):
    """Replaces the callees picked by index in `body` (`self.layers[k](x)`) with new
    names; returns `[(name, expression)]`. The segment receives the picked module as
    an input, so its identity enters the key: a replaced `self.layers[k]` is never
    replayed stale, and the template does not depend on the container's contents."""
    hoisted = {}  # expression text -> (name, expression)
    for stmt in body:
        for call in [n for n in gast.walk(stmt) if isinstance(n, gast.Call)]:
            if not isinstance(call.func, gast.Subscript):
                continue
            text = _unparse(call.func)
            if text not in hoisted:
                hoisted[text] = (namer.new_symbol("callee"), _clone(call.func))
            call.func = gast.Name(id=hoisted[text][0], ctx=gast.Load(), annotation=None,
                                  type_comment=None)
    return list(hoisted.values())


def _is_torch(obj):
    module = getattr(obj, "__module__", None) or ""
    if isinstance(obj, types.ModuleType):
        return obj.__name__.startswith("torch")
    return module.startswith("torch") and not isinstance(obj, type)


def _is_index(node):
    """A plain index: names and constants combined by arithmetic (`t`, `t + 1`)."""
    if isinstance(node, (gast.Name, gast.Constant)):
        return True
    if isinstance(node, gast.BinOp):
        return _is_index(node.left) and _is_index(node.right)
    if isinstance(node, gast.UnaryOp) and isinstance(node.op, gast.USub):
        return _is_index(node.operand)
    return False


def _unparse(node):
    import ast

    return ast.unparse(gast.gast_to_ast(node))


def _count_ops(run):
    return sum(isinstance(n, _OPS) for stmt in run for n in gast.walk(stmt))


def _clone(node):
    import copy

    return copy.deepcopy(node)


class _SegCalls(gast.NodeTransformer):
    def visit_Call(self, node):
        self.generic_visit(node)
        return runtime_call("seg_call", [node.func] + node.args, node.keywords)


def _to_seg_calls(stmt):
    return _SegCalls().visit(stmt)


def transform(node, ctx):
    return SegmentTransformer(ctx).visit(node)
