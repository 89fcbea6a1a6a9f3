#!/usr/bin/env bash
# Installs the real peers the tests and the benchmark run against, from Debian:
# nats-server (the reference NATS server), libnats-dev (nats.c, a second-language
# client and the benchmark's load generator), gcc to build them, mosquitto (MQTT peer),
# python3-paho-mqtt (Paho, the MQTT suite's Python client: test/paho_client.py), strace
# (test/power-cut.test.ts counts the broker's syncs before its replies).
# Needs root (or sudo); does nothing when everything is already there.
set -euo pipefail
need=()
command -v nats-server >/dev/null || need+=(nats-server)
[ -f /usr/include/nats/nats.h ] || need+=(libnats-dev)
command -v gcc >/dev/null || need+=(gcc)
command -v mosquitto >/dev/null || need+=(mosquitto)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
[ -f /usr/lib/python3/dist-packages/paho/mqtt/client.py ] || need+=(python3-paho-mqtt)
command -v strace >/dev/null || need+=(strace)
[ ${#need[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${need[@]}"
