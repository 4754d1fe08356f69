"""The promotion lock of one registered model: MLflow has no compare-and-set, but creating a registered model is.

Creating `<name>.promotion-lock` succeeds for exactly one caller (the name is unique in the server's database;
a second create fails with RESOURCE_ALREADY_EXISTS), so it serialises read-champion, compare, move-aliases.
Deleting it releases. A lock older than the TTL is taken over: its holder is presumed dead.
"""

from __future__ import annotations

import getpass
import os
import random
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field

from structvpr.deploy.registry.records import RegistryError, utc_text

LOCK_SUFFIX = ".promotion-lock"
OWNER_TAG, TOKEN_TAG, SINCE_TAG = "structvpr.lock.owner", "structvpr.lock.token", "structvpr.lock.since"


def who() -> str:
    """user@host pid N: names the holder of a lock and the author of a move."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name and no passwd entry (some containers)
        user = "unknown"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


def is_lock_model(name: str) -> bool:
    """The lock models (and take-over markers) are registry plumbing, not models to list."""
    return LOCK_SUFFIX in name


@dataclass(frozen=True)
class Holder:
    owner: str
    token: str
    since: float  # epoch seconds, from the holder's clock

    @property
    def age_s(self) -> float:
        return time.time() - self.since


@dataclass
class PromotionLock:
    """`with PromotionLock(client, name):` the body runs while no other structvpr promotion of `name` does."""

    client: object
    model: str
    timeout_s: float = 120.0
    ttl_s: float = 600.0
    poll_s: float = 0.25
    token: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def name(self) -> str:
        return f"{self.model}{LOCK_SUFFIX}"

    def __enter__(self) -> "PromotionLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def acquire(self) -> None:
        start, announced = time.monotonic(), False
        while not self._create(self.name, {OWNER_TAG: who(), TOKEN_TAG: self.token, SINCE_TAG: repr(time.time())}):
            holder = self.holder()
            if holder is not None and holder.token == self.token:
                break  # our create went through, but a retried request lost its answer
            if holder is not None and holder.age_s > self.ttl_s:
                self._take_over(holder)
                continue
            if time.monotonic() - start > self.timeout_s:
                raise RegistryError(self._timeout_message(holder or Holder("an unknown owner", "", time.time())))
            if holder is None:  # released between our create and our read: try again at once
                continue
            if not announced:
                print(f"structvpr: waiting for the promotion lock {self.name} held by {holder.owner}", file=sys.stderr)
                announced = True
            time.sleep(self.poll_s * random.uniform(0.5, 1.5))  # jitter: waiters do not retry in step

    def check_held(self) -> None:
        """Raise unless the lock is still ours: a holder that outlived the TTL may have been taken over."""
        holder = self.holder()
        if holder is None or holder.token != self.token:
            raise RegistryError(f"lost the promotion lock {self.name} (taken over after the TTL of {self.ttl_s:g} s) "
                                "before changing anything; run the command again")

    def release(self) -> None:
        holder = self.holder()
        if holder is not None and holder.token == self.token:
            self._delete(self.name)
        else:  # someone took it over: theirs now, not ours to delete
            print(f"structvpr: warning: the promotion lock {self.name} was taken over by "
                  f"{holder.owner if holder else 'another process'}; left as it is", file=sys.stderr)

    def holder(self) -> Holder | None:
        from mlflow.exceptions import MlflowException

        try:
            model = self.client.get_registered_model(self.name)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None
            raise
        tags = model.tags or {}
        since = float(tags.get(SINCE_TAG) or (model.creation_timestamp or 0) / 1000)
        return Holder(tags.get(OWNER_TAG, "an unknown owner"), tags.get(TOKEN_TAG, ""), since)

    def _take_over(self, stale: Holder) -> None:
        """Delete a stale lock, once: a marker named after its token lets one taker in, and the token check
        keeps a slow taker from deleting the fresh lock that a faster one has taken since."""
        marker = f"{self.name}.takeover-{stale.token or 'untagged'}"
        if not self._create(marker, {OWNER_TAG: who()}):
            time.sleep(self.poll_s)  # another process is taking this one over
            return
        try:
            current = self.holder()
            if current is not None and current.token == stale.token:
                print(f"structvpr: taking over the stale promotion lock {self.name} held by {stale.owner} since "
                      f"{utc_text(stale.since)} ({stale.age_s:.0f} s, over the TTL of {self.ttl_s:g} s)",
                      file=sys.stderr)
                self._delete(self.name)
        finally:
            self._delete(marker)

    def _timeout_message(self, holder: Holder) -> str:
        return (f"the promotion lock {self.name} is still held by {holder.owner} since {utc_text(holder.since)} "
                f"({holder.age_s:.0f} s) after waiting {self.timeout_s:g} s. If no promotion is running it is stale: "
                f"it is taken over once older than --lock-ttl ({self.ttl_s:g} s), so rerun with --lock-ttl 0 to take "
                f"it over now, or delete the registered model {self.name!r} (MLflow UI or MlflowClient)")

    def _create(self, name: str, tags: dict[str, str]) -> bool:
        """True if we created `name`; False if it exists: the atomic step everything here rests on."""
        from mlflow.exceptions import MlflowException

        try:
            self.client.create_registered_model(name, tags=tags, description="structvpr promotion lock: "
                                                "delete it only if no promotion is running")
            return True
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_ALREADY_EXISTS":
                return False
            raise

    def _delete(self, name: str) -> None:
        from mlflow.exceptions import MlflowException

        try:
            self.client.delete_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
