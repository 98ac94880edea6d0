"""The corpus sources, in deduplication priority order (a text seen twice is kept where it was
seen first). Each source names the Debian packages it reads and a function from the unpacked
package root to paragraph records {text, kind, doc[, lexname], atomic}.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from aft.distill.sources import documents as D
from aft.distill.sources import games, lexical, prose, stories
from aft.distill.sources.reserved import is_reserved_package


@dataclass(frozen=True)
class Source:
    name: str
    packages: tuple[str, ...]
    records: Callable[[Path], Iterator[dict]]
    about: str


def _source(name: str, specs: list[D.Files], about: str, extra: tuple[str, ...] = ()) -> Source:
    """A document source; `extra` packages are fetched only for the copyright file that a
    package's /usr/share/doc symlink points to."""
    packages = tuple(dict.fromkeys([*(s.package for s in specs), *extra]))
    return Source(name, packages, partial(D.document_records, source=name, specs=specs), about)


# The Wesnoth data package and each mainline campaign (its own package).
WESNOTH_PACKAGES = ("wesnoth-1.16-data",) + tuple(
    f"wesnoth-1.16-{c}"
    for c in "did dm dw ei httt l low nr sof sota sotbe thot trow tsg ttb utbs".split()
)

SOURCES: list[Source] = [
    Source("wordnet", ("wordnet-base",), lexical.wordnet, "WordNet 3.0 glosses and examples"),
    Source(
        "debian-descriptions",
        (),
        lexical.debian_descriptions,
        "Debian package descriptions (apt's Translation-en index)",
    ),
    Source(
        "gcide",
        ("dict-gcide",),
        lexical.gcide,
        "GCIDE (Webster's 1913 + additions): definitions, notes, usage quotations",
    ),
    Source("foldoc", ("dict-foldoc",), lexical.foldoc, "Free On-line Dictionary of Computing"),
    Source("jargon", ("dict-jargon",), lexical.jargon, "The Jargon File 4.4.7"),
    _source(
        "man-pages",
        D.MAN_PAGES,
        "man pages: Linux man-pages, git, OpenSSL, systemd, util-linux, core tools, Debian "
        "packaging tools",
    ),
    _source("perl-doc", D.PERL_DOC, "Perl's manuals and FAQs (POD)"),
    _source("linux-doc", D.LINUX_DOC, "Linux kernel documentation (reStructuredText)"),
    _source(
        "debian-docs",
        D.DEBIAN_DOCS,
        "Debian manuals: Administrator's Handbook, Reference, FAQ, Policy, Developer's "
        "Reference, New Maintainers' Guide, Securing Debian, Debian Edu and Live manuals, project "
        "history, bug-tracker guides",
    ),
    _source("postgresql-doc", D.POSTGRESQL_DOC, "PostgreSQL 15 manual (HTML)"),
    _source("gimp-help", D.GIMP_HELP, "GIMP user manual (HTML)", ("gimp-help-common",)),
    _source("gnome-help", D.GNOME_HELP, "GNOME desktop user help (Mallard)"),
    _source(
        "gnu-info",
        D.GNU_INFO,
        "GNU manuals in Info format (coreutils, grep, sed, "
        "autoconf, guile, R, Octave, Maxima, gnuplot, ...)",
    ),
    _source(
        "rust-doc",
        D.RUST_DOC,
        "The Rust books (the Rust Programming Language, the Reference, Rust by Example, the "
        "Rustonomicon, ...) and the standard library documentation",
    ),
    _source("java-doc", D.JAVA_DOC, "OpenJDK 17 API documentation (Javadoc HTML)"),
    _source("erlang-doc", D.ERLANG_DOC, "Erlang/OTP documentation (HTML)"),
    _source(
        "server-docs",
        D.SERVER_DOCS,
        "Exim specification, BIND 9 Administrator Reference Manual, FFmpeg manuals (HTML)",
    ),
    _source("libreoffice-help", D.LIBREOFFICE_HELP, "LibreOffice help (HTML)"),
    _source("gnome-devel-docs", D.GNOME_DEVEL_DOCS, "GNOME developer guides (Mallard)"),
    _source("kstars-handbook", D.KSTARS_HANDBOOK, "KStars handbook and AstroInfo articles"),
    _source("gnome-app-help", D.GNOME_APP_HELP, "GNOME application and game help (Mallard)"),
    _source("kde-handbooks", D.KDE_HANDBOOKS, "KDE application handbooks (DocBook)"),
    _source("qt-doc", D.QT_DOC, "Qt 5 documentation: base, QML, multimedia, tools (HTML)"),
    Source("lintian", ("lintian",), lexical.lintian_tags, "Lintian tag explanations"),
    _source("gnucash-docs", D.GNUCASH_DOCS, "GnuCash tutorial and help (DocBook)"),
    _source("vim-help", D.VIM_HELP, "Vim's help files"),
    _source("lilypond-doc", D.LILYPOND_DOC, "LilyPond music typesetter manuals (Info)"),
    _source("zsh-doc", D.ZSH_DOC, "Zsh manual (HTML)", ("zsh-common",)),
    _source("nodejs-doc", D.NODEJS_DOC, "Node.js API documentation (Markdown)"),
    _source("sqlite-doc", D.SQLITE_DOC, "SQLite documentation (HTML)"),
    _source("apache-doc", D.APACHE_DOC, "Apache HTTP Server manual (HTML)"),
    _source("kicad-doc", D.KICAD_DOC, "KiCad user manuals (HTML)"),
    Source("freeciv", ("freeciv-data",), games.freeciv, "Freeciv help and nation histories"),
    Source("crawl", ("crawl-common",), games.crawl, "Dungeon Crawl Stone Soup descriptions"),
    Source(
        "wesnoth",
        WESNOTH_PACKAGES,
        games.wesnoth,
        "Battle for Wesnoth: campaign dialogue and story, unit descriptions, help",
    ),
    Source(
        "endless-sky",
        ("endless-sky-data",),
        games.endless_sky,
        "Endless Sky: mission conversations, planet and ship descriptions",
    ),
    Source(
        "cataclysm",
        ("cataclysm-dda-data",),
        games.cataclysm,
        "Cataclysm: Dark Days Ahead: item and monster descriptions, NPC dialogue",
    ),
    Source("freeorion", ("freeorion-data",), games.freeorion, "FreeOrion encyclopedia texts"),
    Source("freedroid", ("freedroidrpg-data",), games.freedroid, "FreedroidRPG NPC dialogues"),
    # Everyday English: fiction, essays, news, and the story and dialogue text of games.
    Source(
        "austen",
        ("r-cran-janeaustenr",),
        prose.austen,
        "Jane Austen's six novels (narration and dialogue)",
    ),
    Source(
        "anarchist-faq",
        ("anarchism",),
        prose.anarchist_faq,
        "An Anarchist FAQ: essays (quoted passages and citations dropped)",
    ),
    Source(
        "news",
        ("r-cran-tm",),
        prose.news,
        "News: the Reuters-21578 sample articles of the R text-mining package tm",
    ),
    _source(
        "stellarium",
        D.STELLARIUM,
        "Stellarium: the sky cultures' and landscapes' descriptions (constellation lore, history)",
    ),
    Source(
        "naev",
        ("naev-data",),
        stories.naev,
        "Naev: mission dialogue, planet, station and bar descriptions",
    ),
    Source(
        "crossfire",
        ("crossfire-maps",),
        stories.crossfire,
        "Crossfire: NPC dialogue, signs and books of the maps",
    ),
    Source(
        "widelands",
        ("widelands-data",),
        stories.widelands,
        "Widelands: campaign and tutorial stories, tribes' encyclopedia",
    ),
    Source(
        "ufoai",
        ("ufoai-misc",),
        stories.ufoai,
        "UFO: Alien Invasion: research reports and letters, encyclopedia",
    ),
    Source("dink", ("freedink-data",), stories.dink, "FreeDink (Dink Smallwood) story dialogue"),
]

BY_NAME = {s.name: s for s in SOURCES}


def all_packages(sources: list[Source]) -> list[str]:
    """The packages to fetch; a reserved test-domain package is an error, not a silent skip."""
    packages = list(dict.fromkeys(p for s in sources for p in s.packages))
    reserved = [p for p in packages if is_reserved_package(p)]
    if reserved:
        raise ValueError(f"sources name reserved test-domain packages: {reserved}")
    return packages
