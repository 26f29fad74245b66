from typing import Any

from fastapi import APIRouter, Depends

from service.api.routes import aliases, checkpoints, datasets, events, health, jobs, learngenes, web, webhooks
from service.deps import get_user

PROBLEM_SCHEMA = {"type": "object", "required": ["type", "title", "status", "detail"], "properties": {
    "type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
    "detail": {"type": "string"}, "instance": {"type": "string"}}, "additionalProperties": True}
PROBLEMS: dict[int, str] = {
    400: "malformed body, JSON or cursor", 401: "no valid API key (WWW-Authenticate: Bearer)",
    403: "not allowed to you (admin only) or over a quota", 404: "no such resource, or another user's",
    409: "conflicts with the resource's state, or too many active jobs", 413: "body over the size limit",
    415: "unsupported Content-Type", 422: "invalid request: every broken rule, with what is allowed",
    429: "over the write rate (Retry-After)", 503: "the database is unavailable (Retry-After)"}
V1_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": why, "content": {"application/problem+json": {"schema": PROBLEM_SCHEMA}}}
    for status, why in PROBLEMS.items()}

api_router = APIRouter()
for module in (jobs, events, webhooks, checkpoints, learngenes, aliases, datasets):  # every /v1 route needs a key
    api_router.include_router(module.router, dependencies=[Depends(get_user)], responses=V1_RESPONSES)
for module in (health, web):  # liveness, readiness, metrics and the page (its API calls send the key)
    api_router.include_router(module.router)
