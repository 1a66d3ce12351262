"""Trees, sentences and batching for dynnet's data sets.

``Tree`` is the per-example structure that tree models recurse over. ``Tree.parse``
and ``read_trees`` read the PTB bracket form used by the Stanford Sentiment Treebank,
``(label child child)`` or ``(label word)``, without recursion, so tree depth is not
limited by Python's recursion limit. ``BucketBatchSampler`` groups examples of similar
size for ``torch.utils.data.DataLoader``.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import re
from pathlib import Path

import torch

from dynnet.errors import DynnetError
from dynnet.vocab import TextEncodingError, not_utf8_message, utf8_position

__all__ = [
    "BucketBatchSampler",
    "Tree",
    "TreeParseError",
    "binary_label",
    "collate_list",
    "data_root",
    "fine_label",
    "node_columns",
    "node_position",
    "ptb_split",
    "read_sentences",
    "read_sentences_with_lines",
    "read_trees",
    "read_trees_with_lines",
    "sst_split",
]

SST_SPLITS = ("train", "dev", "test")
PTB_SPLITS = ("valid", "test")


class TreeParseError(DynnetError, ValueError):
    """Malformed bracketed tree.

    Attributes:
        line: 1-based line of the offending character (the file's line in ``read_trees``).
        column: 1-based column of the offending character on that line.
        path: the file being read, or None for ``Tree.parse`` on a string.
        expected: what the parser expected at that place.
    """

    def __init__(self, expected, found, line, column, path=None):
        self.expected = expected
        self.found = found
        self.line = line
        self.column = column
        self.path = None if path is None else str(path)
        where = f"line {line}, column {column}" if path is None else f"{path}:{line}:{column}"
        super().__init__(f"{where}: expected {expected}, found {found}")


class Tree:
    """A node of a labelled ordered tree, as in the PTB bracket form.

    A leaf has a ``word`` and no children; an inner node has children and ``word`` None.
    ``label`` is an int when the bracket label is a (decimal) integer, else a str.
    ``word_id`` is free for a vocabulary to fill (see ``dynnet.vocab.Vocab.index_trees``);
    it is not part of the bracket form.

    Equality and hashing are by identity (trees can key dicts); compare structure with
    ``equals``.
    """

    __slots__ = ("label", "children", "word", "word_id")

    def __init__(self, label, children=None, word=None):
        if children and word is not None:
            raise ValueError("a Tree node has either children or a word, not both")
        self.label = label
        self.children = [] if children is None else children
        self.word = word
        self.word_id = None

    @property
    def is_leaf(self):
        """True when the node has no children."""
        return not self.children

    @classmethod
    def parse(cls, text):
        """Reads one bracketed tree, ``(label child ...)`` or ``(label word)``.

        Args:
            text: the tree; any whitespace (newlines included) may separate tokens.

        Returns:
            The root ``Tree``.

        Raises:
            TreeParseError: malformed text; the message names line, column and what
                was expected there.
        """
        with _gc_paused():
            return _parse(text, None, 1)

    def leaves(self):
        """Returns the words of the leaves, left to right."""
        return [node.word for node in self._preorder() if not node.children]

    def nodes(self):
        """Returns an iterator over every node in post-order (children before parent).

        Built iteratively: a right-to-left pre-order, reversed.
        """
        order = []
        stack = [self]
        while stack:
            node = stack.pop()
            order.append(node)
            stack.extend(node.children)
        return reversed(order)

    def _preorder(self):
        stack = [self]
        while stack:
            node = stack.pop()
            yield node
            if node.children:
                stack.extend(reversed(node.children))

    def size(self):
        """Returns the number of nodes."""
        return sum(1 for _ in self._preorder())

    def height(self):
        """Returns the number of levels: 1 for a leaf, 1 + max child height otherwise."""
        best = 0
        stack = [(self, 1)]
        while stack:
            node, depth = stack.pop()
            if depth > best:
                best = depth
            stack.extend((c, depth + 1) for c in node.children)
        return best

    def equals(self, other):
        """True when ``other`` is a Tree with the same labels, words and shape."""
        stack = [(self, other)]
        while stack:
            a, b = stack.pop()
            if not isinstance(b, Tree) or a.label != b.label or a.word != b.word:
                return False
            if len(a.children) != len(b.children):
                return False
            stack.extend(zip(a.children, b.children))
        return True

    def to_string(self):
        """Returns the bracket form; ``Tree.parse(t.to_string())`` equals ``t``.

        Raises:
            ValueError: a label or word is empty where not allowed, or contains
                whitespace or parentheses, so it cannot be written.
        """
        parts = []
        stack = [(self, "")]  # (node, text before it); None closes a bracket
        while stack:
            node, before = stack.pop()
            if node is None:
                parts.append(")")
                continue
            label = str(node.label)
            if _BAD_TOKEN.search(label):
                raise ValueError(f"label {label!r} cannot be written in bracket form")
            if node.children:
                parts.append(f"{before}({label}" if label else f"{before}(")
                stack.append((None, ""))
                stack.extend((c, " ") for c in reversed(node.children))
            else:
                word = node.word
                if not label or not word or _BAD_TOKEN.search(word):
                    raise ValueError(
                        f"leaf ({label!r}, {word!r}) cannot be written in bracket form")
                parts.append(f"{before}({label} {word})")
        return "".join(parts)

    def __repr__(self):
        if not self.children:
            return f"Tree({self.label!r}, word={self.word!r})"
        return f"Tree({self.label!r}, size={self.size()}, leaves={len(self.leaves())})"

    def __str__(self):
        return self.to_string()


# Tokens are separated by ASCII whitespace only: SST has words such as "8\xa01\\/2" with
# a no-break space inside, so every regex here uses re.ASCII.
_ASCII_SPACE = " \t\n\r\f\v"
_BAD_TOKEN = re.compile(r"[\s()]", re.ASCII)

# One alternative per token kind; findall returns (leaf_label, leaf_word, open,
# open_label, close, word). A leaf "(label word)" is matched as one token: it is the
# most common node and this halves the Python work per tree.
_TOKEN = re.compile(
    r"\(\s*([^\s()]+)\s+([^\s()]+)\s*\)"  # leaf
    r"|(\()\s*([^\s()]*)"  # open, label (possibly empty)
    r"|(\))"  # close
    r"|([^\s()]+)",  # bare word
    re.ASCII,
)
_INT_LABEL = re.compile(r"-?[0-9]+\Z")
_label_cache = {}


def _label(text):
    value = _label_cache.get(text)
    if value is None:
        value = int(text) if _INT_LABEL.match(text) else text
        if len(_label_cache) < 4096:
            _label_cache[text] = value
    return value


@contextlib.contextmanager
def _gc_paused():
    """Pauses the cyclic garbage collector while building many small objects.

    Parsing allocates hundreds of thousands of nodes; each allocation burst would
    otherwise trigger collections that traverse every live node (5x slower on SST).
    Trees hold no reference cycles, so nothing is left for the collector to find.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _parse(text, path, first_line):
    """Parses one tree; on error, re-scans to name the position (see _fail)."""
    tokens = _TOKEN.findall(text)
    stack = []  # [label, children, word] of open nodes
    root = None
    for i, (leaf_label, leaf_word, opening, label, closing, word) in enumerate(tokens):
        if root is not None:
            _fail(text, path, first_line, i, "end of tree")
        if leaf_word:
            leaf = Tree(_label(leaf_label), None, leaf_word)
            if stack:
                top = stack[-1]
                if top[2] is not None:
                    _fail(text, path, first_line, i, "')' after the word")
                top[1].append(leaf)
            else:
                root = leaf
        elif opening:
            if stack and stack[-1][2] is not None:
                _fail(text, path, first_line, i, "')' after the word")
            stack.append([_label(label), [], None])
        elif closing:
            if not stack:
                _fail(text, path, first_line, i, "'('")
            label, children, word = stack.pop()
            if not children and word is None:
                _fail(text, path, first_line, i, "a word or '('")
            node = Tree(label, children, word)
            if stack:
                stack[-1][1].append(node)
            else:
                root = node
        else:
            if not stack:
                _fail(text, path, first_line, i, "'('")
            top = stack[-1]
            if top[1] or top[2] is not None:
                _fail(text, path, first_line, i, "'(' or ')'")
            top[2] = word
    if root is None:
        expected = "')'" if stack else "'('"
        _fail(text, path, first_line, len(tokens), expected)
    return root


def _fail(text, path, first_line, token_index, expected):
    """Raises TreeParseError at the start of token ``token_index`` (or end of text)."""
    pos, found = len(text), "end of input"
    for i, match in enumerate(_TOKEN.finditer(text)):
        if i == token_index:
            pos, found = match.start(), repr(_first_token(match.group()))
            break
    line = text.count("\n", 0, pos)
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    raise TreeParseError(expected, found, first_line + line, column, path)


def _first_token(matched):
    return re.match(r"\(|\)|[^\s()]+", matched, re.ASCII).group()


def read_trees(path):
    """Reads one bracketed tree per non-empty line of a UTF-8 file.

    A byte order mark at the start of the file is skipped.

    Args:
        path: the file.

    Returns:
        A list of root ``Tree`` nodes, in file order.

    Raises:
        TreeParseError: a malformed line, or bytes that are not UTF-8; ``.path``,
            ``.line`` and ``.column`` say where.
    """
    return [tree for _, tree in read_trees_with_lines(path)]


def read_trees_with_lines(path):
    """``read_trees``, as ``(line number, tree)`` pairs."""
    trees = []
    try:
        with open(path, encoding="utf-8-sig") as f, _gc_paused():
            for lineno, line in enumerate(f, 1):
                if line.strip(_ASCII_SPACE):
                    trees.append((lineno, _parse(line.rstrip("\r\n"), path, lineno)))
    except UnicodeDecodeError:
        data, offset = _first_bad_byte(path)
        line, column = utf8_position(data, offset)
        raise TreeParseError("UTF-8 text", f"byte 0x{data[offset]:02x}", line, column,
                             path) from None
    return trees


def node_columns(text):
    """The 1-based column of each node's label (of its '(' when it has none) in the
    bracket text of one tree, in the order of ``Tree.nodes()`` (post-order)."""
    columns, stack = [], []
    for match in _TOKEN.finditer(text):
        _, leaf_word, opening, label, closing, _ = match.groups()
        if leaf_word:
            columns.append(match.start(1) + 1)
        elif opening:
            stack.append(match.start(4 if label else 3) + 1)
        elif closing and stack:
            columns.append(stack.pop())
    return columns


def node_position(path, line, index):
    """``path:line:column`` of the ``index``-th node (in ``Tree.nodes()`` order) of the
    tree on line ``line`` of the tree file ``path`` (``path:line`` if it cannot say)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for lineno, text in enumerate(f, 1):
                if lineno == line:
                    columns = node_columns(text)
                    if 0 <= index < len(columns):
                        return f"{path}:{line}:{columns[index]}"
                    break
    except (OSError, UnicodeDecodeError):
        pass
    return f"{path}:{line}"


def _first_bad_byte(path):
    with open(path, "rb") as f:
        data = f.read()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        return data, e.start
    raise AssertionError(f"{path} changed while it was read")  # pragma: no cover


_split_tokens = re.compile(r"[^ \t\n\r\f\v]+").findall


def read_sentences(path):
    """Reads a whitespace-tokenised UTF-8 file: one token list per non-empty line.

    Tokens are separated by ASCII whitespace (a no-break space stays inside a token). A
    byte order mark at the start of the file is skipped.

    Raises:
        dynnet.vocab.TextEncodingError: bytes that are not UTF-8 (the message names
            file, line and column).
    """
    return [tokens for _, tokens in read_sentences_with_lines(path)]


def read_sentences_with_lines(path):
    """``read_sentences``, as ``(line number, tokens)`` pairs."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            return [(lineno, tokens) for lineno, tokens in enumerate(map(_split_tokens, f), 1)
                    if tokens]
    except UnicodeDecodeError:
        data, offset = _first_bad_byte(path)
        raise TextEncodingError(not_utf8_message(path, data, offset)) from None


