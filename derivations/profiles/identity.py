"""Identity in the stream (SPEC 8.2): which record an event belongs to, and when devices link.

The identity stage keeps one link per anonymousId A, as text: absent (never seen), `SEEN` (seen
on anonymous events only, so the record `anon:A` exists), or the userId A is linked to. `resolve`
is the whole rule for one event, given A's link before it:

1. userId U with anonymousId A not linked yet: A links to U; if `anon:A` exists it is merged into
   U (the caller moves that record's state and deletes it).
2. anonymousId A only: the record is U when A is linked to U, else `anon:A`.
3. the merge guard: A linked to V and an event of U != V: the event goes to U, A stays V's, and
   the conflict is reported (the caller counts and logs it).
4. a person may have many anonymousIds: each links on its own first identified event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

ANON = "anon:"
SEEN = ""
"""The link of an anonymousId seen on anonymous events only."""


def anonymous_record(anonymous_id: str) -> str:
    return ANON + anonymous_id


def user_id_of(event: dict[str, Any]) -> str | None:
    """The event's userId as text (an integer means its decimal string), or None."""
    user = event.get("userId")
    if user is None:
        return None
    return user if isinstance(user, str) else str(user)


@dataclass(frozen=True)
class Resolved:
    """Where one event goes and what it changes."""

    record: str
    link: str | None
    """A's link after the event (None: no anonymousId, nothing to store)."""
    linked: str | None = None
    """The anonymousId that belongs to `record` through this event (added to anonymousIds)."""
    merge: str | None = None
    """The anonymous record to merge into `record` and delete."""
    conflict: str | None = None
    """The userId A stays linked to when the event's userId differs (the merge guard)."""


def resolve(user_id: str | None, anonymous_id: str | None, link: str | None) -> Resolved:
    """Rules 1-4 of the module docstring for one event; `link` is A's link before it."""
    if anonymous_id is None:
        assert user_id is not None, "an event has a userId, an anonymousId or both"
        return Resolved(user_id, None)
    if user_id is None:
        if link:
            return Resolved(link, link, linked=anonymous_id)
        return Resolved(anonymous_record(anonymous_id), SEEN, linked=anonymous_id)
    if not link:
        merge = anonymous_record(anonymous_id) if link == SEEN else None
        return Resolved(user_id, user_id, linked=anonymous_id, merge=merge)
    if link == user_id:
        return Resolved(user_id, link, linked=anonymous_id)
    return Resolved(user_id, link, conflict=link)
