#!/usr/bin/env bash
# marque's main job on the embedded default, with no server and no network:
# generate a key, sign the sample image kept as an OCI layout in
# testdata/sample-image, verify it, and show tampered copies being rejected.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

if [ -n "${MARQUE_BIN:-}" ]; then
    M="$MARQUE_BIN"   # the test suite runs this script with its own build
else
    say "Building marque (release)"
    cargo build --release --quiet -p marque-cli
    M="$REPO/target/release/marque"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cp -r testdata/sample-image "$WORK/sample-image"
IMAGE="oci:$WORK/sample-image"
# A demo password; real use reads MARQUE_PASSWORD, a --password-file or a
# terminal prompt.
export MARQUE_PASSWORD="${MARQUE_PASSWORD:-demo-password}"

say "1. Generate a key pair (ECDSA P-256, cosign's encrypted key format)"
run "$M" key generate --output-prefix "$WORK/release"
head -c 120 "$WORK/release.key"; echo " …"
cat "$WORK/release.pub"

say "2. Sign the sample image (a copy of testdata/sample-image)"
run "$M" sign --key "$WORK/release.key" -a build=demo "$IMAGE"

say "3. Verify it"
run "$M" verify --key "$WORK/release.pub" --output json "$IMAGE" | tee "$WORK/verify.json"
SIGNED="$(sed -n 's/^ *"digest": "\(sha256:[0-9a-f]*\)".*/\1/p' "$WORK/verify.json" | head -n1)"

# Copies of the signed layout for the attacks below.
blob() { printf '%s/blobs/sha256/%s' "$1" "${2#sha256:}"; }

say "4. Tamper: change the image and replay the old signature onto it"
T1="$WORK/attack1/sample-image"; mkdir -p "$WORK/attack1"; cp -r "$WORK/sample-image" "$T1"
OLD="$SIGNED"
# A different image: the same manifest with an extra annotation.
sed 's/}$/,"annotations":{"evil":"true"}}/' "$(blob "$T1" "$OLD")" > "$WORK/new-manifest.json"
NEW="sha256:$(sha256sum "$WORK/new-manifest.json" | cut -d' ' -f1)"
SIZE="$(wc -c < "$WORK/new-manifest.json")"
cp "$WORK/new-manifest.json" "$(blob "$T1" "$NEW")"
# Re-point "latest" at it, and copy the signature tag to the new digest.
OLDSIZE="$(wc -c < "$(blob "$T1" "$OLD")")"
sed -i "s/\"digest\":\"$OLD\"/\"digest\":\"$NEW\"/; s/\"size\":$OLDSIZE\([,}]\)/\"size\":$SIZE\1/; s/sha256-${OLD#sha256:}\.sig/sha256-${NEW#sha256:}.sig/" "$T1/index.json"
echo "latest was $OLD, now $NEW"
set +e
run "$M" verify --key "$WORK/release.pub" "oci:$T1"; code=$?
set -e
echo "exit code $code (1 = verification failed)"
[ "$code" = 1 ] || { echo "the tampered image was not rejected" >&2; exit 1; }

say "5. Tamper: edit the signed payload in place"
T2="$WORK/attack2/sample-image"; mkdir -p "$WORK/attack2"; cp -r "$WORK/sample-image" "$T2"
for f in "$T2"/blobs/sha256/*; do
    grep -q 'cosign container image signature' "$f" || continue
    before="$(base64 -w0 "$f")"
    sed -i 's/"build":"demo"/"build":"evil"/' "$f"   # same length
    after="$(base64 -w0 "$f")"
    # The signature manifest embeds a copy of the payload (OCI 1.1 "data"),
    # which is what marque reads: forge that copy too, and re-point the
    # signature tag at the forged manifest.
    for m in "$T2"/blobs/sha256/*; do
        grep -qF "$before" "$m" || continue
        sed "s|$before|$after|" "$m" > "$WORK/forged.json"
        NEWM="$(sha256sum "$WORK/forged.json" | cut -d' ' -f1)"
        cp "$WORK/forged.json" "$T2/blobs/sha256/$NEWM"
        sed -i "s/$(basename "$m")/$NEWM/" "$T2/index.json"
    done
done
set +e
run "$M" verify --key "$WORK/release.pub" "oci:$T2"; code=$?
set -e
echo "exit code $code (1 = verification failed)"
[ "$code" = 1 ] || { echo "the tampered payload was not rejected" >&2; exit 1; }

say "Done: the signed image verified and both tampered copies were rejected."
