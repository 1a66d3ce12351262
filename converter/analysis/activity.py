"""Which names a block of statements assigns, and which statements it holds.

The block-level control-flow pass turns branches and loop bodies into functions;
the variables they assign are their *state* (read back and selected per row).
This module finds them: names bound by assignment, augmented assignment, `for`
targets, `with ... as`, `except ... as`, walrus, imports and nested `def`/`class`
names, in the block's own scope (not inside nested functions, lambdas or
comprehensions, whose names are their own).
"""

import gast

_SCOPES = (gast.FunctionDef, gast.AsyncFunctionDef, gast.ClassDef, gast.Lambda,
           gast.ListComp, gast.SetComp, gast.DictComp, gast.GeneratorExp)


def walk_scope(node):
    """Yields `node` and its descendants, not entering nested scopes (a nested
    `def` or `class` is yielded, for its name, but not entered)."""
    if isinstance(node, _SCOPES):
        return iter((node,) if isinstance(node, (gast.FunctionDef, gast.ClassDef)) else ())
    return _walk(node)


def _walk(node):
    stack = [node]
    while stack:
        n = stack.pop()
        yield n
        for child in gast.iter_child_nodes(n):
            if isinstance(child, _SCOPES):
                if isinstance(child, (gast.FunctionDef, gast.ClassDef)):
                    yield child  # its name is bound here; its body is its own
                continue
            stack.append(child)


def assigned_names(nodes):
    """Names bound by `nodes` (statements or expressions) in their own scope, in order."""
    names = {}
    for node in nodes:
        for n in walk_scope(node):
            if isinstance(n, gast.Name) and isinstance(n.ctx, gast.Store):
                names[n.id] = None
            elif isinstance(n, (gast.FunctionDef, gast.ClassDef)):
                names[n.name] = None
            elif isinstance(n, gast.alias):
                names[(n.asname or n.name).split(".")[0]] = None
    return list(names)


def declared(nodes, kind):
    """Names declared `global` (kind=gast.Global) or `nonlocal` in `nodes`' scope."""
    out = set()
    for node in nodes:
        for n in walk_scope(node):
            if isinstance(n, kind):
                out.update(n.names)
    return out


def contains(nodes, kinds):
    """True if some statement of a type in `kinds` occurs in `nodes`' own scope."""
    return any(isinstance(n, kinds) for node in nodes for n in walk_scope(node))


def loop_exits(nodes):
    """True if `nodes` hold a `break` or `continue` that leaves them (not one that
    belongs to a loop inside them)."""
    stack = list(nodes)
    while stack:
        n = stack.pop()
        if isinstance(n, (gast.Break, gast.Continue)):
            return True
        if isinstance(n, (gast.For, gast.While)):
            stack.extend(n.orelse)  # a loop's else belongs to the enclosing loop
            continue
        stack.extend(c for c in gast.iter_child_nodes(n) if not isinstance(c, _SCOPES))
    return False
