"""File names as the bytes they are, as stored text and as printed text: one rule for every face.

A POSIX file name is bytes, and not every name is UTF-8 (a camera's upload, an old filesystem):
Python holds such a name as a ``str`` whose undecodable bytes are lone surrogates (PEP 383,
``os.fsdecode``); ``os.fsencode`` gives the exact bytes back. A name may also hold a newline, an
ESC (``\\x1b[2J`` clears a terminal), a bidi override, or other characters that must never reach a
terminal or a line-based log as they are.

- :func:`quote` is how a name is **printed** (terminals, text logs, error lines, the web UI's text):
  like git's ``core.quotePath``, a name made only of printable characters is shown as it is; any
  other is shown in double quotes with C escapes (``\\n``, ``\\t``, ``\\"``, ``\\\\``, ...) and every
  other unprintable or undecodable byte as a 3-digit octal escape (``"caf\\351.jpg"``). Printable
  non-ASCII (``café.jpg``) is shown as it is. The quoted form is one line, and names another file than
  any unquoted name (an unquoted name never starts with ``"``): the printed names of two files differ as
  text. Not always to the eye: a name in NFD (``cafe`` + U+0301, as macOS writes it) and its NFC twin
  (``caf`` + U+00E9) are two files whose printed names a terminal renders alike (git prints them so
  too); each is stored and found by its own text.
- :func:`storable` is how a name is **stored** in a text (UTF-8) column, such as a row's
  ``source_path``: the name itself when it is UTF-8 text (nothing changes for those, older stores
  included), else its quoted form. A stored name starting with ``"`` is always the quoted form (a
  local source path is absolute, an object URL starts with ``s3://``); :func:`real` turns a stored
  name back into the name (``os.fsencode(real(stored))`` is the file's exact bytes).
"""

from __future__ import annotations

import os
import unicodedata

_SHORT = {"\a": "a", "\b": "b", "\t": "t", "\n": "n", "\v": "v", "\f": "f", "\r": "r", '"': '"', "\\": "\\"}
_UNSHORT = {v.encode(): k.encode() for k, v in _SHORT.items()}
# controls, format (bidi, zero-width), surrogates, private use, unassigned (a later Unicode may make it a
# format character), line and paragraph separators
_UNPRINTABLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def _plain(ch: str) -> bool:
    return ch not in _SHORT and unicodedata.category(ch) not in _UNPRINTABLE


def needs_quotes(name: str) -> bool:
    """Whether :func:`quote` quotes ``name``: it holds an unprintable character, or starts with ``"``."""
    return name.startswith('"') or any(not _plain(ch) and ch not in '"\\' for ch in name)


def quote(name: str | os.PathLike[str], *, always: bool = False) -> str:
    """``name`` as one printable line: unchanged when every character is printable (and not
    ``always``), else in double quotes with C and octal escapes (see the module doc). Never raises."""
    text = os.fspath(name)
    if not always and not needs_quotes(text):
        return text
    out = ['"']
    for ch in text:
        if ch in _SHORT:
            out.append("\\" + _SHORT[ch])
        elif _plain(ch):
            out.append(ch)
        else:
            out.extend(f"\\{b:03o}" for b in ch.encode("utf-8", "surrogateescape" if "\udc80" <= ch <= "\udcff"
                                                      else "surrogatepass"))
    out.append('"')
    return "".join(out)


def line(text: str) -> str:
    """A message as one printable line: unchanged unless it holds an unprintable character (a name in
    its text), then quoted whole. For messages; a name is printed with :func:`quote`."""
    return quote(text, always=True) if any(not _plain(ch) and ch not in '"\\' for ch in text) else text


def unquote(text: str) -> str:
    """The name that :func:`quote` printed as ``text`` (``text`` itself when it is not quoted);
    ``ValueError`` when it starts with ``"`` but is not a quoted name."""
    if not text.startswith('"'):
        return text
    if len(text) < 2 or not text.endswith('"'):
        raise ValueError(f"not a quoted name: {text[:80]!r}")
    raw, body, i = bytearray(), text[1:-1], 0
    while i < len(body):
        ch = body[i]
        if ch == '"':
            raise ValueError("an unescaped '\"' inside a quoted name")
        if ch != "\\":
            raw += ch.encode("utf-8", "surrogateescape")
            i += 1
            continue
        nxt = body[i + 1:i + 2].encode()
        if nxt in _UNSHORT:
            raw += _UNSHORT[nxt]
            i += 2
        elif len(digits := body[i + 1:i + 4]) == 3 and all(c in "01234567" for c in digits) and int(digits, 8) < 256:
            raw.append(int(digits, 8))
            i += 4
        else:
            raise ValueError(f"a bad escape in a quoted name at {i}")
    return raw.decode("utf-8", "surrogateescape")


def is_text(name: str) -> bool:
    """Whether ``name`` is UTF-8 text (it holds no undecodable byte), so a text column can hold it."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def text(value: str) -> str:
    """``value`` as a text (UTF-8) column holds it: itself, or its quoted form when it holds an
    undecodable byte (a message that quotes a file name)."""
    return value if is_text(value) else quote(value)


def storable(name: str) -> str:
    """``name`` as a text (UTF-8) column holds it: itself when it is text and does not start with
    ``"``, else its quoted form (see the module doc); :func:`real` is the inverse."""
    return name if is_text(name) and not name.startswith('"') else quote(name)


def real(stored: str) -> str:
    """The name a stored value stands for (see :func:`storable`); a value that merely looks quoted,
    from an older store, is kept as it is."""
    try:
        return unquote(stored)
    except ValueError:
        return stored


def shown(stored: str) -> str:
    """A stored name as it is printed: :func:`quote` of the name it stands for."""
    return quote(real(stored))


def as_bytes(name: str) -> bytes:
    """The exact bytes of a file name (undecodable bytes included), e.g. to hash a list of names."""
    return name.encode("utf-8", "surrogateescape")
