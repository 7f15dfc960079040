# Kontext Bot in a container: `docker compose up -d` (docker-compose.yml), or
#   docker build -t kontext-bot .
#   docker run -d --restart unless-stopped --env-file kontext.env -v kontext-data:/data kontext-bot
#
# Any Python 3.11+ image works as the base (build with --build-arg PYTHON_IMAGE=...).
ARG PYTHON_IMAGE=python:3.12-slim
FROM ${PYTHON_IMAGE}

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app

# The dependencies first, read from pyproject.toml: this layer is rebuilt only when they change.
WORKDIR /app
COPY pyproject.toml ./
RUN python3 -m venv /opt/venv \
 && python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
 && pip install --quiet -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

# The bot's code, owned by root: the bot's user can read it, not change it.
COPY bot.py ./
COPY services ./services
COPY cogs ./cogs
RUN python -m compileall -q /app

# A user of its own, no shell, no home but its data.
RUN useradd --system --user-group --uid 10001 --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin kontext \
 && mkdir -p /data && chown kontext:kontext /data

# Everything the bot keeps (the job store, and config.toml if you put one there) lives on the
# /data volume. /data is the working directory, so /data/config.toml is read when it exists and
# the environment alone is enough when it does not (KONTEXT_CONFIG would make the file required).
# Secrets come from the environment: DISCORD_TOKEN, WAVESPEED_API_KEY.
ENV STORAGE_DATABASE=/data/kontext.sqlite3
VOLUME ["/data"]
WORKDIR /data
USER kontext

# With [monitoring] port set (MONITORING_PORT), the bot's own /healthz is asked; without it, the
# job store must be there and migrated (services/healthcheck.py).
HEALTHCHECK --interval=60s --timeout=10s --start-period=60s --retries=3 \
    CMD ["python", "-m", "services.healthcheck"]

# docker stop sends SIGTERM: jobs on their way finish, the rest resume at the next start.
STOPSIGNAL SIGTERM
CMD ["python", "/app/bot.py"]
