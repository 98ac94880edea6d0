"""Game texts: the help and nation histories of Freeciv, and the in-game descriptions of
Dungeon Crawl Stone Soup (monsters, gods, items, places). Narrative and encyclopedic prose, far
from the technical manuals that dominate the other sources.
"""

from __future__ import annotations

import json
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
        body = re.sub(r"\$\w+\[[^\]]*\]", "", body)  # $cmd[CMD_X]: a key binding
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


# ---------------------------------------------------------------------------------------------
# Battle for Wesnoth: campaign dialogue and story text, unit descriptions, help.

# WML translatable strings: _ "text", a doubled "" inside is a literal quote.
_WML_STRING = re.compile(r'_\s*"((?:[^"]|"")*)"')


def wml_strings(text: str) -> Iterator[str]:
    for m in _WML_STRING.finditer(text):
        yield m.group(1).replace('""', '"')


def wesnoth(root: Path) -> Iterator[dict]:
    """Every translatable string of the WML files; the document is the file (a scenario, a
    unit). Strings with substitutions ($name), macros ({...}) or markup (<...>) are skipped."""
    for path in sorted((root / "usr/share/games").glob("wesnoth/*/data/**/*.cfg")):
        rel = path.relative_to(root).as_posix()
        if is_reserved_path(rel):
            continue
        doc = "wesnoth:" + rel.split("/data/", 1)[1]
        for s in wml_strings(path.read_text(encoding="utf-8", errors="replace")):
            if re.search(r"[${}<>]", s):
                continue
            for para in re.split(r"\n\s*\n", s):
                para = squash(para)
                if para:
                    yield dict(text=para, kind="wesnoth", doc=doc, atomic=0)


# ---------------------------------------------------------------------------------------------
# Endless Sky: mission conversations, planet and ship descriptions.


def endless_sky_strings(text: str) -> Iterator[tuple[str, str]]:
    """(top-level block, string) of an Endless Sky data file: `backquoted` conversation and
    description lines, and "quoted" dialog / log / description / spaceport lines."""
    block = ""
    for line in text.split("\n"):
        if line[:1] not in ("", "\t", " ", "#"):
            block = line.strip()
        for s in re.findall(r"`([^`]*)`", line):
            yield block, s
        m = re.match(r'\s+(?:dialog|log|description|spaceport|tooltip)\s+"([^"]*)"\s*$', line)
        if m:
            yield block, m.group(1)


def endless_sky(root: Path) -> Iterator[dict]:
    for path in sorted(root.glob("usr/share/games/endless-sky/data/**/*.txt")):
        rel = path.relative_to(root).as_posix()
        if is_reserved_path(rel):
            continue
        for block, s in endless_sky_strings(path.read_text(encoding="utf-8", errors="replace")):
            if re.search(r"[<>&]|\$", s):
                continue  # <planet>, <first> <last>: substitution slots
            s = squash(s)
            if s:
                yield dict(text=s, kind="endless-sky", doc=f"endless-sky:{block}", atomic=0)


# ---------------------------------------------------------------------------------------------
# Cataclysm: Dark Days Ahead: item, monster and place descriptions, NPC dialogue.

CATACLYSM_KEYS = {"description", "dynamic_line", "text", "info", "message"}


def _json_strings(obj, key: str | None = None) -> Iterator[str]:
    if isinstance(obj, str):
        if key in CATACLYSM_KEYS:
            yield obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            if k in ("str", "str_sp") and key in CATACLYSM_KEYS:
                yield from _json_strings(v, key)  # {"str": "..."}: a translatable string
            elif k not in ("//", "//~", "comment"):
                yield from _json_strings(v, k)
    elif isinstance(obj, list):
        for v in obj:
            yield from _json_strings(v, key)


def cataclysm(root: Path) -> Iterator[dict]:
    """Text fields of the JSON game data; the document is the object's id (or the file)."""
    base = root / "usr/share/games/cataclysm-dda"
    for path in sorted(base.glob("json/**/*.json")) + sorted(base.glob("mods/**/*.json")):
        rel = path.relative_to(base).as_posix()
        if is_reserved_path(rel):
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        except json.JSONDecodeError:
            continue  # a malformed data file: nothing to take from it
        for i, obj in enumerate(data if isinstance(data, list) else [data]):
            ident = obj.get("id") if isinstance(obj, dict) else None
            doc = f"cataclysm:{ident if isinstance(ident, str) else f'{rel}#{i}'}"
            for s in _json_strings(obj):
                if re.search(r"<[a-z_]+>|%[sd]|\$", s):
                    continue  # <npc_name>, %s: substitution slots
                for para in re.split(r"\n\s*\n", s):
                    para = squash(para)
                    if para:
                        yield dict(text=para, kind="cataclysm", doc=doc, atomic=0)


# ---------------------------------------------------------------------------------------------
# FreeOrion: the English string table (encyclopedia articles, species, techs, buildings).


def freeorion_entries(text: str) -> Iterator[tuple[str, str]]:
    """(KEY, value) of a FreeOrion string table: a KEY line, then one value line or a
    '''multi-line''' value."""
    lines = text.split("\n")
    i = 0
    while i < len(lines) - 1:
        key = lines[i].strip()
        if not re.fullmatch(r"[A-Z][A-Z0-9_]+", key):
            i += 1
            continue
        value = lines[i + 1]
        i += 2
        if value.startswith("'''"):
            body = [value[3:]]
            while not body[-1].rstrip().endswith("'''") and i < len(lines):
                body.append(lines[i])
                i += 1
            value = "\n".join(body).rstrip().removesuffix("'''")
        yield key, value


def freeorion(root: Path) -> Iterator[dict]:
    path = root / "usr/share/games/freeorion/default/stringtables/en.txt"
    for key, value in freeorion_entries(path.read_text(encoding="utf-8-sig", errors="replace")):
        if "[[" in value or "%" in value:
            continue  # references to other entries, format strings
        value = re.sub(r"</?[a-z]+[^>]*>", "", value)  # <i>, <rgba ...>
        for para in re.split(r"\n\s*\n", value):
            para = squash(para)
            if para:
                yield dict(text=para, kind="freeorion", doc=f"freeorion:{key}", atomic=0)


# ---------------------------------------------------------------------------------------------
# FreedroidRPG: the NPC dialogues of its storyline.

# Lua gettext strings: _"text" or _("text"), with \" escapes.
_LUA_STRING = re.compile(r'_\(?"((?:[^"\\]|\\.)*)"')


def lua_strings(text: str) -> Iterator[str]:
    for m in _LUA_STRING.finditer(text):
        yield m.group(1).replace('\\"', '"').replace("\\n", "\n")


def freedroid(root: Path) -> Iterator[dict]:
    """Dialogue lines of the storyline's Lua dialog files; the document is the dialog (one NPC).
    Lines with substitutions (%s, $$NAME$$) are skipped."""
    base = root / "usr/share/freedroidrpg/data/storyline"
    for path in sorted(base.glob("**/*.lua")):
        rel = path.relative_to(base).as_posix()
        if is_reserved_path(rel):
            continue
        for s in lua_strings(path.read_text(encoding="utf-8", errors="replace")):
            if "%" in s or "$$" in s:
                continue
            s = squash(re.sub(r"\\\n\s*", " ", s))
            if s:
                yield dict(text=s, kind="freedroid", doc=f"freedroid:{rel}", atomic=0)
