#!/usr/bin/env bash
# Builds the images without Docker and loads them into the cluster:
#   binlogstream/publisher:0.1.0   ENTRYPOINT /usr/local/bin/publisher, CMD run
#   binlogstream/operator:0.1.0    ENTRYPOINT /usr/local/bin/operator
#   registry.k8s.io/pause:3.6      the sandbox image, from the Kubernetes tree's pause.c
# Release binaries for the host's glibc target (no rustup target needed): each image holds the
# binary (debug info stripped), the libraries `ldd` lists, the dynamic loader, the CA bundle and
# an /etc/passwd with uid 65532 (nonroot). Archives: $BINLOGSTREAM_CACHE/images/*.oci.tar.
#   bash tests/cluster/images.sh              # build + import into the bls-e2e cluster (ctr, k8s.io)
#   BLS_E2E_NO_IMPORT=1 bash tests/cluster/images.sh   # build the archives only
# With BLS_E2E_USE_KUBECONFIG=1 (kind): `kind load image-archive` into ${KIND_CLUSTER_NAME:-kind}.
set -euo pipefail
. "$(dirname "$0")/common.sh"

VERSION=0.1.0
OUT="${BLS_E2E_IMAGES_DIR:-$CACHE/images}"
TARGET_DIR="$CACHE/target-images"
mkdir -p "$OUT"

# --- release binaries -------------------------------------------------------------------------------
# BLS_E2E_PREBUILT=1: import the archives already in $OUT (written by an earlier run with
# BLS_E2E_NO_IMPORT=1 BLS_E2E_IMAGES_DIR=...), build nothing.
PREBUILT=${BLS_E2E_PREBUILT:-0}
if [ "$PREBUILT" = 1 ]; then
  for a in publisher operator pause; do ls "$OUT/$a-"*.oci.tar >/dev/null 2>&1 || die "BLS_E2E_PREBUILT=1 but no $a archive in $OUT"; done
  log "BLS_E2E_PREBUILT=1: importing the archives in $OUT"
else
t=$SECONDS
# target-images is shared by every checkout of this repository (git worktrees), all with the
# same relative layout: cargo's freshness check compares this tree's source mtimes with
# whichever tree built last, finds them older, and keeps the other tree's binary (seen: an
# image without this worktree's code). Record which tree and state was built; when it
# differs, touch the workspace's sources so cargo rebuilds from this tree.
stamp="$REPO $(git -C "$REPO" rev-parse HEAD 2>/dev/null) $( { git -C "$REPO" diff HEAD; git -C "$REPO" status --porcelain; } 2>/dev/null | sha256sum | cut -c1-16)"
if [ "$(cat "$TARGET_DIR/.images-source" 2>/dev/null)" != "$stamp" ]; then
  log "$TARGET_DIR was last built from another tree or state: rebuilding the workspace crates from $REPO"
  find "$REPO/api" "$REPO/publisher" "$REPO/operator" -path '*/fuzz' -prune -o \( -name '*.rs' -o -name Cargo.toml \) -exec touch {} +
fi
mkdir -p "$TARGET_DIR"
rm -f "$TARGET_DIR/.images-source"
# One cargo invocation per binary, on purpose: built together, cargo unifies features, so the
# operator gets rustls with both `ring` (kube) and `aws-lc-rs` (the AWS SDK) and panics at start
# ("Could not automatically determine the process-level CryptoProvider"). Built alone it has ring
# only. (`cargo build --release -p publisher -p operator` reproduces the panic.)
for pkg in operator publisher; do
  log "cargo build --release -p $pkg (CARGO_TARGET_DIR=$TARGET_DIR)"
  (cd "$REPO" && CARGO_TARGET_DIR="$TARGET_DIR" cargo build --release --locked -p "$pkg")
  cp "$TARGET_DIR/release/$pkg" "$OUT/$pkg.bin"
done
echo "$stamp" >"$TARGET_DIR/.images-source"
log "release binaries built in $((SECONDS - t))s"

passwd_files() {  # rootfs
  mkdir -p "$1/etc" "$1/tmp"
  chmod 1777 "$1/tmp"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$1/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$1/etc/group"
  printf 'hosts: files dns\n' >"$1/etc/nsswitch.conf"
}

