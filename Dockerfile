# The operator's image: one static binary on an empty base, run as a non-root user.
#
#   docker build -t anypost-operator .    with registry access: builds the binary too
#   make image                            offline, on this machine (scripts/image)
#
# Both end in the last stage below, the runtime image. `make image` builds the
# binary on the host with the script the build stage runs (scripts/build-binary)
# and hands it in through a context holding only that file, with
# --build-arg BINARY_FROM=prebuilt; `docker build .` never builds that stage.
ARG BINARY_FROM=build

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
COPY scripts/build-binary ./scripts/
RUN mkdir /out && cp "$(scripts/build-binary)" /out/anypost-operator

FROM scratch AS prebuilt
COPY anypost-operator /out/anypost-operator

FROM ${BINARY_FROM} AS binary

# The runtime image.
FROM scratch
COPY --from=binary /out/anypost-operator /usr/local/bin/anypost-operator
USER 65532:65532
EXPOSE 5353/udp 5353/tcp 8080/tcp
ENTRYPOINT ["/usr/local/bin/anypost-operator"]
CMD ["run"]
