"""Everyday-English sources of the corpus: novels (R data), essays, news, game stories and
dialogue, and the reserved quotation / saying domain. Small inline samples only; no package
needs to be fetched."""

import gzip
import struct
import zlib

import pytest
from aft.distill.sources import SOURCES, Source, all_packages, documents, prose, stories
from aft.distill.sources.packages import fetch
from aft.distill.sources.reserved import is_reserved_package, is_reserved_path

# ----------------------------------------------------------------------------- R data


def _r_int(v: int) -> bytes:
    return struct.pack(">i", v)


def _r_char(s: str) -> bytes:
    b = s.encode()
    return _r_int(9 | (1 << 15)) + _r_int(len(b)) + b  # CHARSXP, UTF-8


def _r_strs(items: list[str | None]) -> bytes:
    out = _r_int(16) + _r_int(len(items))
    for s in items:
        out += _r_int(9) + _r_int(-1) if s is None else _r_char(s)
    return out


def _r_named_list(named: dict[str, bytes]) -> bytes:
    """A VECSXP with a names attribute (a pairlist of one tagged element)."""
    out = _r_int(19 | (1 << 9)) + _r_int(len(named)) + b"".join(named.values())
    names = _r_strs(list(named))
    attrs = _r_int(2 | (1 << 10)) + _r_int(1) + _r_char("names") + names + _r_int(254)
    return out + attrs


def _r_serialize(body: bytes) -> bytes:
    return b"X\n" + _r_int(3) + _r_int(0x40201) + _r_int(0x30500) + _r_int(5) + b"UTF-8" + body


def test_r_unserialize_reads_character_vectors_and_named_lists():
    assert prose.unserialize(_r_serialize(_r_strs(["a", None, "Ünïcode"]))) == [
        "a",
        None,
        "Ünïcode",
    ]
    ints = _r_int(13) + _r_int(2) + _r_int(7) + _r_int(11)
    obj = prose.unserialize(_r_serialize(_r_named_list({"x": ints, "y": _r_strs(["z"])})))
    assert obj == {"x": [7, 11], "y": ["z"]}


def test_r_lazyload_database(tmp_path):
    emma = _r_serialize(_r_strs(["EMMA", "", "CHAPTER I", "", "Emma Woodhouse, handsome."]))
    blob = struct.pack(">I", len(emma)) + zlib.compress(emma)
    offsets = _r_int(13) + _r_int(2) + _r_int(0) + _r_int(len(blob))
    index = _r_named_list({"variables": _r_named_list({"emma": offsets})})
    (tmp_path / "Rdata.rdx").write_bytes(gzip.compress(_r_serialize(index)))
    (tmp_path / "Rdata.rdb").write_bytes(blob)
    assert prose.r_lazyload(tmp_path / "Rdata") == {
        "emma": ["EMMA", "", "CHAPTER I", "", "Emma Woodhouse, handsome."]
    }


# ----------------------------------------------------------------------------- prose


def test_novel_paragraphs_by_chapter_without_front_matter_or_headings():
    lines = [
        "EMMA", "", "By Jane Austen", "", "VOLUME I", "", "CHAPTER I", "",
        "Emma Woodhouse, handsome, clever, and rich, with a comfortable home",
        "and happy disposition, seemed to unite _some_ of the best blessings.", "",
        "\"Poor Miss Taylor!\"", "", "", "CHAPTER II", "", "Mr. Weston was a native of Highbury.",
        None, "VOLUME II", "CHAPTER I", "", "Emma and Harriet had been walking together.",
    ]  # fmt: skip
    assert list(prose.novel_paragraphs(lines)) == [
        (
            "1.I",
            "Emma Woodhouse, handsome, clever, and rich, with a comfortable home and happy "
            "disposition, seemed to unite some of the best blessings.",
        ),
        ("1.I", '"Poor Miss Taylor!"'),
        ("1.II", "Mr. Weston was a native of Highbury."),
        ("2.I", "Emma and Harriet had been walking together."),
    ]
    # Without volumes the chapter alone is the id.
    assert list(prose.novel_paragraphs(["Chapter 1", "", "It is a truth."])) == [
        ("1", "It is a truth.")
    ]


