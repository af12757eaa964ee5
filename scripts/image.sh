#!/usr/bin/env bash
# Builds the finpay runtime image on this machine without a container registry, then prints its size.
#
#   bash scripts/image.sh            # -> finpay:local (override with FINPAY_IMAGE=name:tag)
#
# What it does, in order:
#   1. installs docker.io and debootstrap (Debian's packages) when they are missing, and starts
#      dockerd when no daemon answers;
#   2. makes the base root filesystem with `debootstrap --variant=minbase bookworm` from Debian's
#      packages, trims it (docs, man pages, locales, apt lists), caches it as a tarball and
#      `docker import`s it as a local tag;
#   3. builds the release binary on the host (`cargo build --release --locked -p finpay`, into
#      $CARGO_TARGET_DIR or target/) and strips a copy of it;
#   4. builds deploy/Dockerfile's `runtime` stage FROM that tag (--build-arg RUNTIME_IMAGE=...),
#      with the stripped binary as the `prebuilt` binary stage (--build-arg BINARY_STAGE=prebuilt),
#      so the image is what a user's `docker build -f deploy/Dockerfile .` makes, except for where
#      the base and the binary come from.
#
# Needs root for apt-get, debootstrap and dockerd (it is root on this machine). Re-running reuses
# the cached rootfs and the cargo build.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

IMAGE=${FINPAY_IMAGE:-finpay:local}
SUITE=bookworm
# Bump when the rootfs recipe below changes, so a stale cache is not reused.
ROOTFS_RECIPE=v2
CACHE_DIR=${FINPAY_ROOTFS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/finpay}
ROOTFS_TAR="$CACHE_DIR/rootfs-$SUITE-minbase-$ROOTFS_RECIPE.tar"
BASE_TAG="finpay-base:$SUITE-minbase-$ROOTFS_RECIPE"
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

say() { printf 'image.sh: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# 1. Tools and the daemon.
install_missing() {
  local missing=()
  command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
  command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
  if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      "${missing[@]}" >/dev/null
  fi
}

# A docker CLI that builds with BuildKit (the Dockerfile uses cache mounts and skips unused
# stages): the buildx plugin when there is one, else Debian's 20.10 CLI, whose BuildKit is built in.
pick_docker() {
  if docker buildx version >/dev/null 2>&1; then
    DOCKER=docker
  elif [ -x /usr/bin/docker ]; then
    DOCKER=/usr/bin/docker
  else
    DOCKER=docker
  fi
  export DOCKER_BUILDKIT=1
}

start_daemon() {
  if $DOCKER info >/dev/null 2>&1; then
    return
  fi
  say "starting dockerd (log: /var/log/finpay-dockerd.log)"
  as_root sh -c 'nohup dockerd >/var/log/finpay-dockerd.log 2>&1 &'
  for _ in $(seq 1 60); do
    if $DOCKER info >/dev/null 2>&1; then
      return
    fi
    sleep 1
  done
  say "dockerd did not answer within 60 s; its log ends:"
  tail -n 20 /var/log/finpay-dockerd.log >&2 || true
  exit 1
}

# 3. The binary.
build_binary() {
  say "cargo build --release --locked -p finpay (target dir $TARGET_DIR)"
  CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked -p finpay
  BINCTX=$(mktemp -d)
  trap 'rm -rf "$BINCTX"' EXIT
  # The release profile keeps line tables for backtraces (debug = 1); the image ships without.
  strip --strip-all -o "$BINCTX/finpay" "$TARGET_DIR/release/finpay"
  say "binary: $(du -m "$TARGET_DIR/release/finpay" | cut -f1) MB, stripped $(du -m "$BINCTX/finpay" | cut -f1) MB"
}

# 2. The base rootfs.
make_rootfs() {
  if [ -s "$ROOTFS_TAR" ]; then
    say "reusing $ROOTFS_TAR"
    return
  fi
  mkdir -p "$CACHE_DIR"
  local dir
  dir=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
  say "debootstrap --variant=minbase $SUITE (a few minutes the first time)"
  as_root debootstrap --variant=minbase "$SUITE" "$dir" \
    http://deb.debian.org/debian >"$CACHE_DIR/debootstrap.log" 2>&1 || {
      say "debootstrap failed; see $CACHE_DIR/debootstrap.log"
      as_root rm -rf "$dir"
      exit 1
    }
  # What debian:bookworm-slim leaves out, and what a runtime image never reads.
  as_root rm -rf "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
    "$dir"/usr/share/locale/* "$dir"/usr/share/lintian "$dir"/var/cache/apt/* \
    "$dir"/var/lib/apt/lists/* "$dir"/var/log/* "$dir"/tmp/* "$dir"/var/cache/debconf/*-old
  as_root tar --numeric-owner -C "$dir" -cf "$ROOTFS_TAR.partial" .
  mv "$ROOTFS_TAR.partial" "$ROOTFS_TAR"
  as_root rm -rf "$dir"
}

import_base() {
  if $DOCKER image inspect "$BASE_TAG" >/dev/null 2>&1; then
    return
  fi
  say "docker import $ROOTFS_TAR as $BASE_TAG"
  $DOCKER import --change 'CMD ["/bin/bash"]' "$ROOTFS_TAR" "$BASE_TAG" >/dev/null
}

# 4. The image.
build_image() {
  local version revision created
  version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
  revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
  created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  say "docker build --target runtime FROM $BASE_TAG -> $IMAGE"
  $DOCKER build -f deploy/Dockerfile --target runtime \
    --build-arg RUNTIME_IMAGE="$BASE_TAG" \
    --build-arg BINARY_STAGE=prebuilt \
    --build-arg VERSION="$version" \
    --build-arg REVISION="$revision" \
    --build-arg CREATED="$created" \
    --build-arg SOURCE="$(git remote get-url origin 2>/dev/null || echo unknown)" \
    -t "$IMAGE" "$BINCTX"
}

install_missing
pick_docker
start_daemon
make_rootfs
import_base
build_binary
build_image
size=$($DOCKER image inspect -f '{{.Size}}' "$IMAGE")
echo "image $IMAGE: $((size / 1000000)) MB ($size bytes)"
