# syntax=docker/dockerfile:1
#
# nlphub: one image for every role (migrate, worker, beat, flower); docker-compose.yml picks the
# role with the command, e.g. `worker -Q downloads -c 2`.
#
# The base is pinned to Debian bookworm: it is the newest Debian that still ships
# openjdk-17-jre-headless (needed by pyspark / Spark NLP).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore

# Java 17 runtime. /usr/share/man/man1 is missing on slim images and the JRE's postinst
# (update-alternatives) fails without it. /opt/java is an architecture-independent JAVA_HOME.
RUN mkdir -p /usr/share/man/man1 \
    && apt-get update \
    && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && ln -s "$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")" /opt/java \
    && /opt/java/bin/java -version
ENV JAVA_HOME=/opt/java

RUN groupadd --system --gid 10001 nlphub \
    && useradd --system --uid 10001 --gid nlphub --home-dir /data/nlphub --no-create-home \
        --shell /usr/sbin/nologin nlphub

# Only what the package needs: never the developer's .venv, .git or .env (pydantic-settings reads
# `.env` from the working directory, so a copied one would leak secrets into the image).
# `README.m[d]` copies README.md when it exists and is skipped when it does not.
# Keep this list in step with [tool.setuptools.packages.find] in pyproject.toml
# (tests/unit/test_deployment.py checks it).
WORKDIR /src
COPY pyproject.toml README.m[d] ./
COPY workers ./workers
COPY tasks ./tasks
COPY schemas ./schemas
COPY scheduler ./scheduler
COPY nlphub ./nlphub
RUN pip install --no-cache-dir . \
    && nlphub --help > /dev/null

# A root-owned, empty working directory: no stray `.env` is picked up from here. The sources are
# installed, so /src goes.
WORKDIR /app
RUN rm -rf /src

# NLPHUB_HOME holds downloaded resources and beat's schedule (run/celerybeat-schedule). A named
# volume mounted here starts out with this directory's owner, so the non-root user can write it.
ENV NLPHUB_HOME=/data/nlphub
RUN mkdir -p /data/nlphub/run && chown -R nlphub:nlphub /data/nlphub

USER nlphub

ENTRYPOINT ["nlphub"]
CMD ["--help"]
