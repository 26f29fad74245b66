"""Who sees what: users see their own resources, built-in datasets and public learngenes; admins see all.
Anything else is answered as if it did not exist (404), so ids of other users' resources leak nothing."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, or_

from learngene_store.models import Dataset, Learngene, User


def owns(user: User, owner: str) -> bool:
    return user.is_admin or owner == user.name


def owned(q: Select[Any], model: Any, user: User) -> Select[Any]:
    """Restrict a query on an owned table to what `user` may see."""
    return q if user.is_admin else q.where(model.owner == user.name)


def can_see_learngene(user: User, lg: Learngene) -> bool:
    return lg.public or owns(user, lg.owner)


def visible_learngenes(q: Select[Any], user: User) -> Select[Any]:
    return q if user.is_admin else q.where(or_(Learngene.public.is_(True), Learngene.owner == user.name))


def can_see_dataset(user: User, ds: Dataset) -> bool:
    return ds.kind == "builtin" or owns(user, ds.owner)


def visible_datasets(q: Select[Any], user: User) -> Select[Any]:
    return q if user.is_admin else q.where(or_(Dataset.kind == "builtin", Dataset.owner == user.name))
