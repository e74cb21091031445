# Builds both binaries (publisher, operator) in one stage and ships each in a minimal image.
#   docker build --target publisher -t binlogstream/publisher:0.1.0 .
#   docker build --target operator  -t binlogstream/operator:0.1.0 .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p publisher -p operator \
 && mkdir -p /out && cp target/release/publisher target/release/operator /out/

FROM gcr.io/distroless/cc-debian12:nonroot AS publisher
COPY --from=build /out/publisher /usr/local/bin/publisher
# glibc otherwise raises its trim threshold after the first freed large buffer (the SDK's
# request bodies), and memory freed after a spike (a backlog, a large transaction) stays in the
# process. With 256 KiB aggregates a snapshot into kinesalite peaks at ~31 MiB RSS with the
# defaults and 26-28 MiB with this, for 5-28 % fewer rows/s into the emulator (snapshot_bench,
# README); kept because a pod's memory should fall back after a spike.
ENV MALLOC_TRIM_THRESHOLD_=131072
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/publisher"]
CMD ["run"]

FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /out/operator /usr/local/bin/operator
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/operator"]
