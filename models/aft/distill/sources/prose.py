"""Everyday English prose: novels, essays and news, against the technical manuals of the other
sources.

- Jane Austen's six novels, as the R package janeaustenr ships them (one character vector of
  lines a novel, in R's lazy-load database); a document is a chapter.
- An Anarchist FAQ (Debian `anarchism`): long argued essays in plain English, one HTML file a
  section; quoted passages (<blockquote>) and bracketed citations are dropped, so the reserved
  quotation domain stays unseen.
- News: the Reuters-21578 articles the R text-mining package tm ships as examples.

Considered and left out: Klavaro's typing-practice paragraphs (news-like, but some are strings of
proverbs, a reserved domain).
"""

from __future__ import annotations

import gzip
import html
import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

from aft.distill.sources.reserved import is_reserved_path
from aft.distill.textclean import html_paragraphs, squash

# ---------------------------------------------------------------------------------------------
# R serialization (XDR, format 2 or 3): just enough to read the data objects of an R package's
# lazy-load database (data/Rdata.rdx + .rdb), which hold character vectors, lists and their
# attributes. Pure Python, so no R is needed.

_NIL, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _STR, _VEC = 254, 1, 2, 9, 10, 13, 14, 16, 19
_REF, _GLOBALENV, _EMPTYENV, _BASEENV, _MISSING, _UNBOUND = 255, 253, 242, 241, 251, 252


class _RReader:
    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise ValueError("not an XDR R serialization")
        self.d, self.i, self.refs = data, 2, []
        version = self.int()
        self.int(), self.int()  # writer and minimal reader versions
        if version == 3:
            n = self.int()
            self.i += n  # native encoding name

    def int(self) -> int:
        (v,) = struct.unpack_from(">i", self.d, self.i)
        self.i += 4
        return v

    def item(self):
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == _NIL or kind in (_GLOBALENV, _EMPTYENV, _BASEENV, _MISSING, _UNBOUND):
            return None
        if kind == _REF:
            return self.refs[(flags >> 8) - 1]
        if kind == _SYM:
            name = self.item()
            self.refs.append(name)
            return name
        if kind == _LIST:  # pairlist: attributes, tags and values
            out = {}
            while kind == _LIST:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else None
                out[tag] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
            if kind != _NIL:
                raise ValueError(f"pairlist ends in type {kind}")
            return out
        if kind == _CHAR:
            n = self.int()
            if n == -1:
                return None  # NA_character_
            s = self.d[self.i : self.i + n].decode("utf-8" if flags & (1 << 15) else "latin-1")
            self.i += n
            return s
        if kind in (_LGL, _INT):
            n = self.int()
            v = list(struct.unpack_from(f">{n}i", self.d, self.i))
            self.i += 4 * n
        elif kind == _REAL:
            n = self.int()
            v = list(struct.unpack_from(f">{n}d", self.d, self.i))
            self.i += 8 * n
        elif kind in (_STR, _VEC):
            v = [self.item() for _ in range(self.int())]
        else:
            raise ValueError(f"R type {kind} not supported")
        if has_attr:
            attrs = self.item()
            names = attrs.get("names") if isinstance(attrs, dict) else None
            if kind == _VEC and names:
                return dict(zip(names, v, strict=True))
        return v


def unserialize(data: bytes):
    """An R object from its XDR serialization: character, logical, integer and double
    vectors become lists, a named list a dict, a pairlist a dict."""
    return _RReader(data).item()


def r_lazyload(base: Path) -> dict:
    """name -> object of an R lazy-load database (base.rdx index, base.rdb zlib blobs)."""
    index = unserialize(gzip.decompress(Path(f"{base}.rdx").read_bytes()))
    blob = Path(f"{base}.rdb").read_bytes()
    out = {}
    for name, (offset, length) in index["variables"].items():
        raw = blob[int(offset) : int(offset) + int(length)]
        # 4 bytes of uncompressed length, then a zlib stream (R's default compression).
        out[name] = unserialize(zlib.decompress(raw[4:]))
    return out


# ---------------------------------------------------------------------------------------------
# Jane Austen's novels (janeaustenr)

AUSTEN = "usr/lib/R/site-library/janeaustenr/data/Rdata"
_CHAPTER = re.compile(r"^\s*(CHAPTER|Chapter)\s+([0-9IVXLC]+)\.?\s*$")
_VOLUME = re.compile(r"^\s*(VOLUME|Volume)\s+([0-9IVXLC]+|ONE|TWO|THREE)\.?\s*$")


