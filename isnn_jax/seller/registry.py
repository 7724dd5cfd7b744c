"""The seller's licence registry: one SQLite file with every issued licence and its models.

Besides the buyer's own licence file, the registry is the only place a secret is kept. Its
directory is created with mode 0700 and the database file with 0600; a registry that group or
others can read is refused. A buyer holds at most one active licence; a revoked licence stays
in the registry (leaks are still traced to it) but can no longer be used to protect a model.

    python -m isnn_jax.registry issue --registry DIR --buyer NAME --copyright TEXT --out FILE
    python -m isnn_jax.registry list|show|revoke|import|record-model ...   (isnn_jax.cli.licences)
"""

from __future__ import annotations

import json
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any, Iterator

from isnn_jax.protection.licence import Licence, TransformSpec
from isnn_jax.seller.entries import (Entry, RegistryError, RevokedLicenceError, check_buyer,
                                     now_utc)

DB_FILE = "registry.sqlite3"
SCHEMA_VERSION = 1
SCHEMA = """
CREATE TABLE IF NOT EXISTS licences (
    licence_id    TEXT PRIMARY KEY,  -- Licence.fingerprint(): public, one-way
    buyer         TEXT NOT NULL,
    copyright     TEXT NOT NULL,
    transform     TEXT NOT NULL,     -- TransformSpec as JSON (public parameters)
    secret        TEXT NOT NULL,     -- hex; kept here and in the buyer's licence file only
    issued_at     TEXT NOT NULL,     -- ISO 8601, UTC
    revoked_at    TEXT,
    revoke_reason TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS one_active_licence_per_buyer
    ON licences(buyer) WHERE revoked_at IS NULL;
CREATE TABLE IF NOT EXISTS models (
    licence_id        TEXT NOT NULL REFERENCES licences(licence_id),
    model_fingerprint TEXT NOT NULL, -- isnn_jax.runtime.fingerprint: SHA-256 of the parameters
    workdir           TEXT NOT NULL,
    step              INTEGER,
    recorded_at       TEXT NOT NULL,
    PRIMARY KEY (licence_id, model_fingerprint)
);
"""


def _refuse_open_permissions(path: Path, allowed: int, fix_mode: str) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077 & ~allowed:
        raise RegistryError(f"{path} is accessible to group or others (mode {mode:o}); it holds "
                            f"licence secrets: run `chmod {fix_mode} {path}`")


def _create_private_dir(directory: Path) -> None:
    try:
        directory.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        if not directory.is_dir():
            raise RegistryError(f"{directory} exists and is not a directory; choose another "
                                "--registry") from None
        return
    except OSError as err:
        raise RegistryError(f"cannot create registry directory {directory} "
                            f"({err.strerror or err}); choose a writable --registry") from None
    os.chmod(directory, 0o700)  # mkdir's mode is reduced by the umask


