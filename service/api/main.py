from fastapi import APIRouter, Depends

from service.api.routes import aliases, checkpoints, datasets, health, jobs, learngenes
from service.deps import get_user

api_router = APIRouter()
for module in (jobs, checkpoints, learngenes, aliases, datasets):
    api_router.include_router(module.router, dependencies=[Depends(get_user)])  # every /v1 route needs a key
api_router.include_router(health.router)
