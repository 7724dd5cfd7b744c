"""Licences: a secret plus copyright text, and the JAX PRNG key derived from them.

The key is HMAC-SHA256(secret, domain tag || copyright text || canonical transform parameters),
so one changed bit of the secret or one changed character of the text gives an unrelated key.
The secret never leaves this module except through `Licence.save` (a 0600 file).
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
import os
import secrets as _secrets
import stat
from pathlib import Path
from typing import Any

import jax
import numpy as np

from isnn_jax.base.files import write_atomic

FORMAT = "isnn-licence/1"
KEY_DOMAIN = b"isnn-jax/transform-key/v1\x00"
ID_DOMAIN = b"isnn-jax/licence-id/v1\x00"
SECRET_BYTES = 32  # 256 bits; licences below 128 bits are refused.
MIN_SECRET_BYTES = 16
TRANSFORM_KINDS = ("additive", "shuffle", "shuffle_additive", "mix", "mix_sphere")
PATTERN_DISTRIBUTIONS = ("rademacher", "uniform")
# threefry2x32 is named explicitly so a process-wide default PRNG change can never alter a key.
PRNG_IMPL = "threefry2x32"


class LicenceError(ValueError):
    """A licence file or licence field is unusable; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class TransformSpec:
    """Public parameters of the keyed transform (everything but the secret)."""

    kind: str = "additive"
    epsilon: float = 0.03
    block_size: int = 4
    distribution: str = "rademacher"

    def __post_init__(self) -> None:
        if self.kind not in TRANSFORM_KINDS:
            raise LicenceError(
                f"unknown transform kind {self.kind!r}; choose one of {', '.join(TRANSFORM_KINDS)}"
            )
        if self.distribution not in PATTERN_DISTRIBUTIONS:
            raise LicenceError(
                f"unknown pattern distribution {self.distribution!r}; "
                f"choose one of {', '.join(PATTERN_DISTRIBUTIONS)}"
            )
        if "additive" in self.kind and not 0.0 < float(self.epsilon) <= 0.5:
            raise LicenceError(f"epsilon must be in (0, 0.5], got {self.epsilon}")
        if int(self.block_size) < 1:
            raise LicenceError(f"block_size must be >= 1, got {self.block_size}")

    def canonical(self) -> bytes:
        """Canonical bytes of the parameters (sorted JSON, floats via repr) for key derivation."""
        fields = {
            "kind": self.kind,
            "epsilon": repr(float(self.epsilon)),
            "block_size": int(self.block_size),
            "distribution": self.distribution,
        }
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, safe to write to metadata (no secret)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, fields: dict[str, Any]) -> "TransformSpec":
        """Inverse of `to_dict`, with a clear error on unknown fields."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(fields) - known
        if unknown:
            raise LicenceError(f"unknown transform fields {sorted(unknown)}; known: {sorted(known)}")
        return cls(**fields)


def _length_prefixed(data: bytes) -> bytes:
    return len(data).to_bytes(8, "big") + data


def derive_key_bytes(secret: bytes, copyright_text: str, spec: TransformSpec) -> bytes:
    """HMAC-SHA256 of the secret over the domain tag, copyright text and transform parameters."""
    message = KEY_DOMAIN + _length_prefixed(copyright_text.encode("utf-8")) + _length_prefixed(
        spec.canonical()
    )
    return hmac.new(secret, message, hashlib.sha256).digest()


def key_from_bytes(digest: bytes) -> jax.Array:
    """A threefry PRNG key from the first 64 bits of a digest (threefry's whole key size)."""
    words = np.frombuffer(digest[:8], dtype=">u4").astype(np.uint32)
    return jax.random.wrap_key_data(words, impl=PRNG_IMPL)


@dataclasses.dataclass(frozen=True)
class Licence:
    """A buyer's licence. `repr` hides the secret so it cannot reach a log by accident."""

    secret: bytes = dataclasses.field(repr=False)
    copyright: str
    transform: TransformSpec = dataclasses.field(default_factory=TransformSpec)

    def __post_init__(self) -> None:
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_BYTES:
            raise LicenceError(
                f"the licence secret must be at least {MIN_SECRET_BYTES * 8} bits; "
                "issue a new licence with Licence.issue(...)"
            )
        if not isinstance(self.copyright, str) or not self.copyright.strip():
            raise LicenceError("the copyright text is empty; name the seller, buyer and licence")

    @classmethod
    def issue(cls, copyright: str, transform: TransformSpec | None = None) -> "Licence":
        """A new licence with a 256-bit secret from the operating system's CSPRNG."""
        return cls(_secrets.token_bytes(SECRET_BYTES), copyright, transform or TransformSpec())

    def key_bytes(self) -> bytes:
        """The 32-byte HMAC digest the transform key is cut from."""
        return derive_key_bytes(self.secret, self.copyright, self.transform)

    def key(self) -> jax.Array:
        """The JAX PRNG key of this licence's keyed transform."""
        return key_from_bytes(self.key_bytes())

    def fingerprint(self) -> str:
        """A public, one-way identifier (16 hex chars) that reveals nothing about the secret."""
        digest = hashlib.sha256(ID_DOMAIN + _length_prefixed(self.secret) + self.key_bytes())
        return digest.hexdigest()[:16]

    def with_copyright(self, text: str) -> "Licence":
        """Same secret and transform, other copyright text (a near key)."""
        return dataclasses.replace(self, copyright=text)

    def with_secret(self, secret: bytes) -> "Licence":
        """Same text and transform, other secret (a near key when one bit differs)."""
        return dataclasses.replace(self, secret=secret)

    def to_json(self) -> str:
        """The licence file's JSON text (contains the secret)."""
        record = {
            "format": FORMAT,
            "copyright": self.copyright,
            "transform": self.transform.to_dict(),
            "secret": self.secret.hex(),
            "fingerprint": self.fingerprint(),
        }
        return json.dumps(record, indent=2, ensure_ascii=False) + "\n"

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the licence as JSON with mode 0600, atomically; refuse to overwrite unless asked.

        The text goes to a 0600 temporary file in the same directory, which is then linked (or,
        with `overwrite`, renamed) into place, so a failure never leaves a half-written licence.
        """
        path = Path(path)
        if path.parent and not path.parent.exists():
            raise LicenceError(f"directory {path.parent} does not exist; create it first")
        refusal = LicenceError(
            f"{path} already exists; refusing to overwrite a licence (choose another path)")
        if not overwrite and path.exists():
            raise refusal
        try:  # the temporary file is 0600 from its creation on
            write_atomic(path, self.to_json(), mode=0o600, exclusive=not overwrite)
        except FileExistsError:
            raise refusal from None
        return path

    @classmethod
    def from_json(cls, text: str, *, source: str = "licence") -> "Licence":
        """Parse a licence file's text; every problem becomes a LicenceError naming the field."""
        try:
            record = json.loads(text)
        except json.JSONDecodeError as err:
            # Position only: the text itself (which holds the secret) is never quoted.
            raise LicenceError(f"{source} is not valid JSON ({err.msg}: line {err.lineno} column "
                               f"{err.colno}); is it a complete licence file?") from None
        if not isinstance(record, dict) or record.get("format") != FORMAT:
            raise LicenceError(f"{source} is not an {FORMAT} licence file (missing or wrong 'format')")
        for field in ("copyright", "transform", "secret", "fingerprint"):
            if field not in record:
                raise LicenceError(f"{source} lacks the field {field!r}")
        try:
            secret = bytes.fromhex(record["secret"])
        except (TypeError, ValueError):
            raise LicenceError(f"{source}: the secret is not hex text") from None
        if not isinstance(record["transform"], dict):
            raise LicenceError(f"{source}: 'transform' must be an object")
        try:
            licence = cls(secret, record["copyright"], TransformSpec.from_dict(record["transform"]))
        except LicenceError as err:
            raise LicenceError(f"{source}: {err}") from None
        except (TypeError, ValueError, OverflowError) as err:
            raise LicenceError(f"{source}: malformed field ({err})") from None
        if record["fingerprint"] != licence.fingerprint():
            raise LicenceError(
                f"{source} fails its integrity check (fingerprint mismatch): the file was altered; "
                "ask the seller for an intact copy"
            )
        return licence

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "Licence":
        """Read a licence file; refuses files readable by group or others."""
        path = Path(path)
        if not path.is_file():
            raise LicenceError(
                f"licence file {path} not found; pass the buyer's licence file, "
                "or issue one with `python -m isnn_jax.licence issue --copyright TEXT --out NEW_PATH`"
            )
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise LicenceError(
                f"licence file {path} is readable by others (mode {mode:o}); run `chmod 600 {path}`"
            )
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as err:
            raise LicenceError(f"cannot read licence file {path}: {err.__class__.__name__}") from None
        return cls.from_json(text, source=str(path))


def random_keys(seed: int, count: int) -> jax.Array:
    """Keys of `count` random licences (uniform 64-bit keys, as HMAC outputs are)."""
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**32, size=(count, 2), dtype=np.uint64).astype(np.uint32)
    return jax.random.wrap_key_data(words, impl=PRNG_IMPL)


def stack_keys(licences: list[Licence]) -> jax.Array:
    """The keys of several licences as one batched key array."""
    words = np.stack(
        [np.frombuffer(lic.key_bytes()[:8], dtype=">u4").astype(np.uint32) for lic in licences]
    )
    return jax.random.wrap_key_data(words, impl=PRNG_IMPL)


def check_licence_outside(workdir: str | Path, path: str | Path) -> None:
    """Refuse a licence file at or under `workdir` (symbolic links resolved): everything a workdir
    holds (checkpoints, metrics, exports) is meant to be copied and shared, the secret is not."""
    root, target = Path(workdir).resolve(), Path(path).resolve()
    if target == root or root in target.parents:
        raise LicenceError(f"refusing to put the licence {path} inside the workdir {workdir}: "
                           "what a workdir holds is meant to be shared, the licence is not; "
                           "keep it outside the workdir")