FAQ_PAGE = """<html><head><title>F.3 Why? | Anarchist Writers</title></head><body>
<h1>F.3 Why do they place little value on equality?</h1>
<p>Rothbard argued that <i>"the 'rightist' libertarian is not opposed to inequality."</i>
[<b>For a New Liberty</b>, p. 47] In contrast, we oppose it.</p>
<blockquote><p><i>"A long quotation from another author that must not be kept."</i></p>
</blockquote>
<p>The <i>"[u]nder capitalism"</i> argument fails [<b>Op. Cit.</b>, p. 3].</p>
</body></html>"""


def test_faq_paragraphs_drop_quoted_passages_headings_and_citations():
    assert prose.faq_paragraphs(FAQ_PAGE) == [
        "Rothbard argued that \"the 'rightist' libertarian is not opposed to inequality.\" In "
        "contrast, we oppose it.",
        'The "under capitalism" argument fails.',
    ]


def test_anarchist_faq_documents_are_sections(tmp_path):
    folder = tmp_path / prose.ANARCHIST_FAQ
    folder.mkdir(parents=True)
    (folder / "secF3.html").write_text(FAQ_PAGE)
    (folder / "index.html").write_text("<p>Section A: what is anarchism and why it matters.</p>")
    recs = list(prose.anarchist_faq(tmp_path))
    assert {r["doc"] for r in recs} == {"anarchist-faq:secF3"} and len(recs) == 2


REUTERS = """<?xml version="1.0"?>
<REUTERS NEWID="127"><TEXT>
  <TITLE>DIAMOND SHAMROCK (DIA) CUTS CRUDE PRICES</TITLE>
  <BODY>Diamond Shamrock Corp said that
effective today it had cut its contract prices for crude oil by
1.50 dlrs a barrel.
    &quot;The price reduction today was made in the light of falling
oil product prices,&quot; a company spokeswoman said.
    &lt;Four Seasons Hotels Inc&gt; agreed to buy the hotel.
 Reuter
&#3;</BODY>
</TEXT></REUTERS>"""


def test_reuters_article_paragraphs_without_signature_or_markup():
    title, paras = prose.reuters_article(REUTERS)
    assert title == "DIAMOND SHAMROCK (DIA) CUTS CRUDE PRICES"
    assert paras == [
        "Diamond Shamrock Corp said that effective today it had cut its contract prices for "
        "crude oil by 1.50 dlrs a barrel.",
        '"The price reduction today was made in the light of falling oil product prices," a '
        "company spokeswoman said.",
        "Four Seasons Hotels Inc agreed to buy the hotel.",
    ]


def test_news_documents(tmp_path):
    acq = tmp_path / prose.TM_TEXTS / "acq"
    acq.mkdir(parents=True)
    (acq / "reut-00001.xml").write_text(REUTERS)
    (acq / "reut-00002.xml").write_text(REUTERS.replace(" Reuter\n", " REUTER...\n"))
    recs = list(prose.news(tmp_path))
    assert [r["doc"] for r in recs] == ["news:reuters/acq/reut-00001"] * 3 + [
        "news:reuters/acq/reut-00002"
    ] * 3
    assert recs[-1]["text"] == "Four Seasons Hotels Inc agreed to buy the hotel."


def test_stellarium_reads_english_descriptions_only(tmp_path):
    folder = tmp_path / "usr/share/stellarium/skycultures/tupi"
    folder.mkdir(parents=True)
    page = "<h1>Tupi-Guarani</h1><p>The Tupi people identified some thirty constellations.</p>"
    (folder / "description.en.utf8").write_text(page)
    (folder / "description.es.utf8").write_text("<p>El pueblo tupí identificó constelaciones.</p>")
    recs = list(documents.document_records(tmp_path, "stellarium", documents.STELLARIUM))
    assert [(r["doc"], r["text"]) for r in recs] == [
        (
            "stellarium:stellarium/skycultures/tupi/description.en.utf8",
            "The Tupi people identified some thirty constellations.",
        )
    ]


