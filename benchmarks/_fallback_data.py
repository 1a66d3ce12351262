"""A minimal tree and sentence reader, used only when ``dynnet.data`` cannot be imported.

``dynnet.data`` is the project's reader; this stand-in exists so that the baselines
still run (and the dynnet rows say "unavailable") while the dynnet package itself fails
to import. It reads well-formed input only and offers the ``Tree`` members the
benchmarks use: ``label``, ``children``, ``word``, ``word_id``, ``is_leaf``, ``nodes``,
``leaves`` and ``size``.
"""

import re

_TOKEN = re.compile(r"\(|\)|[^\s()]+")


class Tree:
    __slots__ = ("label", "children", "word", "word_id")

    def __init__(self, label, children=None, word=None):
        self.label = label
        self.children = [] if children is None else children
        self.word = word
        self.word_id = None

    @property
    def is_leaf(self):
        return not self.children

    def nodes(self):
        """Every node, children before their parent."""
        order, stack = [], [self]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children)
        return reversed(order)

    def leaves(self):
        return [node.word for node in self.nodes() if node.is_leaf]

    def size(self):
        return sum(1 for _ in self.nodes())

    @classmethod
    def parse(cls, text):
        stack, root = [], None
        tokens = _TOKEN.findall(text)
        for i, token in enumerate(tokens):
            if token == "(":
                stack.append([int(tokens[i + 1]), []])
            elif token == ")":
                label, items = stack.pop()
                node = cls(label, word=items[0]) if isinstance(items[0], str) else cls(
                    label, items)
                if stack:
                    stack[-1][1].append(node)
                else:
                    root = node
            elif tokens[i - 1] != "(":
                stack[-1][1].append(token)
        return root


def read_trees(path):
    with open(path, encoding="utf-8") as f:
        return [Tree.parse(line) for line in f if line.strip()]


def read_sentences(path):
    with open(path, encoding="utf-8") as f:
        return [tokens for tokens in (line.split() for line in f) if tokens]
