# aidx on a CUDA runtime base (onnxruntime-gpu 1.2x+ is built for CUDA 12 / cuDNN 9).
FROM nvidia/cuda:12.6.3-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl ca-certificates \
 || (apt-get install -y --no-install-recommends software-properties-common \
     && add-apt-repository -y ppa:deadsnakes/ppa && apt-get update \
     && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl ca-certificates) \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 10001 aidx
WORKDIR /opt/aidx
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

COPY pyproject.toml README.md ./
COPY inference inference
COPY gpu gpu
COPY pipelines pipelines
RUN pip install --upgrade pip && pip install torch==2.14.1 torchvision==0.29.1 && pip install .

# The model repository: baked in here; mount a volume over /opt/aidx/models instead
# to serve other weights.
COPY models models

USER aidx
ENV AIDX_HOST=0.0.0.0 AIDX_PORT=8000 AIDX_MODEL_REPOSITORY=/opt/aidx/models \
    AIDX_VAR_DIR=/var/lib/aidx
USER root
RUN mkdir -p /var/lib/aidx && chown aidx /var/lib/aidx
USER aidx
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=60s \
  CMD curl -fsS http://127.0.0.1:8000/readyz || exit 1
CMD ["aidx", "serve"]
