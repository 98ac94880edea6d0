"""Markup cleaners and text units for the distillation corpus.

Every cleaner turns one document's markup into a list of plain paragraphs (whitespace
collapsed); `chunks` cuts a paragraph into sentence-aligned texts of bounded length; `is_prose`
rejects what is left of code, tables and lists; `dedup_key` is the normalized key for
deduplication. Pure Python on purpose: no groff, pandoc or HTML library to install, and the
same output on every machine.
"""

from __future__ import annotations

import hashlib
import html
import re
from html.parser import HTMLParser

MIN_WORDS = 4
MAX_WORDS = 64  # the teacher caps at 256 tokens; 64 words of prose is ~90 tokens
MAX_CHARS = 600  # bounds token count for technical text too (~2.5 chars per token at worst)

_WS = re.compile(r"\s+")


def squash(text: str) -> str:
    return _WS.sub(" ", text).strip()


def dedup_key(text: str) -> str:
    """Case, punctuation and spacing do not make a text new: "The cat." == "the  cat"."""
    return " ".join(re.findall(r"[^\W_]+", text.casefold()))


def stable_fraction(key: str) -> float:
    """A number in [0, 1) from a stable hash of key (same on every machine and run)."""
    h = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")
    return (h % 10_000) / 10_000


# ---------------------------------------------------------------------------------------------
# Sentences and chunks

# Abbreviations after which a full stop does not end a sentence.
_ABBREV = {
    "e.g", "i.e", "etc", "cf", "vs", "viz", "mr", "mrs", "ms", "dr", "prof", "st", "no", "fig",
    "figs", "vol", "ch", "sec", "approx", "esp", "al", "jr", "sr", "inc", "ltd", "co", "resp",
    "ca", "op", "cit", "ibid", "lit", "pl", "sing", "n", "v", "a", "adj", "adv", "prep", "jan",
    "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec", "gen", "gov",
    "col", "capt", "lt", "sgt", "rev", "hon", "pp", "p", "ed", "eds", "trans", "ff",
}  # fmt: skip
_BOUNDARY = re.compile(r"(?<=[.!?])[\"'’”)\]]*\s+(?=[\"'‘“(\[]?[A-Z0-9])")


def sentences(paragraph: str) -> list[str]:
    """Split on . ! ? followed by a capitalised word, except after common abbreviations and
    initials ("J. S. Bach", "e.g. This")."""
    out: list[str] = []
    start = 0
    for m in _BOUNDARY.finditer(paragraph):
        head = paragraph[start : m.start()]
        last = head.rsplit(None, 1)[-1] if head.split() else ""
        word = last.rstrip(".!?\"'’”)]").lstrip("(\"'‘“[").casefold()
        if last.endswith(".") and (word in _ABBREV or len(word) == 1):
            continue
        out.append(paragraph[start : m.end()].strip())
        start = m.end()
    tail = paragraph[start:].strip()
    if tail:
        out.append(tail)
    return out


def chunks(paragraph: str, key: str, max_words: int = MAX_WORDS) -> list[str]:
    """Consecutive sentences packed up to a target length drawn from a stable hash of key
    (the document and paragraph), so the corpus holds single sentences as well as multi-sentence
    passages. A sentence longer than max_words is dropped (most are run-on lists)."""
    words = len(paragraph.split())
    if words <= max_words and stable_fraction(key + "#whole") < 0.25:
        return [paragraph]
    # Targets of 8-48 words: mostly one to three sentences, the length the service is sent.
    target = 8 + int(stable_fraction(key) * (min(max_words, 48) - 8))
    out: list[str] = []
    cur: list[str] = []
    n = 0
    for s in sentences(paragraph):
        w = len(s.split())
        if w > max_words:
            if cur:
                out.append(" ".join(cur))
            cur, n = [], 0
            continue
        if cur and n + w > target:
            out.append(" ".join(cur))
            cur, n = [], 0
        cur.append(s)
        n += w
    if cur:
        out.append(" ".join(cur))
    return out


# ---------------------------------------------------------------------------------------------
# What counts as prose

_WORDLIKE = re.compile(r"^[(\"'‘“\[]*[A-Za-z][a-z'’\-]*[.,;:!?)\"'’”\]]*$")
_CODE_CHARS = set("{}[]<>=;|\\$_#@`~^*/")


