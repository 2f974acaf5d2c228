"""The `oea-trt` command line. Each subcommand is one module in oea_trt/cli/commands/ that
defines NAME, HELP, add_arguments(parser) and run(args) -> int; main() discovers them, so adding
a command never touches this file."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional


class CLIError(Exception):
    """A bad input the user can fix: printed as one line, exit status 2, no traceback."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (prog: error: ...) and exits 2."""

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _commands():
    from oea_trt.cli import commands

    found = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found.append(module)
    return sorted(found, key=lambda m: getattr(m, "ORDER", 100))


def build_parser() -> argparse.ArgumentParser:
    from oea_trt import __version__

    parser = _Parser(
        prog="oea-trt",
        description="Opportunistic Expert Activation (batch-aware MoE routing) for Qwen3-MoE "
        "with TensorRT and TensorRT-LLM.",
    )
    parser.add_argument("--version", action="version", version=f"oea-trt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for module in _commands():
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_run=module.run, _prog=p.prog)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    from oea_trt.routing.config import ConfigError

    try:
        return int(args._run(args) or 0)
    except (CLIError, ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"{args._prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{args._prog}: interrupted", file=sys.stderr)
        return 130


def entry_point() -> None:
    sys.exit(main())
