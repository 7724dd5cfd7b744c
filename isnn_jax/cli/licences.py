"""The licence and registry subcommands (issue, show, list, revoke, import, record-model) of
`python -m isnn_jax.licence` and `python -m isnn_jax.registry`: their flags and what each runs.
Nothing is printed with the secret unless `show --reveal-secret` asks for it."""

from __future__ import annotations

import argparse
import json
from typing import Any

from isnn_jax.cli.doors import ArgumentParser
from isnn_jax.protection.licence import Licence, LicenceError, TransformSpec
from isnn_jax.seller.buyers import record_model
from isnn_jax.seller.registry import RegistryError, open_registry


def parser(prog: str) -> argparse.ArgumentParser:
    """The subcommands and their flags."""
    top = ArgumentParser(prog=prog, description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    defaults = TransformSpec()
    issue = sub.add_parser("issue", help="issue a new licence into a new file (mode 0600)")
    issue.add_argument("--copyright", required=True, help="text naming seller, buyer and licence")
    issue.add_argument("--out", required=True, help="new file; an existing file is never overwritten")
    issue.add_argument("--registry", help="seller's registry directory (created 0700) to record it in")
    issue.add_argument("--buyer", help="buyer name (with --registry)")
    issue.add_argument("--kind", default=defaults.kind)
    issue.add_argument("--epsilon", type=float, default=defaults.epsilon)
    issue.add_argument("--block_size", type=int, default=defaults.block_size)
    issue.add_argument("--distribution", default=defaults.distribution)
    show = sub.add_parser("show", help="print a licence's public fields (file or registry)")
    show.add_argument("file", nargs="?", help="a licence file")
    show.add_argument("--registry")
    show.add_argument("--buyer")
    show.add_argument("--reveal-secret", action="store_true",
                      help="also print the secret (hex); keep the output private")
    listing = sub.add_parser("list", help="list the registry's licences")
    listing.add_argument("--registry", required=True)
    listing.add_argument("--json", action="store_true", help="JSON instead of a table")
    revoke = sub.add_parser("revoke", help="revoke a buyer's licence (kept for tracing)")
    revoke.add_argument("--registry", required=True)
    revoke.add_argument("--buyer", required=True)
    revoke.add_argument("--reason", default="")
    imported = sub.add_parser("import", help="register an existing licence file for a buyer")
    imported.add_argument("file")
    imported.add_argument("--registry", required=True)
    imported.add_argument("--buyer", required=True)
    record = sub.add_parser("record-model",
                            help="record a trained workdir's model fingerprint for a buyer")
    record.add_argument("--registry", required=True)
    record.add_argument("--buyer", required=True)
    record.add_argument("--workdir", required=True)
    return top


def _licence_fields(licence: Licence) -> dict[str, Any]:
    return {"copyright": licence.copyright, "transform": licence.transform.to_dict(),
            "fingerprint": licence.fingerprint()}


def _table(entries: list[Any]) -> str:
    rows = [("buyer", "licence", "issued (UTC)", "status", "models")]
    for entry in entries:
        models = ", ".join(m["model_fingerprint"][:16] for m in entry.models) or "-"
        rows.append((entry.buyer, entry.licence_id, entry.issued_at,
                     f"revoked {entry.revoked_at}" if entry.revoked else "active", models))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
                     for row in rows)


def run(args: argparse.Namespace) -> str:
    """Run the parsed subcommand; what to print (never the secret unless --reveal-secret)."""
    if args.command == "issue":
        spec = TransformSpec(kind=args.kind, epsilon=args.epsilon, block_size=args.block_size,
                             distribution=args.distribution)
        if args.registry is None:
            if args.buyer is not None:
                raise RegistryError("--buyer needs --registry DIR (the seller's registry)")
            licence = Licence.issue(args.copyright, spec)
            licence.save(args.out)
            return json.dumps(_licence_fields(licence), indent=2)
        if not args.buyer:
            raise RegistryError("issuing into a registry needs --buyer NAME")
        with open_registry(args.registry, create=True) as registry:
            registry.issue(args.buyer, args.copyright, spec, args.out)
            record = registry.entry(args.buyer).public()
        return json.dumps({**record, "licence_file": str(args.out)}, indent=2, ensure_ascii=False)
    if args.command == "show":
        if (args.file is None) == (args.registry is None):
            raise LicenceError("show takes a licence FILE or --registry DIR --buyer NAME")
        if args.file is not None:
            licence = Licence.load(args.file)
            record = _licence_fields(licence)
        else:
            if not args.buyer:
                raise RegistryError("show --registry needs --buyer NAME")
            with open_registry(args.registry) as registry:
                record = registry.entry(args.buyer).public()
                licence = registry.licence(args.buyer, allow_revoked=True)
        if args.reveal_secret:
            record["secret"] = licence.secret.hex()
        return json.dumps(record, indent=2, ensure_ascii=False)
    if args.command == "list":
        with open_registry(args.registry) as registry:
            entries = registry.entries()
        if args.json:
            return json.dumps([entry.public() for entry in entries], indent=2, ensure_ascii=False)
        return _table(entries)
    if args.command == "revoke":
        with open_registry(args.registry) as registry:
            return json.dumps(registry.revoke(args.buyer, args.reason).public(), indent=2,
                              ensure_ascii=False)
    if args.command == "import":
        licence = Licence.load(args.file)
        with open_registry(args.registry, create=True) as registry:
            return json.dumps(registry.add(args.buyer, licence).public(), indent=2,
                              ensure_ascii=False)
    return json.dumps(record_model(args.registry, args.buyer, args.workdir).public(), indent=2,
                      ensure_ascii=False)
