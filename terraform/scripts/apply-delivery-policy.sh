#!/usr/bin/env bash
# Applies each trigger's retry backoff, maximum delivery attempts and dead-letter topic to the
# Pub/Sub subscription Eventarc created for it, and lets the Pub/Sub service agent take
# messages off that subscription (dead-lettering needs both).
#
# Eventarc owns these subscriptions and the Terraform provider cannot set their delivery
# policy, so cloudbuild.yaml runs this after every apply, with Terraform's outputs:
#   apply-delivery-policy.sh <file with `terraform output -raw delivery_policy`> <pubsub_service_agent member>
# Each line: <eventarc trigger> <dead-letter topic or -> <max attempts> <min backoff> <max backoff>
# Idempotent: running it twice sets the same values twice.
set -euo pipefail

policy_file="${1:?usage: $0 POLICY_FILE PUBSUB_AGENT_MEMBER}"
agent_member="${2:?usage: $0 POLICY_FILE PUBSUB_AGENT_MEMBER}"

while read -r trigger dead_letter attempts min_backoff max_backoff; do
  [ -n "$trigger" ] || continue
  subscription="$(gcloud eventarc triggers describe "$trigger" --format='value(transport.pubsub.subscription)')"
  [ -n "$subscription" ] || { echo "no subscription behind ${trigger}" >&2; exit 1; }

  if [ "$dead_letter" = "-" ]; then
    gcloud pubsub subscriptions update "$subscription" --quiet \
      --min-retry-delay="$min_backoff" --max-retry-delay="$max_backoff"
  else
    gcloud pubsub subscriptions update "$subscription" --quiet \
      --min-retry-delay="$min_backoff" --max-retry-delay="$max_backoff" \
      --dead-letter-topic="$dead_letter" --max-delivery-attempts="$attempts"
    gcloud pubsub subscriptions add-iam-policy-binding "$subscription" --quiet \
      --member="$agent_member" --role=roles/pubsub.subscriber >/dev/null
  fi
  echo "delivery policy set on ${subscription}"
done <"$policy_file"
