"""Licences and the seller's registry: `python -m isnn_jax.licence COMMAND ...`.

    issue  --copyright TEXT --out FILE [--registry DIR --buyer NAME] [--kind/--epsilon/...]
    show   FILE | --registry DIR --buyer NAME   [--reveal-secret]
    list   --registry DIR [--json]
    revoke --registry DIR --buyer NAME [--reason TEXT]
    import --registry DIR --buyer NAME FILE        (register an existing licence file)
    record-model --registry DIR --buyer NAME --workdir DIR

Nothing is printed with the secret unless `show --reveal-secret` asks for it.
"""

import sys

from isnn_jax.cli import licences
from isnn_jax.cli.doors import command


@command
def main(argv: list[str] | None = None, prog: str = "python -m isnn_jax.licence") -> int:
    """Run one licence or registry command; errors: one `error:` line, exit 2 (isnn_jax.cli)."""
    print(licences.run(licences.parser(prog).parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
