#!/usr/bin/env bash
# Best-effort install of the system packages some tests need (run by `make setup`).
#   chromium + chromium-driver   the report and page tests open pages in a real headless browser
# Needs root (or password-less sudo) and apt-get (Debian/Ubuntu). Anywhere else it only says
# what is missing: the tests that need it are then skipped with a message naming the package.
set -uo pipefail

PACKAGES=(chromium chromium-driver)
missing=()
for pkg in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "note: no apt-get here; install ${missing[*]} yourself for the browser tests (skipped otherwise)"
    exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif sudo -n true 2>/dev/null; then
    SUDO=(sudo -n)
else
    echo "note: not root; run 'sudo apt-get install ${missing[*]}' for the browser tests (skipped otherwise)"
    exit 0
fi
echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"; then
    "${SUDO[@]}" apt-get update -q && "${SUDO[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}" \
        || echo "note: could not install ${missing[*]}; the browser tests will be skipped"
fi
exit 0
