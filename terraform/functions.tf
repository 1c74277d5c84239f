# The Cloud Functions (gen2): one bundle, one function per entry point of main.py.
# tests/infra checks that the keys of local.functions are exactly the entry points main.py
# exports, and that every environment variable shared/config.py reads is set here.
# What each function's account may do follows from its entry (iam.tf): firestore_access
# ("read" or "read_write" the records), publishes (topics), compute_role (custom role or null),
# webhook_secrets (read the webhook URLs); terraform/README.md has the matrix with the reasons.
locals {
  functions = {
    on_build_succeeded = {
      short            = "build"
      trigger_topics   = ["build-succeeded"]
      publishes        = ["start-rolling-replace", "notify"]
      compute_role     = null
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 120
      memory           = "512Mi"
    }
    on_start_rolling_replace = {
      short            = "provision"
      trigger_topics   = ["start-rolling-replace"]
      publishes        = ["cool-down-complete", "start-rolling-replace", "notify"]
      compute_role     = "provisioner"
      webhook_secrets  = false
      firestore_access = "read_write"
      # Creating a template and a regional MIG is awaited with a bounded wait inside this limit.
      timeout_seconds = 540
      memory          = "512Mi"
    }
    on_cool_down_complete = {
      short            = "switch"
      trigger_topics   = ["cool-down-complete"]
      publishes        = ["start-rolling-replace", "bake-check", "notify"]
      compute_role     = "switcher"
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 540
      memory           = "512Mi"
    }
    # Reads green's request counts (Cloud Monitoring) and, on a breach, switches traffic back.
    on_bake_check = {
      short            = "bake"
      trigger_topics   = ["bake-check"]
      publishes        = ["start-rolling-replace", "bake-check", "notify"]
      compute_role     = "switcher"
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 300
      memory           = "512Mi"
    }
    on_notify = {
      short            = "notify"
      trigger_topics   = ["notify"]
      publishes        = []
      compute_role     = null
      webhook_secrets  = true
      firestore_access = "read_write"
      timeout_seconds  = 120
      memory           = "256Mi"
    }
    watchdog = {
      short            = "watchdog"
      trigger_topics   = ["watchdog-tick"]
      publishes        = ["start-rolling-replace", "cool-down-complete", "bake-check", "notify"]
      compute_role     = "switcher"
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 300
      memory           = "512Mi"
    }
    # One function listens on every dead-letter topic: the first through its own trigger,
    # the others through extra Eventarc triggers aimed at the same service.
    on_dead_letter = {
      short            = "deadletter"
      trigger_topics   = local.dead_letter_topics
      publishes        = ["notify"]
      compute_role     = null
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 60
      memory           = "256Mi"
    }
    # HTTP; never public. See the invoker binding below. Writes a release request (the proof of
    # who asked), then publishes the release's event.
    rollback = {
      short            = "rollback"
      trigger_topics   = []
      publishes        = ["build-succeeded"]
      compute_role     = null
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 60
      memory           = "256Mi"
    }
    # HTTP; never public. Writes a release request, then publishes the release's event.
    promote = {
      short            = "promote"
      trigger_topics   = []
      publishes        = ["build-succeeded"]
      compute_role     = null
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 60
      memory           = "256Mi"
    }
    # HTTP; never public. Records a decision; an approval may start the deployment.
    approve = {
      short            = "approve"
      trigger_topics   = []
      publishes        = ["start-rolling-replace", "notify"]
      compute_role     = null
      webhook_secrets  = false
      firestore_access = "read_write"
      timeout_seconds  = 60
      memory           = "256Mi"
    }
    # HTTP; the release dashboard, invoked by the team group only (iam.tf). It reads the records
    # and forwards actions, with the user's own token, to the functions above; it publishes nothing.
    dashboard = {
      short            = "dashboard"
      trigger_topics   = []
      publishes        = []
      compute_role     = null
      webhook_secrets  = false
      firestore_access = "read" # every change goes through the functions above
      timeout_seconds  = 60
      memory           = "512Mi"
    }
  }

  # The release-control functions callers reach over HTTPS. Each URL is derived rather than read
  # back from the function, so the function can carry its own URL as the token audience without
  # a dependency cycle. What each <NAME>_AUDIENCE variable holds: the function's URL first, then
  # any extra accepted audiences, comma-separated (shared/config.py parses it).
  release_control_urls = {
    for name in ["rollback", "promote", "approve"] :
    name => "https://${var.region}-${var.project_id}.cloudfunctions.net/${var.name_prefix}-${name}"
  }
  release_control_audiences = {
    for name, url in local.release_control_urls : name => join(",", concat([url], var.rollback_extra_audiences))
  }

  # Every variable shared/config.py reads on Google Cloud. COMPUTE_EMULATOR_HOST and
  # NOTIFICATIONS_FILE are for the local stack only and must stay unset here.
  function_environment = {
    GOOGLE_CLOUD_PROJECT = var.project_id
    PIPELINE_CONFIG      = var.pipeline_config_path
    ROLLBACK_AUDIENCE    = local.release_control_audiences["rollback"]
    PROMOTE_AUDIENCE     = local.release_control_audiences["promote"]
    APPROVE_AUDIENCE     = local.release_control_audiences["approve"]
    ID_TOKEN_CERTS_URL   = "https://www.googleapis.com/oauth2/v1/certs"
    ID_TOKEN_ISSUERS     = "accounts.google.com,https://accounts.google.com"
    LOG_LEVEL            = var.log_level
    # functions-framework's server gets a thread for each request Cloud Run may send an instance
    # at once; by itself it starts four per CPU it sees.
    THREADS = tostring(var.function_request_concurrency)
    # The dashboard forwards a user's rollback and approval decisions to these functions.
    DASHBOARD_ROLLBACK_URL = local.release_control_urls["rollback"]
    DASHBOARD_APPROVE_URL  = local.release_control_urls["approve"]
  }

  pubsub_functions = { for name, fn in local.functions : name => fn if length(fn.trigger_topics) > 0 }

  extra_triggers = merge([
    for name, fn in local.pubsub_functions : {
      for topic in(length(fn.trigger_topics) > 1 ? slice(fn.trigger_topics, 1, length(fn.trigger_topics)) : []) :
      "${name}/${topic}" => { function = name, topic = topic }
    }
  ]...)
}

