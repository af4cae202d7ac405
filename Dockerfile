# One image for every tokentrail process (gateway, flows, migrate, mock-upstream); compose picks the command.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY tokentrail ./tokentrail
COPY gateway ./gateway
COPY flows ./flows
COPY schemas ./schemas
COPY clickhouse ./clickhouse
RUN pip install --no-cache-dir -e .
ENV TOKENTRAIL_HOME=/var/lib/tokentrail
ENTRYPOINT ["tokentrail"]
