"""Document sources: files of unpacked Debian packages, each cleaned by its markup's cleaner.

A document is one file (a man page, a POD file, a kernel .rst, an HTML chapter); its id is the
source name and the file's path under the package's folder, so a file never straddles the
train / held-out split.
"""

from __future__ import annotations

import bz2
import gzip
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from aft.distill.sources.packages import package_files
from aft.distill.sources.reserved import is_reserved_path
from aft.distill.textclean import (
    docbook_paragraphs,
    html_paragraphs,
    info_paragraphs,
    mallard_paragraphs,
    plaintext_paragraphs,
    pod_paragraphs,
    roff_paragraphs,
    vim_help_paragraphs,
)

CLEANERS: dict[str, Callable[[str], list[str]]] = {
    "roff": roff_paragraphs,
    "html": html_paragraphs,
    "mallard": mallard_paragraphs,
    "pod": pod_paragraphs,
    "text": plaintext_paragraphs,
    "docbook": docbook_paragraphs,
    "info": info_paragraphs,
    "vim": vim_help_paragraphs,
}


def read_text(path: Path) -> str:
    raw = path.read_bytes()
    if path.suffix == ".gz":
        raw = gzip.decompress(raw)
    elif path.suffix == ".bz2":
        raw = bz2.decompress(raw)
    return raw.decode("utf-8", "replace")


@dataclass(frozen=True)
class Files:
    """Files of one package: glob patterns (relative to the unpacked root) and their markup."""

    package: str
    patterns: tuple[str, ...]
    markup: str
    exclude: str = r"$^"  # regex on the relative path


_LICENCE_PAGE = re.compile(
    r"(^|/)(licen[cs]e|legal|copying|[lg]?fdl([-_.]?[\d.]+)?|[al]?gpl([-_.]?[\d.]+)?)"
    r"\.\w+(\.gz)?$",
    re.I,
)


def document_files(root: Path, spec: Files) -> Iterator[tuple[str, Path]]:
    """(relative path, path) of a spec's files (of its own package, where the fetch recorded
    the package's file list), sorted, reserved test domains excluded."""
    seen = set()
    listed = root.parent / "lists" / f"{spec.package}.list"
    own = package_files(root.parent, spec.package) if listed.exists() else None
    for pattern in spec.patterns:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            if rel in seen or not path.is_file() or re.search(spec.exclude, rel):
                continue
            if own is not None and rel not in own:
                continue  # another package's file in a shared folder
            if _LICENCE_PAGE.search(rel):
                continue  # the GPL / GFDL text, repeated by many manuals: not the manual
            seen.add(rel)
            # Reserved test domains (Python docs / docstrings, fortune files): never read.
            if is_reserved_path(rel):
                continue
            yield rel, path


def document_records(root: Path, source: str, specs: list[Files]) -> Iterator[dict]:
    for spec in specs:
        clean = CLEANERS[spec.markup]
        for rel, path in document_files(root, spec):
            doc = f"{source}:{_doc_name(rel)}"
            for para in clean(read_text(path)):
                yield dict(text=para, kind=source, doc=doc, atomic=0)


def _doc_name(rel: str) -> str:
    """usr/share/man/man2/open.2.gz -> open.2; keeps folders below the package's own."""
    rel = re.sub(r"\.(gz|bz2|xz)$", "", rel)
    rel = re.sub(r"\.info-\d+$", ".info", rel)  # the pieces of one Info manual: one document
    m = re.match(r"usr/share/man/man[^/]+/(.*)$", rel)
    if m:
        return m.group(1)
    return re.sub(r"^usr/share/(?:doc/)?", "", rel)


