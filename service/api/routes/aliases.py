"""GET /v1/aliases and PUT /v1/aliases/{name}: named pointers at learngene sets (admins move them).

`default` is the one that matters: a job without `learngene` is built from its target."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Path
from sqlalchemy import select

from learngene_store.accounts import set_alias
from learngene_store.models import Alias, Learngene
from service.deps import AdminUser, JsonBody, SessionDep
from service.errors import Problem
from service.schemas import AliasIn, AliasOut

router = APIRouter(prefix="/v1/aliases", tags=["learngenes"])
ALIAS_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
AliasName = Annotated[str, Path(max_length=64, pattern=ALIAS_NAME.pattern, description="alias name, e.g. default")]


def _out(a: Alias) -> AliasOut:
    return AliasOut(name=a.name, learngene=a.learngene_id, updated_by=a.updated_by, updated_at=a.updated_at)


@router.get("", response_model=list[AliasOut])
def list_aliases(session: SessionDep) -> list[AliasOut]:
    """Every alias (they point only at public learngene sets, so everyone may see them)."""
    return [_out(a) for a in session.execute(select(Alias).order_by(Alias.name)).scalars()]


@router.put("/{name}", response_model=AliasOut, dependencies=[JsonBody],
            responses={403: {"description": "not an admin"}, 422: {"description": "unknown or private learngene"}})
def put_alias(name: AliasName, body: AliasIn, session: SessionDep, admin: AdminUser) -> AliasOut:
    """Point an alias at a public learngene set (admins only); `default` changes what new jobs use."""
    lg = session.get(Learngene, body.learngene)
    if lg is None or not lg.public:
        why = "unknown learngene" if lg is None else "learngene is private (only public sets can be aliased)"
        raise Problem(422, f"learngene: {why}: {body.learngene!r}; see GET /v1/learngenes", type_="invalid-alias",
                      errors=[{"field": "learngene", "message": why}])
    return _out(set_alias(session, lg.id, by=admin.name, name=name))
