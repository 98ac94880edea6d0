"""The broad distillation corpus: cleaners, text units, dedup, the document-level split and
the reserved test domains. Small inline samples only; no package needs to be fetched."""

import gzip
import json
import re

import pytest
from aft.distill import corpus
from aft.distill.sources import SOURCES, Source, all_packages, documents, games, lexical
from aft.distill.sources.packages import fetch
from aft.distill.sources.reserved import is_reserved_package, is_reserved_path
from aft.distill.textclean import (
    chunks,
    dedup_key,
    docbook_paragraphs,
    html_paragraphs,
    info_paragraphs,
    is_prose,
    mallard_paragraphs,
    plaintext_paragraphs,
    pod_paragraphs,
    roff_paragraphs,
    sentences,
    vim_help_paragraphs,
)

# ----------------------------------------------------------------------------- cleaners

MAN_PAGE = r""".\" Copyright comment that must not appear
.TH OPEN 2 2023-02-05 "Linux man-pages 6.03"
.SH NAME
open, openat \- open and possibly create a file
.SH SYNOPSIS
.nf
.B #include <fcntl.h>
.BI "int open(const char *" pathname ", int " flags );
.fi
.SH DESCRIPTION
The
.BR open ()
system call opens the file specified by
.IR pathname .
If the file does not exist, it may be created by
.BR open ()
(see \fBO_CREAT\fP below\(emit matters).
.PP
The return value is a file descriptor, a small, nonnegative integer.
.TP
.B O_APPEND
The file is opened in append mode.
.EX
fd = open("x", O_RDONLY);
.EE
"""


def test_roff_keeps_running_text_and_drops_synopsis_examples_and_tags():
    paras = roff_paragraphs(MAN_PAGE)
    assert paras == [
        "open, openat - open and possibly create a file",
        "The open() system call opens the file specified by pathname. If the file does not "
        "exist, it may be created by open() (see O_CREAT below—it matters).",
        "The return value is a file descriptor, a small, nonnegative integer.",
        "The file is opened in append mode.",
    ]


HTML_PAGE = """<html><head><title>Chapter 3</title><script>var x = 1;</script></head>
<body><div class="navheader"><a href="a.html">Prev</a> Next</div>
<h2>Installing &amp; upgrading</h2>
<p>Debian uses <code>apt</code> to install
   packages &mdash; see <a href="b.html">the manual</a>.</p>
<pre>apt-get install hello</pre>
<ul><li>First item of the list.</li><li>Second item.</li></ul>
</body></html>"""


def test_html_keeps_blocks_and_drops_headings_code_scripts_and_navigation():
    assert html_paragraphs(HTML_PAGE) == [
        "Debian uses apt to install packages — see the manual.",
        "First item of the list.",
        "Second item.",
    ]


POD = """=head1 NAME

perlfaq4 - Data Manipulation

=head1 DESCRIPTION

Use B<C<sort>> with E<lt>=E<gt> or C<< $a <=> $b >>, as
L<perlfunc|https://perldoc.perl.org> explains.X<sort>

    my @sorted = sort { $a <=> $b } @numbers;

=begin html

<p>Not for us.</p>

=end html

=cut

sub code_after_cut { "is not documentation" }
"""


def test_pod_resolves_formatting_codes_and_drops_commands_verbatim_and_code():
    assert pod_paragraphs(POD) == [
        "perlfaq4 - Data Manipulation",
        "Use sort with <=> or $a <=> $b, as perlfunc explains.",
    ]


RST = """.. SPDX-License-Identifier: GPL-2.0

==========
Page cache
==========

The page cache is the main disk cache used by the Linux kernel. See
:ref:`the memory guide <mm-guide>` and ``vm.swappiness`` for **details**::

    echo 3 > /proc/sys/vm/drop_caches

- Pages are *cached* when read.
- Dirty pages are written back later.
"""


def test_plaintext_rst_drops_titles_directives_literal_blocks_and_splits_list_items():
    assert plaintext_paragraphs(RST) == [
        "The page cache is the main disk cache used by the Linux kernel. See the memory guide "
        "and vm.swappiness for details:",
        "Pages are cached when read.",
        "Dirty pages are written back later.",
    ]


def test_plaintext_keeps_indented_prose_and_drops_indented_code():
    src = (
        "swappiness\n    This control defines how aggressively the kernel swaps memory pages.\n\n"
        ".. code-block:: c\n\n    int swappiness = 60;\n\n"
        " -- Scheme Procedure: list-copy lst\n"
        "     Return a copy of the list given to the procedure.\n\n"
        "     (list-copy '(1 2 3))\n"
    )
    assert plaintext_paragraphs(src) == [
        "swappiness This control defines how aggressively the kernel swaps memory pages.",
        "Return a copy of the list given to the procedure.",
    ]


