"""Exceptions that dynnet raises on purpose.

Every message is a sentence that names what went wrong and where: the user's
file:line and, for batched execution, the example index.
"""


class DynnetError(Exception):
    """Base class of dynnet's own errors."""


class ConversionError(DynnetError):
    """A construct in user code that the converter cannot convert."""


class BatchingError(DynnetError):
    """An op that cannot be batched, or whose inputs disagree across examples."""


class ConcretizationError(BatchingError):
    """A lazy value was needed as a Python value where dynnet cannot pause."""


def where(origin):
    """Formats an origin ``(filename, lineno)`` as ``file:line`` (or '<unknown>')."""
    if origin is None:
        return "<unknown location>"
    return f"{origin[0]}:{origin[1]}"
