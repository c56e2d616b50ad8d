# Builds the worker, the publisher and the hub's nats-server (the release go.mod pins, the
# one the worker embeds) into one small image (used by docker-compose.yml).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -o /out/worker ./cmd/worker && \
    CGO_ENABLED=0 go build -trimpath -o /out/publisher ./cmd/publisher && \
    CGO_ENABLED=0 go build -trimpath -o /out/nats-server github.com/nats-io/nats-server/v2

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends openssh-client ca-certificates && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/worker /out/publisher /out/nats-server /usr/local/bin/
ENTRYPOINT ["/usr/local/bin/worker"]
CMD ["serve", "--help"]
