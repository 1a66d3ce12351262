"""Blocks: modules of unknown structure, run on the stacked batch under vmap."""

from dynnet.backends.rules import vmap_rule


def block_rule(module):
    """The rule for a user module: its forward under torch.func.vmap."""
    return vmap_rule