def novel_paragraphs(lines: list[str | None]) -> Iterator[tuple[str, str]]:
    """(chapter id, paragraph) of a novel given as its lines: paragraphs are separated by
    empty lines; the front matter before the first chapter, headings and `_emphasis_`
    underscores dropped. A chapter id counts volumes too ("2.14")."""
    volume, chapter = 0, None
    cur: list[str] = []

    def flush() -> Iterator[tuple[str, str]]:
        if cur and chapter is not None:
            text = squash(" ".join(cur).replace("_", ""))
            if text:
                yield f"{volume}.{chapter}" if volume else chapter, text
        cur.clear()

    for raw in lines:
        line = (raw or "").strip()
        if _VOLUME.match(line):
            yield from flush()
            volume += 1
            continue
        m = _CHAPTER.match(line)
        if m:
            yield from flush()
            chapter = m.group(2)
            continue
        if not line:
            yield from flush()
        else:
            cur.append(line)
    yield from flush()


def austen(root: Path) -> Iterator[dict]:
    """Paragraphs of the six novels; the document is the chapter ("austen:emma/2.14")."""
    for name, lines in sorted(r_lazyload(root / AUSTEN).items()):
        if not isinstance(lines, list):
            continue
        for chapter, text in novel_paragraphs(lines):
            yield dict(text=text, kind="austen", doc=f"austen:{name}/{chapter}", atomic=0)


# ---------------------------------------------------------------------------------------------
# An Anarchist FAQ (anarchism)

ANARCHIST_FAQ = "usr/share/doc/anarchism/html"
_BLOCKQUOTE = re.compile(r"<blockquote\b.*?</blockquote>", re.S | re.I)
# [For a New Liberty, p. 47], [Op. Cit., p. 3], [Ibid.], [Quoted by ...]: references. A
# bracket of at most three letters is an editor's change inside a quotation ("[u]nder").
_CITATION = re.compile(r"\s*\[[^\]]{4,}\]")


def faq_paragraphs(src: str) -> list[str]:
    """Paragraphs of one FAQ section: the HTML's paragraphs without quoted passages, headings
    or citations; what remains is the FAQ's own argument."""
    src = _BLOCKQUOTE.sub(" ", src)
    out = []
    for para in html_paragraphs(src):
        para = _CITATION.sub("", para)
        para = re.sub(r"\[(\w{1,3})\]", r"\1", para)
        para = squash(para.replace(" .", ".").replace(" ,", ","))
        if para:
            out.append(para)
    return out


def anarchist_faq(root: Path) -> Iterator[dict]:
    """The FAQ's sections and appendices; the document is the HTML file (one question with its
    sub-questions, "anarchist-faq:secF3")."""
    for path in sorted((root / ANARCHIST_FAQ).glob("*.html")):
        rel = path.relative_to(root).as_posix()
        if is_reserved_path(rel) or path.stem in ("index", "links", "new", "changelog"):
            continue  # the table of contents, a link list, the change log
        for para in faq_paragraphs(path.read_text(encoding="utf-8", errors="replace")):
            yield dict(text=para, kind="anarchist-faq", doc=f"anarchist-faq:{path.stem}", atomic=0)


# ---------------------------------------------------------------------------------------------
# News: Reuters-21578 samples (tm)

TM_TEXTS = "usr/lib/R/site-library/tm/texts"


def reuters_article(src: str) -> tuple[str, list[str]]:
    """(title, paragraphs) of a Reuters-21578 article in tm's XML: the <BODY>, whose
    paragraphs are indented lines, without the closing "Reuter" signature."""
    title = re.search(r"<TITLE>(.*?)</TITLE>", src, re.S)
    body = re.search(r"<BODY>(.*?)</BODY>", src, re.S)
    if not body:
        return "", []
    text = html.unescape(body.group(1))
    text = re.sub(r"\s*\bReuter\b[.\s]*(&#3;|\x03)?\s*$", "", text, flags=re.I)
    text = re.sub(r"<([^<>]*)>", r"\1", text)  # <Four Seasons Hotels Inc>: a company tag
    paras = [squash(p) for p in re.split(r"\n(?=\s{2,}\S)|\n\s*\n", text)]
    return squash(html.unescape(title.group(1))) if title else "", [p for p in paras if p]


def news(root: Path) -> Iterator[dict]:
    """Paragraphs of the Reuters articles; the document is the article."""
    for path in sorted((root / TM_TEXTS).glob("*/reut-*.xml")):
        _, paras = reuters_article(path.read_text(encoding="utf-8", errors="replace"))
        doc = f"news:reuters/{path.parent.name}/{path.stem}"
        for para in paras:
            yield dict(text=para, kind="news", doc=doc, atomic=0)
