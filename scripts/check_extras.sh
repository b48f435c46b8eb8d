#!/usr/bin/env bash
# Checks that each cloud extra installs cleanly on its own, from PyPI, into a fresh virtual
# environment, and that the levers behave as documented there: a provider whose SDK came with the
# extra reaches its (unreachable) endpoint and reports "unavailable"; one whose SDK is absent
# reports "missing-sdk" with the pip command to run. Not part of the test suite (it downloads);
# run it when pyproject.toml's extras change:   bash scripts/check_extras.sh [extra ...]
set -euo pipefail
cd "$(dirname "$0")/.."
extras=("$@")
((${#extras[@]})) || extras=(none aws gcp azure)
python=/usr/bin/python3
[ -x "$python" ] || python=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

for extra in "${extras[@]}"; do
    venv="$work/$extra"
    spec=.
    [ "$extra" = none ] || spec=".[$extra]"
    start=$SECONDS
    "$python" -m venv "$venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "$spec"
    "$venv/bin/pip" check >/dev/null
    echo "== $extra: installed in $((SECONDS - start)) s, pip check clean"
    "$venv/bin/python" - "$extra" <<'EOF'
import json
import sys

from siprec_backup.cloud.aws import AwsCredentials
from siprec_backup.cloud.azure import AzureCredentials
from siprec_backup.cloud.cloudflare import CloudflareCredentials
from siprec_backup.cloud.gcp import GcpCredentials
from siprec_backup.cloud.retry import RetryPolicy
from siprec_backup.dns.azure_dns import AzureDns
from siprec_backup.dns.cloud_dns import CloudDns
from siprec_backup.dns.cloudflare import CloudflareDns
from siprec_backup.dns.route53 import Route53Dns
from siprec_backup.errors import CloudProviderError

extra = sys.argv[1]
closed = "http://127.0.0.1:9"  # nothing listens: a provider whose SDK is present is unavailable
once = RetryPolicy(attempts=1)
key = {"type": "service_account", "project_id": "p", "private_key_id": "k", "client_email":
       "x@p.iam.gserviceaccount.com", "token_uri": f"{closed}/token", "private_key": "invalid"}
levers = {
    "aws": Route53Dns("example.com", credentials=AwsCredentials(
        access_key_id="a", secret_access_key="b", endpoint_url=closed, timeout=2), retry=once),
    "gcp": CloudDns("example.com", managed_zone="z", credentials=GcpCredentials(
        service_account_info=json.dumps(key), project="p", dns_url=closed, timeout=2)),
    "azure": AzureDns("example.com", resource_group="rg", credentials=AzureCredentials(
        tenant_id="t", client_id="c", client_secret="s", subscription_id="sub",
        authority_url=closed, management_url=closed, timeout=2)),
    "cloudflare": CloudflareDns("example.com", credentials=CloudflareCredentials(
        api_token="t", api_url=closed, timeout=2)),
}
needs = {"aws": "aws", "gcp": "gcp"}  # the providers with an optional SDK, and their extra
for provider, lever in levers.items():
    try:
        lever.lookup("db", "A")
    except CloudProviderError as exc:
        wanted = "missing-sdk" if needs.get(provider, extra) != extra else None
        ok = exc.code == wanted if wanted else exc.code != "missing-sdk"
        print(f"   {provider:10} {exc.code:12} {'ok' if ok else 'WRONG'}: {exc}")
        if not ok:
            sys.exit(1)
    else:
        print(f"   {provider:10} answered from {closed}?")
        sys.exit(1)
EOF
done
