#!/usr/bin/env bash
# Build the shipped Dockerfile without a Docker daemon or registry, then use the image as a user would:
# `rwml-lite doctor` and a two-step tiny `train` of the CPU demo inside it; the image is deleted afterwards.
#
# buildah (Debian's package) with vfs storage and chroot isolation builds on a Debian bookworm base that
# debootstrap makes here with python3.11 (the Dockerfile's CUDA base is its default; BASE replaces it), so the
# check needs no GPU and no registry. Needs root, network (Debian's mirror, PyPI) and ~30 GB free under WORK
# (24 GB at its largest on 2026-12-07: vfs copies every layer whole); 33 min on 2 cores. Not part of .ci/run.
#
#   sudo docker/check_image.sh            # WORK=/var/tmp/rwml-lite-image CA=/etc/ssl/certs/ca-certificates.crt
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-/var/tmp/rwml-lite-image}
CA=${CA:-/etc/ssl/certs/ca-certificates.crt}
STORE=(--storage-driver vfs --root "$WORK/storage" --runroot "$WORK/run")
started=$(date +%s)

command -v buildah >/dev/null && command -v debootstrap >/dev/null || {
  apt-get update -q && apt-get install -y -q buildah debootstrap
}
mkdir -p "$WORK"
cleanup() {
  buildah "${STORE[@]}" rm --all >/dev/null 2>&1 || true
  buildah "${STORE[@]}" rmi --all --force >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "== the base: Debian bookworm with python3.11 (debootstrap)"
# python3.11 alone: the Dockerfile installs its venv and dev packages (debootstrap leaves python3.11-venv's
# dependency python3.11-distutils out and fails)
debootstrap --variant=minbase --include=python3.11,ca-certificates,passwd \
  bookworm "$WORK/rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" \
  || { tail -20 "$WORK/rootfs/debootstrap/debootstrap.log"; exit 1; }
base=$(buildah "${STORE[@]}" from scratch)
cp -a "$WORK/rootfs/." "$(buildah "${STORE[@]}" mount "$base")/"
buildah "${STORE[@]}" umount "$base" >/dev/null
buildah "${STORE[@]}" commit --quiet "$base" localhost/rwml-lite-base >/dev/null
rm -rf "$WORK/rootfs"

echo "== the image (the Dockerfile with BASE=localhost/rwml-lite-base)"
# pip reaches the registry only with the host's CA bundle: mounted outside /etc/ssl/certs (over
# ca-certificates.crt it would break the ca-certificates package's setup), the PIP_CERT build argument pointing at it
buildah "${STORE[@]}" bud --isolation chroot --layers=false --build-arg BASE=localhost/rwml-lite-base \
  --volume "$CA:/etc/rwml-lite-ca.crt:ro" --build-arg PIP_CERT=/etc/rwml-lite-ca.crt -t localhost/rwml-lite .
built=$(date +%s)

echo "== inside the image: doctor, then a two-step tiny train of the CPU demo"
box=$(buildah "${STORE[@]}" from localhost/rwml-lite)
inside=(buildah "${STORE[@]}" run --isolation chroot --volume "$CA:/etc/rwml-lite-ca.crt:ro" "$box" --)
"${inside[@]}" rwml-lite doctor
"${inside[@]}" rwml-lite train recipes/demo_cpu.yaml run.dir=/tmp/tiny collect.num_tasks=4 grpo.max_steps=2 \
  policy.max_steps=2 eval.num_tasks=2
echo "== image built in $(( (built - started) / 60 )) min, checked in $(( ($(date +%s) - built) / 60 )) min; \
disk under $WORK at its largest: $(du -sh "$WORK" | cut -f1)"
