"""`python -m lora_studio.engine CONFIG.toml [--resume] [--dry-run]`: the same as `lora-studio train`.

This is the entry `accelerate launch -m lora_studio.engine CONFIG.toml` runs on several processes. It
parses its own arguments instead of going through lora_studio.cli, which sits above the engine (it also
opens the app); tests/engine/test_process.py checks that both accept and describe the same ones.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lora_studio.core.errors import UserError
from lora_studio.engine.train_command import train_command


def _parser() -> argparse.ArgumentParser:
    # Named like the command it stands for, so its usage and errors read as they always have.
    p = argparse.ArgumentParser(prog="lora-studio train")
    p.add_argument("config", type=Path, help="the run's settings (TOML), e.g. MyStyle/lora_studio.toml")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in the run dir")
    p.add_argument("--dry-run", action="store_true", help="check the settings and estimate memory, then exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(sys.argv[1:] if argv is None else argv)
    try:
        return train_command(args.config, resume=args.resume, dry_run=args.dry_run)
    except UserError as e:
        print(e.for_terminal(), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