# ----------------------------------------------------------------------------- games


def test_naev_lua_and_xml_strings(tmp_path):
    lua = (
        'misn_title = _("DV: Assault on Unicorn")\n'
        'text[1] = _("As you land, you see a \\"Dvaered\\" official approaching.")\n'
        "bar = _([[The bar is loud.\n\nA pilot waves at you.]])\n"
        'osd = _("Destroy some pirates! You have killed %d.")\n'
        'x = fmt.f(_("Fly to {sys}."), {sys=s})\n'
        'y = N_("Welcome aboard, captain.")\n'
    )
    assert list(stories.lua_gettext_strings(lua)) == [
        "DV: Assault on Unicorn",
        'As you land, you see a "Dvaered" official approaching.',
        "The bar is loud.\n\nA pilot waves at you.",
        "Destroy some pirates! You have killed %d.",
        "Fly to {sys}.",
        "Welcome aboard, captain.",
    ]
    base = tmp_path / stories.NAEV
    (base / "missions/dvaered").mkdir(parents=True)
    (base / "assets").mkdir(parents=True)
    (base / "missions/dvaered/assault.lua").write_text(lua)
    (base / "assets/abacus.xml").write_text(
        "<asset><general><description>Abacus is a very large planet &amp; a cold one."
        "</description><bar>The bar is tiny.</bar></general></asset>"
    )
    recs = list(stories.naev(tmp_path))
    assert [(r["doc"], r["text"]) for r in recs] == [
        ("naev:missions/dvaered/assault", "DV: Assault on Unicorn"),
        ("naev:missions/dvaered/assault", 'As you land, you see a "Dvaered" official approaching.'),
        ("naev:missions/dvaered/assault", "The bar is loud."),
        ("naev:missions/dvaered/assault", "A pilot waves at you."),
        ("naev:missions/dvaered/assault", "Welcome aboard, captain."),
        ("naev:assets/abacus", "Abacus is a very large planet & a cold one."),
        ("naev:assets/abacus", "The bar is tiny."),
    ]


def test_crossfire_map_messages_and_dialogue_files(tmp_path):
    mapfile = (
        "arch map\nname Tavern\nmsg\nCreated:  1997-02-23\nModified: 2007 someone\nendmsg\nend\n"
        "arch merchant\nmsg\n@match hello|hi\nWelcome to my shop,\ntraveller.\n"
        "@match *\nVamoose - Peasant!\nendmsg\nx 2\nend\n"
        "arch sign\nmsg\nThe inn is closed for the winter.\nendmsg\nend\n"
    )
    assert list(stories.crossfire_messages(mapfile)) == [
        "Welcome to my shop, traveller.",
        "Vamoose - Peasant!",
        "The inn is closed for the winter.",
    ]
    dialogue = '{"rules": [{"match": ["*"], "msg": ["Are you here about the smugglers?"]}]}'
    assert list(stories.crossfire_dialogue(dialogue)) == ["Are you here about the smugglers?"]
    assert list(stories.crossfire_dialogue("not json")) == []
    base = tmp_path / stories.CROSSFIRE
    (base / "scorn/taverns").mkdir(parents=True)
    (base / "python/IPO").mkdir(parents=True)
    (base / "scorn/taverns/goths").write_text(mapfile)
    (base / "scorn/taverns/goths.msg").write_text(dialogue)
    (base / "python/IPO/say.py").write_text('msg\n"Python code must not be read."\nendmsg\n')
    recs = list(stories.crossfire(tmp_path))
    assert {r["doc"] for r in recs} == {"crossfire:scorn/taverns/goths"} and len(recs) == 4


def _mo(entries: list[tuple[str, str]]) -> bytes:
    """A little-endian .mo catalogue of (msgid, msgstr), with the header entry first."""
    entries = sorted([("", "Content-Type: text/plain; charset=UTF-8\n"), *entries])
    ids = [k.encode() for k, _ in entries]
    strs = [v.encode() for _, v in entries]
    n = len(entries)
    start = 28 + 16 * n
    data, otab, ttab = b"", b"", b""
    for s in ids:
        otab += struct.pack("<2I", len(s), start + len(data))
        data += s + b"\0"
    for s in strs:
        ttab += struct.pack("<2I", len(s), start + len(data))
        data += s + b"\0"
    return struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0) + otab + ttab + data


