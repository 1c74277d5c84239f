# Topics and delivery policy. This table mirrors shared/topology.py, the single source of truth;
# tests/infra/test_consistency.py fails when the two drift apart.
locals {
  pubsub_triggers = {
    "build-succeeded" = {
      entry_point           = "on_build_succeeded"
      min_backoff_seconds   = 1
      max_backoff_seconds   = 60
      max_delivery_attempts = 10
      dead_letter_topic     = "build-succeeded-dead-letter"
    }
    "start-rolling-replace" = {
      entry_point           = "on_start_rolling_replace"
      min_backoff_seconds   = 1
      max_backoff_seconds   = 60
      max_delivery_attempts = 10
      dead_letter_topic     = "start-rolling-replace-dead-letter"
    }
    # The backoff is the polling interval while green warms up, hence the short maximum
    # and the many attempts: 965 s of polls at least, the longest provisioning deadline the
    # pipeline file accepts (shared/config.py).
    "cool-down-complete" = {
      entry_point           = "on_cool_down_complete"
      min_backoff_seconds   = 1
      max_backoff_seconds   = 10
      max_delivery_attempts = 100
      dead_letter_topic     = "cool-down-complete-dead-letter"
    }
    # The bake window's poll after a switch: redelivered until the window ends or green breaches.
    "bake-check" = {
      entry_point           = "on_bake_check"
      min_backoff_seconds   = 1
      max_backoff_seconds   = 10
      max_delivery_attempts = 100
      dead_letter_topic     = "bake-check-dead-letter"
    }
    "notify" = {
      entry_point           = "on_notify"
      min_backoff_seconds   = 1
      max_backoff_seconds   = 60
      max_delivery_attempts = 10
      dead_letter_topic     = "notify-dead-letter"
    }
    # A missed tick is harmless (the next one comes within a minute), so no dead letter.
    "watchdog-tick" = {
      entry_point           = "watchdog"
      min_backoff_seconds   = 1
      max_backoff_seconds   = 10
      max_delivery_attempts = 5
      dead_letter_topic     = null
    }
  }

  dead_letter_topics = sort(compact([for trigger in values(local.pubsub_triggers) : trigger.dead_letter_topic]))
  all_topics         = toset(concat(keys(local.pubsub_triggers), local.dead_letter_topics))

  # The Pub/Sub service agent moves undeliverable messages to the dead-letter topics and
  # signs the OIDC tokens of push deliveries.
  pubsub_service_agent = "serviceAccount:service-${data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
}

resource "google_pubsub_topic" "topic" {
  #checkov:skip=CKV_GCP_83:Events carry ids, versions and artifact URIs, no secrets; Google-managed encryption applies, and a CMEK key ring would add a KMS dependency to every publish for no gain.
  for_each = local.all_topics

  name = each.key
  # Long enough to replay a dead-lettered event after a weekend.
  message_retention_duration = "604800s"

  depends_on = [google_project_service.required]
}

# Dead-lettering publishes as the Pub/Sub service agent.
resource "google_pubsub_topic_iam_member" "dead_letter_publisher" {
  for_each = toset(local.dead_letter_topics)

  topic  = google_pubsub_topic.topic[each.key].name
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}
