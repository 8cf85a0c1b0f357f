#!/usr/bin/env bash
# The body of the GitHub Action (action.yml): audit, print the PDF, summarise, decide the gate.
#
# Inputs arrive as environment variables (never pasted into the script, so a file name cannot
# inject shell code): ORIGINAL, UNLEARNED, RETRAINED, DATA, FORGET, FORGET_DATA, RETAIN_DATA,
# TEST_DATA, ARCH, POLICY, POLICY_TOML, REFERENCE_MODELS, ROBUSTNESS, EXTRA_ARGS, PDF,
# TREAT_INCONCLUSIVE_AS, OUTPUT_DIR. Writes verdict, exit-code and gate to $GITHUB_OUTPUT; always
# exits 0 unless the inputs are unusable (the action's last step fails the job from `gate`).
set -uo pipefail

out="${OUTPUT_DIR:-unlearn-audit}"
mkdir -p "$out"
args=(evaluate --original "$ORIGINAL" --unlearned "$UNLEARNED"
      --json "$out/result.json" --html "$out/report.html" --junit "$out/junit.xml")
add() { if [ -n "$2" ]; then args+=("$1" "$2"); fi; }
add --retrained "${RETRAINED:-}"
add --data "${DATA:-}"
add --forget "${FORGET:-}"
add --forget-data "${FORGET_DATA:-}"
add --retain-data "${RETAIN_DATA:-}"
add --test-data "${TEST_DATA:-}"
add --arch "${ARCH:-}"
add --reference-models "${REFERENCE_MODELS:-}"
if [ -n "${POLICY:-}" ] && [ -n "${POLICY_TOML:-}" ]; then
  echo "::error::give either policy (a file) or policy-toml (inline thresholds), not both"; exit 2
fi
if [ -n "${POLICY_TOML:-}" ]; then
  printf '%s\n' "$POLICY_TOML" > "$out/policy.toml"
  POLICY="$out/policy.toml"
fi
add --policy "${POLICY:-}"
if [ "${ROBUSTNESS:-true}" = "false" ]; then args+=(--no-robustness); fi
if [ -n "${EXTRA_ARGS:-}" ]; then read -r -a extra <<< "$EXTRA_ARGS"; args+=("${extra[@]}"); fi

echo "unlearn-audit ${args[*]}"
unlearn-audit "${args[@]}"
code=$?
echo "exit-code=$code" >> "${GITHUB_OUTPUT:-/dev/null}"

if [ "${PDF:-true}" = "true" ] && [ -f "$out/result.json" ]; then
  unlearn-audit report "$out/result.json" --pdf "$out/report.pdf" \
    || echo "::warning::no PDF: unlearn-audit report --pdf needs a headless Chromium or Chrome on the runner"
fi

python "$(dirname "$0")/ci_summary.py" "$out/result.json" --evaluate-exit "$code" \
  --treat-inconclusive-as "${TREAT_INCONCLUSIVE_AS:-fail}"
gate=$?
echo "gate=$gate" >> "${GITHUB_OUTPUT:-/dev/null}"
exit 0
