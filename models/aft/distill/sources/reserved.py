"""Reserved test domains: never part of the training corpus.

The project keeps domains for measuring generalisation on text the model never saw: Python's
documentation and docstrings, and quotations and sayings: fortune-cookie files and any other
collection of quotations, aphorisms, proverbs or jokes (The Devil's Dictionary, NetHack's
rumors, Dungeon Crawl's quotes.txt, joke packages). Every package a source names and every file
a source reads passes through these checks, so no such domain can reach the corpus by accident
(a new source, a package that starts shipping .py files, a man page of `python3`).
"""

from __future__ import annotations

import re

# Packages that ship Python's documentation or Python code (docstrings), or fortune files.
_RESERVED_PACKAGE = re.compile(r"^(lib)?(python|pypy|idle|fortune)", re.I)
# Collections of quotations, aphorisms, proverbs and jokes, by name: The Devil's Dictionary
# (satirical one-line definitions), the Dhammapada sayings shown like fortunes, joke packages
# (pyjoke, xjokes), and any package named for quotations, proverbs, aphorisms or rumors.
_RESERVED_SAYINGS = re.compile(
    r"^(dict-devil|display-dhammapada)$|joke|proverb|aphoris|epigram|quotation|"
    r"(^|-)quotes($|-)|(^|-)rumou?rs($|-)|(^|-)sayings($|-)",
    re.I,
)

# Files: any path component starting with python/pydoc/pypy/fortune (python3.11 man pages,
# /usr/share/doc/python3-doc, /usr/share/games/fortunes/...), and Python sources.
_RESERVED_COMPONENT = re.compile(r"^(python|pydoc|pypy|idle3|fortune)", re.I)
_RESERVED_SUFFIX = (".py", ".pyc", ".pyi", ".pyw", ".pyx", ".ipynb")
# Files named as a collection of sayings, whatever the package: NetHack's `rumors`, Crawl's
# `quotes.txt`, Emacs's `JOKES`, a `proverbs.txt` (the stem before the last dot).
_RESERVED_STEM = re.compile(
    r"^(rumou?rs|quotes|quotations|proverbs|jokes|aphorisms|epigrams|sayings)$", re.I
)


def is_reserved_package(name: str) -> bool:
    return bool(_RESERVED_PACKAGE.match(name) or _RESERVED_SAYINGS.search(name))


def is_reserved_path(path: str) -> bool:
    parts = [p for p in path.replace("\\", "/").split("/") if p]
    if any(_RESERVED_COMPONENT.match(p) for p in parts):
        return True
    name = parts[-1].lower() if parts else ""
    for suffix in (".gz", ".bz2", ".xz"):
        name = name.removesuffix(suffix)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return name.endswith(_RESERVED_SUFFIX) or bool(_RESERVED_STEM.match(stem))
