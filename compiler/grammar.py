"""The value grammar of Hydra's command-line overrides, also used by `oc.decode`.

Facts from Hydra's override grammar (OverrideLexer.g4 / OverrideParser.g4, Hydra 1.3): a value is
a primitive, a list `[a,b]`, a dict `{a:1,b:2}` or a quoted string `'a b'` / `"a b"`. An
unquoted primitive is letters, digits, `_ - / \\ + . $ % * @ ? | :`, inner spaces, `${...}`
interpolations and the escapes `\\\\ \\( \\) \\[ \\] \\{ \\} \\: \\= \\, \\<space>`; it is an int, a
float, a bool or null only when it is exactly one such token (`1e-4`, `true`), else text
(`10:00:00`, `01`). Anything else (`#`, `;`, `'` inside a word, `(`...) is a syntax error in
Hydra, and so it is here: a value is never read another way than Hydra would read it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_INT = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)")
_DIGITS = r"[0-9](_?[0-9])*"
_UNSIGNED = r"(0|[1-9](_?[0-9])*)"
_POINT = rf"({_UNSIGNED}\.|{_UNSIGNED}?\.{_DIGITS})"
_FLOAT = re.compile(rf"[+-]?({_POINT}|({_UNSIGNED}|{_POINT})[eE][+-]?{_DIGITS})")
_SPECIAL_FLOAT = re.compile(r"[+-]?(inf|nan)", re.IGNORECASE)
_FUNCTION = re.compile(r"[A-Za-z_][A-Za-z0-9_]*[ \t]*\(")

_WORD_CHARS = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-/\\+.$%*@?|"
)
_ESCAPABLE = frozenset("\\()[]{}:=, \t")
_WS = " \t"


class GrammarError(Exception):
    """A value Hydra's grammar refuses; `pos` is the 0-based offset of the culprit."""

    def __init__(self, message: str, pos: int, hint: str | None = None) -> None:
        self.message = message
        self.pos = pos
        self.hint = hint
        super().__init__(message)


class SweepError(GrammarError):
    """A top-level comma: Hydra reads `x=1,2` as a sweep over 1 and 2."""


