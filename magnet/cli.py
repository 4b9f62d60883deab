"""`magnet` console entry point: one sub-command per component.

Each sub-command lives in its own module, imported only when chosen (so
`magnet --help` needs no torch), and exposes:
    add_arguments(parser: argparse.ArgumentParser) -> None
    run(args: argparse.Namespace) -> int | None
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {
    "serve": ("magnet.server.cli", "start the HTTP service"),
    "train": ("magnet.training.cli", "adapt a causal LM with MAGNET's three objectives (LoRA)"),
    "train-tagger": ("magnet.training.tagger_cli", "train NER/POS/chunk heads on frozen word vectors"),
    "eval": ("magnet.evaluation.cli", "evaluate the loaded model (sts, infill, tagging, wikitext, repetition, cloze, paper)"),
}


# flag -> (config field, type, help): sub-commands declare their flags as such a table
FlagTable = dict[str, tuple[str, type, str]]


def add_flag_table(parser: argparse.ArgumentParser, flags: FlagTable, choices: dict | None = None,
                   env_prefix: str | None = None) -> None:
    """One option per row, stored under the field's name, None when not given."""
    for flag, (field, kind, help_text) in flags.items():
        env = f" [{env_prefix}{field.upper()}]" if env_prefix else ""
        parser.add_argument(flag, dest=field, type=kind, default=None,
                            choices=(choices or {}).get(field), help=help_text + env)


def given_flags(args: argparse.Namespace, flags: FlagTable) -> dict:
    """{field: value} for the flags of the table that were given."""
    return {field: getattr(args, field) for field, _, _ in flags.values() if getattr(args, field) is not None}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="magnet", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    # Parse the command name first, then let its module define its own flags.
    known, rest = parser.parse_known_args(argv)
    module_name, help_text = COMMANDS[known.command]
    module = importlib.import_module(module_name)
    sub_parser = argparse.ArgumentParser(prog=f"magnet {known.command}", description=help_text)
    module.add_arguments(sub_parser)
    args = sub_parser.parse_args(rest)
    logging.basicConfig(level=known.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(module.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
