"""File names printed and stored (issue 25 items 1 and 7): :mod:`preprocess.core.names`."""

from __future__ import annotations

import os
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from preprocess.core import names
from preprocess.core.names import quote, real, storable, unquote

HOSTILE = {
    "caf\udce9.jpg": '"caf\\351.jpg"',  # Latin-1 bytes: not UTF-8
    "e\x1b[2Jx\nfoo.jpg": '"e\\033[2Jx\\nfoo.jpg"',  # clears a terminal, forges a log line
    "x\u202ey.jpg": '"x\\342\\200\\256y.jpg"',  # a bidi override
    '"q".jpg': '"\\"q\\".jpg"',  # starts like a quoted name
    "tab\there.jpg": '"tab\\there.jpg"',
}
PLAIN = ["a.jpg", "café.jpg", "写真 1.jpg", 'a\\b"c.jpg', "/abs/dir/IMG_0001.JPG"]


def test_hostile_names_are_quoted_like_git() -> None:
    for name, shown in HOSTILE.items():
        assert quote(name) == shown
        assert unquote(shown) == name
    for name in PLAIN:
        assert quote(name) == name and unquote(name) == name


def test_a_name_is_stored_as_itself_when_it_is_text_else_quoted() -> None:
    assert storable("/in/caf\udce9.jpg") == '"/in/caf\\351.jpg"'
    assert storable("/in/e\x1b[2Jx\nfoo.jpg") == "/in/e\x1b[2Jx\nfoo.jpg"  # UTF-8 text: kept exactly
    assert real('"/in/caf\\351.jpg"') == "/in/caf\udce9.jpg"
    assert os.fsencode(real(storable("/in/caf\udce9.jpg"))) == b"/in/caf\xe9.jpg"
    assert real('"an old value, not quoted\\q"') == '"an old value, not quoted\\q"'  # not a quoted form: as is


@given(st.binary(max_size=40))
def test_any_bytes_round_trip_and_print_on_one_line(raw: bytes) -> None:
    name = os.fsdecode(raw)
    shown = quote(name)
    assert unquote(shown) == name and os.fsencode(unquote(shown)) == raw
    assert shown.isprintable() or all(unicodedata.category(c)[0] != "C" for c in shown)
    assert "\n" not in shown and "\x1b" not in shown and "\r" not in shown
    stored = storable(name)
    assert names.is_text(stored) and real(stored) == name


@given(st.binary(max_size=20), st.binary(max_size=20))
def test_two_names_never_print_the_same(a: bytes, b: bytes) -> None:
    if a != b:
        assert quote(os.fsdecode(a)) != quote(os.fsdecode(b))
        assert storable(os.fsdecode(a)) != storable(os.fsdecode(b))


def test_a_message_is_one_printable_line() -> None:
    assert names.line("cannot read: No such file") == "cannot read: No such file"
    assert names.line('"/in/a.jpg": bad') == '"/in/a.jpg": bad'  # already printable: as it is
    assert names.line("cannot read '/in/e\x1b[2J\nx.jpg'") == '"cannot read \'/in/e\\033[2J\\nx.jpg\'"'
