# walhook in a container: built in the Rust image, run from Debian slim.
#   docker build -t walhook .
#   docker run --rm -e DATABASE_URL=postgres://... walhook migrate
#   docker run --rm -e DATABASE_URL=postgres://... walhook run

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin walhook

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /app walhook
WORKDIR /app
COPY --from=build /src/target/release/walhook /usr/local/bin/walhook
COPY config/ /app/config/
USER walhook
# The admin server (/healthz, /metrics); set WALHOOK_ADMIN_LISTEN=0.0.0.0:9750
# to reach it from outside the container.
EXPOSE 9750
ENTRYPOINT ["walhook"]
CMD ["run"]
