"""Hygienic names for generated code: prefixed `dn__` and unique per function."""

import gast

PREFIX = "dn__"


class Namer:
    """Hands out names that do not clash with any name used in the function."""

    def __init__(self, node):
        self.used = {n.id for n in gast.walk(node) if isinstance(n, gast.Name)}
        self.used |= {n.name for n in gast.walk(node)
                      if isinstance(n, (gast.FunctionDef, gast.ClassDef))}
        self.counts = {}

    def new_symbol(self, base):
        k = self.counts.get(base, 0)
        while True:
            k += 1
            name = f"{PREFIX}{base}_{k}"
            if name not in self.used:
                self.counts[base] = k
                self.used.add(name)
                return name
