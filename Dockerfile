# walhook in a container: built in the Rust image, run from Debian slim as
# an unprivileged user.
#   docker build -t walhook .
#   docker run --rm -e DATABASE_URL=postgres://... walhook migrate
#   docker run --rm -e DATABASE_URL=postgres://... walhook run

FROM rust:1-bookworm AS build
WORKDIR /src
# Dependencies first, in a layer of their own: it is rebuilt only when
# Cargo.toml or Cargo.lock change, not on every change of walhook's code.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/pipeline.rs \
    && cargo build --release --locked --bin walhook \
    && rm -rf src benches
COPY . .
# The placeholder build is older than the copied sources only by mtime;
# touching them makes cargo rebuild walhook itself (and only walhook).
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin walhook \
    && strip --strip-debug target/release/walhook

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /app walhook
WORKDIR /app
COPY --from=build /src/target/release/walhook /usr/local/bin/walhook
COPY config/ /app/config/
# Numeric, so an orchestrator can tell the user is not root.
USER 10001:10001
# The admin server (/healthz, /metrics); set WALHOOK_ADMIN_LISTEN=0.0.0.0:9750
# to reach it from outside the container.
EXPOSE 9750
# walhook asks its own admin server for /healthz: no curl in the image.
HEALTHCHECK --interval=15s --timeout=6s --start-period=30s --retries=3 \
    CMD ["walhook", "healthcheck"]
ENTRYPOINT ["walhook"]
CMD ["run"]
