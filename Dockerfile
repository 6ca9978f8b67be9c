# syntax=docker/dockerfile:1
# The callrec image: `callrec` is the entrypoint (serve by default; `migrate`, `worker`, `dlq`, ...).
# No secret is baked in: every setting comes from the environment at run time (docs/configuration.md).

# --- build: the locked dependencies, then the project, into /opt/venv -------------------------------
FROM python:3.11.11-slim-bookworm AS build
RUN pip install --no-cache-dir uv==0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock ./
# Dependencies first (exactly uv.lock's, without the dev group): a layer that changes only with the lock.
RUN uv sync --frozen --no-dev --no-install-project
COPY domain ./domain
COPY application ./application
COPY adapters ./adapters
COPY entrypoints ./entrypoints
RUN uv sync --frozen --no-dev --no-editable

# --- runtime: the interpreter and the environment, nothing else; not root ---------------------------
FROM python:3.11.11-slim-bookworm AS runtime
RUN groupadd --system --gid 10001 callrec \
    && useradd --system --uid 10001 --gid callrec --home-dir /var/lib/callrec --create-home callrec
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CALLREC_VAR_DIR=/var/lib/callrec
WORKDIR /var/lib/callrec
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["callrec"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