def test_mo_entries_read_catalogues():
    mo = _mo([("Hello there.", "Hallo."), ("menu\x04Open the map", "Karte öffnen")])
    assert sorted(stories.mo_entries(mo)) == [
        ("Hello there.", "Hallo."),
        ("Open the map", "Karte öffnen"),
    ]


def test_widelands_reads_story_catalogues_only(tmp_path):
    locale = tmp_path / stories.WIDELANDS_LOCALE
    for lang in ("de", "fr"):
        (locale / lang / "LC_MESSAGES").mkdir(parents=True)
    story = "Lutius, please find someone who will take care of planting new trees."
    (locale / "de/LC_MESSAGES/scenario_emp01.wmf.mo").write_bytes(_mo([(story, "x")]))
    (locale / "fr/LC_MESSAGES/scenario_emp01.wmf.mo").write_bytes(
        _mo([(story, "y"), ("You have %d soldiers left.", "z")])
    )
    (locale / "de/LC_MESSAGES/tribes_encyclopedia.mo").write_bytes(
        _mo([("The felling ax is the tool to chop down trees.", "x")])
    )
    (locale / "de/LC_MESSAGES/widelands.mo").write_bytes(_mo([("Create a new empty map", "x")]))
    recs = list(stories.widelands(tmp_path))
    assert [r["text"] for r in recs] == [story, "The felling ax is the tool to chop down trees."]
    assert recs[0]["doc"] == "widelands:scenario_emp01.wmf"
    assert recs[1]["doc"].startswith("widelands:tribes_encyclopedia#")


UNITS_LUA = """
   buildings = {
      {
         name = "empire_headquarters",
         helptexts = {
            lore = latin_lore(
               -- TRANSLATORS: DO NOT TRANSLATE
               _("Omnes viæ ducunt Fremilem."),
               _("All roads lead to Fremil.")
            ),
            lore_author = pgettext("empire_building",
               "Proverb signifying the glory of the Empire and its capital"
            ),
            purpose = pgettext("empire_building", "Accommodation for your people."),
         }
      },
      {
         name = "frisians_quarry",
         helptexts = {
            lore = pgettext("frisians_building", "When I swing my pick, " ..
               "whole mountains fall before me!"),
            lore_author = pgettext("frisians_building", "A stonemason"),
            note = pgettext("frisians_building", "The quarry needs rocks to cut nearby."),
         }
      },
   }
"""


def test_widelands_lore_sayings_are_left_out(tmp_path):
    lore = stories.widelands_lore(UNITS_LUA)
    assert {
        "Omnes viæ ducunt Fremilem.",
        "All roads lead to Fremil.",
        "Proverb signifying the glory of the Empire and its capital",
        "When I swing my pick, whole mountains fall before me!",
        "A stonemason",
    } <= lore
    assert "Accommodation for your people." not in lore
    assert "The quarry needs rocks to cut nearby." not in lore
    tribes = tmp_path / stories.WIDELANDS_TRIBES / "initialization/empire"
    tribes.mkdir(parents=True)
    (tribes / "units.lua").write_text(UNITS_LUA)
    locale = tmp_path / stories.WIDELANDS_LOCALE / "de/LC_MESSAGES"
    locale.mkdir(parents=True)
    enc = [
        ("empire_building\x04All roads lead to Fremil.", "x"),
        ("frisians_building\x04When I swing my pick, whole mountains fall before me!", "x"),
        ("empire_building\x04Accommodation for your people.", "x"),
    ]
    (locale / "tribes_encyclopedia.mo").write_bytes(_mo(enc))
    assert [r["text"] for r in stories.widelands(tmp_path)] == ["Accommodation for your people."]


