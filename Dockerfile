# Static anypost-operator binary on a minimal non-root base.
#   docker build -t anypost-operator .
FROM rust:1.95-alpine AS build
RUN apk add --no-cache musl-dev
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crds ./crds
RUN cargo build --release --locked --bin anypost-operator \
 && strip target/release/anypost-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/release/anypost-operator /usr/local/bin/anypost-operator
USER 65532:65532
EXPOSE 5353/udp 5353/tcp 8080/tcp
ENTRYPOINT ["/usr/local/bin/anypost-operator"]
CMD ["run"]
