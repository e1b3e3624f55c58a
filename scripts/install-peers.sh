#!/usr/bin/env bash
# Installs the real peers the end-to-end tests talk to:
#   - docker-registry (Debian bookworm package, installed system-wide), and
#   - cosign 2.5.x and skopeo 1.18.x from Debian trixie, unpacked into
#     $REPO/.cache/peers/ with a private apt state (nothing trixie is
#     installed system-wide and the system's apt config is left alone).
# Wrappers end up in $REPO/.cache/peers/bin/{cosign,skopeo}.
# Idempotent: does nothing that is already done.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PEERS="$REPO/.cache/peers"
ROOT="$PEERS/root"          # dpkg-deb -x target
BIN="$PEERS/bin"            # wrappers
APTDIR="$PEERS/apt"         # private apt state
DEBS="$PEERS/debs"

log() { printf '[install-peers] %s\n' "$*" >&2; }

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- registry
apt_updated=0
system_apt_update() {
    if [ "$apt_updated" = 0 ]; then
        log "apt-get update (system)"
        apt-get update -qq
        apt_updated=1
    fi
}

if [ ! -x /usr/bin/docker-registry ]; then
    log "installing docker-registry"
    if ! apt-get install -y -qq --no-install-recommends docker-registry >/dev/null 2>&1; then
        system_apt_update
        apt-get install -y -qq --no-install-recommends docker-registry >/dev/null
    fi
fi
# The package enables a service on :5000 with htpasswd auth on systemd hosts;
# the tests never use it (each test starts its own registry on a free port).

# htpasswd (apache2-utils) makes the bcrypt entries of the Basic-auth tests.
if ! command -v htpasswd >/dev/null 2>&1; then
    log "installing apache2-utils (htpasswd)"
    if ! apt-get install -y -qq --no-install-recommends apache2-utils >/dev/null 2>&1; then
        system_apt_update
        apt-get install -y -qq --no-install-recommends apache2-utils >/dev/null
    fi
fi

# openssl (CLI) cross-checks the PKCS#8 keys marque writes (keys/tests).
if ! command -v openssl >/dev/null 2>&1; then
    log "installing openssl"
    if ! apt-get install -y -qq --no-install-recommends openssl >/dev/null 2>&1; then
        system_apt_update
        apt-get install -y -qq --no-install-recommends openssl >/dev/null
    fi
fi

# ---------------------------------------------------------------- trixie peers
peers_ok() {
    [ -x "$BIN/cosign" ] && [ -x "$BIN/skopeo" ] \
        && "$BIN/cosign" version >/dev/null 2>&1 \
        && "$BIN/skopeo" --version >/dev/null 2>&1
}

if peers_ok; then
    log "cosign and skopeo already in $BIN"
    exit 0
fi

# The machine's own Debian mirror: the first URI in its apt sources that is
# not the security archive.
mirror_uri() {
    local uri=""
    if [ -f /etc/apt/sources.list.d/debian.sources ]; then
        uri="$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list.d/debian.sources)"
    fi
    if [ -z "$uri" ]; then
        uri="$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null \
            | awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i ~ /debian/ && $i !~ /security/) { print $i; exit } }')"
    fi
    if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
        uri="$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\// && $i !~ /security/) { print $i; exit } }' \
            /etc/apt/sources.list)"
    fi
    [ -n "$uri" ] || { log "cannot find the Debian mirror in /etc/apt"; return 1; }
    printf '%s\n' "$uri"
}

MIRROR="$(mirror_uri)"
mkdir -p "$APTDIR/lists/partial" "$APTDIR/cache/archives/partial" \
    "$APTDIR/sources.list.d" "$APTDIR/preferences.d" "$DEBS" "$BIN"

