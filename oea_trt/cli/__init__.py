"""The `oea-trt` command line. Each subcommand is one module in oea_trt/cli/commands/ that
defines NAME, HELP, add_arguments(parser) and run(args) -> int; main() discovers them, so adding
a command never touches this file. Every command checks its inputs (oea_trt.inputs) before its
work; main() turns failures into one line and an exit status (oea_trt.cli.failures)."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from typing import List, Optional

from oea_trt.cli.failures import debug_from_env, run_reporting_failures
from oea_trt.inputs import InputError


class CLIError(InputError):
    """A bad input the user can fix: printed as one line, exit status 2, no traceback."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line (prog: error: ...) and exits 2."""

    def error(self, message: str):  # noqa: D401 (argparse API)
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" to an option's help unless the help already names its default or
    there is none to name (None, False, suppressed): no "(default: None)", never twice."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if ("default" in text or default is None or default is False or default is argparse.SUPPRESS
                or default == [] or not action.option_strings):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def add_debug_flag(parser: argparse.ArgumentParser, default=False) -> None:
    parser.add_argument("--debug", action="store_true", default=default,
                        help="print the traceback of a failure (also: OEA_TRT_DEBUG=1)")


def command_modules():
    """The modules of oea_trt/cli/commands/ that define a subcommand, in help order."""
    from oea_trt.cli import commands

    found = []
    for info in pkgutil.iter_modules(commands.__path__):
        module = importlib.import_module(f"{commands.__name__}.{info.name}")
        if hasattr(module, "NAME") and hasattr(module, "run"):
            found.append(module)
    return sorted(found, key=lambda m: getattr(m, "ORDER", 100))


def build_parser() -> argparse.ArgumentParser:
    from oea_trt import __version__

    parser = Parser(
        prog="oea-trt",
        description="Opportunistic Expert Activation (batch-aware MoE routing) for Qwen3-MoE "
        "with TensorRT and TensorRT-LLM.",
    )
    parser.add_argument("--version", action="version", version=f"oea-trt {__version__}")
    add_debug_flag(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for module in command_modules():
        p = sub.add_parser(module.NAME, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP),
                           formatter_class=HelpFormatter)
        module.add_arguments(p)
        add_debug_flag(p, default=argparse.SUPPRESS)  # `oea-trt CMD ... --debug` as well as `oea-trt --debug CMD`
        p.set_defaults(_run=module.run, _prog=p.prog)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return run_reporting_failures(lambda: args._run(args), args._prog, debug=args.debug or debug_from_env())


def entry_point() -> None:
    sys.exit(main())
