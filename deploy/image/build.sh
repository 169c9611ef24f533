#!/bin/sh
# `make image`: build keyless's image from the Containerfile where no image registry can be
# reached (a base made from Debian's packages by mmdebstrap), then run it read-only and wait
# for /readyz. Needs root (rootful podman) and Debian's podman, runc and mmdebstrap, which it
# installs if missing. Users with a registry build with `podman build -t keyless:TAG .`.
set -eu
TAG=${TAG:-localhost/keyless:dev}
BASE=localhost/keyless-base:bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
PORT=${PORT:-18443}
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
CA=/etc/ssl/certs/ca-certificates.crt
export CONTAINERS_CONF="$HERE/containers.conf"

step() { printf '==> %s\n' "$*"; }

if ! command -v podman >/dev/null || ! command -v runc >/dev/null || ! command -v mmdebstrap >/dev/null; then
  step "installing podman, runc and mmdebstrap (Debian packages)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    podman runc mmdebstrap uidmap >/dev/null
fi

if ! podman image exists "$BASE"; then
  step "making the base image $BASE from $MIRROR (bookworm, python3; about a minute)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' bookworm "$work/base.tar" "$MIRROR"
  podman import --quiet "$work/base.tar" "$BASE" >/dev/null
fi

step "building $TAG from $ROOT/Containerfile"
# The host's CA bundle, for pip behind a TLS-intercepting proxy; harmless elsewhere.
mount=""
[ -r "$CA" ] && mount="--volume=$CA:$CA:ro"
# shellcheck disable=SC2086
podman build --quiet --format docker --pull=never --build-arg "BASE=$BASE" $mount -t "$TAG" \
  -f "$ROOT/Containerfile" "$ROOT" >/dev/null
podman image prune --force >/dev/null

step "running $TAG read-only, non-root, no capabilities; waiting for /readyz on 127.0.0.1:$PORT"
name=keyless-image-check-$$
# --no-healthcheck: podman schedules HEALTHCHECK through systemd, which a sandbox lacks.
podman run --detach --rm --name "$name" --read-only --cap-drop=ALL --no-healthcheck \
  --security-opt=no-new-privileges --publish "127.0.0.1:$PORT:8443" \
  "$TAG" --listen 0.0.0.0:8443 --dev >/dev/null
ready=""
i=0
while [ $i -lt 150 ]; do
  if ready=$(python3 -c "import ssl,urllib.request as u; print(u.urlopen('https://127.0.0.1:$PORT/readyz', timeout=2, context=ssl._create_unverified_context()).read().decode())" 2>/dev/null); then
    break
  fi
  i=$((i + 1))
  sleep 0.2
done
user=$(podman exec "$name" id -u 2>/dev/null || echo "?")
podman stop --time 10 "$name" >/dev/null 2>&1 || true
if [ -z "$ready" ]; then
  echo "keyless: error: the image did not answer /readyz within 30 s" >&2
  exit 1
fi
step "ready: $ready (uid $user)"
podman image ls --format '{{.Repository}}:{{.Tag}} {{.Size}}' "$TAG"