MALLARD = """<page xmlns="http://projectmallard.org/1.0/" id="x">
<info><desc>Press <key>Super</key>.</desc><credit><name>Someone</name></credit></info>
<title>Switch between windows</title>
<p>You can see all the running applications in the <em>window switcher</em>.</p>
<screen>gsettings set org.gnome x</screen>
<steps><item><p>Press <key>Tab</key> to cycle &amp; release.</p></item></steps>
</page>"""


def test_mallard_keeps_paragraphs_and_drops_metadata_titles_and_screens():
    assert mallard_paragraphs(MALLARD) == [
        "You can see all the running applications in the window switcher.",
        "Press Tab to cycle & release.",
    ]


def test_docbook_keeps_paras_drops_programlistings_and_resolves_dtd_entities():
    src = (
        "<chapter><title>Accounts</title><para>&app; keeps <emphasis>accounts</emphasis> "
        "in a tree.</para><programlisting>gnucash --help</programlisting>"
        "<note><para>Back up your file &amp; keep it safe.</para></note></chapter>"
    )
    assert docbook_paragraphs(src) == [
        "GnuCash keeps accounts in a tree.",
        "Back up your file & keep it safe.",
    ]


INFO = """This is lilypond-learning.info, produced by makeinfo.

\x1f
File: lilypond-learning.info,  Node: Tutorial,  Next: Common notation,  Up: Top

1 Tutorial
**********

This chapter gives a basic introduction to working with LilyPond.

* Menu:

* Compiling a file::
* How to write input files::

     \\relative { c'4 d e f }

\x1fTag Table:
Node: Top638
"""


def test_info_drops_node_headers_menus_examples_and_tag_table():
    assert info_paragraphs(INFO.replace("\\x1f", "\x1f")) == [
        "This is lilypond-learning.info, produced by makeinfo.",
        "1 Tutorial",
        "This chapter gives a basic introduction to working with LilyPond.",
    ]


VIM = """*change.txt*   For Vim version 9.0.

==============================================================================
1. Deleting text                                        *deleting* *E470*

Deleting removes text and puts it in a |register| of your choice.  Example: >
        :g/^$/d
        :5,10d
<
The |:delete| command works on whole lines.
 vim:tw=78:ts=8:noet:ft=help:norl:
"""


def test_vim_help_drops_tags_examples_and_rules_and_keeps_link_words():
    assert vim_help_paragraphs(VIM) == [
        "Deleting text",
        "Deleting removes text and puts it in a register of your choice. Example:",
        "The :delete command works on whole lines.",
    ]


GCIDE_ENTRY = """Abdicate \\Ab"di*cate\\, v. t. [L. abdicatus, p. p. of
   abdicare.]
   1. To surrender or relinquish, as sovereign power; to
      withdraw from filling or exercising, as a high office.
      [1913 Webster]

            Though a king may abdicate for his own person, he
            cannot abdicate for the monarchy.     --Burke.
      [1913 Webster]

   Syn: To give up; quit; vacate; relinquish.
"""


def test_gcide_entry_gives_definitions_and_quotations_without_apparatus():
    assert list(lexical.gcide_paragraphs(GCIDE_ENTRY)) == [
        (
            "gcide-definition",
            "To surrender or relinquish, as sovereign power; to withdraw from filling or "
            "exercising, as a high office.",
        ),
        (
            "gcide-quotation",
            "Though a king may abdicate for his own person, he cannot abdicate for the monarchy.",
        ),
    ]


def test_gcide_leaves_out_senses_taken_from_wordnet():
    entry = (
        "10th \\10th\\ adj.\n   1. coming next after the ninth in a series\n\n"
        "   Syn: tenth\n        [WordNet 1.5]\n\n"
        "   2. The tenth part of a thing, as a tithe paid to the church.\n      [1913 Webster]\n"
    )
    assert list(lexical.gcide_paragraphs(entry)) == [
        ("gcide-definition", "The tenth part of a thing, as a tithe paid to the church.")
    ]


