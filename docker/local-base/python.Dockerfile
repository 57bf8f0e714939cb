# A stand-in for the official python:3.11-slim base, for machines that cannot pull from Docker Hub:
# Debian's own Python 3.11 on a Debian bookworm root filesystem made with debootstrap and `docker import`
# (tests/support/docker_engine.py builds both when the official image cannot be pulled). Then:
#   make images PYTHON_IMAGE=local/python:3.11-bookworm
# The machine's CA certificates come along (a TLS-intercepting proxy is then trusted by pip in the build).
ARG DEBIAN_IMAGE=local/debian:bookworm
FROM ${DEBIAN_IMAGE}
COPY ca-certificates/ /usr/local/share/ca-certificates/
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
    && update-ca-certificates \
    && rm -rf /var/lib/apt/lists/*
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    LANG=C.UTF-8
CMD ["python3"]
