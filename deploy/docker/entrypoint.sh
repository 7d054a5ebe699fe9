#!/bin/sh
# Container start: apply the migrations (once per start, before anything serves), then run the
# UI, the API and /metrics in one process. Arguments that start with "-" go to Streamlit; any
# other command runs instead of the app, after the migrations (for example
# `docker run IMAGE python -m data.store.maintain`, or an ECS scheduled task's command override).
set -eu
python -m data.store.migrate
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ]; then
  exec "$@"
fi
exec python app.py --server.address 0.0.0.0 --server.port 8501 \
  --server.headless true --browser.gatherUsageStats false "$@"
