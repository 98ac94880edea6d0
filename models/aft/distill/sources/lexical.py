"""Dictionary-like sources: WordNet, Debian package descriptions, and dictd databases
(GCIDE / Webster's 1913 with its usage quotations, FOLDOC, the Jargon File).

Each yields paragraph records {text, kind, doc[, lexname], atomic}; `atomic` records (WordNet
glosses and examples, short descriptions) are kept whole, the rest may be cut into sentences.
"""

from __future__ import annotations

import gzip
import html
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from aft.distill.sources.packages import MissingInputs
from aft.distill.sources.reserved import is_reserved_package
from aft.distill.textclean import squash

# lexnames(5WN): index = lex_filenum field of a data.* line.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact",
    "noun.attribute", "noun.body", "noun.cognition", "noun.communication", "noun.event",
    "noun.feeling", "noun.food", "noun.group", "noun.location", "noun.motive", "noun.object",
    "noun.person", "noun.phenomenon", "noun.plant", "noun.possession", "noun.process",
    "noun.quantity", "noun.relation", "noun.shape", "noun.state", "noun.substance", "noun.time",
    "verb.body", "verb.change", "verb.cognition", "verb.communication", "verb.competition",
    "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather",
    "adj.ppl",
]  # fmt: skip

APT_LISTS = Path("/var/lib/apt/lists")
SNAPSHOT = "apt-lists"  # under the fetched-packages folder: the index as it was at fetch time


def wordnet(root: Path) -> Iterator[dict]:
    """Each synset's gloss ("definition") and quoted examples; the document is the synset
    ("n:00001740", the id the earlier corpus grouped by, so its split is unchanged)."""
    folder = root / "usr/share/wordnet"
    for pos in ("noun", "verb", "adj", "adv"):
        for line in (folder / f"data.{pos}").read_text(encoding="latin-1").splitlines():
            if line.startswith("  ") or "|" not in line:
                continue  # licence header
            head, gloss = line.split("|", 1)
            fields = head.split()
            doc = f"{fields[2]}:{fields[0]}"
            lexname = LEXNAMES[int(fields[1])]
            # The gloss is "definition; "example one"; "example two"" (examples are quoted).
            definition = squash(gloss.split('"', 1)[0]).rstrip(";").strip()
            if definition:
                yield dict(text=definition, kind="definition", doc=doc, lexname=lexname, atomic=1)
            for e in re.findall(r'"([^"]+)"', gloss):
                e = squash(e)
                if len(e.split()) >= 3:
                    yield dict(text=e, kind="example", doc=doc, lexname=lexname, atomic=1)


def apt_translation_files(lists: Path = APT_LISTS) -> list[Path]:
    return sorted(lists.glob("*_i18n_Translation-en*"))


def snapshot_descriptions(debs: Path) -> None:
    """Copy apt's English descriptions (and the Release files that date them) under debs, so
    that the corpus does not change when the system's apt lists are updated or dropped."""
    if not apt_translation_files():
        cmd = ["apt-get", "update", "-o", "Acquire::Languages=en"]
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
    dest = debs / SNAPSHOT
    dest.mkdir(parents=True, exist_ok=True)
    for f in apt_translation_files() + sorted(APT_LISTS.glob("*_dists_*_InRelease")):
        shutil.copy2(f, dest / f.name)


def debian_release(lists: Path) -> str:
    """Suite and date of the apt index the descriptions come from, e.g. "bookworm 2025-..."."""
    for rel in sorted(lists.glob("*_dists_*_InRelease")):
        text = rel.read_text(errors="replace")
        codename = re.search(r"^Codename: (\S+)", text, re.M)
        date = re.search(r"^Date: (.+)$", text, re.M)
        if codename and date and "-" not in codename.group(1):
            return f"{codename.group(1)}, index of {date.group(1).strip()}"
    return "unknown"


def debian_descriptions(root: Path) -> Iterator[dict]:
    """Short descriptions and long-description paragraphs from apt's Translation-en index (as
    snapshotted by `fetch`); the document is the package family (`foo`, `foo-data`, `foo-doc`:
    "deb:foo")."""
    files = apt_translation_files(root.parent / SNAPSHOT)
    if not files:
        raise MissingInputs("Debian descriptions missing: run `python -m aft.distill.corpus fetch`")
    for f in files:
        raw = subprocess.run(
            ["/usr/lib/apt/apt-helper", "cat-file", str(f)], capture_output=True, check=True
        ).stdout.decode("utf-8", "replace")
        for stanza in raw.split("\n\n"):
            m = re.search(r"^Package: (\S+)$", stanza, re.M)
            d = re.search(r"^Description-en: (.*?)(?=^\S|\Z)", stanza, re.M | re.S)
            if not (m and d) or is_reserved_package(m.group(1)):
                continue  # reserved: no descriptions of Python-doc or fortune packages
            doc = "deb:" + m.group(1).split("-")[0]
            short, _, long = d.group(1).partition("\n")
            yield dict(text=squash(short), kind="debian-short", doc=doc, atomic=1)
            for para in re.split(r"^ \.\s*$", long, flags=re.M):
                para = squash(para)
                if para and not para.startswith(("*", "-", "+", "o ")):  # bullet lists
                    yield dict(text=para, kind="debian-long", doc=doc, atomic=0)


# ---------------------------------------------------------------------------------------------
# dictd databases

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _b64(s: str) -> int:
    n = 0
    for c in s:
        n = n * 64 + _B64.index(c)
    return n


