"""Users and API keys, and the `default` alias. Only a key's sha256 is stored; a key is 256 random
bits, so a plain hash is enough (no salt or slow hash is needed against guessing)."""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from pathlib import Path

from sqlalchemy import bindparam, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from learngene_store.models import Alias, Learngene, User, utcnow

KEY_PREFIX = "fz_"
USER_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
LOCAL_ADMIN = "admin"
DEFAULT_ALIAS = "default"
SYSTEM_OWNER = "system"  # owner of the shipped learngene set


class AccountError(ValueError):
    """A user command that cannot be done (bad name, taken, unknown)."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def add_user(session: Session, name: str, admin: bool = False) -> str:
    """Create a user; returns its API key (shown once: only the hash is kept)."""
    if not USER_NAME.match(name):
        raise AccountError(f"user name must be 1-64 of a-z 0-9 _ . - starting with a letter or digit, got {name!r}")
    if session.get(User, name) is not None:
        raise AccountError(f"user {name!r} exists (names are never reused, even revoked ones)")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    session.add(User(name=name, key_hash=hash_key(key), is_admin=admin))
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise AccountError(f"user {name!r} exists") from None
    return key


def revoke_user(session: Session, name: str) -> None:
    """Revoke a user's key at once; what they own stays."""
    user = session.get(User, name)
    if user is None:
        raise AccountError(f"no user {name!r}")
    if user.revoked_at is None:
        user.revoked_at = utcnow()
        session.commit()


# Built once: constructing the statement and its cache key cost as much as running it (every request runs it).
_BY_KEY_HASH = select(User).where(User.key_hash == bindparam("digest"))


def authenticate(session: Session, key: str) -> User | None:
    """The active user holding this key, or None. Looked up at every request, so a revocation counts
    from the next request on."""
    digest = hash_key(key)
    user = session.execute(_BY_KEY_HASH, {"digest": digest}).scalar_one_or_none()
    if user is None or not hmac.compare_digest(user.key_hash, digest) or user.revoked_at is not None:
        return None
    return user


def ensure_local_admin(session: Session, key_file: Path) -> None:
    """Embedded mode's first start: an admin user whose key is written to `key_file` (mode 0600)."""
    if key_file.exists() and authenticate(session, key_file.read_text().strip()) is not None:
        return
    try:
        key = add_user(session, LOCAL_ADMIN, admin=True)
    except AccountError:  # taken (the file was lost, or another process started first): another admin
        key = add_user(session, f"{LOCAL_ADMIN}-{secrets.token_hex(3)}", admin=True)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = key_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
    os.chmod(tmp, 0o600)
    os.replace(tmp, key_file)


def alias_target(session: Session, name: str = DEFAULT_ALIAS) -> Learngene | None:
    alias = session.get(Alias, name)
    return session.get(Learngene, alias.learngene_id) if alias is not None else None


def set_alias(session: Session, learngene_id: str, by: str, name: str = DEFAULT_ALIAS,
              only_if_unset: bool = False) -> Alias:
    """Point an alias at a learngene (or leave an existing one, with only_if_unset)."""
    alias = session.get(Alias, name)
    if alias is not None and only_if_unset:
        return alias
    if alias is None:
        alias = Alias(name=name, learngene_id=learngene_id, updated_by=by)
        session.add(alias)
    else:
        alias.learngene_id, alias.updated_by, alias.updated_at = learngene_id, by, utcnow()
    try:
        session.commit()
    except IntegrityError:  # a concurrent start-up set it first
        session.rollback()
        alias = session.get(Alias, name)
        assert alias is not None
    return alias


def aliases_of(session: Session) -> dict[str, list[str]]:
    """learngene id → its alias names."""
    out: dict[str, list[str]] = {}
    for a in session.execute(select(Alias).order_by(Alias.name)).scalars():
        out.setdefault(a.learngene_id, []).append(a.name)
    return out
