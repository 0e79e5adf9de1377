#!/usr/bin/env bash
# Make sure the image that model_api/Dockerfile starts FROM exists on the local Docker engine.
#
# Docker Hub is out of reach on these machines, so when `python:3.11-slim` can be neither found nor pulled
# we build a stand-in from Debian bookworm packages (python3.11, like the real one): debootstrap minbase,
# `python`/`pip` on the PATH as in the official image, the host's CA bundle (the one that TLS to PyPI is
# signed with here), then `docker import`. It returns at once when the image is already there.
set -euo pipefail
image=${1:-python:3.11-slim}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
log() { printf '[base-image] %s\n' "$*" >&2; }

if docker image inspect "$image" >/dev/null 2>&1; then exit 0; fi
if timeout 20 docker pull -q "$image" >/dev/null 2>&1; then log "pulled $image"; exit 0; fi

command -v debootstrap >/dev/null || { log "debootstrap is missing (scripts/host-packages.sh installs it)"; exit 1; }
root=$(mktemp -d /var/tmp/shipbot-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
log "building $image from Debian packages (about a minute)"
debootstrap --variant=minbase --include=python3,python3-pip,ca-certificates bookworm "$root" "$mirror" \
  >/var/tmp/shipbot-debootstrap.log 2>&1 || { tail -20 /var/tmp/shipbot-debootstrap.log >&2; exit 1; }

# Look like the official image: `python` and `pip` on the PATH, pip allowed to install system-wide.
ln -sf /usr/bin/python3 "$root/usr/local/bin/python"
ln -sf /usr/bin/pip3 "$root/usr/local/bin/pip"
rm -f "$root"/usr/lib/python3*/EXTERNALLY-MANAGED
# Trust what this machine trusts: PyPI is reached through a TLS proxy whose CA only the host bundle has.
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/{doc,man,info,locale}/* \
  "$root"/var/log/* "$root"/usr/lib/python3/dist-packages/pip/_vendor/distlib/*.exe

tar -C "$root" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  --change 'LABEL org.opencontainers.image.description="local stand-in for python:3.11-slim, built from Debian bookworm"' \
  - "$image" >/dev/null
log "imported $image ($(docker image inspect -f '{{.Size}}' "$image" | numfmt --to=si)B)"
