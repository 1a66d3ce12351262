"""Token vocabularies: token <-> id maps built from data, saved as JSON."""

from __future__ import annotations

import collections
import json
import os
import secrets

from dynnet.errors import DynnetError

__all__ = ["TextEncodingError", "Vocab", "VocabFormatError", "atomic_write_text",
           "not_utf8_message", "read_utf8", "utf8_position"]

_FORMAT = 1


class VocabFormatError(DynnetError, ValueError):
    """A vocabulary file that is not valid JSON or not a dynnet vocabulary."""


class Vocab:
    """A bijection between tokens and ids ``0 .. len(vocab) - 1``.

    Ids are assigned in order: the unknown token (when ``unk`` is not None), then
    ``specials``, then ``tokens``; a token already present keeps its first id.

    Args:
        tokens: the ordinary tokens, in id order.
        unk: the token that unknown tokens map to, or None to make unknown tokens a
            ``KeyError``.
        specials: extra reserved tokens such as "<pad>", "<s>", "</s>".
    """

    def __init__(self, tokens=(), unk="<unk>", specials=()):
        self.unk = unk
        self.specials = tuple(specials)
        self._tokens = []
        self._ids = {}
        for token in ([] if unk is None else [unk]) + list(self.specials) + list(tokens):
            if token not in self._ids:
                self._ids[token] = len(self._tokens)
                self._tokens.append(token)
        self.unk_id = None if unk is None else self._ids[unk]

    @classmethod
    def build(cls, token_lists, min_freq=1, max_size=None, specials=(), unk="<unk>"):
        """Builds a vocabulary from tokenised examples.

        Tokens are ordered by decreasing frequency, ties alphabetically.

        Args:
            token_lists: an iterable of token lists (sentences).
            min_freq: tokens seen fewer times are left out (they map to ``unk``).
            max_size: the largest ``len(vocab)``, unk and specials included.
            specials: reserved tokens, given ids right after unk.
            unk: the unknown token, or None.

        Returns:
            The new ``Vocab``.
        """
        counts = collections.Counter()
        for tokens in token_lists:
            counts.update(tokens)
        reserved = ([] if unk is None else [unk]) + list(specials)
        for token in reserved:
            counts.pop(token, None)
        ordered = sorted((t for t, c in counts.items() if c >= min_freq),
                         key=lambda t: (-counts[t], t))
        if max_size is not None:
            room = max_size - len(set(reserved))
            if room < 0:
                raise ValueError(f"max_size={max_size} is smaller than the "
                                 f"{len(set(reserved))} reserved tokens")
            ordered = ordered[:room]
        return cls(ordered, unk=unk, specials=specials)

    @classmethod
    def from_trees(cls, trees, **kwargs):
        """Builds a vocabulary of the leaf words of ``trees`` (see ``build`` for kwargs)."""
        return cls.build((tree.leaves() for tree in trees), **kwargs)

    def __getitem__(self, token):
        """Returns the id of ``token``; unknown tokens get ``unk_id``.

        Raises:
            KeyError: unknown token and no unk token.
        """
        index = self._ids.get(token, self.unk_id)
        if index is None:
            raise KeyError(f"token {token!r} is not in the vocabulary (it has no unk token)")
        return index

    def __contains__(self, token):
        return token in self._ids

    def __len__(self):
        return len(self._tokens)

    def __iter__(self):
        return iter(self._tokens)

    def __eq__(self, other):
        if not isinstance(other, Vocab):
            return NotImplemented
        return (self._tokens, self.unk, self.specials) == (other._tokens, other.unk,
                                                          other.specials)

    __hash__ = None

    def __repr__(self):
        return f"Vocab(size={len(self)}, unk={self.unk!r}, specials={self.specials!r})"

    @property
    def tokens(self):
        """All tokens in id order (a copy)."""
        return list(self._tokens)

    def lookup(self, index):
        """Returns the token of id ``index``.

        Raises:
            IndexError: no such id.
        """
        if not 0 <= index < len(self._tokens):
            raise IndexError(f"id {index} out of range for a vocabulary of {len(self)}")
        return self._tokens[index]

    def encode(self, tokens):
        """Returns the ids of a token list."""
        return [self[t] for t in tokens]

    def decode(self, ids):
        """Returns the tokens of an id list."""
        return [self.lookup(int(i)) for i in ids]

    def index_trees(self, trees):
        """Sets ``word_id`` on every leaf of every tree; returns ``trees``."""
        for tree in trees:
            for node in tree.nodes():
                if not node.children:
                    node.word_id = self[node.word]
        return trees

    def save(self, path):
        """Writes the vocabulary as JSON, atomically (a reader never sees half a file)."""
        data = {"format": _FORMAT, "unk": self.unk, "specials": list(self.specials),
                "tokens": self._tokens}
        atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=0) + "\n")

    @classmethod
    def load(cls, path):
        """Reads a vocabulary written by ``save``.

        Raises:
            FileNotFoundError: no such file.
            VocabFormatError: not UTF-8 or invalid JSON (names line and column), or
                wrong content.
        """
        text = read_utf8(path, VocabFormatError)
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise VocabFormatError(
                f"{path}:{e.lineno}:{e.colno}: invalid JSON in vocabulary file: {e.msg}"
            ) from None
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise VocabFormatError(f"{path}: not a dynnet vocabulary (format {_FORMAT})")
        tokens, unk, specials = data.get("tokens"), data.get("unk"), data.get("specials", [])
        if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
            raise VocabFormatError(f"{path}: 'tokens' must be a list of strings")
        if len(set(tokens)) != len(tokens):
            raise VocabFormatError(f"{path}: 'tokens' has duplicates")
        if not isinstance(specials, list) or not (unk is None or isinstance(unk, str)):
            raise VocabFormatError(f"{path}: 'unk' must be a string or null and "
                                   "'specials' a list")
        vocab = cls(tokens, unk=unk, specials=specials)
        if vocab._tokens != tokens:
            raise VocabFormatError(f"{path}: unk and specials must come first in 'tokens'")
        return vocab


def atomic_write_text(path, text):
    """Writes ``text`` (UTF-8) to ``path`` through a temporary file in the same folder
    and ``os.replace``, so the file is either the old one or the complete new one."""
    path = os.fspath(path)
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".{name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class TextEncodingError(DynnetError, ValueError):
    """A file that should be UTF-8 text and is not; the message names file:line:column."""


def utf8_position(data, offset):
    """``(line, column)``, 1-based, of byte ``offset`` of the bytes ``data`` of a file
    (lines end at \\n, \\r\\n or \\r; columns count characters; a leading BOM is no
    column)."""
    prefix = data[:offset].decode("utf-8", errors="replace").removeprefix("\ufeff")
    prefix = prefix.replace("\r\n", "\n").replace("\r", "\n")
    return prefix.count("\n") + 1, len(prefix) - prefix.rfind("\n")


def not_utf8_message(path, data, offset):
    """``path:line:column: not UTF-8 text (...)`` for the bad byte at ``offset`` of the
    file's bytes ``data``."""
    line, column = utf8_position(data, offset)
    return (f"{path}:{line}:{column}: not UTF-8 text (byte 0x{data[offset]:02x} at byte "
            f"offset {offset})")


def read_utf8(path, error=TextEncodingError):
    """The text of a UTF-8 file; bytes that are not UTF-8 raise ``error`` with a message
    that names the file, line and column (``not_utf8_message``)."""
    with open(path, "rb") as f:
        data = f.read()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise error(not_utf8_message(path, data, e.start)) from None
