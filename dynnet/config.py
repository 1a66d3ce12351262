"""Settings read once from the environment; change them at run time with `set`.

DYNNET_SCHEDULE   "depth" (default) or "agenda": how nodes are grouped (scheduler.py).
DYNNET_EAGER      "1" runs every dynnet.function unconverted, example by example.
DYNNET_WORKERS    how many worker processes `f.batches` and `dynnet train` use unless told
                  otherwise (workers.py); "0" turns them off everywhere. Default: one per
                  four cores this process may run on, at least 1 and at most 3
                  (`default_workers`).
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


def default_workers():
    """Worker processes when nothing says how many: one per four cores, 1 to 3.

    A worker traces a batch in about the time this process takes to compute it on
    the CPU, so one is enough there (and on 2 cores a second only competes). On a
    GPU host this process computes faster than one worker traces: on an H100 with 16
    cores, whole SST epochs trained at 0.54x hand-batched with one worker and 0.98x
    with three (benchmarks/RESULTS.md). More than three was not measured.
    """
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux: workers are not used there anyway
        cores = os.cpu_count() or 1
    return max(1, min(3, cores // 4))


def __getattr__(name):
    # DYNNET_WORKERS is read when first used, so that a bad value is an error of the
    # command that needs it, not of every `import dynnet`
    if name == "workers":
        value = _count("DYNNET_WORKERS", str(default_workers()))
        globals()["workers"] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def set(**settings):
    """Sets module-level settings by name, e.g. `dynnet.config.set(schedule="agenda")`."""
    g = globals()
    for name, value in settings.items():
        if name not in ("schedule", "eager", "workers"):
            raise ValueError(f"unknown dynnet setting {name!r}")
        if name == "workers" and (value.__class__ is not int or value < 0):
            raise ValueError(f"workers: expected a count of processes (0, 1, 2, ...), not "
                             f"{value!r}")
        if name == "eager" and value.__class__ is not bool:
            raise ValueError(f"eager: expected True or False, not {value!r}")
        if name == "schedule":
            from dynnet.scheduler import get_strategy

            get_strategy(value)  # an unknown name is an error here, not at the next batch
        g[name] = value
