#!/bin/sh
# Demo fleet setup, run once before the hub starts: the fleet's NATS keys and the hub's
# operator-mode configuration (publisher nats init), and each worker's hub credentials,
# limited to its own subjects and groups. Everything lands in the shared /nats volume; in
# production the keys stay on the operator's machine and each device gets only its creds.
set -eu
# Done when the last credentials exist; a run cut short before them starts over.
[ -f /nats/worker-3.creds ] && exit 0
rm -rf /nats/*
publisher nats init --fleet demo --nats-dir /nats
# The hub's JetStream store (hub.conf: store_dir /nats/jetstream) is a volume of its own,
# mounted here; the rest of /nats is read-only to the hub.
mkdir -p /nats/jetstream
publisher nats creds --fleet demo --nats-dir /nats --device worker-1 --groups edge -o /nats/worker-1.creds
publisher nats creds --fleet demo --nats-dir /nats --device worker-2 --groups edge -o /nats/worker-2.creds
publisher nats creds --fleet demo --nats-dir /nats --device worker-3 --groups core -o /nats/worker-3.creds
