# hubcast: multi-stage build, small runtime image.
#   docker build -t hubcast .
#   docker run -p 8080:8080 -v hubcast-data:/data hubcast \
#       serve --listen 0.0.0.0:8080 --data-dir /data --public-url https://hub.example.org/
# Configuration: mount a file at /etc/hubcast/hubcast.toml and add `--config /etc/hubcast/hubcast.toml`,
# or set HUBCAST_<SECTION>__<KEY> environment variables. Set HUBCAST_ADMIN__TOKEN to use the status
# page and admin API: requests reach the container from beyond its loopback.
# Backups (with the hub stopped): docker run --rm -v hubcast-data:/data hubcast export --data-dir /data

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY hub-config hub-config
COPY loadtest loadtest
RUN cargo build --release --locked -p hubcast

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data hubcast \
    && mkdir -p /data /etc/hubcast && chown hubcast /data
COPY --from=build /src/target/release/hubcast /usr/local/bin/hubcast
COPY hub-config/hubcast.toml /etc/hubcast/hubcast.toml
USER hubcast
VOLUME /data
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["hubcast"]
CMD ["serve", "--listen", "0.0.0.0:8080", "--data-dir", "/data"]