def dictd_entries(root: Path, name: str) -> Iterator[tuple[str, str]]:
    """(headword, entry text) of a dictd database, each entry once, in file order."""
    base = root / "usr/share/dictd" / name
    data = gzip.open(f"{base}.dict.dz").read()  # dictzip is gzip with a random-access table
    seen: set[int] = set()
    spans = []
    for line in (
        (root / "usr/share/dictd" / f"{name}.index")
        .read_text(encoding="utf-8", errors="replace")
        .splitlines()
    ):
        parts = line.split("\t")
        if len(parts) < 3 or parts[0].startswith(("00", "--")):
            continue  # database metadata entries
        off = _b64(parts[1])
        if off not in seen:
            seen.add(off)
            spans.append((off, _b64(parts[2]), parts[0]))
    for off, length, head in sorted(spans):
        yield head, data[off : off + length].decode("utf-8", "replace")


def _blocks(text: str) -> list[str]:
    return [b.strip("\n") for b in re.split(r"\n[ \t]*\n", text) if b.strip()]


_GCIDE_LABEL = re.compile(r"^(?:\d+\.\s*)?(?:\([a-z]\)\s*)?(?:\((?:[A-Z][\w.]*\s?){1,4}\)\s*)*")


def gcide_paragraphs(entry: str) -> Iterator[tuple[str, str]]:
    """(kind, text) of one GCIDE entry: definitions and notes ("gcide-definition") and the
    indented literary usage quotations ("gcide-quotation"); pronunciations (\\...\\),
    etymologies and source tags ([...]), and author attributions (--Shak.) removed.

    Senses that GCIDE took from WordNet 1.5 (tagged [WordNet 1.5], on the sense's last block)
    are left out: they near-duplicate the WordNet source and would leak across its split."""
    entry = re.sub(r"\\[^\\\n]*\\", "", entry)  # pronunciation
    raw = _blocks(entry)
    from_wordnet = [
        "[WordNet" in b or (i + 1 < len(raw) and "[WordNet" in raw[i + 1] and _is_syn(raw[i + 1]))
        for i, b in enumerate(raw)
    ]
    for i, block in enumerate(raw):
        block = re.sub(r"\[[^\]]*\]", "", block)  # etymology, [1913 Webster], [Obs.]
        if i == 0:
            block = block.split("\n", 1)[1] if "\n" in block else ""  # headword, part of speech
        if from_wordnet[i] or _is_syn(block) or not block.strip():
            continue
        first = block.strip("\n").split("\n", 1)[0]
        indent = len(first) - len(first.lstrip(" "))
        body = "\n".join(re.sub(r"\s--\s?[A-Z].*$", "", ln) for ln in block.split("\n"))
        body = squash(body.replace("{", "").replace("}", "")).removeprefix("Note:").strip()
        kind = "gcide-quotation" if indent >= 8 else "gcide-definition"
        text = _GCIDE_LABEL.sub("", body).strip()
        if text:
            yield kind, text


def _is_syn(block: str) -> bool:
    return block.strip().startswith(("Syn.", "Syn:"))  # synonym lists


def gcide(root: Path) -> Iterator[dict]:
    for head, entry in dictd_entries(root, "gcide"):
        doc = "gcide:" + head.casefold()
        for kind, text in gcide_paragraphs(entry):
            yield dict(text=text, kind=kind, doc=doc, atomic=0)


def computing_paragraphs(entry: str) -> Iterator[str]:
    """Paragraphs of a FOLDOC or Jargon File entry: headword and part-of-speech lines, domain
    tags (<programming>, [IBM]), dates, URLs and references dropped; {cross links} kept as
    words."""
    lines = entry.split("\n")[1:]
    for block in _blocks("\n".join(lines)):
        text = squash(block)
        if re.fullmatch(r"\(?\d{4}-\d\d-\d\d\)?|[a-z.,& ]{1,20}", text):
            continue  # a date line, or the part of speech ("n.", "vt.")
        text = re.sub(r"<[a-z][a-z ,/-]*>", "", text)  # FOLDOC domain tags
        text = re.sub(r"\[[^\]]*\]", "", text)  # [IBM], references
        text = re.sub(r"\{?\(?(?:https?|ftp)://\S+", "", text)
        text = squash(text.replace("{", "").replace("}", ""))
        text = re.sub(r"^\d+\.\s+", "", text)
        if text:
            yield text


def foldoc(root: Path) -> Iterator[dict]:
    for head, entry in dictd_entries(root, "foldoc"):
        for text in computing_paragraphs(entry):
            yield dict(text=text, kind="foldoc", doc="foldoc:" + head.casefold(), atomic=0)


def jargon(root: Path) -> Iterator[dict]:
    for head, entry in dictd_entries(root, "jargon"):
        for text in computing_paragraphs(entry):
            yield dict(text=text, kind="jargon", doc="jargon:" + head.casefold(), atomic=0)


def lintian_tags(root: Path) -> Iterator[dict]:
    """The explanation of each Lintian tag (what a packaging problem is and how to fix it);
    the document is the tag."""
    for path in sorted(root.glob("usr/share/lintian/tags/**/*.tag")):
        text = path.read_text(encoding="utf-8", errors="replace")
        tag = re.search(r"^Tag: (\S+)", text, re.M)
        expl = re.search(r"^Explanation: (.*?)(?=^\S|\Z)", text, re.M | re.S)
        if not (tag and expl):
            continue
        for para in re.split(r"^ \.\s*$", expl.group(1), flags=re.M):
            lines = para.strip("\n").split("\n")
            if any(ln.startswith("  ") for ln in lines[1:]):
                continue  # an indented example block
            para = squash(html.unescape(re.sub(r"</?[a-z][^>]*>", "", para)))  # <code>, &lowbar;
            if para:
                yield dict(text=para, kind="lintian", doc=f"lintian:{tag.group(1)}", atomic=0)
