"""`python -m chalicelib.validate campaigns/*.yaml` (`make validate`): check campaign files before
deploying them, and compile each valid one next to itself (``<name>.compiled.json``: what a cold
start loads, chalicelib/compiler.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from chalicelib import compiled
from chalicelib.compiler import compile_campaign, write_compiled
from chalicelib.errors import ConfigError


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m chalicelib.validate CAMPAIGN_FILE...", file=sys.stderr)
        return 2
    failed = 0
    for name in argv:
        path = Path(name)
        try:
            campaign, text = compile_campaign(path)
        except ConfigError as e:
            failed += 1
            print(f"FAIL {e}", file=sys.stderr)
            continue
        target = write_compiled(text, compiled.compiled_path(path))
        print(f"ok   {name}: {len(campaign.forms)} forms, {len(campaign.sequences)} sequences -> {target}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
