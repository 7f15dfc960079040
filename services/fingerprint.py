"""What a submitted job looked like, so a submit whose answer was lost can be found again.

WaveSpeed has no idempotency key: the only way to learn whether a lost submit made a prediction
is to list the account's predictions around the time it was sent and compare what each was
asked. The fingerprint is stored before the POST; `matches` compares it with a listed
prediction's input. The seed is fixed before submit (random when the member gave none), so the
same model, prompt, seed and images pick out one request among a busy account's others.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
from typing import Any

from .wavespeed import InputImage, KontextRequest, ModelSpec

log = logging.getLogger(__name__)

# A hash that cannot be checked (the image went up as a hosted URL, not inline).
_UNCHECKED = None


def fingerprint_of(spec: ModelSpec, request: KontextRequest, *, at: float) -> dict[str, Any]:
    """The stored description of a request about to be sent."""
    images = [
        hashlib.sha256(ref.data).hexdigest() if isinstance(ref, InputImage) else ref
        for ref in request.media()
    ]
    return {
        "model": spec.path,
        "prompt": getattr(request, "prompt", None),
        "seed": request.seed,
        "images": images,
        "at": at,
    }


def matches(fingerprint: dict[str, Any], model: str, listed_input: dict[str, Any]) -> bool:
    """Whether a listed prediction (its model id and input as sent) is this request."""
    if model.removeprefix("wavespeed-ai/") != fingerprint["model"]:
        return False
    if listed_input.get("prompt") != fingerprint["prompt"]:
        return False
    if _as_int(listed_input.get("seed")) != fingerprint["seed"]:
        return False
    sent = listed_input.get("images")
    if sent is None:
        sent = [listed_input["image"]] if listed_input.get("image") else []
    if not isinstance(sent, list) or len(sent) != len(fingerprint["images"]):
        return False
    return all(
        _image_hash(ref) in (expected, _UNCHECKED)
        for ref, expected in zip(sent, fingerprint["images"], strict=True)
    )


def _image_hash(ref: Any) -> str | None:
    """sha256 of an inline (data URI) image; None for a hosted URL, which is not fetched."""
    if not isinstance(ref, str) or not ref.startswith("data:"):
        return _UNCHECKED
    try:
        payload = ref.split(",", 1)[1]
        return hashlib.sha256(base64.b64decode(payload, validate=True)).hexdigest()
    except (IndexError, binascii.Error, ValueError):
        return ""


def _as_int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
