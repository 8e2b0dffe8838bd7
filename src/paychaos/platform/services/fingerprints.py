"""Request fingerprints for idempotency: the same key must come with the same request.

A fingerprint is the SHA-256 of the request's canonical JSON (sorted keys, no whitespace), so
field order and formatting never make two equal requests look different.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def fingerprint(request: BaseModel | dict[str, Any]) -> str:
    """A stable hash of a request body, ignoring key order; ``None`` fields count as absent."""
    data = request.model_dump(mode="json", exclude_none=True) if isinstance(request, BaseModel) else request
    return hashlib.sha256(canonical_json(data).encode("utf-8")).hexdigest()


def per_mille(key: str) -> int:
    """A deterministic number in 0..999 drawn from a key, so repeated questions get one answer."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") % 1000
