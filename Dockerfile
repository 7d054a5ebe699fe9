# agent-chatbase: the Streamlit app with its embedded model. In production set OPENAI_API_KEY
# (or OPENAI_BASE_URL) and DATABASE_URL; the embedded model then stays off.
FROM python:3.11-slim-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends build-essential cmake git \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY requirements.txt .
# Portable AVX2 build of llama-cpp-python (a -march=native build can crash on other CPUs).
RUN CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON" \
    pip wheel --no-deps --wheel-dir /wheels \
      "llama-cpp-python==$(sed -n 's/^llama-cpp-python==//p' requirements.txt)" \
    && python -m venv /venv \
    && /venv/bin/pip install --no-cache-dir --find-links /wheels --only-binary llama-cpp-python \
      -r requirements.txt

FROM python:3.11-slim-bookworm
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 app
COPY --from=build /venv /venv
WORKDIR /app
COPY --chown=app:app app.py ./
COPY --chown=app:app agent ./agent
COPY --chown=app:app data ./data
COPY --chown=app:app pages ./pages
COPY --chown=app:app .streamlit/config.toml ./.streamlit/config.toml
USER app
ENV PATH=/venv/bin:$PATH PYTHONUNBUFFERED=1 DATA_DIR=/app/.data \
    METRICS_HOST=0.0.0.0 METRICS_PORT=9464 ENVIRONMENT=production
EXPOSE 8501 9464
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
    CMD curl -fsS http://127.0.0.1:8501/_stcore/health || exit 1
CMD ["sh", "-c", "python -m data.migrate && exec python app.py --server.address 0.0.0.0 --server.port 8501"]
