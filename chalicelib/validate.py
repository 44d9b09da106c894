"""`python -m chalicelib.validate campaigns/*.yaml`: check campaign files before deploying them."""

from __future__ import annotations

import sys
from pathlib import Path

from chalicelib.config import load_campaign_file
from chalicelib.errors import ConfigError


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m chalicelib.validate CAMPAIGN_FILE...", file=sys.stderr)
        return 2
    failed = 0
    for name in argv:
        try:
            campaign = load_campaign_file(Path(name))
        except ConfigError as e:
            failed += 1
            print(f"FAIL {e}", file=sys.stderr)
            continue
        print(f"ok   {name}: {len(campaign.forms)} forms, {len(campaign.sequences)} sequences")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
