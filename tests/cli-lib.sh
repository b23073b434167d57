# Sourced by the CLI test scripts (test-cli.sh, test-summarize.sh, ...): pass/fail counting and
# the one-line-error check. The script sets $tmp (a scratch directory) before sourcing, and
# ends with `finish NAME`.
pass=0
fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*"; }

# expect_error NAME EXIT PATTERN -- CMD...: exits EXIT, one stderr line matching PATTERN, no stdout.
expect_error() {
  local name=$1 code=$2 pat=$3
  shift 4
  "$@" >"$tmp/out" 2>"$tmp/err"
  local rc=$?
  local lines
  lines=$(wc -l <"$tmp/err")
  if [ "$rc" != "$code" ]; then bad "$name: exit $rc, expected $code ($(cat "$tmp/err"))"; return; fi
  if [ "$lines" != 1 ]; then bad "$name: $lines stderr lines: $(cat "$tmp/err")"; return; fi
  if ! grep -Eq -- "$pat" "$tmp/err"; then bad "$name: stderr '$(cat "$tmp/err")' lacks /$pat/"; return; fi
  if [ -s "$tmp/out" ]; then bad "$name: wrote to stdout"; return; fi
  ok
}

# finish NAME: the summary line; the script's status (0 only when nothing failed).
finish() {
  echo "$1: $pass passed, $fail failed"
  [ "$fail" = 0 ]
}