class Registry:
    """An open registry (a SQLite connection); use `open_registry` and close it, or `with`."""

    def __init__(self, directory: Path, connection: sqlite3.Connection) -> None:
        self.directory = directory
        self._db = connection

    def __enter__(self) -> "Registry":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self._db.close()

    # -- reading ---------------------------------------------------------------------------

    def _models(self, licence_id: str) -> tuple[dict[str, Any], ...]:
        rows = self._db.execute(
            "SELECT model_fingerprint, workdir, step, recorded_at FROM models WHERE licence_id = ?"
            " ORDER BY recorded_at, model_fingerprint", (licence_id,)).fetchall()
        return tuple({"model_fingerprint": r[0], "workdir": r[1], "step": r[2],
                      "recorded_at": r[3]} for r in rows)

    def _entry(self, row: sqlite3.Row) -> Entry:
        return Entry(licence_id=row["licence_id"], buyer=row["buyer"], copyright=row["copyright"],
                     transform=TransformSpec.from_dict(json.loads(row["transform"])),
                     issued_at=row["issued_at"], revoked_at=row["revoked_at"],
                     revoke_reason=row["revoke_reason"], models=self._models(row["licence_id"]))

    def entries(self, include_revoked: bool = True) -> list[Entry]:
        """Every licence, oldest first."""
        where = "" if include_revoked else " WHERE revoked_at IS NULL"
        rows = self._db.execute(f"SELECT * FROM licences{where} ORDER BY issued_at, rowid")
        return [self._entry(row) for row in rows.fetchall()]

    def _row(self, buyer: str) -> sqlite3.Row:
        row = self._db.execute(
            "SELECT * FROM licences WHERE buyer = ? ORDER BY revoked_at IS NULL DESC, issued_at DESC,"
            " rowid DESC LIMIT 1", (buyer,)).fetchone()
        if row is None:
            known = [r[0] for r in self._db.execute("SELECT DISTINCT buyer FROM licences")]
            listed = ", ".join(repr(name) for name in known) or "none yet"
            raise RegistryError(f"no licence for buyer {buyer!r} in {self.directory} (buyers: "
                                f"{listed}); issue one with `python -m isnn_jax.licence issue "
                                f"--registry {self.directory} --buyer NAME ...`")
        return row

    def entry(self, buyer: str) -> Entry:
        """The buyer's active licence record, else the newest revoked one."""
        return self._entry(self._row(buyer))

    def licence(self, buyer: str, *, allow_revoked: bool = False) -> Licence:
        """The buyer's licence with its secret; a revoked one raises RevokedLicenceError."""
        row = self._row(buyer)
        if row["revoked_at"] is not None and not allow_revoked:
            reason = f" ({row['revoke_reason']})" if row["revoke_reason"] else ""
            raise RevokedLicenceError(
                f"the licence {row['licence_id']} of buyer {buyer!r} was revoked on "
                f"{row['revoked_at']}{reason}; issue a new one with `python -m isnn_jax.licence "
                f"issue --registry {self.directory} --buyer {buyer} ...`")
        return self._licence_of(row)

    @staticmethod
    def _licence_of(row: sqlite3.Row) -> Licence:
        licence = Licence(bytes.fromhex(row["secret"]), row["copyright"],
                          TransformSpec.from_dict(json.loads(row["transform"])))
        if licence.fingerprint() != row["licence_id"]:
            raise RegistryError(f"registry record {row['licence_id']} fails its integrity check "
                                "(the stored fields do not give its fingerprint); restore the "
                                "registry from a backup")
        return licence

    def licences(self) -> Iterator[tuple[Entry, Licence]]:
        """Every record with its licence (revoked ones included): what tracing tests."""
        for row in self._db.execute("SELECT * FROM licences ORDER BY issued_at, rowid").fetchall():
            yield self._entry(row), self._licence_of(row)

    # -- writing ---------------------------------------------------------------------------

    def _insert(self, buyer: str, licence: Licence) -> None:
        buyer = check_buyer(buyer)
        active = self._db.execute("SELECT licence_id, issued_at FROM licences WHERE buyer = ? AND "
                                  "revoked_at IS NULL", (buyer,)).fetchone()
        if active is not None:
            raise RegistryError(f"buyer {buyer!r} already holds the active licence {active[0]} "
                                f"(issued {active[1]}); revoke it first (`python -m "
                                f"isnn_jax.licence revoke --registry {self.directory} --buyer "
                                f"{buyer}`) or use another buyer name")
        try:
            self._db.execute(
                "INSERT INTO licences (licence_id, buyer, copyright, transform, secret, issued_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (licence.fingerprint(), buyer, licence.copyright,
                 json.dumps(licence.transform.to_dict(), sort_keys=True), licence.secret.hex(),
                 now_utc()))
        except sqlite3.IntegrityError:
            raise RegistryError(f"licence {licence.fingerprint()} is already registered; each "
                                "licence belongs to one buyer") from None

    def issue(self, buyer: str, copyright: str, transform: TransformSpec | None,
              out: str | os.PathLike[str]) -> Licence:
        """Issue a new licence to `buyer`: record it and write the buyer's file (mode 0600).

        Both happen or neither: the record is committed only after the file is written, and
        the file is removed again if the commit fails.
        """
        licence = Licence.issue(copyright, transform)
        with self._db:  # one transaction; rolled back on any exception
            self._insert(buyer, licence)
            path = licence.save(out)
            try:
                self._db.commit()
            except sqlite3.Error:
                path.unlink(missing_ok=True)
                raise
        return licence

    def add(self, buyer: str, licence: Licence) -> Entry:
        """Register a licence that was issued elsewhere (an existing licence file)."""
        with self._db:
            self._insert(buyer, licence)
        return self.entry(buyer)

    def revoke(self, buyer: str, reason: str = "") -> Entry:
        """Revoke the buyer's active licence; it stays in the registry for tracing."""
        row = self._row(buyer)
        if row["revoked_at"] is not None:
            raise RevokedLicenceError(f"the licence {row['licence_id']} of buyer {buyer!r} was "
                                      f"already revoked on {row['revoked_at']}")
        with self._db:
            self._db.execute("UPDATE licences SET revoked_at = ?, revoke_reason = ? WHERE "
                             "licence_id = ?", (now_utc(), reason or None, row["licence_id"]))
        return self.entry(buyer)

    def record_model(self, buyer: str, model_fingerprint: str, workdir: str, step: int | None,
                     licence_id: str | None = None) -> Entry:
        """Record a model trained for the buyer's (active) licence."""
        licence = self.licence(buyer)
        if licence_id is not None and licence_id != licence.fingerprint():
            raise RegistryError(
                f"the model in {workdir} was trained for licence {licence_id}, but buyer "
                f"{buyer!r} holds licence {licence.fingerprint()}: this licence is for a different "
                "model; record it under the buyer that licence belongs to")
        with self._db:
            self._db.execute(
                "INSERT OR REPLACE INTO models (licence_id, model_fingerprint, workdir, step, "
                "recorded_at) VALUES (?, ?, ?, ?, ?)",
                (licence.fingerprint(), model_fingerprint, str(workdir), step, now_utc()))
        return self.entry(buyer)

    def buyer_of_model(self, model_fingerprint: str) -> Entry | None:
        """The record whose recorded models include exactly these parameters, if any."""
        row = self._db.execute("SELECT licence_id FROM models WHERE model_fingerprint = ?",
                               (model_fingerprint,)).fetchone()
        if row is None:
            return None
        record = self._db.execute("SELECT * FROM licences WHERE licence_id = ?", (row[0],)).fetchone()
        return self._entry(record)


