"""Celery workers: one job = assemble -> sigma stage -> evaluate -> save -> register."""
