"""Settings read once from the environment; change them at run time with `set`.

DYNNET_SCHEDULE   "depth" (default) or "agenda": how nodes are grouped (scheduler.py).
DYNNET_EAGER      "1" runs every dynnet.function unconverted, example by example.
DYNNET_WORKERS    how many worker processes `f.batches` and `dynnet train` use unless told
                  otherwise (workers.py): "1" (default), "0" turns them off everywhere.
"""

import os

from dynnet.errors import DynnetError

schedule = os.environ.get("DYNNET_SCHEDULE", "depth")
eager = os.environ.get("DYNNET_EAGER", "0") == "1"


def _count(name, default):
    text = os.environ.get(name, "").strip() or default  # unset or empty: the default
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise ConfigError(f"{name}={text!r}: expected a count (0, 1, 2, ...)")
    return value


class ConfigError(DynnetError, ValueError):
    """An environment variable with a value dynnet cannot use."""


def __getattr__(name):
    # DYNNET_WORKERS is read when first used, so that a bad value is an error of the
    # command that needs it, not of every `import dynnet`
    if name == "workers":
        value = _count("DYNNET_WORKERS", "1")
        globals()["workers"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def set(**settings):
    """Sets module-level settings by name, e.g. `dynnet.config.set(schedule="agenda")`."""
    g = globals()
    for name, value in settings.items():
        if name not in ("schedule", "eager", "workers"):
            raise ValueError(f"unknown dynnet setting {name!r}")
        g[name] = value
