# Image for the Whistle services; docker-compose.yml picks the service with `command:`
# (e.g. `nameko run --config config.yaml services.intake.service`).
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
