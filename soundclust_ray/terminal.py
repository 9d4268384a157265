"""Text that reaches the terminal: no control characters, no credentials.

Track ids, titles, paths and error messages come from the user's catalogue (file names, CSV
cells, object keys, exception text quoting them) and may hold escape sequences that recolour,
rewrite or retitle the terminal (``\\x1b[31m``, ``\\r``, an OSC 8 hyperlink, a C1 ``\\x9b`` CSI),
and an OUT or INPUT given as a URI may carry a secret (``s3://KEY:SECRET@bucket``, a presigned
URL's ``X-Amz-Signature``). Every line soundclust prints goes through :func:`safe_line`.

Pure functions on ``str``; nothing here touches the data written to OUT.
"""

from __future__ import annotations

import json
import re

REDACTED = "***"

_ANSI = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]                        # CSI: colours, cursor moves, erase
  | \x1b\][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)   # OSC (window title, hyperlink), terminated
  | \x1b[P^_X][^\x1b\x9c\n]*(?:\x1b\\|\x9c)        # DCS / PM / APC / SOS strings, terminated
  | \x1b[ -/]*[0-~]                                # any other escape (charset, keypad, RIS)
  | \x9b[0-?]*[ -/]*[@-~]                          # 8-bit CSI
  | [\x9d\x90\x9e\x9f\x98][^\x07\x1b\x9c\n]*(?:\x07|\x1b\\|\x9c)  # 8-bit OSC/DCS/PM/APC/SOS
    """,
    re.VERBOSE,
)
"""ANSI/ECMA-48 escape sequences, removed whole so no parameter bytes are left behind. An
unterminated string sequence loses only its introducer (the rest is plain text once the
control characters are gone), so a stray ``ESC ]`` never swallows the rest of a message."""

_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""C0 except tab and newline, DEL, C1, and the Unicode bidirectional overrides/isolates (they
reorder what the terminal shows, e.g. make ``evil.wav`` look like ``vaw.live``)."""

_JSON_UNSAFE = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
"""What ``json.dumps(..., ensure_ascii=False)`` leaves raw although a terminal acts on it
(it already escapes C0 itself)."""

SECRET_PARAMS = (
    "X-Amz-Signature",
    "X-Amz-Credential",
    "X-Amz-Security-Token",
    "X-Goog-Signature",
    "X-Goog-Credential",
    "AWSAccessKeyId",
    "Signature",
    "sig",
    "token",
    "access_token",
    "access_key",
    "secret_key",
    "secret",
    "password",
    "api_key",
    "apikey",
    "client_secret",
)
"""Query parameters whose value is a credential (AWS SigV2/SigV4 and GCS presigned URLs,
Azure SAS ``sig``, generic tokens and keys); matched case-insensitively, whole name only."""

_TOKEN_END = "\\s\"'<>`"
_USERINFO = re.compile(
    rf"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<user>[^{_TOKEN_END}:/?#@]*):"
    rf"(?P<secret>[^{_TOKEN_END}]*)@"
)
"""``scheme://user:secret@`` — the secret runs to the *last* ``@`` of the URI, so a password
with an unencoded ``@`` or ``/`` (AWS secret keys hold ``/``) is hidden whole. A ``@`` later
in the path of a URI that also has ``host:port`` hides that stretch too: too much hidden is the
safe side of the trade."""

_PARAM = re.compile(
    r"(?P<lead>[?&;])(?P<name>"
    + "|".join(re.escape(p) for p in SECRET_PARAMS)
    + rf")=(?P<value>[^&#;{_TOKEN_END}]*)",
    re.IGNORECASE,
)


def strip_control(text: object) -> str:
    """``text`` without ANSI escape sequences and control characters (newline and tab kept)."""
    return _CONTROL.sub("", _ANSI.sub("", str(text)))


def _hide_userinfo(match: re.Match) -> str:
    return f"{match['scheme']}{match['user']}:{REDACTED}@"


def _hide_param(match: re.Match) -> str:
    return f"{match['lead']}{match['name']}={REDACTED}" if match["value"] else match[0]


def redact_uri(text: object) -> str:
    """``text`` with the credentials of every URI in it replaced by ``***``: the password of a
    ``scheme://user:password@host`` (the user name is kept) and the values of credential query
    parameters (:data:`SECRET_PARAMS`)."""
    return _PARAM.sub(_hide_param, _USERINFO.sub(_hide_userinfo, str(text)))


def safe_line(text: object) -> str:
    """What may be printed: control characters stripped, then credentials redacted."""
    return redact_uri(strip_control(text))


def safe_json(text: str) -> str:
    """A JSON document safe for a terminal with the same decoded values: characters a terminal
    acts on become ``\\uXXXX`` escapes (legal only inside strings, where they are), and
    credentials in URIs are redacted."""
    escaped = _JSON_UNSAFE.sub(lambda m: json.dumps(m[0]).strip('"'), text)
    return redact_uri(escaped)