def open_registry(directory: str | os.PathLike[str], *, create: bool = False) -> Registry:
    """Open the registry in `directory` (created, mode 0700, when `create`)."""
    directory = Path(directory)
    path = directory / DB_FILE
    if create:
        _create_private_dir(directory)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    elif not path.is_file():
        raise RegistryError(f"no licence registry in {directory} ({DB_FILE} not found); issue a "
                            f"first licence with `python -m isnn_jax.licence issue --registry "
                            f"{directory} --buyer NAME --copyright TEXT --out FILE`")
    _refuse_open_permissions(directory, 0, "700")
    _refuse_open_permissions(path, 0, "600")
    try:
        connection = sqlite3.connect(path, isolation_level="DEFERRED")
        connection.row_factory = sqlite3.Row
        connection.execute("PRAGMA foreign_keys = ON")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version not in (0, SCHEMA_VERSION):
            raise RegistryError(f"{path} has registry schema version {version}; this isnn_jax "
                                f"reads version {SCHEMA_VERSION}: upgrade isnn_jax")
        connection.executescript(SCHEMA)
        connection.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        connection.commit()
    except sqlite3.DatabaseError as err:
        raise RegistryError(f"{path} is not a usable licence registry ({err}); restore it from "
                            "a backup") from None
    return Registry(directory, connection)
