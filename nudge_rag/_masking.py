"""The one place that hides secrets in URLs and connection strings before they are shown.

Every message, log line and ``repr`` that may show a store or log URL goes through
:func:`mask_secrets`: the password of ``scheme://user:password@host`` and the values of
secret query or keyword parameters (``password``, ``sslpassword``, ``passwd``, ``pwd``,
anything named like a token, secret, API key or auth) become ``***``.
"""

from __future__ import annotations

import logging
import re
from typing import Any

__all__ = ["MaskSecretsFilter", "mask_secrets"]

MASK = "***"
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*):[^@/\s]*@")
_SECRET_NAME = (
    r"(?:[A-Za-z0-9_\-]*(?:password|passwd|passphrase|pwd|token|secret|api[_\-]?key|auth)"
    r"[A-Za-z0-9_\-]*)"
)
# ?password=..., &token=..., and libpq keyword form password=... (value quoted or not)
_PARAM = re.compile(
    rf"(?P<head>(?:^|[?&;\s,(\[{{\"'])(?i:{_SECRET_NAME})\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^&#\s;,)\]}\"']+)"
)


def mask_secrets(text: Any) -> str:
    """``text`` (any object, as ``str``) with URL passwords and secret parameters masked.

    Examples:
        >>> mask_secrets("postgresql://me:pw@db/x?sslmode=require&password=pw2")
        'postgresql://me:***@db/x?sslmode=require&password=***'
        >>> mask_secrets("host=db password='a b' dbname=x")
        'host=db password=*** dbname=x'
    """
    out = _USERINFO.sub(lambda m: f"{m.group('head')}:{MASK}@", str(text))
    return _PARAM.sub(lambda m: f"{m.group('head')}{MASK}", out)


class MaskSecretsFilter(logging.Filter):
    """A logging filter (for handlers) that masks secrets in every record it passes."""

    def filter(self, record: logging.LogRecord) -> bool:  # noqa: D102
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record: leave it to logging
            return True
        masked = mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, None
        return True
