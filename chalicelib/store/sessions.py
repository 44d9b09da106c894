"""Rate-limit windows and dashboard sessions: small items that expire by TTL.

Keys reaching here are already pseudonymous (keyed hashes): never an address or a raw IP.
"""

from __future__ import annotations

from chalicelib.store import keys
from chalicelib.store.expressions import Expression, any_of
from chalicelib.store.table import Table


def _window_start(window_seconds: int, now_epoch: float) -> int:
    return int(now_epoch // window_seconds) * window_seconds


class Sessions(Table):
    def take_allowance(self, scope: str, key: str, window_seconds: int, limit: int, now_epoch: float) -> bool:
        """Count one use of ``key`` (already pseudonymous: never an address or a raw IP) in the
        current fixed window of ``scope``; False, and nothing counted, once ``limit`` is reached.

        One conditional update of a small item that expires by TTL after its window: a refused
        request costs one write and stores nothing else.
        """
        window = _window_start(window_seconds, now_epoch)
        use = Expression().add("uses", 1).set_if_absent(keys.TTL_ATTRIBUTE, window + 2 * window_seconds)
        below = any_of(use.absent("uses"), use.compare("uses", "<", limit))
        return self._write_if(
            "update_item", self._keyed(keys.allowance(scope, key, window), use, ConditionExpression=below)
        )

    def allowance_left(self, scope: str, key: str, window_seconds: int, limit: int, now_epoch: float) -> bool:
        """Whether ``take_allowance`` would still count a use now; a read, nothing counted.

        The login form asks this before it looks at the submitted token: once the failures are
        used up, a right token and a wrong one get the same answer in the same time.
        """
        item = self._get(keys.allowance(scope, key, _window_start(window_seconds, now_epoch)))
        return item is None or int(item.get("uses", 0)) < limit

    def open_admin_session(self, session_id: str, opened_at: str, expires_at: int) -> None:
        """Record a dashboard session (the cookie names ``session_id``) until ``expires_at``."""
        item = {**keys.admin_session(session_id), "opened_at": opened_at, keys.TTL_ATTRIBUTE: expires_at}
        self._call("put_item", **self._new_item(item))

    def admin_session_open(self, session_id: str, now_epoch: float) -> bool:
        """The session was opened and not closed, and has not expired (TTL deletes lag by hours)."""
        item = self._get(keys.admin_session(session_id))
        return item is not None and int(item.get(keys.TTL_ATTRIBUTE, 0)) > now_epoch

    def close_admin_session(self, session_id: str) -> None:
        """Logout: the session's cookie opens nothing from now on (closing twice is fine)."""
        self._call("delete_item", **self._keyed(keys.admin_session(session_id)))
