"""The seller's licence registry: `python -m isnn_jax.registry COMMAND ...`, the same commands
as `python -m isnn_jax.licence` (issue, show, list, revoke, import, record-model)."""

import sys

from isnn_jax.cli import licences
from isnn_jax.cli.doors import command


@command
def main(argv: list[str] | None = None) -> int:
    """Run one licence or registry command; errors: one `error:` line, exit 2 (isnn_jax.cli)."""
    print(licences.run(licences.parser("python -m isnn_jax.registry").parse_args(argv)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
