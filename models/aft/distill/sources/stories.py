"""Story and dialogue text of games: what characters say, letters and reports to the player,
books found in the world, places described. Everyday and narrative English, unlike the manuals.

- Naev (space trading and combat): mission and event dialogue (Lua), planet, station and bar
  descriptions (XML); a document is a file (one mission, one planet).
- Crossfire (role-playing): NPC dialogue, signs and books of the maps; a document is a map.
- Widelands (settlement building): campaign and tutorial scenario stories, the tribes'
  encyclopedia; the English source strings of its gettext catalogues.
- UFO: Alien Invasion: the research reports and letters of its staff to the commander, and the
  encyclopedia (the English catalogue).
- FreeDink (Dink Smallwood): the dialogue of the story scripts; a document is a script.

Strings with substitution slots (%s, {name}, $VAR) are skipped, as in games.py.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from collections.abc import Iterator
from pathlib import Path

from aft.distill.sources.reserved import is_reserved_path
from aft.distill.textclean import squash

_SLOT = re.compile(r"%[-+ #0-9.]*[a-zA-Z%]|\{[\w.]*\}|\$\w|\$\(|<[a-z_/][^>]*>|\[\[|\\[a-z]\b")


def _has_slot(s: str) -> bool:
    return bool(_SLOT.search(s))


def _paragraphs(s: str) -> list[str]:
    return [p for p in (squash(p) for p in re.split(r"\n\s*\n", s)) if p]


# ---------------------------------------------------------------------------------------------
# gettext catalogues: the English source strings (msgids) of a game's translations


def mo_entries(data: bytes) -> Iterator[tuple[str, str]]:
    """(msgid, msgstr) of a compiled gettext catalogue (.mo); a msgctxt prefix ("ctx\\x04") is
    dropped, a plural keeps its singular form."""
    magic = struct.unpack_from("<I", data)[0]
    order = "<" if magic == 0x950412DE else ">"
    _, n, orig, trans = struct.unpack_from(order + "4I", data, 4)
    for i in range(n):
        olen, ooff = struct.unpack_from(order + "2I", data, orig + 8 * i)
        tlen, toff = struct.unpack_from(order + "2I", data, trans + 8 * i)
        msgid = data[ooff : ooff + olen].decode("utf-8", "replace")
        msgstr = data[toff : toff + tlen].decode("utf-8", "replace")
        if not msgid:
            continue  # the header entry
        yield msgid.split("\x04")[-1].split("\x00")[0], msgstr.split("\x00")[0]


def _hash_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------
# Naev

NAEV = "usr/share/naev/dat"
# _("text"), N_("text"), _([[long text]]), p_("context", "text"): Lua gettext calls.
_LUA_GETTEXT = re.compile(
    r"""\b(?:N_|_|p_\(\s*"[^"]*"\s*,)\(?\s*(?:"((?:[^"\\\n]|\\.)*)"|'((?:[^'\\\n]|\\.)*)'|\[(=*)\[(.*?)\]\3\])""",
    re.S,
)
_LUA_ESCAPES = {"n": "\n", "t": " ", '"': '"', "'": "'", "\\": "\\", "\n": " "}


def lua_gettext_strings(src: str) -> Iterator[str]:
    """The translatable strings of a Lua file, escapes resolved."""
    for m in _LUA_GETTEXT.finditer(src):
        if m.group(4) is not None:
            yield m.group(4)
        else:
            s = m.group(1) if m.group(1) is not None else m.group(2)
            yield re.sub(
                r"\\(.)", lambda e: _LUA_ESCAPES.get(e.group(1), e.group(1)), s, flags=re.S
            )


def naev_xml_texts(src: str) -> Iterator[str]:
    """Descriptions of a Naev data file (planets and stations: <description>, <bar>; ships,
    outfits: <description>, <lore>)."""
    for m in re.finditer(r"<(description|bar|lore)>(.*?)</\1>", src, re.S):
        yield m.group(2).replace("&amp;", "&").replace("&quot;", '"').replace("&apos;", "'")


