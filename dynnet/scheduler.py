"""Scheduling: in which groups and order the pending nodes of a trace run.

A strategy takes the pending nodes (in recording order) and yields
`(signature, nodes)` groups in an order where every group's pending inputs belong
to earlier groups. The whole order is taken before the round executes (the
executor plans its arenas from it).

- "depth": nodes with the same signature and the same depth (1 + the depth of
  their deepest pending input) form a group; groups run by increasing depth. A
  signature spread over several depths moves its nodes as late as their users
  allow when that gathers them into fewer groups (see `_latest_depths`), and the
  groups of one level that differ only in a Python number join
  (backends/numbers.py).
- "agenda" (DyNet's strategy 1): among the signatures with ready nodes, run the
  one whose ready nodes have the lowest average depth, then update readiness.
"""

from dynnet.backends import numbers


def depth_schedule(pending):
    levels, examples = _levels(pending)
    spread = _spread_signatures(levels, examples)
    if spread:
        late = _latest_depths(levels, spread)
        if late:
            _move(levels, late)
    for level in levels:
        yield from numbers.merge(level).items()


def _family(sig):
    """Signatures that can share a group: `sig` alone, or every signature of the same
    op that differs from it only in a Python number (see backends/numbers.py)."""
    key = numbers.relaxed_key(sig)
    return sig if key is None else key


def _levels(pending):
    """Per depth, signature -> nodes (in recording order); and how many examples
    recorded them."""
    levels = []
    examples = set()
    for node in pending:
        examples.add(node.instance)
        d = node.depth
        while len(levels) < d:
            levels.append({})
        level = levels[d - 1]
        nodes = level.get(node.sig)
        if nodes is None:
            level[node.sig] = [node]
        else:
            nodes.append(node)
    return levels, len(examples)


def _spread_signatures(levels, examples):
    """Signatures whose nodes sit at several depths (each depth is one more group), in
    groups of a few nodes or no more nodes in all than `examples`: what a model does
    once per example (its head, its loss) rather than once per step of its recursion.

    Each group costs its launches whatever its size: on an H100 the head and loss of
    256 SST trees ran in 21 groups, one per tree height, and their backward took as
    long as the cells'. The rule of a few nodes alone missed them (12 a group)."""
    depths, sizes, members = {}, {}, {}
    for level in levels:
        seen = set()
        for sig, nodes in level.items():
            family = _family(sig)
            members.setdefault(family, set()).add(sig)
            if family not in seen:
                depths[family] = depths.get(family, 0) + 1
                seen.add(family)
            sizes[family] = sizes.get(family, 0) + len(nodes)
    return {sig for family, n in depths.items()
            if n > 1 and (sizes[family] <= _SMALL * n or sizes[family] <= examples)
            for sig in members[family]}


_SMALL = 8  # average group size under which regrouping is worth a pass over the round


def _latest_depths(levels, movable):
    """`{signature: {node: depth}}` for the signatures worth running as late as possible.

    A node can run as late as one level before its earliest user (the last level
    when nothing in this round uses it). Per family of `movable` (a signature, or
    signatures differing only in a Python number), the latest depths are kept when
    they fall in fewer distinct depths, hence fewer groups, than the earliest ones: a
    model's head applied to the roots of trees of different heights then runs once,
    not once per height, and so does a loss divided by each sentence's length. The others keep their
    earliest depth, and the latest depths are recomputed with them fixed, until
    the choice is stable (every user still runs after its inputs).

    Only nodes that can read a movable node's output (one of their input avals is
    one of its output avals) are visited, from the last level down, so that every
    user is seen before its inputs.
    """
    top = len(levels)
    while movable:
        outputs = {aval for sig in movable for aval in sig.out_avals}
        late = {}
        for level in reversed(levels):
            for sig, nodes in level.items():
                if not any(a in outputs for a in sig.in_avals):
                    continue
                moves = sig in movable
                for node in nodes:
                    d = (late.get(node, top) if moves else node.depth) - 1
                    for t in node.inputs:
                        producer = t.node
                        if producer.sig in movable and producer.depth:  # pending, movable
                            current = late.get(producer)
                            if current is None or d < current:
                                late[producer] = d
        families = {}
        for sig in movable:
            families.setdefault(_family(sig), []).append(sig)
        chosen = {}
        for sigs in families.values():
            depths = {sig: {n: late.get(n, top) for level in levels for n in level.get(sig, ())}
                      for sig in sigs}
            late_depths = {d for per_sig in depths.values() for d in per_sig.values()}
            early_depths = {n.depth for per_sig in depths.values() for n in per_sig}
            if len(late_depths) < len(early_depths):
                chosen.update(depths)
        if chosen.keys() == movable:
            return chosen
        movable = set(chosen)
    return None


def _move(levels, late):
    """Moves the nodes of each signature of `late` to their new depths."""
    for level in levels:
        for sig in late:
            level.pop(sig, None)
    for sig, depths in late.items():
        for node, d in depths.items():  # in recording order within each old level
            levels[d - 1].setdefault(sig, []).append(node)


def agenda_schedule(pending):
    # 1) count each node's pending inputs and remember who uses whom
    waiting, users, ready = {}, {}, {}
    for node in pending:
        count = 0
        for t in node.inputs:
            producer = t.node
            if producer.group is None:
                count += 1
                users.setdefault(producer, []).append(node)
        if count:
            waiting[node] = count
        else:
            ready.setdefault(node.sig, []).append(node)
    # 2) repeatedly run the ready signature of lowest average depth
    while ready:
        sig = min(ready, key=lambda s: sum(n.depth for n in ready[s]) / len(ready[s]))
        nodes = ready.pop(sig)
        yield sig, nodes
        # 3) the group ran: release its users
        for node in nodes:
            for user in users.pop(node, ()):
                left = waiting[user] - 1
                if left:
                    waiting[user] = left
                else:
                    del waiting[user]
                    ready.setdefault(user.sig, []).append(user)
    if waiting:
        raise RuntimeError(f"scheduler: {len(waiting)} nodes never became ready")


STRATEGIES = {"depth": depth_schedule, "agenda": agenda_schedule}


def get_strategy(name):
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown schedule {name!r}; choose one of {sorted(STRATEGIES)}") \
            from None
