"""Game texts: the help and nation histories of Freeciv, and the in-game descriptions of
Dungeon Crawl Stone Soup (monsters, gods, items, places). Narrative and encyclopedic prose, far
from the technical manuals that dominate the other sources.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from aft.distill.sources.reserved import is_reserved_path
from aft.distill.textclean import squash

# `_("...")` translatable strings; a line ending in a backslash continues the string.
_FREECIV_STRING = re.compile(r'_\("((?:[^"\\]|\\.)*)"\)', re.S)


def freeciv_strings(text: str) -> Iterator[tuple[str, str]]:
    """(section, string) of every translatable string of a Freeciv data file."""
    sections = [(m.start(), m.group(1)) for m in re.finditer(r"^\[([^\]]+)\]", text, re.M)]
    for m in _FREECIV_STRING.finditer(text):
        section = ""
        for start, name in sections:
            if start > m.start():
                break
            section = name
        s = m.group(1).replace("\\\n", "").replace('\\"', '"').replace("\\n", "\n")
        yield section, s


def freeciv(root: Path) -> Iterator[dict]:
    """Help pages and ruleset help texts / nation legends; the document is the section
    ([unit_warriors], [nation_aztec]), shared by the rulesets that repeat it."""
    base = root / "usr/share/games/freeciv"
    files = sorted(base.glob("helpdata.txt")) + sorted(base.glob("**/*.ruleset"))
    for path in files:
        rel = path.relative_to(root).as_posix()
        if is_reserved_path(rel):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for section, s in freeciv_strings(text):
            if "%" in s:
                continue  # format strings for the game's messages, not prose
            for para in re.split(r"\n\s*\n", s):
                para = squash(para)
                if para:
                    yield dict(text=para, kind="freeciv", doc=f"freeciv:{section}", atomic=0)


# quotes.txt holds literary quotations in the %%%% format of fortune-cookie files and overlaps
# them in content (Shakespeare, Ovid, ...): left out so the reserved quotation domain stays unseen.
CRAWL_LEFT_OUT = {"quotes.txt"}


def crawl_entries(text: str) -> Iterator[tuple[str, list[str]]]:
    """(key, paragraphs) of a Crawl description file: entries between %%%% lines, a key line,
    then text; # lines are comments, {{ }} blocks are Lua."""
    for entry in text.split("%%%%"):
        lines = [ln for ln in entry.strip("\n").split("\n") if not ln.startswith("#")]
        if not lines or not lines[0].strip():
            continue
        key, body = lines[0].strip(), "\n".join(lines[1:])
        body = re.sub(r"\{\{.*?\}\}", " ", body, flags=re.S)
        body = re.sub(r"<[^>]+>|@\w+@", "", body)  # colour tags, substitution slots
        paras = [squash(p) for p in re.split(r"\n\s*\n", body)]
        yield key, [p for p in paras if p]


def crawl(root: Path) -> Iterator[dict]:
    base = root / "usr/share/crawl/dat"
    for path in sorted(base.glob("descript/*.txt")) + sorted(base.glob("database/FAQ.txt")):
        rel = path.relative_to(root).as_posix()
        if path.name in CRAWL_LEFT_OUT or is_reserved_path(rel):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        for key, paras in crawl_entries(text):
            doc = f"crawl:{path.stem}/{key.casefold()}"
            for para in paras:
                yield dict(text=para, kind="crawl", doc=doc, atomic=0)
