"""`python -m gateway [--host H] [--port N]`: the gateway without the rest of the CLI's imports."""

import argparse
import sys

from gateway import cli
from tokentrail.errors import CliError
from tokentrail.settings import ConfigError


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway")
    cli.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["gateway", *sys.argv[1:]])
    try:
        status: int = args.func(args)
        return status
    except (ConfigError, CliError) as exc:
        print(f"tokentrail gateway: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
