"""Text from elsewhere (the API server, the scheduler, the kubelet, the Job controller, a validation
error, a chat template's own exception) set into the operator's messages as one sentence. Pure,
and imports nothing of the package, so any module may use it without an import cycle.
"""

from __future__ import annotations

ENDINGS = (".", "!", "?", "…")  # "…" is also where a capped message was cut


def sentence(text: str) -> str:
    """`text` ended as a sentence: a full stop added unless it already ends in one (foreign messages
    sometimes do, sometimes don't: "did you mean spec.model?", "… size reached.")."""
    text = text.rstrip()
    return text if text.endswith(ENDINGS) else text + "."