private_apt() {
    apt-get \
        -o Dir::Etc::sourcelist="$APTDIR/sources.list" \
        -o Dir::Etc::sourceparts="$APTDIR/sources.list.d" \
        -o Dir::State::Lists="$APTDIR/lists" \
        -o Dir::Cache="$APTDIR/cache" \
        -o Dir::Etc::preferences="$APTDIR/preferences" \
        -o Dir::Etc::preferencesparts="$APTDIR/preferences.d" \
        -o APT::Sandbox::User=root \
        "$@"
}

private_update() {
    local keyring="$1"
    printf 'deb [signed-by=%s] %s trixie main\n' "$keyring" "$MIRROR" > "$APTDIR/sources.list"
    : > "$APTDIR/preferences"
    private_apt update -qq
}

SYS_KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
if ! private_update "$SYS_KEYRING" 2>"$APTDIR/update.err" || grep -q 'NO_PUBKEY\|not signed\|EXPKEYSIG' "$APTDIR/update.err"; then
    # An older bookworm keyring lacks trixie's keys. Fetch the newest
    # debian-archive-keyring through the system's own (bookworm, signed)
    # sources and trust that keyring for the private trixie list only.
    cat "$APTDIR/update.err" >&2 || true
    log "system keyring lacks trixie's key; fetching debian-archive-keyring from bookworm"
    system_apt_update
    (cd "$DEBS" && apt-get -o APT::Sandbox::User=root download -qq debian-archive-keyring)
    rm -rf "$PEERS/keyring"
    dpkg-deb -x "$(ls -t "$DEBS"/debian-archive-keyring_*.deb | head -n1)" "$PEERS/keyring"
    private_update "$PEERS/keyring/usr/share/keyrings/debian-archive-keyring.gpg"
fi

PKGS=(cosign skopeo libc6 libgpgme11t64 libassuan9 libgpg-error0 libsqlite3-0)
log "downloading from trixie: ${PKGS[*]}"
rm -f "$DEBS"/*.deb
(cd "$DEBS" && private_apt download -qq "${PKGS[@]}")

rm -rf "$ROOT"
mkdir -p "$ROOT"
: > "$PEERS/VERSIONS.tmp"
for deb in "$DEBS"/*.deb; do
    case "$(basename "$deb")" in debian-archive-keyring_*) continue ;; esac
    dpkg-deb -x "$deb" "$ROOT"
    dpkg-deb -W --showformat='${Package} ${Version}\n' "$deb" >> "$PEERS/VERSIONS.tmp"
done
mv "$PEERS/VERSIONS.tmp" "$PEERS/VERSIONS"   # "package version" per line (trixie)

LIBDIR="$ROOT/usr/lib/x86_64-linux-gnu"
LOADER="$LIBDIR/ld-linux-x86-64.so.2"

cat > "$BIN/cosign" <<WRAP
#!/bin/sh
# cosign from Debian trixie, unpacked by scripts/install-peers.sh
exec "$ROOT/usr/bin/cosign" "\$@"
WRAP

cat > "$BIN/skopeo" <<WRAP
#!/bin/sh
# skopeo from Debian trixie, run through trixie's own loader and libraries
# (unpacked by scripts/install-peers.sh). Pass --policy / --registries.d.
exec "$LOADER" --library-path "$LIBDIR" "$ROOT/usr/bin/skopeo" "\$@"
WRAP
chmod +x "$BIN/cosign" "$BIN/skopeo"

# Any library skopeo still lacks?
missing="$("$LOADER" --library-path "$LIBDIR" --list "$ROOT/usr/bin/skopeo" 2>&1 | grep 'not found' || true)"
if [ -n "$missing" ]; then
    log "skopeo is missing libraries:"; printf '%s\n' "$missing" >&2
    exit 1
fi

if ! peers_ok; then
    log "cosign or skopeo does not run:"
    "$BIN/cosign" version >&2 || true
    "$BIN/skopeo" --version >&2 || true
    exit 1
fi
log "installed from trixie: $(grep -E '^(cosign|skopeo) ' "$PEERS/VERSIONS" | paste -sd' ')"
