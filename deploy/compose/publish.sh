#!/bin/sh
# Demo publisher: makes an operator key, a starter config whose admin is that key, waits
# for the three workers to show up, then pushes to the edge group and to the whole fleet.
set -eu
ssh-keygen -q -t ed25519 -N '' -f /tmp/operator
publisher init --pub /tmp/operator.pub -o /tmp/config.toml
for i in $(seq 1 30); do
  n=$(publisher ls --server nats://hub:4222 --fleet demo --json 2>/dev/null | grep -c '"device"' || true)
  [ "$n" -ge 3 ] && break
  sleep 1
done
# The demo network is trusted: enrol every device on first use (in production, enrol each
# --device with the --fingerprint its console shows: worker identity).
publisher enroll --all --tofu --server nats://hub:4222 --fleet demo
publisher ls --server nats://hub:4222 --fleet demo
publisher push /tmp/config.toml --group edge --server nats://hub:4222 --fleet demo --key /tmp/operator
publisher push /tmp/config.toml --all --canary 1 --batch 2 --server nats://hub:4222 --fleet demo --key /tmp/operator
publisher ls --server nats://hub:4222 --fleet demo
# The hub stores each device's desired state (JetStream): this shows it against what
# each device applied, without contacting them.
publisher status --all --server nats://hub:4222 --fleet demo
