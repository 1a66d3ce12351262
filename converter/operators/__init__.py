"""The runtime helpers converted code calls, seen there as `dn__.<name>`."""

from dynnet.converter.operators.attributes import module_attr
from dynnet.converter.operators.call import LocalFunction, call, call_now, local
from dynnet.converter.operators.control_flow import (
    Undefined,
    all_true,
    augmented_assign,
    if_exp,
    if_stmt,
    static_test,
    test,
    test_now,
    while_stmt,
)
from dynnet.converter.operators.exceptions import assert_stmt, assert_test
from dynnet.converter.operators.logical import and_, compare_chain, not_, or_
from dynnet.converter.operators.py_builtins import (
    contains,
    contains_now,
    value_of,
    value_of_now,
)
from dynnet.runtime import Suspend, wait
from dynnet.segments import seg_call, segment, while_segment

iterate = iter  # a generator expression made a list, read where an iterator is expected

__all__ = ["LocalFunction", "Suspend", "Undefined", "all_true", "and_", "assert_stmt",
           "augmented_assign", "assert_test", "call", "call_now", "compare_chain", "contains",
           "contains_now", "if_exp",
           "if_stmt", "iterate", "local",
           "module_attr", "not_", "or_", "seg_call", "segment", "static_test", "test",
           "test_now", "value_of", "value_of_now", "wait", "while_segment", "while_stmt"]
