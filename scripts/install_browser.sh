#!/usr/bin/env bash
# Install the browser the console's end-to-end tests drive: Debian's chromium and chromium-driver
# (/usr/bin/chromium, /usr/bin/chromedriver). Idempotent: does nothing when both are present.
# Never fails the caller: when it cannot install (not root, no apt, no package index), it says why
# and exits 0, and the browser tests skip with that reason (tests/console/browser.py).
set -uo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if have chromium && have chromedriver; then
    exit 0
fi
if ! have apt-get; then
    echo "install_browser: no apt-get here; install chromium and chromedriver yourself" \
         "(the console's browser tests skip without them)" >&2
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: not root; run 'sudo apt-get install chromium chromium-driver'" \
         "(the console's browser tests skip without them)" >&2
    exit 0
fi
echo "install_browser: installing Debian's chromium and chromium-driver (once)" >&2
export DEBIAN_FRONTEND=noninteractive
LOG=$(mktemp)
trap 'rm -f "$LOG"' EXIT
install() { apt-get install -y -q --no-install-recommends chromium chromium-driver >>"$LOG" 2>&1; }
# A fresh machine may have no package lists yet: update once, then try again.
if ! install; then
    apt-get update -q >>"$LOG" 2>&1 && install
fi
if have chromium && have chromedriver; then
    echo "install_browser: $(chromium --version 2>/dev/null | head -n 1)" >&2
else
    tail -n 5 "$LOG" >&2
    echo "install_browser: apt-get could not install chromium and chromium-driver" \
         "(the console's browser tests skip without them)" >&2
fi
exit 0
