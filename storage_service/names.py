"""What a request may name and send: the patterns and limits the handlers enforce and /openapi.json publishes.

Every pattern is written so that Python (`fullmatch`) and JSON Schema (ECMA-262, anchored with ^...$ by
`storage_service.openapi`) read it the same way.
"""

from __future__ import annotations

import re

NAMESPACE_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
# A key is '/'-separated segments of A-Z a-z 0-9 . _ ~ -, none of them empty, "." or "..": HTTP clients
# and proxies remove "." and ".." segments from a URL path (RFC 3986 section 5.2.4), so such a key could
# be written (in a batch, or percent-encoded) but not read back at its own URL.
_SEGMENT = r"(?:\.*[A-Za-z0-9_~-][A-Za-z0-9._~-]*|\.{3,})"
KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
KEY_MAX_LENGTH = 512
ETAG_RE = re.compile(r'"([0-9]{1,18})"')
WRITER_RE = re.compile(r"[\x21-\x7e]{1,256}")
CONTENT_TYPE_RE = re.compile(r"[\x20-\x7e]{1,255}")
# Canonical base64 (RFC 4648 section 4, padded): what a batch put with "encoding": "base64" may send.
BASE64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
MAX_BATCH_OPS = 1000
MAX_PAGE = 1000
MAX_INT64 = 2**63 - 1  # BIGINT: epochs, versions and sequence numbers
