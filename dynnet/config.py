"""Settings read once from the environment; change them at run time with `set`.

DYNNET_SCHEDULE   "depth" (default) or "agenda": how nodes are grouped (scheduler.py).
DYNNET_EAGER      "1" runs every dynnet.function unconverted, example by example.
DYNNET_WORKERS    "1" (default) or "0": the worker processes `f.batches` and `dynnet train`
                  use unless told otherwise (workers.py); "0" turns them off everywhere.
"""

import os

schedule = os.environ.get("DYNNET_SCHEDULE", "depth")
eager = os.environ.get("DYNNET_EAGER", "0") == "1"
workers = 0 if os.environ.get("DYNNET_WORKERS", "1") == "0" else 1


def set(**settings):
    """Sets module-level settings by name, e.g. `dynnet.config.set(schedule="agenda")`."""
    g = globals()
    for name, value in settings.items():
        if name not in ("schedule", "eager", "workers"):
            raise ValueError(f"unknown dynnet setting {name!r}")
        g[name] = value
