"""One module per language feature; the order they run in is in converter/__init__.py."""
