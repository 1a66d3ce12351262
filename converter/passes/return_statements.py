"""Returns inside branches, for block conversion (a forward run on a batch).

A branch that selects per row cannot `return`: both branches run. So returns
inside `if` statements are moved to the end of the function:

    if c:                          if c:
        return a                       dn__retval_1 = a
    b = f(x)             ->        else:
    return b                           b = f(x)
                                       dn__retval_1 = b
                                   return dn__retval_1

The statements after an `if` whose branch returns move into the branches that do
not return (copied when neither branch always returns). A function that can fall
off its end returns None there explicitly. Functions with a `return` inside a
loop, `with` or `try` are left as they are; their branches then cannot select
per row (the control-flow pass keeps them as Python `if`s).
"""

import copy

import gast

from dynnet.converter import templates
from dynnet.converter.analysis.activity import walk_scope


def _returns_only_in_ifs(stmts):
    """True if every `return` in `stmts` sits in `if` branches (or at top level)."""
    for stmt in stmts:
        if isinstance(stmt, gast.If):
            if not (_returns_only_in_ifs(stmt.body) and _returns_only_in_ifs(stmt.orelse)):
                return False
        elif not isinstance(stmt, gast.Return) and any(
                isinstance(n, gast.Return) for n in walk_scope(stmt)):
            return False
    return True


def _has_return(stmt):
    return any(isinstance(n, gast.Return) for n in walk_scope(stmt))


def _always_returns(stmts):
    if not stmts:
        return False
    last = stmts[-1]
    if isinstance(last, gast.Return):
        return True
    return isinstance(last, gast.If) and _always_returns(last.body) and \
        _always_returns(last.orelse)


def _canonical(stmts):
    """`stmts` with every return at the end of a path (statements after a returning
    `if` moved into its other paths; dead code after a return dropped)."""
    out = []
    for k, stmt in enumerate(stmts):
        out.append(stmt)
        if isinstance(stmt, gast.Return):
            return out
        if isinstance(stmt, gast.If) and _has_return(stmt):
            rest = stmts[k + 1:]
            stmt.body = _canonical(stmt.body + copy.deepcopy(rest))
            stmt.orelse = _canonical(stmt.orelse + rest)
            return out
    return out


def _assign_returns(stmts, name):
    for k, stmt in enumerate(stmts):
        if isinstance(stmt, gast.Return):
            value = stmt.value if stmt.value is not None else gast.Constant(value=None,
                                                                            kind=None)
            stmts[k] = templates.replace("name = value", name=name, value=value)[0]
        elif isinstance(stmt, gast.If):
            _assign_returns(stmt.body, name)
            _assign_returns(stmt.orelse, name)


def transform(node, ctx):
    body = node.body
    nested = any(isinstance(s, gast.If) and _has_return(s) for s in body)
    if not nested or not _returns_only_in_ifs(body):
        return node
    if not _always_returns(body):
        body = body + [gast.Return(value=None)]
    body = _canonical(body)
    name = ctx.namer.new_symbol("retval")
    _assign_returns(body, name)
    node.body = body + templates.replace("return name", name=name)
    return node
