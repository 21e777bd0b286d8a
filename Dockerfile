# syntax=docker/dockerfile:1
# Images of topo (docs/deploy.md). No stage needs the network beyond PyPI.
#   docker build -t explorer-topo:latest .                  the reference topology's image: topo, generated/
#                                                           and the handlers in examples/ (the default stage)
#   docker build --build-arg HANDLERS=myhandlers -t my-topo:1.0 .   another handler package of this folder
#   docker build --target runtime -t topo-runtime:0.1.0 .   topo alone, to derive your own image from
# The generated Deployments run `topo run --group G --topology /app/generated/topology.json` from the
# image named by `deploy.image` in topology.yaml; run `topo generate` before building.
# tests/test_packaging.py performs these steps without a Docker engine, against the real Kafka.

# 1. The wheel, built from the sources (the package folders and the packaging files only).
FROM python:3.11-slim AS wheel
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY topo/ topo/
COPY generator/ generator/
COPY runtime/ runtime/
COPY provision/ provision/
COPY templates/ templates/
RUN pip wheel --no-deps --no-cache-dir --wheel-dir /wheels .

# 2. topo installed from the wheel (its dependencies from PyPI) into a slim Python 3.11; no build tools.
FROM python:3.11-slim AS runtime
COPY --from=wheel /wheels/ /wheels/
RUN pip install --no-cache-dir --disable-pip-version-check /wheels/*.whl && rm -rf /wheels
# An unprivileged user; /var/lib/topo is the Deployments' working directory (a volume there).
RUN useradd --uid 10001 --no-create-home --shell /usr/sbin/nologin topo && mkdir -p /var/lib/topo && chown topo /var/lib/topo
# Handler modules are imported from /app (`examples.explorer_handlers:on_transfer` -> /app/examples/).
ENV PYTHONPATH=/app PYTHONUNBUFFERED=1
WORKDIR /app
USER 10001
ENTRYPOINT ["topo"]

# 3. The topology's image: the compiled topology and the handler package, on top of the runtime.
FROM runtime AS app
ARG HANDLERS=examples
COPY generated/ /app/generated/
COPY ${HANDLERS}/ /app/${HANDLERS}/
WORKDIR /var/lib/topo