def is_prose(text: str, min_words: int = MIN_WORDS) -> bool:
    """English running text: enough ordinary words, few code symbols, Latin script only."""
    toks = text.split()
    if len(toks) < min_words:
        return False
    if any(c.isalpha() and ord(c) > 0x24F for c in text):
        return False  # another script: not the English corpus
    if sum(c in _CODE_CHARS for c in text) > 0.04 * len(text):
        return False
    wordlike = sum(bool(_WORDLIKE.match(t)) for t in toks)
    if wordlike < 0.6 * len(toks):
        return False
    lower = sum(t[:1].islower() for t in toks)
    return lower >= 0.3 * len(toks)  # not a heading, a name list or an all-caps banner


# ---------------------------------------------------------------------------------------------
# roff (man pages, man(7) macros)

_ROFF_CHARS = {
    "em": "—", "en": "–", "hy": "-", "aq": "'", "dq": '"', "lq": "“", "rq": "”", "oq": "‘",
    "cq": "’", "bu": "•", "co": "©", "rg": "®", "tm": "™", "mu": "×", "de": "°", "pl": "+",
    "mi": "-", "eq": "=", "lt": "<", "gt": ">", "ga": "`", "ha": "^", "ti": "~", "rs": "\\",
    "sl": "/", "ba": "|", "or": "|", "at": "@", "sh": "#", "Do": "$", "ct": "¢", "Po": "£",
    "Eu": "€", "ua": "↑", "da": "↓", "ra": "→", "la": "←", "<=": "≤", ">=": "≥",
}  # fmt: skip
_ROFF_STRINGS = {'L"': "“", 'R"': "”", "C'": "'", "C`": "'", "Tm": "™", "lq": "“", "rq": "”"}
_ROFF_ESCAPE = re.compile(
    r"""\\(?:
        f(?:\[[^\]]*\]|\(..|.)          # font
      | s[-+]?(?:\d|\(\d\d|\[\d+\])     # size
      | \*(?:\[([^\]]*)\]|\((..)|(.))   # string: groups 1-3
      | \[([^\]]*)\]                    # named character: group 4
      | \((..)                          # two-letter character: group 5
      | [hvwlLNobDXZRSx]'[^']*'         # motions, widths, drawing: dropped
      | [kmMnYgV](?:\[[^\]]*\]|\(..|.)  # registers, colours
      | (.)                             # one-character escapes: group 6
    )""",
    re.X,
)
_ONE_CHAR = {"-": "-", "e": "\\", "\\": "\\", " ": " ", "~": " ", "0": " ", "'": "'", "`": "`"}
_FONT_MACROS = {"B", "I", "SM", "SB"}
_ALT_MACROS = {"BR", "BI", "IB", "IR", "RB", "RI"}
_BREAK_MACROS = {"PP", "P", "LP", "IP", "TP", "HP", "SH", "SS", "sp", "br", "RS", "RE", "TQ"}
_SKIP_BLOCKS = {"nf": "fi", "EX": "EE", "TS": "TE", "EQ": "EN", "de": "..", "ig": "..", "PS": "PE"}


def _roff_escapes(line: str) -> str:
    def sub(m: re.Match) -> str:
        if m.group(1) is not None or m.group(2) is not None or m.group(3) is not None:
            name = m.group(1) or m.group(2) or m.group(3)
            return _ROFF_STRINGS.get(name, "")
        if m.group(4) is not None:
            name = m.group(4)
            if name.startswith("u") and re.fullmatch(r"u[0-9A-Fa-f]{4,5}", name):
                return chr(int(name[1:], 16))
            return _ROFF_CHARS.get(name, "")
        if m.group(5) is not None:
            return _ROFF_CHARS.get(m.group(5), "")
        if m.group(6) is not None:
            return _ONE_CHAR.get(m.group(6), "")
        return ""

    line = re.sub(r'\\".*$', "", line)  # comment
    return _ROFF_ESCAPE.sub(sub, line)


def _macro_args(rest: str) -> list[str]:
    return [a[1:-1] if a.startswith('"') else a for a in re.findall(r'"[^"]*"?|\S+', rest)]


