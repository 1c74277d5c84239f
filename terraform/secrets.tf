# Webhook URLs are credentials. Terraform creates the secrets and the access grant; the values
# are added out of band (terraform/README.md) so they never reach the state file.
locals {
  webhook_secret_ids = { for env in var.webhook_url_envs : env => "${var.name_prefix}-${lower(replace(env, "_", "-"))}" }
}

resource "google_secret_manager_secret" "webhook" {
  for_each = local.webhook_secret_ids

  secret_id = each.value

  replication {
    auto {}
  }

  depends_on = [google_project_service.required]
}

# Only the notifier reads them, one binding per secret (not secretAccessor on the project).
resource "google_secret_manager_secret_iam_member" "notify_reads_webhook" {
  for_each = google_secret_manager_secret.webhook

  secret_id = each.value.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.function["on_notify"].member
}
