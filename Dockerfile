# SafeRun server image: build wheels in one stage, run them as a non-root user in a slim one.
# Migrations are a separate one-shot command (`docker run ... saferun db upgrade`), never each replica's start.
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY saferun ./saferun
RUN pip install --no-cache-dir --upgrade pip==24.3.1 \
 && pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SAFERUN_AUTH=keys \
    SAFERUN_MIGRATE=false \
    SAFERUN_HOME=/data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "saferun[postgres]==0.1.0" \
 && rm -rf /wheels \
 && useradd --system --uid 10001 --home-dir /data --create-home saferun
USER 10001
WORKDIR /data
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/api/health', timeout=4).status != 200)"]
CMD ["saferun", "serve", "--host", "0.0.0.0", "--port", "8000", "--auth", "keys", "--no-demo"]