MAN_PAGES = [
    # man-pages project: system calls, C library, files, conventions.
    Files("manpages", ("usr/share/man/man[1-8]/*",), "roff"),
    Files("manpages-dev", ("usr/share/man/man[23]/*",), "roff"),
    Files("git-man", ("usr/share/man/man[1-7]/*",), "roff"),
    Files("libssl-doc", ("usr/share/man/man[37]/*",), "roff"),
] + [
    # Manual pages of core system tools.
    Files(pkg, ("usr/share/man/man[1-8]/*",), "roff")
    for pkg in (
        "systemd", "util-linux", "iproute2", "openssh-client", "procps", "bash", "tmux",
        "rsync", "curl", "apt", "dpkg", "sudo", "e2fsprogs", "mutt", "dpkg-dev", "debhelper",
        "devscripts",
    )
]  # fmt: skip
PERL_DOC = [Files("perl-doc", ("usr/share/perl/*/pod/*.pod",), "pod")]
LINUX_DOC = [
    Files(
        "linux-doc-6.1",
        (
            "usr/share/doc/linux-doc-6.1/Documentation/**/*.rst.gz",
            "usr/share/doc/linux-doc-6.1/Documentation/**/*.rst",
            "usr/share/doc/linux-doc-6.1/Documentation/**/*.txt.gz",
            "usr/share/doc/linux-doc-6.1/Documentation/**/*.txt",
        ),
        "text",
        # Translations, ABI listings and device-tree bindings (field lists, not prose).
        exclude=r"/Documentation/(translations|ABI|devicetree|output|sphinx)/",
    )
]
DEBIAN_DOCS = [
    Files("debian-handbook", ("usr/share/doc/debian-handbook/html/en-US/*.html",), "html"),
    Files("debian-reference-en", ("usr/share/debian-reference/*.en.html",), "html"),
    Files("debian-faq", ("usr/share/doc/debian/FAQ/*.en.html",), "html"),
    Files(
        "debian-policy",
        ("usr/share/doc/debian-policy/*.html",),
        "html",
        exclude=r"-1\.html$",  # one-page duplicates of the chaptered documents
    ),
    Files("developers-reference", ("usr/share/developers-reference/_sources/*.rst.txt",), "text"),
    Files("maint-guide", ("usr/share/doc/maint-guide/html/*.en.html",), "html"),
    Files("debian-history", ("usr/share/doc/debian-history/docs/*.en.html",), "html"),
    Files(
        "debian-history",
        (
            "usr/share/doc/debian-history/*.txt.gz",
            "usr/share/doc/debian-history/debian-manifesto.gz",
        ),
        "text",
    ),
    Files("doc-debian", ("usr/share/doc/debian/*.txt", "usr/share/doc/debian/*.txt.gz"), "text"),
    Files("harden-doc", ("usr/share/doc/harden-doc/html/en-US/*.html",), "html"),
    Files(
        "debian-edu-doc-en",
        ("usr/share/doc/debian-edu-doc-en/debian-edu-bookworm-manual.html",),
        "html",
    ),
    Files("live-manual-html", ("usr/share/doc/live-manual/html/live-manual/*.en.html",), "html"),
]
POSTGRESQL_DOC = [
    Files("postgresql-doc-15", ("usr/share/doc/postgresql-doc-15/html/*.html",), "html")
]
GIMP_HELP = [Files("gimp-help-en", ("usr/share/gimp/2.0/help/en/**/*.html",), "html")]
GNOME_HELP = [Files("gnome-user-docs", ("usr/share/help/C/**/*.page",), "mallard")]
GNUCASH_DOCS = [
    Files(
        "gnucash-docs",
        ("usr/share/help/C/gnucash-guide/*.xml", "usr/share/help/C/gnucash-help/*.xml"),
        "docbook",
    )
]
VIM_HELP = [Files("vim-runtime", ("usr/share/vim/vim*/doc/*.txt",), "vim")]
LILYPOND_DOC = [
    Files(
        "lilypond-doc",
        ("usr/share/info/lilypond-*.info*.gz",),
        "info",
        exclude=r"lilypond-internals",  # generated property tables, not prose
    )
]
ZSH_DOC = [Files("zsh-doc", ("usr/share/doc/zsh-common/html/*.html",), "html")]
NODEJS_DOC = [
    Files(
        "nodejs-doc", ("usr/share/doc/nodejs/api/*.md", "usr/share/doc/nodejs/api/*.md.gz"), "text"
    )
]
SQLITE_DOC = [Files("sqlite3-doc", ("usr/share/doc/sqlite3/**/*.html",), "html")]
APACHE_DOC = [Files("apache2-doc", ("usr/share/doc/apache2-doc/manual/en/**/*.html",), "html")]
KICAD_DOC = [Files("kicad-doc-en", ("usr/share/doc/kicad/help/en/*.html",), "html")]
# GNU manuals in Info format (Debian main: GPL, or GFDL without invariant sections).
GNU_INFO = [
    Files(pkg, ("usr/share/info/**/*.info*",), "info")
    for pkg in (
        "coreutils", "findutils", "grep", "sed", "gzip", "diffutils", "wget", "screen",
        "autoconf-doc", "automake", "libtool-doc", "binutils-doc", "gnulib", "gnutls-doc",
        "guile-3.0-doc", "mailutils-doc", "r-doc-info", "octave-doc", "gnuplot-doc",
        "maxima-doc",
    )
]  # fmt: skip
RUST_BOOKS = (
    "book", "reference", "rust-by-example", "nomicon", "edition-guide", "embedded-book",
    "rustc", "rustdoc", "unstable-book", "std",
)  # fmt: skip
RUST_DOC = [
    Files(
        "rust-doc",
        tuple(f"usr/share/doc/rust-doc/html/{book}/**/*.html" for book in RUST_BOOKS),
        "html",
        # One-page copies of each book; generated index pages; architecture intrinsics.
        exclude=r"/(print|toc|searchindex|all)\.html$|/std/arch/|/(src|implementors)/",
    )
]
JAVA_DOC = [
    Files(
        "openjdk-17-doc",
        ("usr/share/doc/openjdk-17-jre-headless/api/**/*.html",),
        "html",
        # Cross-reference pages: lists of names, not prose.
        exclude=r"/(class-use|index-files)/|/(package-tree|package-use|overview-tree|"
        r"allclasses-index|allpackages-index|deprecated-list|constant-values|serialized-form|"
        r"index-all|help-doc)\.html$",
    )
]
LIBREOFFICE_HELP = [
    Files("libreoffice-help-en-us", ("usr/share/libreoffice/help/en-US/text/**/*.html",), "html")
]
GNOME_DEVEL_DOCS = [Files("gnome-devel-docs", ("usr/share/help/C/**/*.page",), "mallard")]
SERVER_DOCS = [
    Files(
        "exim4-doc-html",
        ("usr/share/doc/exim4-doc-html/spec_html/*.html",),
        "html",
        exclude=r"index\.html$",  # concept and option indexes: lists of headings
    ),
    Files("bind9-doc", ("usr/share/doc/bind9-doc/arm/*.html",), "html"),
    Files("ffmpeg-doc", ("usr/share/doc/ffmpeg/manual/*.html",), "html"),
]
ERLANG_DOC = [
    Files(
        "erlang-doc",
        ("usr/share/doc/erlang-doc/doc/**/*.html", "usr/share/doc/erlang-doc/**/doc/html/*.html"),
        "html",
        exclude=r"/(java|search)/|/(index|search|release_notes|notes)\.html$",
    )
]
KSTARS_HANDBOOK = [Files("kstars-data", ("usr/share/doc/HTML/en/kstars/*.docbook",), "docbook")]
# User help of GNOME applications and games (Mallard), and KDE handbooks (DocBook).
GNOME_APP_HELP = [
    Files(pkg, ("usr/share/help/C/**/*.page",), "mallard")
    for pkg in (
        "accerciser", "baobab", "brasero-common", "eog", "evolution-common", "file-roller",
        "five-or-more", "four-in-a-row", "gnome-boxes", "gnome-calculator", "gnome-chess",
        "gnome-clocks", "gnome-logs", "gnome-mahjongg", "gnome-mines", "gnome-nibbles",
        "gnome-robots", "gnome-sudoku", "gnome-system-monitor", "gnome-tetravex", "hitori",
        "iagno", "lightsoff", "orca", "pitivi", "polari", "quadrapassel", "seahorse",
        "shotwell-common", "simple-scan", "swell-foop", "zenity-common",
    )
]  # fmt: skip
KDE_HANDBOOKS = [
    Files(pkg, ("usr/share/doc/HTML/en/**/*.docbook",), "docbook")
    for pkg in (
        "ark", "cantor", "dolphin", "gwenview", "kalzium-data", "kbruch", "kcalc",
        "kdenlive-data", "kgeography-data", "kget", "kig", "kmahjongg", "kmines", "knights",
        "konqueror", "konsole", "kpat", "krusader", "ksudoku", "kturtle", "kwordquiz",
        "marble-data", "okular",
    )
]  # fmt: skip
QT_MODULES = ("qtbase5", "qtdeclarative5", "qtmultimedia5", "qttools5")
QT_DOC = [
    Files(
        f"{m}-doc-html",
        ("usr/share/qt5/doc/**/*.html",),
        "html",
        exclude=r"-(members|obsolete)\.html$",
    )
    for m in QT_MODULES
]
# Encyclopedic prose: how other cultures saw the sky, and the places of the landscapes.
STELLARIUM = [
    Files(
        "stellarium-data",
        (
            "usr/share/stellarium/skycultures/*/description.en.utf8",
            "usr/share/stellarium/landscapes/*/description.en.utf8",
        ),
        "html",
    )
]
