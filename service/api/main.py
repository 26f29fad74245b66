from fastapi import APIRouter

from service.api.routes import checkpoints, datasets, events, health, jobs, learngenes, web

api_router = APIRouter()
for module in (jobs, events, checkpoints, learngenes, datasets, health, web):
    api_router.include_router(module.router)
