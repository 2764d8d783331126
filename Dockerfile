# rwml-lite on one NVIDIA GPU: the pinned GPU stack (Unsloth + vLLM), Java for TextWorldExpress.
# The install runs the same commands as .ci/run (apt Java, then `make`'s venv), plus the gpu extra.
#   docker build -t rwml-lite .
#   docker run --gpus all -v ~/.cache/huggingface:/home/rwml/.cache/huggingface \
#     -v ~/.cache/alfworld:/data/alfworld -e ALFWORLD_DATA=/data/alfworld -v "$PWD/runs:/app/runs" \
#     rwml-lite train recipes/alfworld_qwen3_8b.yaml
# BASE: another image with python3.11 (docker/check_image.sh builds on a Debian bookworm base it makes itself)
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${BASE}
# PIP_CERT: a CA bundle inside the build for pip behind a TLS-intercepting proxy (`--build-arg PIP_CERT=...`)
ARG PIP_CERT

ENV DEBIAN_FRONTEND=noninteractive PIP_NO_CACHE_DIR=1 PYTHONUNBUFFERED=1
# python3.11 for the package; build tools for ALFWorld's jericho/fast-downward and Triton's launcher
RUN apt-get update -q \
 && apt-get install -y -q python3.11 python3.11-venv python3.11-dev build-essential cmake make git \
 && apt-get install -y -q openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home rwml && mkdir /app && chown rwml /app
USER rwml
WORKDIR /app
COPY --chown=rwml . /app
# The venv first on PATH before anything installs: ALFWorld's fast-downward-textworld builds from source and calls
# `python`, a command neither base has (only python3.11).
ENV PATH=/app/.venv/bin:$PATH
# the gpu extra: unsloth + unsloth_zoo 2026.10.9, vllm 0.30.0 and vllm-bnb-plugin 0.0.3 (vLLM >= 0.28 serves
# 4-bit bitsandbytes weights only through it); `rwml-lite doctor` in the container lists them
RUN make PYTHON=python3.11 .venv/.installed && pip install -e '.[gpu]'
ENTRYPOINT ["rwml-lite"]
CMD ["--help"]
