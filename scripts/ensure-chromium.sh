#!/usr/bin/env bash
# The HTML report test (tests/test_report_html.py) opens the report in headless Chromium, with
# Debian's chromium and chromedriver. `make test` runs this first: it installs them when they
# are missing (apt-get, as root or through passwordless sudo) and fails if that is not possible.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
sudo=""
if [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1; then sudo="sudo -n"; fi
echo "make test: installing chromium and chromium-driver" >&2
if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -q \
       && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; }; then
  echo "make test: could not install chromium and chromium-driver with apt-get" >&2
  exit 1
fi
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  echo "make test: chromium or chromedriver still missing after apt-get install" >&2
  exit 1
fi
