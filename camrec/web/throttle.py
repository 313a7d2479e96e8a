"""Login throttling: per client address and per user name, exponential backoff, temporary lockout.

Each key (an address, a user name) counts its recent failures. The first few are free; after that,
each failure locks the key for base·2ⁿ seconds, up to a cap (15 min). While a key is locked, a
login is answered 429 with Retry-After *without checking the password*, so guessing gains nothing.
A success clears the address's and the user's counts; failures are forgotten after a quiet hour.
Nothing is ever banned for good: Home Assistant's permanent IP bans lock owners out of their own
house (DESIGN §8). The user limit is higher than the address limit, so that one noisy device on
the LAN slows itself down long before it can lock the owner out from their phone.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int = 0
    locked_until: float = 0.0
    last_failure: float = 0.0


@dataclass(frozen=True)
class ThrottleRules:
    free_failures: int  # failures before any lockout
    base: float = 1.0  # first lockout, seconds
    cap: float = 900.0  # longest lockout, seconds
    forget_after: float = 3600.0  # failures are forgotten after this long without one


ADDRESS_RULES = ThrottleRules(free_failures=5)
USER_RULES = ThrottleRules(free_failures=10)
MAX_KEYS = 10_000  # memory bound: the oldest records are dropped first


class _Limiter:
    def __init__(self, rules: ThrottleRules) -> None:
        self.rules = rules
        self.records: OrderedDict[str, _Record] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        r = self.records.get(key)
        return max(0.0, r.locked_until - now) if r else 0.0

    def fail(self, key: str, now: float) -> None:
        r = self.records.pop(key, None) or _Record()
        if now - r.last_failure > self.rules.forget_after:
            r.failures = 0
        r.failures += 1
        r.last_failure = now
        over = r.failures - self.rules.free_failures
        if over > 0:
            r.locked_until = now + min(self.rules.cap, self.rules.base * 2 ** min(over - 1, 30))
        self.records[key] = r
        while len(self.records) > MAX_KEYS:
            self.records.popitem(last=False)

    def clear(self, key: str) -> None:
        self.records.pop(key, None)


class LoginThrottle:
    def __init__(self, clock: Callable[[], float] = time.time, address_rules: ThrottleRules = ADDRESS_RULES,
                 user_rules: ThrottleRules = USER_RULES) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._addresses = _Limiter(address_rules)
        self._users = _Limiter(user_rules)

    def retry_after(self, address: str, user: str) -> int:
        """Seconds until this address may try this user again (0: now), rounded up."""
        now = self.clock()
        with self._lock:
            wait = max(self._addresses.wait(address, now), self._users.wait(user, now))
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, address: str, user: str) -> None:
        now = self.clock()
        with self._lock:
            self._addresses.fail(address, now)
            self._users.fail(user, now)

    def succeeded(self, address: str, user: str) -> None:
        with self._lock:
            self._addresses.clear(address)
            self._users.clear(user)