def test_foldoc_entry_drops_tags_links_dates_and_urls():
    entry = (
        "Actors\n\n   <theory> A model for {concurrency} by {Carl Hewitt}.  Actors\n"
        "   are autonomous objects.\n\n   {(http://osl.cs.uiuc.edu/)}.\n\n   (1994-11-08)\n"
    )
    texts = list(lexical.computing_paragraphs(entry))
    assert texts[0] == "A model for concurrency by Carl Hewitt. Actors are autonomous objects."
    assert not any("1994" in t or "http" in t for t in texts)


def test_game_text_formats():
    crawl = "%%%%\n# Uniques\nAgnes\n\nThis spriggan is <red>aged</red> and @weathered@.\n%%%%\n"
    assert list(games.crawl_entries(crawl)) == [("Agnes", ["This spriggan is aged and ."])]
    ruleset = (
        '[unit_warriors]\nname = _("Warriors")\nhelptext = _("\\\nWarriors are the first '
        'unit.\\n\\nThey are \\"cheap\\".")\n'
    )
    assert list(games.freeciv_strings(ruleset)) == [
        ("unit_warriors", "Warriors"),
        ("unit_warriors", 'Warriors are the first unit.\n\nThey are "cheap".'),
    ]


def test_story_game_formats():
    wml = (
        '[message]\n    speaker=Konrad\n    message= _ "We must ""hurry"", friends."\n[/message]\n'
    )
    assert list(games.wml_strings(wml)) == ['We must "hurry", friends.']
    es = (
        'mission "FW Kornephoros"\n\ton complete\n\t\tconversation\n'
        "\t\t\t`The last of the Navy vessels has been subdued.`\n"
        '\t\tdialog "There are still Navy ships patrolling overhead."\n'
    )
    assert list(games.endless_sky_strings(es)) == [
        ('mission "FW Kornephoros"', "The last of the Navy vessels has been subdued."),
        ('mission "FW Kornephoros"', "There are still Navy ships patrolling overhead."),
    ]
    obj = {
        "id": "stereo",
        "name": {"str": "stereo"},
        "description": {"str": "A stereo system."},
        "//": "a comment",
        "speaker_effect": [{"dynamic_line": "Hello there, stranger."}],
    }
    assert list(games._json_strings(obj)) == ["A stereo system.", "Hello there, stranger."]
    table = "English\n\nOK\nOK\n\nSP_X_DESC\n'''A mollusc with\nfour tentacles.'''\n"
    assert list(games.freeorion_entries(table)) == [
        ("OK", "OK"),
        ("SP_X_DESC", "A mollusc with\nfour tentacles."),
    ]


def test_wordnet_line_parsing(tmp_path):
    line = (
        "02084071 05 n 01 dog 0 001 @ 02083346 n 0000 | a member of the genus Canis; "
        '"the dog barked all night"; "dogs are loyal"  \n'
    )
    folder = tmp_path / "usr/share/wordnet"
    folder.mkdir(parents=True)
    (folder / "data.noun").write_text("  1 licence header\n" + line)
    for pos in ("verb", "adj", "adv"):
        (folder / f"data.{pos}").write_text("")
    recs = list(lexical.wordnet(tmp_path))
    assert [(r["text"], r["kind"]) for r in recs] == [
        ("a member of the genus Canis", "definition"),
        ("the dog barked all night", "example"),
        ("dogs are loyal", "example"),
    ]
    # The document id is the synset id the earlier corpus split by: its split is unchanged.
    assert {r["doc"] for r in recs} == {"n:02084071"}
    assert {r["lexname"] for r in recs} == {"noun.animal"}


# ----------------------------------------------------------------------------- text units


def test_sentences_respect_abbreviations_and_initials():
    text = "Use e.g. Vim or Emacs. J. S. Bach wrote it in 1722. Is it done? Yes."
    assert sentences(text) == [
        "Use e.g. Vim or Emacs.",
        "J. S. Bach wrote it in 1722.",
        "Is it done?",
        "Yes.",
    ]


def test_chunks_are_bounded_ordered_and_deterministic():
    para = " ".join(f"Sentence number {i} has exactly seven words." for i in range(40))
    got = chunks(para, "doc#1", max_words=30)
    assert got == chunks(para, "doc#1", max_words=30)
    assert all(len(c.split()) <= 30 for c in got)
    assert " ".join(got) == para  # every sentence once, in order
    # A sentence longer than the bound is dropped, its neighbours kept.
    long = "Short one here. Word " + " ".join(["word"] * 80) + ". Another short one."
    assert all(len(c.split()) <= 64 for c in chunks(long, "doc#2"))
    assert "Short one here." in " ".join(chunks(long, "doc#2"))


