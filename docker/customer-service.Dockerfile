# The customer service: `customer-service serve` (API + consumer + outbox relay), `customer-service migrate`, `customer-service seed`.
# Build from the repository root: docker build -f docker/customer-service.Dockerfile -t saga/customer-service:dev .
# No HEALTHCHECK: Kubernetes probes /healthz and /readyz (see charts/saga).

ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
# The runtime venv gets no pip: a venv of its own installs into it (pip --python).
RUN python -m venv --without-pip /opt/saga && python -m venv /opt/pip
WORKDIR /src
COPY constraints.txt ./
COPY services/common ./services/common
COPY services/customer ./services/customer
# --only-binary: every dependency comes as a wheel, so no compiler is needed in either stage; the two local
# packages are built by pip itself. compileall: the root filesystem is read-only at run time.
RUN /opt/pip/bin/pip --python /opt/saga/bin/python install --no-cache-dir --only-binary=:all: -c constraints.txt \
        ./services/common ./services/customer \
    && /opt/saga/bin/python -m compileall -q /opt/saga/lib

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 saga \
    && useradd --system --uid 10001 --gid saga --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin saga
COPY --from=build /opt/saga /opt/saga
ENV PATH=/opt/saga/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SAGA_HTTP_PORT=8002
USER 10001:10001
WORKDIR /tmp
EXPOSE 8002
ENTRYPOINT ["customer-service"]
CMD ["serve"]
