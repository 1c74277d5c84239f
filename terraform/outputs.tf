output "rollback_url" {
  description = "POST here to roll back (CONTRACT §4); set RELEASECTL_ROLLBACK_URL to it. Also the token audience."
  value       = local.release_control_urls["rollback"]
}

output "promote_url" {
  description = "POST here to promote (CONTRACT §4b); set RELEASECTL_PROMOTE_URL to it. Also the token audience."
  value       = local.release_control_urls["promote"]
}

output "approve_url" {
  description = "POST here to approve or reject (CONTRACT §4c); set RELEASECTL_APPROVE_URL to it. Also the token audience."
  value       = local.release_control_urls["approve"]
}

output "topics" {
  description = "Every Pub/Sub topic, by name."
  value       = sort(tolist(local.all_topics))
}

output "build_succeeded_topic" {
  description = "Full name of the topic CircleCI publishes to."
  value       = google_pubsub_topic.topic["build-succeeded"].id
}

output "load_balancers" {
  description = "Per environment: the load balancer's address and URL, and the Compute names config/pipeline.toml must use."
  value = {
    for key, env in module.environment : key => {
      address                 = env.address
      url                     = env.url
      base_instance_template  = env.base_instance_template
      health_check            = env.health_check
      backend_service         = env.backend_service
      preview_backend_service = env.preview_backend_service
      preview_url             = env.preview_url
    }
  }
}

output "artifact_bucket" {
  description = "Bucket CircleCI uploads artifacts to (gs://<bucket>/<app>/...)."
  value       = google_storage_bucket.artifacts.name
}

output "circleci_workload_identity_provider" {
  description = "Full provider name for `gcloud iam workload-identity-pools create-cred-config`."
  value       = google_iam_workload_identity_pool_provider.circleci.name
}

output "circleci_service_account" {
  description = "Service account CircleCI impersonates."
  value       = google_service_account.circleci_publisher.email
}

output "webhook_secrets" {
  description = "Secret Manager secret per webhook env var; add the URL with `gcloud secrets versions add`."
  value       = { for env, secret in google_secret_manager_secret.webhook : env => secret.secret_id }
}

output "delivery_policy" {
  description = "Input of terraform/scripts/apply-delivery-policy.sh (one line per Eventarc trigger)."
  value       = join("\n", local.delivery_policy_lines)
}

output "pubsub_service_agent" {
  description = "IAM member of the Pub/Sub service agent (dead-lettering needs it on each trigger's subscription)."
  value       = local.pubsub_service_agent
}

output "dashboard_url" {
  description = "The release dashboard (RELEASECTL_DASHBOARD_URL). Only the team group may invoke it; open it through `gcloud run services proxy` (see the README)."
  value       = google_cloudfunctions2_function.fn["dashboard"].service_config[0].uri
}
