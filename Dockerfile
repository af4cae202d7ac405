# One image for every tokentrail process (gateway, flows, migrate, mock-upstream); compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY tokentrail ./tokentrail
COPY gateway ./gateway
COPY flows ./flows
COPY schemas ./schemas
COPY clickhouse ./clickhouse
# gcc (and zlib's headers, for gateway/_frames.c) build the gateway's C extensions and leave with
# the apt lists; libz itself stays, Python's zlib module needs it too.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev zlib1g-dev \
    && pip install --no-cache-dir -e . \
    && apt-get purge -y --auto-remove gcc libc6-dev zlib1g-dev && rm -rf /var/lib/apt/lists/*
ENV TOKENTRAIL_HOME=/var/lib/tokentrail
ENTRYPOINT ["tokentrail"]
