"""The runtime helpers converted code calls, seen there as `dn__.<name>`."""

from dynnet.converter.operators.call import LocalFunction, call, call_now, local
from dynnet.runtime import Suspend

__all__ = ["LocalFunction", "Suspend", "call", "call_now", "local"]