def test_ufoai_keeps_long_entries_as_documents(tmp_path):
    letter = (
        "Commander,\n\nMy team has completed its analysis of the alien creature we recovered. "
        "We're calling this alien the Combat Hovernet, for its armour and its stabilisers."
        "\n\nCdr. Navarre"
    )
    path = tmp_path / stories.UFOAI_EN
    path.parent.mkdir(parents=True)
    path.write_bytes(_mo([(letter, letter), ("Select the mission", "Select the mission")]))
    recs = list(stories.ufoai(tmp_path))
    assert [r["text"] for r in recs] == [
        "Commander,",
        "My team has completed its analysis of the alien creature we recovered. We're calling "
        "this alien the Combat Hovernet, for its armour and its stabilisers.",
        "Cdr. Navarre",
    ]
    assert len({r["doc"] for r in recs}) == 1


def test_dink_spoken_lines(tmp_path):
    script = (
        'void talk(void)\n{\n say("It\'s locked.", 1);\n'
        ' say_stop("`0Hurry up, Kelly!", &man);\n'
        ' say_stop("`5Hello &player, welcome.", &guard);\n'
        ' say_stop("`5If you can see this then it means you", &guard);\n'
        ' say_stop("`5never knew how much I cared.", &guard);\n'
        ' choice_start()\n "Ask about the duck"\n choice_end()\n}\n'
    )
    assert list(stories.dink_lines(script)) == [
        "It's locked.",
        "Hurry up, Kelly!",
        "Hello &player, welcome.",
        "If you can see this then it means you never knew how much I cared.",  # one sentence
    ]
    folder = tmp_path / stories.DINK_STORY
    folder.mkdir(parents=True)
    (folder / "S1-FARM.c").write_text(script)
    recs = list(stories.dink(tmp_path))
    assert [(r["doc"], r["text"]) for r in recs] == [
        ("dink:s1-farm", "It's locked."),
        ("dink:s1-farm", "Hurry up, Kelly!"),
        ("dink:s1-farm", "If you can see this then it means you never knew how much I cared."),
    ]


# ----------------------------------------------------------------------------- reserved


def test_quotation_aphorism_and_joke_collections_are_reserved():
    for name in ("dict-devil", "pyjoke", "xjokes", "display-dhammapada", "fortune-anarchism",
                 "fortunes-bofh-excuses", "nethack-rumors", "proverbs-en", "quotations-data",
                 "sayings", "aphorisms"):  # fmt: skip
        assert is_reserved_package(name), name
    for name in ("anarchism", "r-cran-janeaustenr", "naev-data", "crossfire-maps",
                 "dict-gcide", "node-shell-quote", "libfinance-quote-perl", "elpa-boxquote",
                 "stellarium-data"):  # fmt: skip
        assert not is_reserved_package(name), name
    for path in ("usr/share/games/nethack/rumors", "usr/share/vim/vim90/doc/quotes.txt",
                 "usr/share/crawl/dat/descript/quotes.txt", "usr/share/emacs/29/etc/JOKES",
                 "usr/share/doc/x/proverbs.txt.gz", "data/sayings.json"):  # fmt: skip
        assert is_reserved_path(path), path
    for path in ("usr/share/doc/anarchism/html/secF3.html", "usr/share/doc/zsh/Quoting.html",
                 "usr/share/naev/dat/missions/neutral/quote_run.lua"):  # fmt: skip
        assert not is_reserved_path(path), path


def test_sources_refuse_saying_collections():
    assert all_packages(SOURCES)  # no source names a reserved package
    for bad in ("dict-devil", "xjokes"):
        with pytest.raises(ValueError, match="reserved"):
            all_packages([*SOURCES, Source("bad", (bad,), lambda root: iter(()), "")])
    with pytest.raises(ValueError, match="reserved"):
        fetch(__import__("pathlib").Path("/nonexistent"), ["dict-devil"])


def test_new_sources_are_registered_after_the_earlier_ones():
    names = [s.name for s in SOURCES]
    new = ["austen", "anarchist-faq", "news", "stellarium", "naev", "crossfire", "widelands",
           "ufoai", "dink"]  # fmt: skip
    assert names[-len(new) :] == new  # earlier sources keep their deduplication priority
    assert names.index("freedroid") < names.index("austen")