def data_root(root=None):
    """Finds the shared data folder (the one holding ``sst/`` and ``ptb/``).

    Tries, in order: ``root`` when given, the ``DYNNET_DATA`` environment variable,
    ``../shared/data`` relative to the current directory, then ``../shared/data``
    relative to the checkout this package lives in.

    Raises:
        FileNotFoundError: none of those folders exists.
    """
    if root is not None:
        candidates = [Path(root)]
    else:
        candidates = []
        if os.environ.get("DYNNET_DATA"):
            candidates.append(Path(os.environ["DYNNET_DATA"]))
        candidates.append(Path.cwd().parent / "shared" / "data")
        candidates.append(Path(__file__).resolve().parents[1].parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise FileNotFoundError(
        f"dynnet data folder not found (tried {tried}); pass root= or set DYNNET_DATA "
        "to the folder that holds sst/ and ptb/"
    )


def _split_file(corpus, name, splits, root):
    if name not in splits:
        raise ValueError(f"unknown {corpus} split {name!r}; expected one of {splits}")
    path = data_root(root) / corpus / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{corpus} split {name!r} not found at {path}")
    return path


def sst_split(name, root=None):
    """Reads a Stanford Sentiment Treebank split: 'train' (8544), 'dev' (1101), 'test' (2210).

    Args:
        name: the split.
        root: the data folder; found by ``data_root`` when None.

    Returns:
        A list of trees with int labels 0-4 on every node.
    """
    return read_trees(_split_file("sst", name, SST_SPLITS, root))


def ptb_split(name, root=None):
    """Reads a Penn Treebank language-model split ('valid' or 'test') as token lists."""
    return read_sentences(_split_file("ptb", name, PTB_SPLITS, root))


def binary_label(label):
    """Maps an SST fine label to the binary task: 0-1 -> 0, 3-4 -> 1, 2 (neutral) -> None."""
    if label in (0, 1):
        return 0
    if label in (3, 4):
        return 1
    if label == 2:
        return None
    raise ValueError(f"not an SST label (0-4): {label!r}")


def fine_label(label):
    """The 5-class SST label, unchanged."""
    return label


class BucketBatchSampler(torch.utils.data.Sampler):
    """Yields batches (lists of indices) of examples of similar length.

    The (optionally shuffled) indices are cut into chunks of ``bucket_batches``
    batches; each chunk is sorted by length and cut into batches; with ``shuffle`` the
    order of the batches is shuffled too. Use it as ``DataLoader(ds,
    batch_sampler=sampler, collate_fn=collate_list)``.

    The order depends only on ``seed`` and the epoch: each iteration uses the current
    epoch and then advances it; ``set_epoch`` sets it (as DistributedSampler).

    Args:
        lengths: one size per example (sequence length, tree size, ...).
        batch_size: examples per batch.
        shuffle: shuffle examples before bucketing and batches after.
        seed: seed of the shuffles.
        drop_last: drop the examples that do not fill a batch (``len(lengths) %
            batch_size`` of them, at the end of the shuffled order: other ones each
            epoch), so that every batch has ``batch_size`` examples.
        bucket_batches: batches per sorted chunk; larger means more uniform lengths
            within a batch, and less randomness.
    """

    def __init__(self, lengths, batch_size, shuffle=True, seed=0, drop_last=False,
                 bucket_batches=50):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if bucket_batches < 1:
            raise ValueError(f"bucket_batches must be positive, got {bucket_batches}")
        self.lengths = [int(n) for n in lengths]
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.bucket_batches = bucket_batches
        self.epoch = 0

    def set_epoch(self, epoch):
        """Sets the epoch that the next iteration uses."""
        self.epoch = epoch

    def __len__(self):
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self):
        n = len(self.lengths)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        self.epoch += 1
        order = torch.randperm(n, generator=generator).tolist() if self.shuffle else range(n)
        order = list(order)
        if self.drop_last:  # the examples that do not fill a batch: other ones each epoch
            order = order[:n - n % self.batch_size]
            n = len(order)
        chunk = self.batch_size * self.bucket_batches
        lengths = self.lengths
        batches = []
        for start in range(0, n, chunk):
            part = sorted(order[start:start + chunk], key=lengths.__getitem__)
            batches.extend(part[i:i + self.batch_size]
                           for i in range(0, len(part), self.batch_size))
        if self.shuffle:
            perm = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in perm]
        return iter(batches)


def collate_list(batch):
    """DataLoader collate function that keeps examples as Python objects, in a list."""
    return list(batch)
