# Prometheus for compose.yaml's `monitoring` profile: the server hack/tools.sh builds from its Go module (the API
# only, no web UI assets), on the same base as the other images. Built by
#   bash hack/images/build.sh prometheus   # gpt-operator.local/prometheus:v0.316.0
# The build context is a directory holding only the binary (build.sh makes it).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY prometheus /usr/local/bin/prometheus
RUN mkdir -p /prometheus && chown 65534:65534 /prometheus
USER 65534:65534
WORKDIR /prometheus
VOLUME /prometheus
EXPOSE 9090
ENTRYPOINT ["/usr/local/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]
