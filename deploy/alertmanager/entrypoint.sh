#!/bin/sh
# Starts Alertmanager 0.25 with secrets taken from the environment, never from the repo.
#
# Alertmanager 0.25 cannot read the Telegram bot token from a file, so this renders
# alerts/alertmanager.yml into a tmpfs (/run/alertmanager), replacing the placeholders:
#   TELEGRAM_BOT_TOKEN  -> bot_token      TELEGRAM_CHAT_ID -> chat_id
#   TELEGRAM_API_URL    -> api_url        (optional: a fake Bot API for drills)
#   SLACK_WEBHOOK_URL   -> /run/alertmanager/slack_webhook_url (read via api_url_file)
#   DEADMAN_WEBHOOK_URL -> the dead-man receiver's url; unset: the Watchdog goes to `blackhole`
# Values are read by awk from ENVIRON, so they never appear on a command line.
set -eu

# The paths are overridable only so tests/test_static_assets.py can run this script.
src=${ALERTMANAGER_CONFIG_SRC:-/etc/alertmanager/alertmanager.yml}
out=${ALERTMANAGER_RUN_DIR:-/run/alertmanager}
umask 077
mkdir -p "$out"

printf '%s' "${SLACK_WEBHOOK_URL:-}" > "$out/slack_webhook_url"

awk -v out="$out" '
  function env(name, fallback) { return (name in ENVIRON && ENVIRON[name] != "") ? ENVIRON[name] : fallback }
  /^ *bot_token: / { sub(/bot_token: .*/, "bot_token: \"" env("TELEGRAM_BOT_TOKEN", "__TELEGRAM_BOT_TOKEN__") "\"") }
  /^ *chat_id: /   { v = env("TELEGRAM_CHAT_ID", ""); if (v != "") sub(/chat_id: .*/, "chat_id: " v) }
  /^ *- api_url_file: / { sub(/api_url_file: .*/, "api_url_file: " out "/slack_webhook_url") }
  /^ *- api_url: / { v = env("TELEGRAM_API_URL", ""); if (v != "") sub(/api_url: .*/, "api_url: " v) }
  /^ *- url: /     { v = env("DEADMAN_WEBHOOK_URL", ""); if (v != "") sub(/url: .*/, "url: \"" v "\"") }
  /^ *receiver: deadman$/ { if (env("DEADMAN_WEBHOOK_URL", "") == "") sub(/deadman$/, "blackhole") }
  { print }
' "$src" > "$out/alertmanager.yml"

exec "${ALERTMANAGER_BIN:-/bin/alertmanager}" \
  --config.file="$out/alertmanager.yml" \
  --storage.path="${ALERTMANAGER_STORAGE_PATH:-/alertmanager}" \
  "$@"
