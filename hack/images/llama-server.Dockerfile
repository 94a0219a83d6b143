# llama.cpp's server as an image, laid out like the official ghcr.io/ggml-org/llama.cpp:server (entrypoint
# /app/llama-server), for the end-to-end tests of `spec.engine.type: llamacpp`: no registry can be reached here.
# The binary is hack/tools.sh's build (the llama.cpp that the pinned llama-cpp-python sdist vendors; -march=native,
# so it runs on the machine that built it). Test infrastructure only: users run the official image.
#   hack/images/build.sh llama-server
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 libstdc++6 \
 && rm -rf /var/lib/apt/lists/*
COPY llama-server /app/llama-server
USER 65534:65534
EXPOSE 8080
HEALTHCHECK CMD ["/app/llama-server", "--version"]
ENTRYPOINT ["/app/llama-server"]
