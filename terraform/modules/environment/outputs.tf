output "address" {
  description = "The load balancer's IP address."
  value       = google_compute_global_address.web.address
}

output "url" {
  description = "Public URL of the environment (the `url` of config/pipeline.toml)."
  value       = local.https ? "https://${var.domains[0]}" : "http://${google_compute_global_address.web.address}"
}

output "base_instance_template" {
  description = "Name of the base instance template."
  value       = google_compute_instance_template.base.name
}

output "health_check" {
  description = "Name of the health check (also the release groups' autohealing check)."
  value       = google_compute_health_check.web.name
}

output "backend_service" {
  description = "Name of the backend service the pipeline attaches release groups to."
  value       = google_compute_backend_service.web.name
}

output "web_tag" {
  description = "Network tag the firewall rule targets; release templates inherit it from the base."
  value       = local.web_tag
}

output "instance_service_account_email" {
  description = "E-mail of the instances' service account."
  value       = google_service_account.instance.email
}

output "instance_service_account_name" {
  description = "Resource name of the instances' service account (for IAM bindings on it)."
  value       = google_service_account.instance.name
}

output "preview_backend_service" {
  description = "Name of the preview backend service green joins for its smoke checks (`preview_backend_service`)."
  value       = google_compute_backend_service.preview.name
}

output "preview_url" {
  description = "URL of the preview load balancer (the `preview_url` of config/pipeline.toml)."
  value       = "http://${google_compute_global_address.preview.address}"
}
