# syntax=docker/dockerfile:1
# kfct images (CPU). Two targets share the dependency layers:
#   docker build --target component -t ghcr.io/kfct/kfct-component:0.1.0 .   # every pipeline step
#   docker build --target serving   -t ghcr.io/kfct/kfct-serving:0.1.0 .     # KServe predictor
# `kfct images` / `make images` run exactly these (names come from settings).
# GPU training image: Dockerfile.gpu.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- deps: pinned dependencies only
FROM ${PYTHON_IMAGE} AS deps
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Only the dependency manifests: this layer is rebuilt when pins change, not when code does.
# boto3 (pinned by the lock): MLflow's S3 artifact store, used by the tracking server.
# The `tune` extra (optuna) too: the CT pipeline's `tune_trials` parameter must work in every training image.
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['tune']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt boto3 -c requirements.lock

# ---------------------------------------------------------------- build: the project itself
FROM deps AS build
COPY kfct ./kfct
COPY components ./components
COPY pipelines ./pipelines
COPY serving ./serving
COPY README.md ./
RUN pip install --no-deps .

# ---------------------------------------------------------------- runtime base: non-root
FROM ${PYTHON_IMAGE} AS runtime
ARG KFCT_CODE_VERSION=unknown
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/home/kfct \
    KFCT_HOME=/tmp/kfct \
    MLFLOW_DISABLE_TELEMETRY=true \
    KFCT_CODE_VERSION=${KFCT_CODE_VERSION}
# libgomp: OpenMP runtime for xgboost / scikit-learn. KFP's launcher stages artifacts
# under /gcs, /minio, /s3 (newer backends mount emptyDirs there): writable by the user.
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1=12.2.0-14+deb12u1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 kfct \
 && useradd --uid 10001 --gid kfct --create-home --home-dir /home/kfct kfct \
 && mkdir -p /gcs /minio /s3 /app \
 && chown kfct:kfct /gcs /minio /s3 /app
COPY --from=build /opt/venv /opt/venv
WORKDIR /app

# ---------------------------------------------------------------- component: KFP sets the command per task
FROM runtime AS component
USER 10001:10001
CMD ["python", "-m", "kfct", "--help"]

# ---------------------------------------------------------------- serving: KServe model server
FROM runtime AS serving
# In a pod the server must listen on all interfaces (settings default: 127.0.0.1).
ENV KFCT_SERVING_HOST=0.0.0.0 \
    KFCT_SERVING_PORT=8080
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["python", "-m", "kfct.serving"]
