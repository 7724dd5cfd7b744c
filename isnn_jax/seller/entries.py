"""The public records of the seller's registry: an issued licence (never its secret) and the
errors the registry raises."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from isnn_jax.protection.licence import LicenceError, TransformSpec


class RegistryError(LicenceError):
    """The registry is missing, unsafe, or has no such buyer; the message names the fix."""


class RevokedLicenceError(RegistryError):
    """The buyer's licence was revoked."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """The public record of one issued licence (no secret), with the models recorded for it."""

    licence_id: str
    buyer: str
    copyright: str
    transform: TransformSpec
    issued_at: str
    revoked_at: str | None = None
    revoke_reason: str | None = None
    models: tuple[dict[str, Any], ...] = ()

    @property
    def revoked(self) -> bool:
        """Whether the licence was revoked."""
        return self.revoked_at is not None

    def public(self) -> dict[str, Any]:
        """Plain-JSON form for printing; never contains the secret."""
        return {"buyer": self.buyer, "licence_id": self.licence_id, "copyright": self.copyright,
                "transform": self.transform.to_dict(), "issued_at": self.issued_at,
                "status": "revoked" if self.revoked else "active",
                "revoked_at": self.revoked_at, "revoke_reason": self.revoke_reason,
                "models": list(self.models)}


def now_utc() -> str:
    """The current time as ISO 8601 UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


def check_buyer(buyer: str) -> str:
    """A buyer name: non-empty, printable, without surrounding spaces."""
    if not isinstance(buyer, str) or not buyer.strip() or buyer != buyer.strip():
        raise RegistryError(f"buyer name {buyer!r} is empty or has surrounding spaces; pass "
                            "--buyer NAME")
    if not buyer.isprintable():
        raise RegistryError(f"buyer name {buyer!r} has control characters; use printable text")
    return buyer