def test_prose_filter_rejects_code_tables_headings_and_other_scripts():
    assert is_prose("The file descriptor is used in subsequent system calls.")
    assert not is_prose("if (x->fd < 0) { return -EINVAL; } /* error */")
    assert not is_prose("| Name | Type | Default | Description |")
    assert not is_prose("INSTALLATION AND CONFIGURATION OF THE SYSTEM")
    assert not is_prose("Это предложение написано по-русски для проверки.")
    assert not is_prose("Too short.")


def test_dedup_exact_and_normalized():
    d = corpus.Dedup()
    assert d.check("The cat sat on the mat.") is None
    assert d.check("The cat sat on the mat.") == "exact"
    assert d.check("the  cat sat on the mat") == "normalized"
    assert d.check("The cat sat on a mat.") is None
    assert dedup_key("Don't  STOP—now!") == dedup_key("don t stop now")


# ----------------------------------------------------------------------------- build & split


def _fake_source(name, docs, per_doc):
    def records(_root):
        for d in range(docs):
            for i in range(per_doc):
                text = f"Document {d} says that item {i} is a fine example of plain prose."
                yield dict(text=text, kind=name, doc=f"{name}:doc{d}", atomic=0)
        # The same sentence in another document is a duplicate, dropped wherever it falls.
        yield dict(text="Document 0 says that item 0 is a fine example of plain prose!",
                   kind=name, doc=f"{name}:copy", atomic=0)  # fmt: skip

    return Source(name, (), records, "test source")


def _rows(path):
    with gzip.open(path, "rt") as fh:
        return [json.loads(line) for line in fh]


def test_build_splits_by_document_deterministically(tmp_path):
    src = _fake_source("fake", docs=400, per_doc=5)
    s1 = corpus.build(tmp_path / "a", tmp_path / "debs", [src])
    s2 = corpus.build(tmp_path / "b", tmp_path / "debs", [src])
    for split in ("train", "heldout"):
        assert _rows(tmp_path / "a" / f"{split}.jsonl.gz") == _rows(
            tmp_path / "b" / f"{split}.jsonl.gz"
        )
    train = _rows(tmp_path / "a" / "train.jsonl.gz")
    held = _rows(tmp_path / "a" / "heldout.jsonl.gz")
    assert not {r["doc"] for r in train} & {r["doc"] for r in held}
    assert all(corpus.is_heldout(r["doc"]) for r in held)
    assert len(train) + len(held) == 400 * 5  # the copy was a normalized duplicate
    assert s1["sources"]["fake"]["duplicate_normalized"] == 1
    assert 0.05 < len(held) / (len(train) + len(held)) < 0.15
    assert {r["source"] for r in train} == {"fake"} and set(train[0]) >= {"text", "doc", "kind"}
    assert s1["totals"] == s2["totals"] == {"train": len(train), "heldout": len(held)}
    # Consumers call load("train.jsonl"): it finds the compressed file.
    assert corpus.load(tmp_path / "a" / "train.jsonl") == train
    # The report's count table has the source's row and the totals.
    table = corpus.markdown(json.loads((tmp_path / "a" / "summary.json").read_text()))
    assert f"| fake | test source | 400 | {len(train):,} | {len(held):,} |" in table
    assert f"**{len(train):,}**" in table


def test_build_refuses_missing_packages_and_says_how_to_fetch(tmp_path):
    src = Source("needs", ("dict-gcide",), lambda root: iter(()), "needs a package")
    with pytest.raises(SystemExit, match="corpus fetch"):
        corpus.build(tmp_path / "out", tmp_path / "debs", [src])


# ----------------------------------------------------------------------------- reserved


def test_reserved_packages_and_paths():
    for name in ("python3-doc", "python3.11-doc", "python3-numpy", "libpython3.11", "pypy3",
                 "fortunes", "fortunes-min", "fortune-mod", "idle-python3.11"):  # fmt: skip
        assert is_reserved_package(name), name
    for name in ("perl-doc", "manpages", "dict-gcide", "linux-doc-6.1", "gnome-user-docs"):
        assert not is_reserved_package(name), name
    for path in ("usr/share/man/man1/python3.11.1.gz", "usr/share/games/fortunes/art",
                 "usr/share/doc/python3-doc/html/tutorial/index.html", "usr/lib/x/mod.py",
                 "usr/share/doc/pkg/examples/demo.py.gz", "usr/share/man/man6/fortune.6.gz",
                 "usr/share/doc/pydoc-notes.txt"):  # fmt: skip
        assert is_reserved_path(path), path
    for path in ("usr/share/man/man1/git.1.gz", "usr/share/perl/5.36.0/pod/perlfaq4.pod"):
        assert not is_reserved_path(path), path