resource "google_storage_bucket_object" "function_bundle" {
  # Content-addressed, so a changed bundle redeploys the functions and an unchanged one does not.
  name   = "functions-${filemd5(var.function_bundle)}.zip"
  bucket = google_storage_bucket.function_source.name
  source = var.function_bundle
}

resource "google_cloudfunctions2_function" "fn" {
  for_each = local.functions

  name        = "${var.name_prefix}-${replace(each.key, "_", "-")}"
  location    = var.region
  description = "Release pipeline: ${each.key}"

  build_config {
    runtime         = var.python_runtime
    entry_point     = each.key
    service_account = google_service_account.function_builder.id

    source {
      storage_source {
        bucket = google_storage_bucket.function_source.name
        object = google_storage_bucket_object.function_bundle.name
      }
    }
  }

  service_config {
    available_memory   = each.value.memory
    timeout_seconds    = each.value.timeout_seconds
    min_instance_count = 0
    max_instance_count = var.function_max_instances
    # A function instance serves several requests at once only with a whole vCPU (Cloud Run's
    # rule); the code is thread-safe, as the local function servers, eight threads each, show.
    max_instance_request_concurrency = var.function_request_concurrency
    available_cpu                    = var.function_request_concurrency > 1 ? "1" : null
    service_account_email            = google_service_account.function[each.key].email
    # Eventarc and Pub/Sub push count as internal traffic; only the HTTP endpoints (rollback,
    # promote, approve) are reachable from outside, and there IAM admits only their groups.
    ingress_settings               = length(each.value.trigger_topics) > 0 ? "ALLOW_INTERNAL_ONLY" : "ALLOW_ALL"
    all_traffic_on_latest_revision = true
    environment_variables          = local.function_environment

    dynamic "secret_environment_variables" {
      for_each = each.value.webhook_secrets ? var.webhook_url_envs : toset([])
      content {
        key        = secret_environment_variables.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.webhook[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }
  }

  dynamic "event_trigger" {
    for_each = length(each.value.trigger_topics) > 0 ? [each.value.trigger_topics[0]] : []
    content {
      trigger_region        = var.region
      event_type            = "google.cloud.pubsub.topic.v1.messagePublished"
      pubsub_topic          = google_pubsub_topic.topic[event_trigger.value].id
      retry_policy          = "RETRY_POLICY_RETRY"
      service_account_email = google_service_account.function[each.key].email
    }
  }

  depends_on = [
    google_project_service.required,
    google_secret_manager_secret_iam_member.notify_reads_webhook,
    google_project_iam_member.function_builder,
  ]
}

# A gen2 function has a single trigger; the dead-letter listener needs one per topic.
resource "google_eventarc_trigger" "extra" {
  for_each = local.extra_triggers

  name            = "${var.name_prefix}-${replace(each.value.function, "_", "-")}-${each.value.topic}"
  location        = var.region
  service_account = google_service_account.function[each.value.function].email

  matching_criteria {
    attribute = "type"
    value     = "google.cloud.pubsub.topic.v1.messagePublished"
  }

  transport {
    pubsub {
      topic = google_pubsub_topic.topic[each.value.topic].id
    }
  }

  destination {
    cloud_run_service {
      service = google_cloudfunctions2_function.fn[each.value.function].name
      region  = var.region
    }
  }
}

# The Cloud Scheduler service agent publishes the tick; the watchdog function does the rest.
resource "google_cloud_scheduler_job" "watchdog" {
  name        = "${var.name_prefix}-watchdog-tick"
  region      = var.region
  description = "Fails deployments stuck past their deadline (see the watchdog function)."
  schedule    = var.watchdog_schedule
  time_zone   = "Etc/UTC"

  pubsub_target {
    topic_name = google_pubsub_topic.topic["watchdog-tick"].id
    data       = base64encode(jsonencode({ source = "cloud-scheduler" }))
  }

  depends_on = [google_project_service.required]
}

# Retry backoff, maximum attempts and dead-letter topic of each trigger's subscription.
# Eventarc owns those subscriptions and the provider cannot set their policy (see
# terraform/README.md), so terraform/scripts/apply-delivery-policy.sh applies these lines
# after every apply. One line per trigger:
#   <eventarc trigger> <dead-letter topic or -> <max attempts> <min backoff> <max backoff>
locals {
  delivery_policy_lines = [
    for topic, trigger in local.pubsub_triggers : join(" ", [
      google_cloudfunctions2_function.fn[trigger.entry_point].event_trigger[0].trigger,
      trigger.dead_letter_topic == null ? "-" : google_pubsub_topic.topic[trigger.dead_letter_topic].id,
      tostring(trigger.max_delivery_attempts),
      "${trigger.min_backoff_seconds}s",
      "${trigger.max_backoff_seconds}s",
    ])
  ]
}
