#!/usr/bin/env bash
# Installs the Debian packages the local cluster needs and builds Kubernetes 1.20.2 (server
# binaries) plus the static pause binary from Debian's kubernetes source package, cached in
# $BINLOGSTREAM_CACHE/k8s-1.20.2/bin. A second run finds the cache and builds nothing.
# Called by up.sh; can be run alone. Recipe: shared/notes/local-cluster.md section 1.
set -euo pipefail
. "$(dirname "$0")/common.sh"

RUNTIME_PKGS="etcd-server containerd runc containernetworking-plugins iptables iproute2 openssl python3 util-linux"
BUILD_PKGS="golang-1.19-go rsync make gcc libc6-dev golang-github-modern-go-reflect2-dev"

missing_pkgs() {
  local p out=""
  for p in "$@"; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || out="$out $p"
  done
  echo "$out"
}

apt_install() {
  local miss
  miss=$(missing_pkgs "$@")
  [ -z "$miss" ] && return 0
  log "apt-get install$miss"
  mkdir -p "$CACHE"
  (
    flock 9
    export DEBIAN_FRONTEND=noninteractive
    [ -n "$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages' -newer /etc/apt/sources.list.d 2>/dev/null | head -n 1)" ] || apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $miss >/dev/null
  ) 9>"$CACHE/apt.lock"
}

# apt's deb-src entry for bookworm main: the `Types: deb` stanza copied with `Types: deb-src`
# (same URIs and Signed-By, or apt refuses every list).
ensure_deb_src() {
  if grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/; then return 0; fi
  local src=/etc/apt/sources.list.d/debian.sources dst=/etc/apt/sources.list.d/bls-e2e-deb-src.sources
  [ -f "$src" ] || die "no $src to copy a deb-src stanza from; add a deb-src line for bookworm main by hand"
  log "adding deb-src entry for bookworm main: $dst"
  awk 'BEGIN{RS="";ORS="\n\n"} /(^|\n)Types: deb(\n|$)/ && /Suites: bookworm( |\n|$)/ {sub(/Types: deb/,"Types: deb-src"); print; exit}' "$src" >"$dst.tmp"
  grep -q 'Types: deb-src' "$dst.tmp" || { rm -f "$dst.tmp"; die "no bookworm 'Types: deb' stanza in $src"; }
  mv "$dst.tmp" "$dst"
  ( flock 9; DEBIAN_FRONTEND=noninteractive apt-get update -qq ) 9>"$CACHE/apt.lock"
}

have_binaries() {
  local c
  for c in $K8S_CMDS pause; do [ -x "$K8S_BIN/$c" ] || return 1; done
}

apt_install $RUNTIME_PKGS

if have_binaries; then
  log "Kubernetes $K8S_VERSION binaries cached in $K8S_BIN (no build)"
  exit 0
fi

T0=$SECONDS
apt_install $BUILD_PKGS
SRCDIR="$K8S_DIR/src"
TREE="$SRCDIR/kubernetes-$K8S_VERSION"
mkdir -p "$SRCDIR" "$K8S_BIN"
if [ ! -f "$TREE/.bls-prepared" ]; then
  ensure_deb_src
  tarball="$SRCDIR/kubernetes_${K8S_DEB_VERSION}.orig.tar.gz"
  if [ ! -f "$tarball" ]; then
    log "apt-get source --download-only kubernetes (Debian $K8S_DEB_VERSION: the full vendored tree)"
    (cd "$SRCDIR" && apt-get source -qq --download-only "kubernetes=${K8S_DEB_VERSION}-1" >/dev/null 2>&1) \
      || (cd "$SRCDIR" && apt-get source -qq --download-only kubernetes >/dev/null 2>&1) || true
    [ -f "$tarball" ] || die "apt-get source did not give $tarball (later +ds versions are de-vendored and useless here)"
  fi
  log "unpacking $(basename "$tarball")"
  rm -rf "$TREE.tmp"; mkdir -p "$TREE.tmp"
  tar -xzf "$tarball" -C "$TREE.tmp" --strip-components=1
  # Trap: the vendored modern-go/reflect2 v1.0.1 crashes kube-apiserver built with Go 1.19
  # (SIGSEGV in UnsafeMapType.UnsafeIterate on the first custom object). Use Debian's 1.0.2.
  V="$TREE.tmp/vendor/github.com/modern-go/reflect2"
  R=/usr/share/gocode/src/github.com/modern-go/reflect2
  rm -f "$V"/*.go "$V"/*.s
  cp "$R"/*.go "$V"/
  cp "$R"/*.s "$V"/ 2>/dev/null || true
  log "vendored reflect2 replaced with Debian's ($(dpkg-query -W -f='${Version}' golang-github-modern-go-reflect2-dev))"
  mkdir -p "$TREE.tmp/.go/src/k8s.io"
  ln -sfn ../../.. "$TREE.tmp/.go/src/k8s.io/kubernetes"
  touch "$TREE.tmp/.bls-prepared"
  rm -rf "$TREE"; mv "$TREE.tmp" "$TREE"
fi

cd "$TREE"
export GOPATH="$TREE/.go" GOCACHE="$K8S_DIR/gocache" PATH="/usr/lib/go-1.19/bin:$PATH" CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:-}" KUBE_VERBOSE=0 KUBE_GIT_VERSION="v$K8S_VERSION" KUBE_GIT_TREE_STATE=clean \
  KUBE_GIT_MAJOR=1 KUBE_GIT_MINOR=20
for c in $K8S_CMDS; do
  [ -x "$K8S_BIN/$c" ] && { log "$c cached"; continue; }
  t=$SECONDS
  log "building $c (go $(go env GOVERSION), make WHAT=cmd/$c)"
  ( while sleep 30; do log "  still building $c: $((SECONDS - t))s for $c, $((SECONDS - T0))s total"; done ) &
  ticker=$!
  rc=0
  make WHAT="cmd/$c" >"$K8S_DIR/build-$c.log" 2>&1 || rc=$?
  kill "$ticker" 2>/dev/null; wait "$ticker" 2>/dev/null || true
  [ "$rc" = 0 ] || { tail -n 30 "$K8S_DIR/build-$c.log" >&2; die "make WHAT=cmd/$c failed (log: $K8S_DIR/build-$c.log)"; }
  install -m 0755 "_output/bin/$c" "$K8S_BIN/$c.tmp" && mv "$K8S_BIN/$c.tmp" "$K8S_BIN/$c"
  log "built $c in $((SECONDS - t))s"
done
if [ ! -x "$K8S_BIN/pause" ]; then
  log "building pause (gcc -static build/pause/linux/pause.c)"
  gcc -static -Os -DVERSION=v3.6-bls -o "$K8S_BIN/pause.tmp" build/pause/linux/pause.c
  mv "$K8S_BIN/pause.tmp" "$K8S_BIN/pause"
fi
"$K8S_BIN/kube-apiserver" --version >&2
# The binaries are the cache; the source tree and Go's build cache (about 3 GB) are not needed again.
cd /; rm -rf "$SRCDIR" "$K8S_DIR/gocache"
log "Kubernetes $K8S_VERSION binaries built in $((SECONDS - T0))s -> $K8S_BIN"
