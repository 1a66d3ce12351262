"""Execution of batched graphs on PyTorch (CPU and CUDA).

`execute_group(sig, nodes)` runs one group of same-signature nodes as one batched
call; `rule_for(sig)` picks the batching rule of a signature from the registry.
"""

from dynnet.backends import dims, elementwise, modules, nn_ops, shape_ops  # noqa: F401  (rules)
from dynnet.backends.executor import GroupResult, execute_group
from dynnet.backends.rules import batching_rules, def_module_rule, def_rule, rule_for

__all__ = ["GroupResult", "batching_rules", "def_module_rule", "def_rule", "execute_group",
           "rule_for"]