def test_no_source_names_a_reserved_package():
    assert all_packages(SOURCES)  # raises on a reserved package
    bad = Source("bad", ("fortunes-min",), lambda root: iter(()), "")
    with pytest.raises(ValueError, match="reserved"):
        all_packages([*SOURCES, bad])
    with pytest.raises(ValueError, match="reserved"):
        fetch(__import__("pathlib").Path("/nonexistent"), ["python3-doc"])


def test_document_walk_never_reads_reserved_files(tmp_path):
    man = tmp_path / "usr/share/man/man1"
    man.mkdir(parents=True)
    prose = ".TH X 1\n.SH DESCRIPTION\nThis page describes a tool that prints words.\n"
    for name in ("tool.1", "python3.11.1", "fortune.1"):
        (man / name).write_text(prose.replace("a tool", name))
    spec = documents.Files("pkg", ("usr/share/man/man1/*",), "roff")
    assert [rel for rel, _ in documents.document_files(tmp_path, spec)] == [
        "usr/share/man/man1/tool.1"
    ]
    recs = list(documents.document_records(tmp_path, "man-pages", [spec]))
    assert [r["doc"] for r in recs] == ["man-pages:tool.1"]
    assert all("python" not in r["text"] and "fortune" not in r["text"] for r in recs)


def test_document_walk_reads_only_its_own_packages_files(tmp_path):
    root = tmp_path / "root"
    info = root / "usr/share/info"
    info.mkdir(parents=True)
    for name in ("sed.info", "grep.info"):
        (info / name).write_text("A paragraph of prose that the manual contains.\n")
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "sed.list").write_text("usr/share/info\nusr/share/info/sed.info\n")
    spec = documents.Files("sed", ("usr/share/info/*.info*",), "info")
    assert [rel for rel, _ in documents.document_files(root, spec)] == ["usr/share/info/sed.info"]


def test_document_ids_name_the_document_not_the_file_piece():
    assert documents._doc_name("usr/share/man/man2/open.2.gz") == "open.2"
    # The numbered pieces of an Info manual are one document: they fall on one side.
    assert {
        documents._doc_name(f"usr/share/info/guile-3.0/guile.info-{i}.gz") for i in (1, 2, 10)
    } == {"info/guile-3.0/guile.info"}


def test_document_walk_skips_licence_texts(tmp_path):
    folder = tmp_path / "usr/share/help/C/mines"
    folder.mkdir(parents=True)
    for name in ("license.page", "gpl-2.0.page", "legal.xml", "bug-filing.page"):
        (folder / name).write_text("<page><p>Some text.</p></page>")
    spec = documents.Files("mines", ("usr/share/help/C/**/*.*",), "mallard")
    assert [rel.rsplit("/", 1)[1] for rel, _ in documents.document_files(tmp_path, spec)] == [
        "bug-filing.page"
    ]


def test_debian_descriptions_skip_reserved_packages(tmp_path):
    lists = tmp_path / lexical.SNAPSHOT
    lists.mkdir()
    stanzas = [
        ("python3-doc", "documentation for the Python language"),
        ("fortunes-min", "data files containing fortune cookies"),
        ("hello", "example package based on GNU hello"),
    ]
    (lists / "x_main_i18n_Translation-en").write_text(
        "\n\n".join(f"Package: {p}\nDescription-md5: 0\nDescription-en: {d}\n" for p, d in stanzas)
    )
    recs = list(lexical.debian_descriptions(tmp_path / "root"))
    assert [(r["doc"], r["text"]) for r in recs] == [
        ("deb:hello", "example package based on GNU hello")
    ]


def test_crawl_quotations_are_left_out(tmp_path):
    folder = tmp_path / "usr/share/crawl/dat/descript"
    folder.mkdir(parents=True)
    entry = "%%%%\nkey\n\nA sentence long enough to be a description of something.\n%%%%\n"
    (folder / "quotes.txt").write_text(entry.replace("key", "quote"))
    (folder / "monsters.txt").write_text(entry)
    assert [r["doc"] for r in games.crawl(tmp_path)] == ["crawl:monsters/key"]


def test_source_names_are_unique_and_documented_ids_are_prefixed():
    names = [s.name for s in SOURCES]
    assert len(names) == len(set(names)) and len(names) >= 6
    assert all(re.fullmatch(r"[a-z][a-z-]*", n) for n in names)