# rootfs for a glibc binary: the binary, every library ldd lists at the same path, the loader.
glibc_rootfs() {  # binary rootfs
  local bin="$1" root="$2" lib
  rm -rf "$root"; mkdir -p "$root/usr/local/bin"
  objcopy --strip-debug "$bin" "$root/usr/local/bin/$(basename "$bin" .bin)"
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  passwd_files "$root"
  if [ -f /etc/ssl/certs/ca-certificates.crt ]; then
    mkdir -p "$root/etc/ssl/certs"; cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  fi
}

build_image() {  # name binary entrypoint [cmd...]
  local name="$1" bin="$2" ep="$3"; shift 3
  local root="$OUT/rootfs-$name" cmd=()
  [ $# -gt 0 ] && cmd=(--cmd "$@")
  glibc_rootfs "$bin" "$root"
  log "$name rootfs: $(cd "$root" && find . -type f | sort | tr '\n' ' ')"
  # The image must run with nothing but its own files: try it in a chroot.
  chroot --userspec=65532:65532 "$root" "$ep" --help >/dev/null 2>&1 || die "$name does not start in its own rootfs (chroot $root $ep --help)"
  python3 "$HERE/oci.py" --rootfs "$root" --name "docker.io/binlogstream/$name:$VERSION" \
    --out "$OUT/$name-$VERSION.oci.tar" --entrypoint "$ep" "${cmd[@]}" --user 65532:65532 \
    --env MALLOC_TRIM_THRESHOLD_=131072  # as the Dockerfile: glibc returns freed buffers
  rm -rf "$root" "$bin"
}

t=$SECONDS
build_image publisher "$OUT/publisher.bin" /usr/local/bin/publisher run
build_image operator "$OUT/operator.bin" /usr/local/bin/operator
log "publisher and operator archives written in $((SECONDS - t))s"
fi

# --- pause (local cluster only; kind brings its own) ------------------------------------------------
ARCHIVES="$OUT/publisher-$VERSION.oci.tar $OUT/operator-$VERSION.oci.tar"
if ! use_existing && [ "$PREBUILT" != 1 ]; then
  [ -x "$K8S_BIN/pause" ] || bash "$HERE/build-k8s.sh"
  root="$OUT/rootfs-pause"; rm -rf "$root"; mkdir -p "$root"
  cp "$K8S_BIN/pause" "$root/pause"
  python3 "$HERE/oci.py" --rootfs "$root" --name registry.k8s.io/pause:3.6 --out "$OUT/pause-3.6.oci.tar" \
    --entrypoint /pause --user 65535:65535
  rm -rf "$root"
fi
use_existing || ARCHIVES="$OUT/pause-3.6.oci.tar $ARCHIVES"

# --- load into the cluster ---------------------------------------------------------------------------
if [ "${BLS_E2E_NO_IMPORT:-0}" = 1 ]; then log "archives in $OUT (not imported)"; exit 0; fi
if use_existing; then
  command -v kind >/dev/null || { log "kind not found: load these archives into your cluster: $ARCHIVES"; exit 0; }
  for a in $ARCHIVES; do kind load image-archive "$a" --name "${KIND_CLUSTER_NAME:-kind}"; done
  exit 0
fi
live_pid containerd >/dev/null || die "the bls-e2e cluster is not up (run tests/cluster/up.sh first)"
CTR=(ctr --address "$STATE/containerd/containerd.sock" -n k8s.io)
for a in $ARCHIVES; do
  "${CTR[@]}" images import "$a" >/dev/null
done
"${CTR[@]}" images ls | awk 'NR == 1 || /binlogstream|pause/ { print $1, $3, $4, $5 }' >&2
have=$("${CTR[@]}" images ls -q)
for ref in registry.k8s.io/pause:3.6 "docker.io/binlogstream/publisher:$VERSION" "docker.io/binlogstream/operator:$VERSION"; do
  grep -qx "$ref" <<<"$have" || die "$ref missing from containerd after import"
done
log "images imported into containerd (namespace k8s.io) in $SECONDS s total"
