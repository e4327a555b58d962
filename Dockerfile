# Image for the Whistle services; docker-compose.yml picks the service with `command:`
# (e.g. `whistle up --services intake`: Whistle's own runner, which stops cleanly on a
# SIGTERM that comes while the service is still starting; nameko 2.14's `nameko run` hangs
# there. docker-compose.yml says why in full.)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

COPY . .
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin whistle

USER whistle

EXPOSE 8000
