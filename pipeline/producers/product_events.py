"""Product events for `segflow generate --profiles` (SPEC 8.1, 8.6): what a shop's site sends.

People browse anonymously on a device (`pageview` with an `anonymousId`), sign in on it
(`signin` with `userId` and `anonymousId`: the device links to the person and its anonymous
record merges into theirs), then browse, `identify` (email, firstName, country, phone),
`addToCart` (sku, price) and `purchase` (total, items, currency) as themselves. A share of people
use two or three devices, each linking on its first sign-in; a share of visitors never sign in;
some identified events come from a server, with the `userId` alone. A few values do not fit
their property's type (a phone number without its country code), and a few people share an
email, so records show `invalid`.

Like `EventGenerator`, the same seed gives the same events byte for byte: seeded runs take
`occurredAt` from a simulated clock (a fixed start advanced by 1/rate per event).
"""

from __future__ import annotations

import itertools
import os
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pipeline.producers.clock import Clock

Event = dict[str, Any]

PATHS = ("/", "/pricing", "/docs", "/docs/start", "/blog", "/about", "/shop", "/shop/sale")
COUNTRIES = (("DE", "+49 30 "), ("FR", "+33 1 "), ("US", "+1 415 "), ("JP", "+81 3 "))
NAMES = ("Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken", "Radia")
STAY_ANONYMOUS = 0.75
"""Chance that an event of a device not yet signed in is another anonymous page view (so a
device sees about three before its sign-in)."""
SHARED_EMAIL_EVERY = 50
"""One person in this many gives the email of the person before them: a household sharing an
address, which `unique: true` on email (the demo catalog) gives to the one whose record is the
older (`invalid` on the other's)."""
BAD_PHONE_SHARE = 0.02
"""Identify events whose phone number lacks its country code (not E.164: `invalid`)."""


@dataclass(frozen=True)
class ProductMix:
    """What the generated product traffic looks like."""

    users: int = 10_000
    devices_ratio: float = 0.2
    """Share of people on two or three devices."""
    anonymous_ratio: float = 0.1
    """Share of visitors who never sign in."""
    server_ratio: float = 0.2
    """Share of identified events sent by a server: `userId` alone, no device."""
    repeat_ratio: float = 0.0
    """Share of events that re-send the previous one unchanged (a redelivery, same id)."""


class ProductEventGenerator:
    """An endless, reproducible stream of product events."""

    def __init__(
        self,
        mix: ProductMix | None = None,
        *,
        seed: int | None = None,
        rate: float = 100.0,
        simulated: bool | None = None,
    ) -> None:
        self.mix = mix = mix or ProductMix()
        if mix.users < 1:
            raise ValueError("users must be at least 1")
        self.rng = random.Random(seed if seed is not None else os.urandom(16))
        self.clock = Clock(
            simulated=seed is not None if simulated is None else simulated, rate=rate
        )
        self.signed_in: set[str] = set()
        self.previous: Event | None = None
        self.emitted = 0

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        rng, mix = self.rng, self.mix
        index = self.emitted
        self.emitted += 1
        if self.previous is not None and mix.repeat_ratio and rng.random() < mix.repeat_ratio:
            return dict(self.previous)
        person = rng.randrange(mix.users)
        user, device = self._who(person)
        event: Event = {
            "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "occurredAt": self._occurred_at(index),
        }
        if user is None or (device not in self.signed_in and rng.random() < STAY_ANONYMOUS):
            event |= {"type": "pageview", "anonymousId": device, "data": self._page()}
        elif device not in self.signed_in:
            self.signed_in.add(device)
            event |= {"type": "signin", "userId": user, "anonymousId": device}
            event["data"] = {"method": rng.choice(("password", "google", "magic-link"))}
        else:
            event["userId"] = user
            if rng.random() >= mix.server_ratio:
                event["anonymousId"] = device
            event |= self._identified(person, user)
        self.previous = event
        return dict(event)

    def take(self, n: int) -> list[Event]:
        return list(itertools.islice(self, n))

    def sample(self) -> Event:
        """One event of this mix (to check a collection takes them)."""
        return ProductEventGenerator(self.mix, seed=0).take(1)[0]

    def _who(self, person: int) -> tuple[str | None, str]:
        """The person's userId (None for a visitor who never signs in) and one of their
        devices; both are functions of the person, so runs with a seed repeat."""
        shape = random.Random(person * 7919 + 17).random
        user = None if shape() < self.mix.anonymous_ratio else f"user-{person:06d}"
        devices = 1
        if shape() < self.mix.devices_ratio:
            devices = 2 if shape() < 0.7 else 3
        return user, f"dev-{person:06d}-{self.rng.randrange(devices)}"

    def _page(self) -> dict[str, Any]:
        return {"path": self.rng.choice(PATHS)}

    def _identified(self, person: int, user: str) -> Event:
        rng = self.rng
        kind = rng.choices(("pageview", "identify", "addToCart", "purchase"), (5, 1, 2, 1))[0]
        if kind == "pageview":
            return {"type": kind, "data": self._page()}
        if kind == "identify":
            country, prefix = COUNTRIES[person % len(COUNTRIES)]
            phone = prefix + f"{person % 10_000_000:07d}"
            if rng.random() < BAD_PHONE_SHARE:
                phone = phone.split(" ", 1)[1]  # the country code forgotten
            # a household: every SHARED_EMAIL_EVERY-th person signs up with the previous one's
            sharing = person % SHARED_EMAIL_EVERY == 1
            data = {
                "email": f"user-{person - 1 if sharing else person:06d}@example.com",
                "firstName": NAMES[person % len(NAMES)],
                "country": country,
                "phone": phone,
            }
            return {"type": kind, "data": data}
        if kind == "addToCart":
            sku = rng.randrange(1, 200)
            return {"type": kind, "data": {"sku": f"sku-{sku:03d}", "price": _price(sku)}}
        items = rng.randint(1, 4)
        total = round(sum(_price(rng.randrange(1, 200)) for _ in range(items)), 2)
        return {"type": kind, "data": {"total": total, "items": items, "currency": "EUR"}}

    def _occurred_at(self, index: int) -> str:
        return self.clock.at(index).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _price(sku: int) -> float:
    """A sku's price: the same every time."""
    return round(4.99 + (sku * 37 % 150) + 0.5 * (sku % 2), 2)