def roff_paragraphs(src: str) -> list[str]:
    """Paragraphs of running text from a man(7) page: font macros keep their words; headings,
    no-fill blocks (examples, synopses), tables and macro definitions are dropped; a .TP tag line
    is dropped and the indented text after it kept."""
    paras: list[str] = []
    cur: list[str] = []
    skip_until: str | None = None
    drop_next = 0
    in_heading = False

    def flush() -> None:
        if cur:
            paras.append(squash(" ".join(cur)))
            cur.clear()

    for raw in src.splitlines():
        if skip_until is not None:
            if raw.startswith((f".{skip_until}", f"'{skip_until}")):
                skip_until = None
            continue
        if raw.startswith((".", "'")):
            m = re.match(r"[.'']\s*(\S*)\s*(.*)", raw)
            name, rest = (m.group(1), m.group(2)) if m else ("", "")
            if name in _SKIP_BLOCKS:
                flush()
                skip_until = _SKIP_BLOCKS[name]
            elif name in _FONT_MACROS:
                text = " ".join(_macro_args(_roff_escapes(rest)))
                if drop_next:
                    drop_next -= 1
                elif not in_heading and text:
                    cur.append(text)
            elif name in _ALT_MACROS:
                text = "".join(_macro_args(_roff_escapes(rest)))
                if drop_next:
                    drop_next -= 1
                elif not in_heading and text:
                    cur.append(text)
            elif name in _BREAK_MACROS:
                flush()
                in_heading = name in ("SH", "SS") and not rest.strip()
                drop_next = 1 if name in ("TP", "TQ") else 0
            elif name not in ("", '\\"'):
                pass  # other requests (.TH, .IX, .ft, .in, .ad, ...): no running text
            continue
        line = _roff_escapes(raw)
        if not line.strip():
            flush()
            in_heading = False
            continue
        if drop_next:
            drop_next -= 1
            continue
        if in_heading:
            in_heading = False
            flush()
        if line.endswith("\\c"):
            line = line[:-2]
        cur.append(line)
    flush()
    return [p for p in paras if p]


# ---------------------------------------------------------------------------------------------
# HTML (DocBook, Sphinx, Publican output)

_BLOCK_TAGS = {
    "p", "li", "dd", "dt", "td", "th", "blockquote", "div", "section", "article", "h1", "h2",
    "h3", "h4", "h5", "h6", "tr", "table", "ul", "ol", "dl", "br", "caption", "figcaption",
    "title", "body", "header", "footer", "main", "aside",
}  # fmt: skip
_SKIP_TAGS = {"script", "style", "pre", "nav", "head", "code-block", "svg", "math", "noscript"}
_HEADING_TAGS = {"h1", "h2", "h3", "h4", "h5", "h6", "title", "th", "dt", "caption"}


