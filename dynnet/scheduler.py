"""Scheduling: in which groups and order the pending nodes of a trace run.

A strategy takes the pending nodes (in recording order) and yields
`(signature, nodes)` groups; every group's inputs are executed before it is
yielded, because the caller executes each group before asking for the next.

- "depth": nodes with the same signature and the same depth (1 + the depth of
  their deepest pending input) form a group; groups run by increasing depth.
- "agenda" (DyNet's strategy 1): among the signatures with ready nodes, run the
  one whose ready nodes have the lowest average depth, then update readiness.
"""


def depth_schedule(pending):
    # 1) bucket by depth, then by signature, keeping recording order within buckets
    levels = []
    for node in pending:
        d = node.depth
        while len(levels) < d:
            levels.append({})
        level = levels[d - 1]
        nodes = level.get(node.sig)
        if nodes is None:
            level[node.sig] = [node]
        else:
            nodes.append(node)
    # 2) run the levels in order
    for level in levels:
        yield from level.items()


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
