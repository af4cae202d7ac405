# One image for every tokentrail process (gateway, flows, migrate, mock-upstream); compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml setup.py README.md ./
COPY tokentrail ./tokentrail
COPY gateway ./gateway
COPY flows ./flows
COPY schemas ./schemas
COPY clickhouse ./clickhouse
# gcc builds gateway/_redaction.c and gateway/_group_commit.c and leaves with the apt lists.
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev \
    && pip install --no-cache-dir -e . \
    && apt-get purge -y --auto-remove gcc libc6-dev && rm -rf /var/lib/apt/lists/*
ENV TOKENTRAIL_HOME=/var/lib/tokentrail
ENTRYPOINT ["tokentrail"]
