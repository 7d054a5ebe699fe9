#!/bin/sh
# Container start: apply the migrations (once per start, before anything serves), then run the
# UI, the API and /metrics in one process. Extra arguments go to Streamlit.
set -eu
python -m data.migrate
exec python app.py --server.address 0.0.0.0 --server.port 8501 \
  --server.headless true --browser.gatherUsageStats false "$@"
