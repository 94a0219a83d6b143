# Redis for compose.yaml (the runtime's cache, rate limits and job queue on one machine): Debian's redis-server
# on the same base as the other images, since no registry can be reached here. Built by
#   bash hack/images/build.sh redis        # gpt-operator.local/redis:7
# The password comes from REDIS_PASSWORD (required) into a config file only this user reads, never onto the
# command line; data (the append-only file) under /data; listens on 127.0.0.1 (compose.yaml uses the host network).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends redis-server \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /data && chown redis:redis /data
COPY hack/images/redis-entrypoint.sh /usr/local/bin/redis-entrypoint.sh
USER redis
WORKDIR /data
VOLUME /data
EXPOSE 6379
ENTRYPOINT ["/bin/sh", "/usr/local/bin/redis-entrypoint.sh"]