class _HTMLText(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paras: list[str] = []
        self.cur: list[str] = []
        self.skip = 0
        self.heading = 0

    def _flush(self) -> None:
        if self.cur:
            text = squash("".join(self.cur))
            if text and not self.heading:
                self.paras.append(text)
            self.cur = []

    def handle_starttag(self, tag: str, attrs) -> None:
        if self.skip:
            # Inside a skipped element: count only what can nest in it, to find its end.
            if tag in _SKIP_TAGS or tag == "div":
                self.skip += 1
            return
        cls = (dict(attrs).get("class") or "").split()
        if tag in _SKIP_TAGS or (
            tag == "div" and {"navheader", "navfooter", "highlight"} & set(cls)
        ):
            self.skip = 1
            return
        if tag in _BLOCK_TAGS:
            self._flush()
            if tag in _HEADING_TAGS:
                self.heading += 1

    def handle_endtag(self, tag: str) -> None:
        if self.skip:
            if tag in _SKIP_TAGS or tag == "div":
                self.skip -= 1
            return
        if tag in _BLOCK_TAGS:
            self._flush()
            if tag in _HEADING_TAGS:
                self.heading = max(0, self.heading - 1)

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.cur.append(data)


def html_paragraphs(src: str) -> list[str]:
    """Text of block elements (paragraphs, list items, cells); headings, code blocks,
    scripts and navigation bars dropped."""
    p = _HTMLText()
    p.feed(src)
    p.close()
    p._flush()
    return [t.replace("¶", "").strip() for t in p.paras]


# ---------------------------------------------------------------------------------------------
# Mallard and DocBook XML (GNOME help, GnuCash manuals)

_XML_SKIP = re.compile(
    r"<(info|code|screen|media|comment|title|desc|synopsis|programlisting|literallayout|"
    r"indexterm|refmeta|bookinfo|articleinfo|figure)\b[^>]*?(?:/>|>.*?</\1>)",
    re.S,
)


# Entities that DocBook manuals define in external DTDs (KDE's kdoctools, GnuCash's): the word
# they stand for; others become their own name (&konqueror; -> Konqueror), boilerplate nothing.
_ENTITY_WORDS = {
    "ie": "i.e.", "eg": "e.g.", "etc": "etc.", "kde": "KDE", "app": "GnuCash",
    "kappname": "the application", "package": "the package", "FDLNotice": "", "underFDL": "",
    "underGPL": "", "FDLInvariantSections": "", "reporting.bugs": "", "updating.documentation": "",
}  # fmt: skip


def _entity_word(m: re.Match) -> str:
    name = m.group(1)
    if name in _ENTITY_WORDS:
        return _ENTITY_WORDS[name]
    if "." in name or "-" in name:
        return ""  # boilerplate blocks (&documentation.index;)
    return name if any(c.isupper() for c in name) else name.capitalize()


def xml_paragraphs(src: str, tags: tuple[str, ...] = ("p",)) -> list[str]:
    """Text of the paragraph elements (Mallard <p>, DocBook <para>); metadata, titles, code and
    screen blocks dropped, inline markup reduced to its words."""
    src = _XML_SKIP.sub(" ", src)
    names = "|".join(tags)
    out = []
    for m in re.finditer(rf"<({names})\b[^>]*>(.*?)</\1>", src, re.S):
        body = m.group(2)
        if re.search(rf"<({names})\b", body):
            continue  # a wrapper around nested paragraphs: they are found on their own
        text = html.unescape(re.sub(r"<[^>]+>", "", body))
        out.append(squash(re.sub(r"&([\w.-]+);", _entity_word, text)))
    return [t for t in out if t]


def mallard_paragraphs(src: str) -> list[str]:
    return xml_paragraphs(src, ("p",))


def docbook_paragraphs(src: str) -> list[str]:
    return xml_paragraphs(src, ("para", "simpara"))


# ---------------------------------------------------------------------------------------------
# POD (Perl documentation)

_POD_ENTITIES = {"lt": "<", "gt": ">", "verbar": "|", "sol": "/", "quot": '"', "amp": "&"}


_POD_CODE = re.compile(r"([A-Z])(?:<<+\s(.*?)\s>>+|<([^<>]*)>)")


def _pod_code(m: re.Match) -> str:
    kind = m.group(1)
    body = (m.group(2) if m.group(2) is not None else m.group(3)).strip()
    if kind in "XZ":  # index entries, zero-width markers
        return ""
    if kind == "E":
        if body.isdigit():
            return chr(int(body))
        return _POD_ENTITIES.get(body, html.unescape(f"&{body};"))
    if kind == "L":  # L<text|target>, L<name/"section">: the words a reader sees
        return body.split("|", 1)[0] if "|" in body else body.split("/", 1)[0].strip('"') or body
    return body  # B, I, C, F, S: the text itself


def _pod_inline(text: str) -> str:
    # Innermost codes first, until nothing changes: B<C<x>> -> B<x> -> x.
    for _ in range(8):
        new = _POD_CODE.sub(_pod_code, text)
        if new == text:
            break
        text = new
    return text


def pod_paragraphs(src: str) -> list[str]:
    """Ordinary paragraphs of a POD file; commands (=head, =item, ...), verbatim (indented)
    paragraphs and =begin/=for blocks dropped; formatting codes resolved."""
    out = []
    in_pod, in_begin = src.lstrip().startswith("="), False
    for block in re.split(r"\n[ \t]*\n", src):
        if not block.strip():
            continue
        if block.startswith("="):
            cmd = block.split(None, 1)[0]
            if cmd == "=cut":
                in_pod = False
            else:
                in_pod = True
            if cmd == "=begin":
                in_begin = True
            elif cmd == "=end":
                in_begin = False
            continue
        if not in_pod or in_begin or block[:1] in " \t":
            continue
        out.append(squash(_pod_inline(block)))
    return [t for t in out if t]


# ---------------------------------------------------------------------------------------------
# reStructuredText, Markdown and plain-text documents (kernel documentation)

_RST_ROLE = re.compile(r":[\w:+-]+:`([^`<]*?)(?:\s*<[^`>]*>)?`")
_RST_LINK = re.compile(r"`([^`<]+?)\s*(?:<[^`>]*>)?`__?")
_LIST_MARK = re.compile(r"^\s*(?:[-*+•]|\d+[.)]|[a-z][.)]|#\.)\s+")


def _rst_inline(text: str) -> str:
    text = _RST_ROLE.sub(r"\1", text)
    text = re.sub(r"``(.+?)``", r"\1", text)
    text = _RST_LINK.sub(r"\1", text)
    text = re.sub(r"(?<![\w*])\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*", r"\1", text)
    text = re.sub(r"\[(\d+|#\w*|\*)\]_", "", text)  # footnote references
    text = re.sub(r"\|(\w[\w -]*)\|", r"\1", text)  # substitutions
    text = re.sub(r"!?\[([^\]]+)\]\([^)]*\)", r"\1", text)  # markdown links and images
    text = re.sub(r"\[([^\]]+)\]\[[^\]]*\]", r"\1", text)  # markdown reference links
    text = re.sub(r"`([^`]+)`", r"\1", text)  # markdown code
    return text


_CODE_START = ("$ ", "# ", "#!", "//", ";", "(", "{", "}", "<", ">>>", "%", "@", "--", "*/", "/*")


def _indented_prose(lines: list[str]) -> bool:
    """An indented block that reads as prose (a definition body, a note, an Info @deffn
    description) rather than an example: a run of four plain lower-case words, no line that
    starts like code, and a sentence's end."""
    stripped = [ln.strip() for ln in lines]
    joined = " ".join(stripped)
    return (
        bool(re.search(r"\b[a-z]+ [a-z]+ [a-z]+ [a-z]+\b", joined))
        and not any(ln.startswith(_CODE_START) for ln in stripped)
        and joined[-1:] in ".:!?)"
    )


def plaintext_paragraphs(src: str) -> list[str]:
    """Paragraphs of prose from rst / markdown / Info / plain text: blank-line separated blocks
    without directives, section rules, tables or code fences; each list item is its own
    paragraph. An indented block is kept only if it reads as prose and does not follow a
    "::" (the reStructuredText literal-block marker) or a code directive."""
    out: list[str] = []
    src = re.sub(r"^(```|~~~).*?^\1\s*$", "", src, flags=re.S | re.M)
    literal = False  # the previous block announced a literal block ("::", a code directive)
    for block in re.split(r"\n[ \t]*\n", src):
        # Info definition headers (" -- Function: name args") name what the body describes.
        lines = [
            ln for ln in block.splitlines() if ln.strip() and not re.match(r"\s*-- [\w ]+: ", ln)
        ]
        if not lines:
            continue
        indented = lines[0][:1] in " \t"
        if indented and (literal or not _indented_prose(lines)):
            literal = False  # the marker covers the block after it; later ones are judged
            continue
        literal = False
        first = lines[0].strip()
        if first.startswith(("..", ":", "#", "|", "+-", "+=", "===", ">>>", "$ ")):
            # A code directive's indented body is literal; other directives' bodies are text.
            literal = bool(
                re.match(r"\.\. (code-block|code|literalinclude|highlight|kernel-doc)", first)
            )
            continue
        # Section titles: a line underlined (or overlined) with punctuation.
        lines = [ln for ln in lines if not re.fullmatch(r"\s*([=\-~^\"'`#*+_.:])\1{2,}\s*", ln)]
        items: list[list[str]] = [[]]
        for ln in lines:
            ln = ln.strip()
            if _LIST_MARK.match(ln) and items[-1]:
                items.append([])
            items[-1].append(_LIST_MARK.sub("", ln, count=1) if _LIST_MARK.match(ln) else ln)
        for item in items:
            text = squash(_rst_inline(" ".join(item)))
            if text.endswith("::"):
                text = text[:-1]  # "as follows::" introduces a literal block
                literal = True
            if text:
                out.append(text)
    return out


# ---------------------------------------------------------------------------------------------
# GNU Info and Vim help (plain text with their own apparatus)


def info_paragraphs(src: str) -> list[str]:
    """Prose of an Info file: node headers, the tag table, menus and section rules dropped,
    then read as plain text (indented blocks are examples)."""
    src = src.split("\x1fTag Table:", 1)[0]
    keep = []
    in_menu = False
    for line in src.split("\n"):
        if line.startswith("\x1f") or line.startswith(("File: ", "Indirect:", "Tag Table:")):
            continue
        if line.startswith("* Menu:"):
            in_menu = True
            continue
        if in_menu and (line.startswith("* ") or not line.strip() or line[:1] in " \t"):
            continue
        in_menu = False
        keep.append(line)
    return plaintext_paragraphs("\n".join(keep))


def vim_help_paragraphs(src: str) -> list[str]:
    """Prose of a Vim help file: *tags* dropped, |links| kept as words, examples (after a line
    ending in ">", until a line starting with "<" or a non-indented line) and rules dropped."""
    keep: list[str] = []
    in_example = False
    for line in src.split("\n"):
        if in_example:
            if line.startswith("<"):
                in_example = False
                keep.append("")
                continue
            if not line.strip() or line[:1] in " \t":
                continue
            in_example = False
            keep.append("")
        if line.rstrip() == ">" or line.rstrip().endswith(" >"):
            keep += [line.rstrip()[:-1], ""]
            in_example = True
            continue
        if re.fullmatch(r"[=-]{10,}|vim:.*", line.strip()):  # rules, the modeline
            continue
        keep.append(line)
    src = "\n".join(keep)
    src = re.sub(r"\*[^*\s]+\*", "", src)
    src = re.sub(r"\|([^|\s]+)\|", r"\1", src)
    return plaintext_paragraphs(src)
