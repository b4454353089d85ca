# aidx on a CUDA runtime base. onnxruntime-gpu 1.31 and torch 2.14.1 from PyPI are
# built for CUDA 13 with cuDNN 9; the cuDNN/cuBLAS libraries also come with torch's
# wheels and onnxruntime.preload_dlls() finds them.
# The workspace's browser libraries (OpenSeadragon), pinned by the lock file, as
# `make install` copies them: nothing from a CDN at run time.
FROM node:22-bookworm-slim AS ui-vendor
WORKDIR /ui
COPY service/ui_vendor/package.json service/ui_vendor/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
 && mkdir -p vendor \
 && cp -R node_modules/openseadragon/build/openseadragon vendor/openseadragon \
 && rm -f vendor/openseadragon/*.map

FROM nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# var/reports exists in the image so that a volume mounted there (shared by the
# replicas, deploy/compose.yaml) starts out owned by aidx.
RUN useradd --create-home --uid 10001 aidx \
 && mkdir -p /var/lib/aidx/reports && chown -R aidx /var/lib/aidx
WORKDIR /opt/aidx
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY pyproject.toml README.md ./
COPY inference inference
COPY gpu gpu
COPY pipelines pipelines
COPY integrations integrations
COPY adapters adapters
COPY service service
COPY --from=ui-vendor /ui/vendor service/ui/vendor
RUN pip install --upgrade pip \
 && pip install torch==2.14.1 torchvision==0.29.1 \
 && pip install .

# The model repository is baked in; mount a volume over /opt/aidx/models to serve
# other weights (the same layout Triton reads).
COPY models models

USER aidx
ENV AIDX_HOST=0.0.0.0 AIDX_PORT=8000 AIDX_GRPC_PORT=8001 \
    AIDX_MODEL_REPOSITORY=/opt/aidx/models AIDX_VAR_DIR=/var/lib/aidx
EXPOSE 8000 8001
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
CMD ["aidx", "serve"]
