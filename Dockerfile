# The loopline image: worker, serving endpoint, the page (loopline ui), the pods of Kubernetes/Argo
# runs (python -m triggers.pod_entry), and, in docker-compose, the MLflow tracking server.
#   docker build -t loopline:dev .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MLFLOW_DISABLE_TELEMETRY=true

WORKDIR /app
# Dependencies first (cached layer), then the code.
COPY pyproject.toml README.md ./
# One folder per thing that runs; the development harness (devstack) stays out of the image.
# tests/k8s/test_image.py fails when a package the image's commands import is missing here.
COPY streams ./streams
COPY triggers ./triggers
COPY agents ./agents
COPY adapters ./adapters
COPY serving ./serving
COPY stepkit ./stepkit
COPY loopline ./loopline
COPY ui ./ui
COPY examples ./examples
COPY loopline.yaml ./
# psycopg2: the MLflow tracking server of docker-compose runs from this image on PostgreSQL.
RUN pip install . "psycopg2-binary>=2.9" \
 && groupadd --system --gid 10001 loopline \
 && useradd --system --uid 10001 --gid loopline --home-dir /var/lib/loopline --create-home loopline \
 && mkdir -p /mlartifacts && chown loopline:loopline /mlartifacts

USER 10001:10001
ENV HOME=/var/lib/loopline \
    LOOPLINE_STATE_DIR=/var/lib/loopline \
    LOOPLINE_CONFIG=/app/loopline.yaml
EXPOSE 6066 8080
CMD ["loopline", "worker"]