def naev(root: Path) -> Iterator[dict]:
    base = root / NAEV
    files = sorted(base.glob("**/*.lua")) + sorted(base.glob("**/*.xml"))
    for path in files:
        rel = path.relative_to(base).as_posix()
        if is_reserved_path(rel):
            continue
        src = path.read_text(encoding="utf-8", errors="replace")
        strings = lua_gettext_strings(src) if path.suffix == ".lua" else naev_xml_texts(src)
        doc = "naev:" + re.sub(r"\.(lua|xml)$", "", rel)
        for s in strings:
            if _has_slot(s) or "&lt;" in s:
                continue
            for para in _paragraphs(s):
                yield dict(text=para, kind="naev", doc=doc, atomic=0)


# ---------------------------------------------------------------------------------------------
# Crossfire

CROSSFIRE = "usr/share/games/crossfire/maps"
_CF_META = re.compile(
    r"^(Created|Modified|Updated|Author|Map created|Maintainer)\b.*$", re.M | re.I
)


def crossfire_messages(src: str) -> Iterator[str]:
    """Message texts of a Crossfire map (the msg ... endmsg of NPCs, signs, books): a block's
    @match / @trigger lines (the dialogue's keywords) split it into replies; the map's own
    creation notes dropped."""
    for m in re.finditer(r"^msg\n(.*?)^endmsg$", src, re.M | re.S):
        body = _CF_META.sub("", m.group(1))
        for part in re.split(r"^@\w+.*$", body, flags=re.M):
            yield from _paragraphs(part)


def crossfire_dialogue(src: str) -> Iterator[str]:
    """The NPC replies of a .msg dialogue file (JSON rules with "msg" lists)."""
    try:
        rules = json.loads(src).get("rules", [])
    except (json.JSONDecodeError, AttributeError):
        return
    for rule in rules:
        for s in rule.get("msg", []) if isinstance(rule, dict) else []:
            if isinstance(s, str):
                yield from _paragraphs(s)


def crossfire(root: Path) -> Iterator[dict]:
    base = root / CROSSFIRE
    for path in sorted(p for p in base.rglob("*") if p.is_file()):
        rel = path.relative_to(base).as_posix()
        if is_reserved_path(rel) or rel.split("/")[0] in ("editor", "test", "python"):
            continue  # reserved files; the editor's palettes and test maps: no story
        src = path.read_text(encoding="utf-8", errors="replace")
        texts = crossfire_dialogue(src) if path.suffix == ".msg" else crossfire_messages(src)
        doc = "crossfire:" + re.sub(r"\.msg$", "", rel)  # a map and its dialogue files: one
        for text in texts:
            if not _has_slot(text):
                yield dict(text=text, kind="crossfire", doc=doc, atomic=0)


# ---------------------------------------------------------------------------------------------
# Widelands

WIDELANDS_LOCALE = "usr/share/games/widelands/data/locale"


def _widelands_story(domain: str) -> bool:
    """Catalogues of story text: scenarios (campaign missions, tutorials), maps' descriptions
    and scripted events, the tribes' encyclopedia. Not the user interface, the editor, the
    names of wares and workers or the AI."""
    return domain.startswith(("scenario_", "mp_scenario_", "map_")) or domain in (
        "maps",
        "tribes_encyclopedia",
        "training_wheels",
    )


WIDELANDS_TRIBES = "usr/share/games/widelands/data/tribes"
_LUA_STR = re.compile(r'"((?:[^"\\]|\\.)*)"')
# A unit's lore: from `lore =` to the next help text field or the end of the table.
_WL_LORE = re.compile(
    r"\blore\s*=(.*?)(?=\n\s*(?:lore_author|purpose|note|performance)\s*=|\n\s*\})", re.S
)
_WL_LORE_AUTHOR = re.compile(r'\blore_author\s*=\s*pgettext\(\s*"[^"]*"\s*,\s*"((?:[^"\\]|\\.)*)"')


def widelands_lore(src: str) -> set[str]:
    """The lore of a tribe's units.lua: the saying each building, ware and worker is shown with
    (an invented proverb, a Latin quotation and its translation) and its attribution ("A
    stonemason"). Sayings are a reserved test domain, so these strings are left out."""
    src = re.sub(r'"\s*\.\.\s*"', "", src)  # "a" .. "b": one string, as xgettext reads it
    out = {m.group(1) for m in _WL_LORE_AUTHOR.finditer(src)}
    for m in _WL_LORE.finditer(src):
        body = re.sub(r"--[^\n]*", "", m.group(1))  # translators' comments
        out.update(s.group(1) for s in _LUA_STR.finditer(body))
    return {s.replace('\\"', '"') for s in out}


