# moto's server (the AWS API emulator the integration tests use) as an image, so end-to-end tests can give
# several runtime pods one shared DynamoDB table, as a production deployment has. Test infrastructure only.
#   docker build -f hack/images/moto.Dockerfile -t gpt-operator.local/moto:e2e .
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY hack/constraints.txt /tmp/constraints.txt
RUN python -m venv /opt/moto && /opt/moto/bin/pip install -c /tmp/constraints.txt "moto[server]" && rm /tmp/constraints.txt
USER 65534:65534
EXPOSE 5000
ENTRYPOINT ["/opt/moto/bin/moto_server", "--host", "0.0.0.0", "--port", "5000"]
