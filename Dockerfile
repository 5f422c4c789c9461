# One image for the bot, the workers and the web app. The worker needs the CUDA build of torch; the bot never imports it.
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
COPY pyproject.toml README.md ./
COPY core core
COPY quotas quotas
COPY moderation moderation
COPY bot bot
COPY worker worker
COPY model model
COPY bench bench
COPY web web
RUN pip install ".[worker,bot,web]"

RUN useradd --create-home --uid 10001 imagine && mkdir -p /models && chown imagine /models
USER imagine
CMD ["python", "-m", "worker"]
