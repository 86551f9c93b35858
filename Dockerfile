# The Segflow worker image used by docker-compose.yml.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
COPY derivations ./derivations
COPY materializations ./materializations
COPY catalog ./catalog
COPY schemas ./schemas
RUN pip install --no-cache-dir .
ENV SEGFLOW_CATALOG=/app/catalog SEGFLOW_DATA_DIR=/data
VOLUME /data
EXPOSE 9400
ENTRYPOINT ["segflow"]
CMD ["worker"]