@dataclass
class _Parser:
    text: str
    pos: int = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek() and self.peek() in _WS:
            self.pos += 1

    def element(self, closers: str) -> Any:
        self.skip_ws()
        char = self.peek()
        if char == "[":
            return self.sequence()
        if char == "{":
            return self.mapping()
        if char in ("'", '"'):
            value = self.quoted()
            self.skip_ws()
            if self.peek() and self.peek() not in closers:
                raise GrammarError(
                    "a quoted string must be the whole value",
                    self.pos,
                    hint="put the quotes around all of it",
                )
            return value
        match = _FUNCTION.match(self.text, self.pos)
        if match:
            raise GrammarError(
                f"'{match.group(0).rstrip('( ')}(...)' is a Hydra function (choice, range, "
                "glob, int, ...), which oellm overrides do not take",
                self.pos,
                hint="write a plain value; oellm sweeps live in the `sweep:` section; quote a "
                "value that holds parentheses",
            )
        start = self.pos
        value = self.primitive(closers, key=False)
        if self.pos == start:
            found = f"'{self.peek()}'" if self.peek() else "the end"
            raise GrammarError(f"a value is missing before {found}", start)
        return value

    def sequence(self) -> list[Any]:
        self.pos += 1  # [
        out: list[Any] = []
        self.skip_ws()
        if self.peek() == "]":
            self.pos += 1
            return out
        while True:
            out.append(self.element(",]"))
            self.skip_ws()
            char = self.peek()
            self.pos += 1
            if char == "]":
                return out
            if char != ",":
                raise self._unclosed("[", "]", char)

    def mapping(self) -> dict[str, Any]:
        self.pos += 1  # {
        out: dict[str, Any] = {}
        self.skip_ws()
        if self.peek() == "}":
            self.pos += 1
            return out
        while True:
            self.skip_ws()
            start = self.pos
            key = self.primitive(":,}", key=True)
            if not isinstance(key, str) or key == "":
                key_text = self.text[start : self.pos].strip()
                if not key_text:
                    raise GrammarError("a dict entry needs a key before ':'", start)
                key = key_text
            self.skip_ws()
            if self.peek() != ":":
                raise GrammarError(
                    f"dict entry '{key}' has no ':'",
                    self.pos,
                    hint="write {key:value, other:value}",
                )
            self.pos += 1
            if key in out:
                raise GrammarError(f"dict key '{key}' appears twice", start)
            out[key] = self.element(",}")
            self.skip_ws()
            char = self.peek()
            self.pos += 1
            if char == "}":
                return out
            if char != ",":
                raise self._unclosed("{", "}", char)

    def _unclosed(self, opener: str, closer: str, found: str) -> GrammarError:
        where = self.pos - 1
        if not found:
            return GrammarError(f"'{opener}' is never closed", where, hint=f"add '{closer}'")
        return GrammarError(f"expected ',' or '{closer}', found '{found}'", where)

    def quoted(self) -> str:
        quote = self.peek()
        start = self.pos
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(self.text):
                raise GrammarError(f"the quote {quote} is never closed", start)
            char = self.text[self.pos]
            if char == "\\":
                run = self.pos
                while self.pos < len(self.text) and self.text[self.pos] == "\\":
                    self.pos += 1
                count = self.pos - run
                if self.peek() == quote:
                    # Backslashes before a quote are doubled; an odd one escapes the quote.
                    out.append("\\" * (count // 2))
                    if count % 2:
                        out.append(quote)
                        self.pos += 1
                    continue
                out.append("\\" * count)
                continue
            self.pos += 1
            if char == quote:
                return "".join(out)
            out.append(char)

    def primitive(self, closers: str, key: bool) -> Any:
        start = self.pos
        out: list[str] = []
        plain = True  # no escapes and no interpolation: may be a number, bool or null
        end_significant = 0  # length of `out` up to its last character that is not blank
        while self.pos < len(self.text):
            char = self.text[self.pos]
            if char in closers:
                break
            if (
                char == "\\"
                and self.pos + 1 < len(self.text)
                and self.text[self.pos + 1] in (_ESCAPABLE)
            ):
                out.append(self.text[self.pos + 1])
                self.pos += 2
                plain = False
                end_significant = len(out)
                continue
            if char == "$" and self.text.startswith("${", self.pos):
                if key:
                    raise GrammarError("a dict key cannot hold an interpolation", self.pos)
                piece = self._interpolation()
                out.append(piece)
                plain = False
                end_significant = len(out)
                continue
            if char in _WS:
                out.append(char)
                self.pos += 1
                continue
            if char == ":" and not key:
                out.append(char)
                self.pos += 1
                end_significant = len(out)
                continue
            if char not in _WORD_CHARS:
                raise self._bad_char(char)
            out.append(char)
            self.pos += 1
            end_significant = len(out)
        text = "".join(out[:end_significant])
        if plain:
            return _typed(text, start)
        return text

    def _interpolation(self) -> str:
        start = self.pos
        depth = 0
        while self.pos < len(self.text):
            char = self.text[self.pos]
            self.pos += 1
            if char == "{":
                depth += 1
            elif char == "}":
                depth -= 1
                if depth == 0:
                    return self.text[start : self.pos]
        raise GrammarError("'${' is never closed", start, hint="add '}'")

    def _bad_char(self, char: str) -> GrammarError:
        if char == "#":
            return GrammarError(
                "'#' cannot stand unquoted in an override value (it does not start a comment "
                "on the command line)",
                self.pos,
                hint="quote the value if '#' belongs to it (key='a #b'), or drop the comment",
            )
        if char in "'\"":
            return GrammarError(
                f"a quote ({char}) inside an unquoted value",
                self.pos,
                hint='quote the whole value: key="it\'s" or key=\'say "hi"\'',
            )
        if char == "=":
            return GrammarError(
                "'=' inside an override value", self.pos, hint="quote the value or write \\="
            )
        shown = char if char.isprintable() else repr(char)
        return GrammarError(
            f"'{shown}' cannot stand unquoted in an override value",
            self.pos,
            hint="quote the value (key='...'), or escape the character with a backslash if "
            "it is one of \\ ( ) [ ] { } : = , and space",
        )


def _typed(text: str, start: int) -> Any:
    lowered = text.lower()
    if lowered == "null":
        return None
    if lowered == "true":
        return True
    if lowered == "false":
        return False
    if _INT.fullmatch(text):
        return int(text.replace("_", ""))
    if _FLOAT.fullmatch(text):
        return float(text.replace("_", ""))
    if _SPECIAL_FLOAT.fullmatch(text):
        raise GrammarError(
            f"'{text}' is a float in Hydra's grammar ({text.lower().lstrip('+')}), which a "
            "bundle cannot hold",
            start,
            hint=f"quote it for the text: '{text}'",
        )
    return text


def parse_value(text: str) -> Any:
    """The value of one override (what follows `=`), as Hydra's grammar reads it."""
    parser = _Parser(text)
    parser.skip_ws()
    if parser.peek() == "":
        return ""
    value = parser.element(",")
    parser.skip_ws()
    if parser.peek() == ",":
        raise SweepError(
            "a comma-separated value is a sweep in Hydra",
            parser.pos,
            hint="write key='1,2' for a string or key=[1,2] for a list; oellm sweeps live in "
            "the `sweep:` section",
        )
    if parser.peek():
        raise GrammarError(f"unexpected '{parser.peek()}'", parser.pos)
    return value


def decode(text: str) -> Any:
    """`oc.decode`: a string read as a value of the same grammar (int, float, bool, null, list,
    dict, quoted or plain text)."""
    parser = _Parser(text)
    parser.skip_ws()
    if parser.peek() == "":
        return ""
    value = parser.element("")
    parser.skip_ws()
    if parser.peek():
        raise GrammarError(f"unexpected '{parser.peek()}'", parser.pos)
    return value
