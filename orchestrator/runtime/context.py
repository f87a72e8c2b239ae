"""Everything a process of the runtime holds: settings, database engine, journey registry,
template renderer, channel router and the clock. Shell. One per process (created lazily in
Celery workers, after the fork)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime, timezone
from typing import Any, Callable, Mapping, Sequence

from sqlalchemy import Connection, Engine

from ..links import LinkSigner
from ..project import Project
from ..render import Renderer
from ..store.database import make_engine
from .config import Settings
from .journeys import JourneyRegistry, deploy
from .ratelimit import RateLimiter
from .sending import ChannelRouter, Claimed, SendReport, claim_queued, deliver, send_messages
from .work import Claim, Done, fire_timers, process_users


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    project: Project
    registry: JourneyRegistry
    renderer: Renderer
    router: ChannelRouter
    clock: Callable[[], datetime] = field(default=utcnow)

    @classmethod
    def create(cls, settings: Settings | None = None, *, clock: Callable[[], datetime] = utcnow,
               router: ChannelRouter | None = None) -> "Runtime":
        settings = settings or Settings.from_env()
        engine = make_engine(settings.database_url)
        project = Project.find(settings.project)
        return cls(settings, engine, project, JourneyRegistry(engine), Renderer(project.templates_dir),
                   router or ChannelRouter(settings.channels), clock)

    @property
    def signer(self) -> LinkSigner | None:
        """Signs unsubscribe links; without ``JOURNEY_SECRET_KEY`` messages carry none."""
        key = self.settings.secret_key
        return LinkSigner(key.encode(), self.settings.links_base) if key else None

    @cached_property
    def limiter(self) -> RateLimiter | None:
        """Provider rate limits in Redis (``JOURNEY_RATE_LIMITS``); None when there are none."""
        return RateLimiter.from_settings(self.settings.redis_url, self.settings.rate_limits)

    def deploy(self) -> list[object]:
        with self.engine.begin() as conn:
            out = deploy(conn, self.project, self.clock())
        self.registry.forget_current()
        return list(out)

    # The three kinds of work. Each sends, right away, the messages its batch queued: they are
    # decided and their ledger rows written in the batch's own transaction, under the locks it
    # already holds; the providers are called once it has committed.
    def process_users(self, user_ids: Sequence[str]) -> Done:
        now = self.clock()
        done = process_users(self.engine, self.registry, user_ids, now, claim=self._claim(now))
        self._deliver(done, now)
        return done

    def fire_timers(self, timer_ids: Sequence[int]) -> Done:
        now = self.clock()
        done = fire_timers(self.engine, self.registry, timer_ids, now, claim=self._claim(now))
        self._deliver(done, now)
        return done

    def _claim(self, now: datetime) -> Claim:
        s = self.settings

        def claim(conn: Connection, ids: list[int], views: Mapping[str, dict[str, Any]]) -> Claimed:
            return claim_queued(conn, self.registry, self.renderer, ids, views, now, lease=s.lease,
                                links_base=s.links_base, signer=self.signer)

        return claim

    def _deliver(self, done: Done, now: datetime) -> None:
        claimed: Claimed | None = done.claimed
        if claimed is not None:  # with no calls, it still counts what the claim decided
            deliver(self.engine, self.router, claimed.calls, now, claimed.report,
                    max_attempts=self.settings.max_attempts, limiter=self.limiter)

    def send_messages(self, outbox_ids: Sequence[int]) -> SendReport:
        s = self.settings
        return send_messages(self.engine, self.registry, self.renderer, self.router, outbox_ids,
                             self.clock(), lease=s.lease, max_attempts=s.max_attempts,
                             links_base=s.links_base, signer=self.signer, limiter=self.limiter)
