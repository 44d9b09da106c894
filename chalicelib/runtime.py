"""Wiring: build the services once per Lambda container (cold start) from settings.

Route handlers and event sources ask for ``current()``; tests install their own ``Runtime``
(another clock, a fresh moto endpoint) with ``install()``. Parts only some functions need (SES,
the dispatcher, scoring, reports, privacy) are built on first use, and their modules are imported
there too: the five Lambda functions share this file, and each cold start compiles and imports
only what its own work needs (``import app`` stays cheap; see bench/RESULTS.md, cold start).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, Union

from botocore.exceptions import BotoCoreError, ClientError

from chalicelib import aws, observability
from chalicelib.clock import Clock, OffsetFileClock, SystemClock
from chalicelib.config import MIN_TOKEN_KEY_LENGTH, Settings, load_campaign
from chalicelib.errors import ConfigError
from chalicelib.observability import Metrics

if TYPE_CHECKING:  # the services below are imported where they are first built
    from chalicelib.assets import S3AssetLinks
    from chalicelib.campaign_types import Campaign
    from chalicelib.capture import Capture
    from chalicelib.credentials import AdminToken
    from chalicelib.directory import Directory
    from chalicelib.handoff import Notifier, Qualifier, SalesFeedback
    from chalicelib.nurture.broadcasts import BroadcastDesk
    from chalicelib.nurture.dispatcher import Dispatcher, Pacer
    from chalicelib.nurture.fanout import ShardStarter
    from chalicelib.nurture.feedback import Feedback
    from chalicelib.nurture.mailer import Mailer
    from chalicelib.nurture.schedule import EventSchedule
    from chalicelib.preferences import PreferenceCentre
    from chalicelib.privacy import Privacy
    from chalicelib.reports import Reports, Tally
    from chalicelib.store import Store
    from chalicelib.streams import StreamProcessor
    from chalicelib.tracking import LinkBuilder, TokenSigner, Tracker
    from chalicelib.webinars import EventDesk


class Runtime:
    def __init__(
        self,
        settings: Settings,
        campaign: Campaign,
        clock: Clock,
        store: Store,
        signer: Union[TokenSigner, Callable[[], TokenSigner]],
        assets: S3AssetLinks,
        mailer: Optional[Mailer] = None,
        pacer: Optional[Pacer] = None,
        metrics: Optional[Metrics] = None,
        shard_starter: Optional[ShardStarter] = None,
    ) -> None:
        self.settings = settings
        self._shard_starter = shard_starter
        # Counted by the services during an invocation, flushed once at its end (app middleware).
        self.metrics = metrics if metrics is not None else Metrics(settings.stage)
        self.campaign = campaign
        self.clock = clock
        self.store = store
        self._signer = signer
        self.assets = assets
        self._mailer = mailer
        self._pacer = pacer

    @classmethod
    def build(
        cls,
        settings: Settings,
        clock: Optional[Clock] = None,
        campaign: Optional[Campaign] = None,
        mailer: Optional[Mailer] = None,
        pacer: Optional[Pacer] = None,
        metrics: Optional[Metrics] = None,
        shard_starter: Optional[ShardStarter] = None,
    ) -> Runtime:
        from chalicelib.assets import S3AssetLinks
        from chalicelib.store import Store
        from chalicelib.tracking import TokenSigner

        observability.configure_logging(settings.log_level)
        return cls(
            settings=settings,
            campaign=campaign or load_campaign(settings.campaign_name, settings.campaigns_dir),
            clock=clock or (OffsetFileClock(settings.clock_file) if settings.clock_file else SystemClock()),
            store=Store(aws.dynamodb, settings.table_name),
            signer=lambda: TokenSigner(_token_key(settings)),
            assets=S3AssetLinks(aws.s3, settings.assets_bucket),
            mailer=mailer,
            pacer=pacer,
            metrics=metrics,
            shard_starter=shard_starter,
        )

    @functools.cached_property
    def signer(self) -> TokenSigner:
        # The key is read (from SSM, once per cold start) on first use, not at build: the admin
        # authorizer never signs, and its role may read the admin token only (infra/iam.py).
        from chalicelib.tracking import TokenSigner

        return self._signer if isinstance(self._signer, TokenSigner) else self._signer()

    @functools.cached_property
    def admin_token(self) -> AdminToken:
        from chalicelib.credentials import SsmAdminToken, StaticAdminToken

        if self.settings.admin_token_parameter:
            return SsmAdminToken(aws.ssm(), self.settings.admin_token_parameter, self.clock)
        return StaticAdminToken(self.settings.admin_token)

    @functools.cached_property
    def capture(self) -> Capture:
        from chalicelib.capture import Capture

        return Capture(self.campaign, self.store, self.signer, self.assets, self.clock, self.metrics, self.schedule)

    @functools.cached_property
    def links(self) -> LinkBuilder:
        from chalicelib.tracking import LinkBuilder

        return LinkBuilder(self.signer, self.settings.public_url)

    @functools.cached_property
    def tracker(self) -> Tracker:
        from chalicelib.tracking import Tracker

        return Tracker(self.signer, self.store, self.clock, self.campaign)

    @functools.cached_property
    def preferences(self) -> PreferenceCentre:
        from chalicelib.preferences import PreferenceCentre

        return PreferenceCentre(self.campaign, self.store, self.signer, self.tracker, self.clock)

    @functools.cached_property
    def mailer(self) -> Mailer:
        from chalicelib.nurture.mailer import SesMailer

        if self._mailer is None:
            self._mailer = SesMailer(
                aws.sesv2, aws.ses_v1, self.settings.ses_configuration_set, self.settings.max_send_rate
            )
        return self._mailer

    @functools.cached_property
    def broadcasts(self) -> BroadcastDesk:
        from chalicelib.nurture.broadcasts import BroadcastDesk

        return BroadcastDesk(self.campaign, self.store, self.clock, self.links, lambda: self.mailer)

    @functools.cached_property
    def events(self) -> EventDesk:
        from chalicelib.webinars import EventDesk

        return EventDesk(self.campaign, self.store, self.clock, self.schedule)

    @functools.cached_property
    def schedule(self) -> EventSchedule:
        """The campaign's events as they stand (moved, cancelled): one per container, cached."""
        from chalicelib.nurture.schedule import EventSchedule

        return EventSchedule(self.campaign, self.store)

    @functools.cached_property
    def dispatcher(self) -> Dispatcher:
        from chalicelib.nurture.dispatcher import Dispatcher
        from chalicelib.nurture.render import Renderer

        return Dispatcher(
            self.campaign,
            self.store,
            self.mailer,
            Renderer(self.campaign, self.links, self.schedule),
            self.links,
            self.assets,
            self.clock,
            self._pacer,
            on_due_handoff=self.notifier.notify,
            metrics=self.metrics,
            schedule=self.schedule,
        )

    @property
    def shard_starter(self) -> Optional[ShardStarter]:
        """What starts the other parts of a fanned-out tick: the stage's ``dispatch_shard``
        function when deployed; none otherwise (the twin and tests set their own)."""
        from chalicelib.nurture.fanout import LambdaShardStarter

        if self._shard_starter is None and self.settings.shard_function is not None:
            self._shard_starter = LambdaShardStarter(aws.lambda_, self.settings.shard_function)
        return self._shard_starter

    @shard_starter.setter
    def shard_starter(self, starter: Optional[ShardStarter]) -> None:
        self._shard_starter = starter

    @functools.cached_property
    def qualifier(self) -> Qualifier:
        from chalicelib.handoff import Qualifier

        return Qualifier(self.campaign, self.store, self.clock, self.metrics)

    @functools.cached_property
    def sales_feedback(self) -> SalesFeedback:
        from chalicelib.handoff import SalesFeedback

        return SalesFeedback(self.campaign, self.store, self.clock)

    @functools.cached_property
    def notifier(self) -> Notifier:
        from chalicelib.handoff import Notifier, Webhook

        webhook = None
        if self.campaign.sales.webhook_url is not None:
            if self.settings.webhook_secret is None:
                raise ConfigError("the campaign has sales.webhook_url: set TRELLIS_WEBHOOK_SECRET to sign it")
            webhook = Webhook(self.campaign.sales.webhook_url, self.settings.webhook_secret)
        return Notifier(
            self.campaign,
            self.store,
            self.mailer,
            aws.sns,
            self.settings.sales_topic_arn,
            webhook,
            self.clock,
            self.metrics,
        )

    @functools.cached_property
    def directory(self) -> Directory:
        from chalicelib.directory import Directory

        return Directory(self.campaign, self.store, self.signer, self.clock)

    @functools.cached_property
    def privacy(self) -> Privacy:
        from chalicelib.privacy import Privacy

        return Privacy(self.store, self.clock)

    @functools.cached_property
    def tally(self) -> Tally:
        from chalicelib.reports import Tally

        return Tally(self.campaign, self.store)

    @functools.cached_property
    def reports(self) -> Reports:
        from chalicelib.reports import Reports

        return Reports(self.campaign, self.store, self.clock)

    @functools.cached_property
    def feedback(self) -> Feedback:
        from chalicelib.nurture.feedback import Feedback

        return Feedback(self.store, self.tally, self.clock, self.metrics)

    @functools.cached_property
    def streams(self) -> StreamProcessor:
        from chalicelib.streams import StreamProcessor

        return StreamProcessor(
            self.campaign, self.store, self.dispatcher, self.qualifier, self.notifier, self.tally, self.clock
        )


def _token_key(settings: Settings) -> bytes:
    """The signing key: from the environment (local), or once per cold start from SSM (deployed)."""
    if not settings.token_key_parameter:
        return settings.token_key
    try:
        answer = aws.ssm().get_parameter(Name=settings.token_key_parameter, WithDecryption=True)
    except (ClientError, BotoCoreError) as e:
        raise ConfigError(f"cannot read SSM parameter {settings.token_key_parameter}") from e
    key = str(answer["Parameter"]["Value"]).encode()
    if len(key) < MIN_TOKEN_KEY_LENGTH:
        raise ConfigError(
            f"SSM parameter {settings.token_key_parameter} must hold at least {MIN_TOKEN_KEY_LENGTH} characters"
        )
    return key


_current: Optional[Runtime] = None


def current() -> Runtime:
    global _current
    if _current is None:
        _current = Runtime.build(Settings.from_env())
    return _current


def pending_metrics() -> Optional[Metrics]:
    """The process runtime's metrics buffer; None before one was built (nothing was counted)."""
    return None if _current is None else _current.metrics


def install(runtime: Optional[Runtime]) -> None:
    """Replace (or, with None, forget) the process's runtime."""
    global _current
    _current = runtime
