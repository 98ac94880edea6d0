"""Reserved test domains: never part of the training corpus.

The project keeps two domains for measuring generalisation on text the model never saw:
Python's documentation and docstrings, and fortune-cookie files. Every package a source names
and every file a source reads passes through these checks, so neither domain can reach the
corpus by accident (a new source, a package that starts shipping .py files, a man page of
`python3`).
"""

from __future__ import annotations

import re

# Packages that ship Python's documentation or Python code (docstrings), or fortune files.
_RESERVED_PACKAGE = re.compile(r"^(lib)?(python|pypy|idle|fortune)", re.I)

# Files: any path component starting with python/pydoc/pypy/fortune (python3.11 man pages,
# /usr/share/doc/python3-doc, /usr/share/games/fortunes/...), and Python sources.
_RESERVED_COMPONENT = re.compile(r"^(python|pydoc|pypy|idle3|fortune)", re.I)
_RESERVED_SUFFIX = (".py", ".pyc", ".pyi", ".pyw", ".pyx", ".ipynb")


def is_reserved_package(name: str) -> bool:
    return bool(_RESERVED_PACKAGE.match(name))


def is_reserved_path(path: str) -> bool:
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if any(_RESERVED_COMPONENT.match(p) for p in parts):
        return True
    name = parts[-1].lower() if parts else ""
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    return name.endswith(_RESERVED_SUFFIX)
