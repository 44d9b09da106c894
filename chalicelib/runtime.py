"""Wiring: build the services once per Lambda container (cold start) from settings.

Route handlers and event sources ask for ``current()``; tests install their own ``Runtime``
(another clock, a fresh moto endpoint) with ``install()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from chalicelib import aws
from chalicelib.assets import S3AssetLinks
from chalicelib.capture import Capture
from chalicelib.clock import Clock, SystemClock
from chalicelib.config import Settings, load_campaign
from chalicelib.models import Campaign
from chalicelib.store import Store
from chalicelib.tracking import TokenSigner


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    campaign: Campaign
    clock: Clock
    store: Store
    signer: TokenSigner
    capture: Capture

    @classmethod
    def build(cls, settings: Settings, clock: Optional[Clock] = None, campaign: Optional[Campaign] = None) -> Runtime:
        campaign = campaign or load_campaign(settings.campaign_name)
        clock = clock or SystemClock()
        store = Store(aws.dynamodb(), settings.table_name)
        signer = TokenSigner(settings.token_key)
        assets = S3AssetLinks(aws.s3(), settings.assets_bucket)
        return cls(
            settings=settings,
            campaign=campaign,
            clock=clock,
            store=store,
            signer=signer,
            capture=Capture(campaign, store, signer, assets, clock),
        )


_current: Optional[Runtime] = None


def current() -> Runtime:
    global _current
    if _current is None:
        _current = Runtime.build(Settings.from_env())
    return _current


def install(runtime: Optional[Runtime]) -> None:
    """Replace (or, with None, forget) the process's runtime."""
    global _current
    _current = runtime