def widelands(root: Path) -> Iterator[dict]:
    """The English source strings of Widelands' story catalogues (each locale's catalogue holds
    the strings it translates; their union is the game's text). A scenario's catalogue
    (scenario_emp04.wmf) is one document, a campaign mission with its story; in the shared
    catalogues (the tribes' encyclopedia, maps) each string is its own document. The units'
    lore (sayings, see widelands_lore) is left out."""
    lore: set[str] = set()
    for path in sorted((root / WIDELANDS_TRIBES).glob("**/units.lua")):
        lore |= widelands_lore(path.read_text(encoding="utf-8", errors="replace"))
    seen: set[str] = set(lore)
    by_domain: dict[str, list[str]] = {}
    for path in sorted((root / WIDELANDS_LOCALE).glob("*/LC_MESSAGES/*.mo")):
        domain = path.stem
        if not _widelands_story(domain):
            continue
        for msgid, _ in mo_entries(path.read_bytes()):
            if msgid in seen or _has_slot(msgid):
                continue
            seen.add(msgid)
            by_domain.setdefault(domain, []).append(msgid)
    for domain in sorted(by_domain):
        for msgid in by_domain[domain]:
            scenario = domain.startswith(("scenario_", "mp_scenario_", "map_"))
            doc = f"widelands:{domain}" if scenario else f"widelands:{domain}#{_hash_id(msgid)}"
            for para in _paragraphs(msgid):
                yield dict(text=para, kind="widelands", doc=doc, atomic=0)


# ---------------------------------------------------------------------------------------------
# UFO: Alien Invasion

UFOAI_EN = "usr/share/games/ufoai/base/i18n/en/LC_MESSAGES/ufoai.mo"
UFOAI_MIN_WORDS = 25


def ufoai(root: Path) -> Iterator[dict]:
    """The English catalogue's texts (research reports, letters, encyclopedia entries, mission
    briefings); each entry is a document. Entries under UFOAI_MIN_WORDS are the interface's
    labels and one-line hints, left out."""
    for msgid, msgstr in mo_entries((root / UFOAI_EN).read_bytes()):
        text = msgstr or msgid
        if _has_slot(text) or len(text.split()) < UFOAI_MIN_WORDS:
            continue
        for para in _paragraphs(text):
            yield dict(text=para, kind="ufoai", doc=f"ufoai:{_hash_id(msgid)}", atomic=0)


# ---------------------------------------------------------------------------------------------
# FreeDink

DINK_STORY = "usr/share/games/dink/dink/Story"
_DINK_SAY = re.compile(
    r'\bsay(?:_stop|_xy|_stop_xy|_stop_npc)?\(\s*"((?:[^"\\\n]|\\.)*)"\s*,\s*([^,)]*)'
)
_END = re.compile(r"[.!?…\"')\]]$|\.\.$")


def dink_lines(src: str) -> Iterator[str]:
    """The spoken lines of a DinkC script, the `X colour prefix dropped; a sentence that the
    script cuts across several say() calls of one speaker (a line without an end mark, then
    its continuation) is joined again."""
    cur, speaker = "", None
    for m in _DINK_SAY.finditer(src):
        s = squash(re.sub(r"^`.", "", m.group(1).replace('\\"', '"')))
        who = m.group(2).strip()
        if cur and who == speaker and not _END.search(cur):
            cur = f"{cur} {s}"
            continue
        if cur:
            yield cur
        cur, speaker = s, who
    if cur:
        yield cur


def dink(root: Path) -> Iterator[dict]:
    for path in sorted((root / DINK_STORY).glob("*.[cC]")):
        rel = path.relative_to(root).as_posix()
        if is_reserved_path(rel):
            continue
        for s in dink_lines(path.read_text(encoding="latin-1")):
            if "&" not in s and not _has_slot(s):  # &player_name: a variable
                yield dict(text=s, kind="dink", doc=f"dink:{path.stem.lower()}", atomic=0)
