# The Segflow image of docker-compose.yml: `segflow worker` by default, `segflow api`, `segflow keys`.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY derivations ./derivations
COPY materializations ./materializations
COPY catalog ./catalog
COPY schemas ./schemas
RUN pip install --no-cache-dir . \
    && useradd --system --uid 10001 --home-dir /app segflow \
    && mkdir /data && chown segflow /data
USER segflow
ENV SEGFLOW_CATALOG=/app/catalog SEGFLOW_DATA_DIR=/data
# Local state (RocksDB per partition, a cache of the changelogs): one volume per worker.
VOLUME /data
# 9400: a worker's /health, /metrics and console; 8080: `segflow api --port 8080`.
EXPOSE 9400 8080
ENTRYPOINT ["segflow"]
CMD ["worker"]
