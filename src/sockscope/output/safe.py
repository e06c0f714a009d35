"""Text from the system (process names, command lines) is data: make it inert for a terminal."""

from __future__ import annotations

import unicodedata


def decode_untrusted(raw: bytes) -> str:
    """Bytes from the system (names, command lines, paths) as text, unambiguously: invalid UTF-8
    as \\xNN and a backslash doubled, so the byte 0xFF and the four characters "\\xff" never
    look alike in any output (JSON, CSV, the screen)."""
    return raw.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")


def printable(text: str | None, *, limit: int | None = None) -> str:
    """Escape control and format characters (ESC, CR, bidi overrides, ...) as \\xNN / \\uNNNN,
    so a name cannot move the cursor or recolour the screen; optionally cut to limit."""
    if text is None:
        return "-"
    out: list[str] = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] == "C" and ch not in ("\ufffd",):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    s = "".join(out)
    if limit is not None and len(s) > limit:
        s = s[: max(limit - 1, 0)] + "…"
    return s
