#!/usr/bin/env bash
# Build the Android APK with buildozer (needs the Android SDK/NDK, which buildozer
# downloads on first use; see docs/DEMO.md: this cannot run on the project's CI machines).
#
# python-for-android installs the app's requirements from PyPI, but the SDK lives in this
# repository, so it is copied next to main.py first (and removed again afterwards).
set -euo pipefail
cd "$(dirname "$0")"
rm -rf latchkey_client
cp -r ../client_sdk/latchkey_client ./latchkey_client
trap 'rm -rf latchkey_client' EXIT
buildozer android "${1:-debug}"
