"""What may leave for a provider: a run's ``Gate``, asked right before every paid request and
before a request's content is read to match it against a provider's listing.

The library's own runs let everything through. Service mode refuses what a client may not make a
worker do (read a file outside the image folder, call an internal address) and a request whose
record is gone from Redis. A gate is the runner's to call, never a patch on the provider object,
so every path to a paid request passes it.
"""

from __future__ import annotations

from ._jobs import Job
from .request import VideoRequest

__all__ = ["OPEN", "Gate", "Gates"]


class Gate:
    """Lets everything through; subclass it to refuse."""

    async def refusal(self, job: Job, request: VideoRequest) -> str | None:
        """Why ``request`` (row ``job``'s) must not be sent, or None to send it. Asked after its
        intent is durable and right before the paid request leaves; a refusal fails the row
        (error_kind ``rejected``) with nothing sent or paid."""
        return None

    async def readable(self, request: VideoRequest) -> bool:
        """Whether the reconciler may read what ``request`` names (its images) to match it
        against a provider's listed tasks; if not, the listing is searched without it."""
        return True


class Gates(Gate):
    """Several gates as one: a request passes when every gate lets it through (asked in order)."""

    def __init__(self, *gates: Gate) -> None:
        self.gates = gates

    async def refusal(self, job: Job, request: VideoRequest) -> str | None:
        for gate in self.gates:
            reason = await gate.refusal(job, request)
            if reason:
                return reason
        return None

    async def readable(self, request: VideoRequest) -> bool:
        for gate in self.gates:
            if not await gate.readable(request):
                return False
        return True


OPEN = Gate()  # a run's gate when nobody set one
