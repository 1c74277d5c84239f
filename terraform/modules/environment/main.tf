# One deployment target: everything the pipeline needs to exist before its first release.
# The pipeline itself creates, per release, a copy of the base template (plus the
# release-artifact / release-artifact-sha256 / release-version metadata) and a regional MIG
# from it, and attaches and detaches those groups on the backend service. Terraform never
# manages those.
locals {
  name = "${var.app}-${var.environment}"
  # Names config/pipeline.toml refers to (base_instance_template, health_check, backend_service).
  base_instance_template  = "${local.name}-base"
  health_check            = "${local.name}-hc"
  backend_service         = "${local.name}-backend"
  preview_backend_service = "${local.name}-preview"
  web_tag                 = "${local.name}-web"
  https                   = length(var.domains) > 0
  labels                  = { app = var.app, environment = var.environment }
}

# Instances' identity: write logs and metrics, read this app's artifacts. No other API.
resource "google_service_account" "instance" {
  account_id   = "vm-${substr(sha1(local.name), 0, 12)}"
  display_name = "Instances of ${local.name}"
}

resource "google_project_iam_member" "instance" {
  for_each = toset(["roles/logging.logWriter", "roles/monitoring.metricWriter"])

  project = var.project_id
  role    = each.key
  member  = google_service_account.instance.member
}

resource "google_storage_bucket_iam_member" "instance_reads_artifacts" {
  bucket = var.artifact_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.instance.member

  condition {
    title       = "own-app-artifacts"
    description = "Only objects under ${var.app}/"
    expression  = "resource.name.startsWith(\"projects/_/buckets/${var.artifact_bucket}/objects/${var.app}/\")"
  }
}

resource "google_compute_instance_template" "base" {
  # The pipeline looks this template up by name, so the name is fixed. It is never used by
  # a group directly (each release gets its own copy), so replacing it is safe.
  name         = local.base_instance_template
  description  = "Base of every release template of ${local.name}."
  machine_type = var.machine_type
  tags         = [local.web_tag]
  labels       = local.labels

  disk {
    source_image = var.source_image
    disk_type    = "pd-balanced"
    disk_size_gb = 10
    auto_delete  = true
    boot         = true
  }

  # No access_config: no public IP. Egress goes through Cloud NAT.
  network_interface {
    subnetwork = var.subnetwork
  }

  service_account {
    email  = google_service_account.instance.email
    scopes = ["cloud-platform"]
  }

  shielded_instance_config {
    enable_secure_boot          = true
    enable_vtpm                 = true
    enable_integrity_monitoring = true
  }

  metadata = {
    # Plain bash, loaded verbatim (file, not templatefile): it reads everything it needs
    # from the metadata server at boot, so the same script serves every release.
    startup-script         = file("${path.module}/startup.sh")
    release-port           = tostring(var.app_port)
    release-health-path    = var.health_path
    block-project-ssh-keys = "true"
    enable-oslogin         = "true"
    # The startup script reports a refused release (e.g. an artifact digest mismatch) in the
    # guest attribute release/error, which the pipeline reads: startup-script failures are
    # otherwise invisible to the Compute API.
    enable-guest-attributes = "TRUE"
  }

  scheduling {
    automatic_restart   = true
    on_host_maintenance = "MIGRATE"
  }
}

resource "google_compute_health_check" "web" {
  name                = local.health_check
  description         = "nginx on :80 passes ${var.health_path} through to the app."
  check_interval_sec  = 5
  timeout_sec         = 5
  healthy_threshold   = 2
  unhealthy_threshold = 3

  http_health_check {
    port         = 80
    request_path = var.health_path
  }

  log_config {
    enable = true
  }
}

# Google's health checkers and the load balancer's proxies reach the instances from these
# two ranges only.
resource "google_compute_firewall" "health_checks" {
  name        = "${local.name}-allow-lb"
  network     = var.network
  direction   = "INGRESS"
  target_tags = [local.web_tag]
  source_ranges = [
    "35.191.0.0/16",
    "130.211.0.0/22",
  ]

  allow {
    protocol = "tcp"
    ports    = ["80"]
  }

  log_config {
    metadata = "INCLUDE_ALL_METADATA"
  }
}

resource "google_compute_backend_service" "web" {
  name                            = local.backend_service
  description                     = "Serves the live release group of ${local.name}; the pipeline attaches and detaches groups."
  load_balancing_scheme           = "EXTERNAL_MANAGED"
  protocol                        = "HTTP"
  port_name                       = "http"
  timeout_sec                     = 30
  connection_draining_timeout_sec = var.draining_timeout_seconds
  health_checks                   = [google_compute_health_check.web.id]

  log_config {
    enable      = true
    sample_rate = 1.0
  }

  lifecycle {
    # Backends are the pipeline's business: blue/green switches edit them on every release,
    # and a Terraform apply must never undo a switch.
    ignore_changes = [backend]
  }
}

# The preview: green is attached here only, during its cool-down, and its smoke checks run
# through this load balancer before any user request reaches it. Plain HTTP on its own address:
# it serves nothing users rely on, only the release about to go live.
resource "google_compute_backend_service" "preview" {
  name                            = local.preview_backend_service
  description                     = "Serves the release about to go live in ${local.name}, for its smoke checks; the pipeline attaches green here."
  load_balancing_scheme           = "EXTERNAL_MANAGED"
  protocol                        = "HTTP"
  port_name                       = "http"
  timeout_sec                     = 30
  connection_draining_timeout_sec = 0
  health_checks                   = [google_compute_health_check.web.id]

  lifecycle {
    ignore_changes = [backend]
  }
}

resource "google_compute_url_map" "preview" {
  name            = "${local.name}-preview"
  default_service = google_compute_backend_service.preview.id
}

resource "google_compute_global_address" "preview" {
  name = "${local.name}-preview-ip"
}

resource "google_compute_target_http_proxy" "preview" {
  name    = "${local.name}-preview-http"
  url_map = google_compute_url_map.preview.id
}

resource "google_compute_global_forwarding_rule" "preview" {
  name                  = "${local.name}-preview-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.preview.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.preview.id
}

resource "google_compute_url_map" "web" {
  name            = local.name
  default_service = google_compute_backend_service.web.id
}

resource "google_compute_global_address" "web" {
  name = "${local.name}-ip"
}

# HTTPS when domains are given.
resource "google_compute_managed_ssl_certificate" "web" {
  count = local.https ? 1 : 0

  name = "${local.name}-cert"

  managed {
    domains = var.domains
  }
}

resource "google_compute_ssl_policy" "web" {
  count = local.https ? 1 : 0

  name            = "${local.name}-tls"
  profile         = "MODERN"
  min_tls_version = "TLS_1_2"
}

resource "google_compute_target_https_proxy" "web" {
  count = local.https ? 1 : 0

  name             = "${local.name}-https"
  url_map          = google_compute_url_map.web.id
  ssl_certificates = [google_compute_managed_ssl_certificate.web[0].id]
  ssl_policy       = google_compute_ssl_policy.web[0].id
}

resource "google_compute_global_forwarding_rule" "https" {
  count = local.https ? 1 : 0

  name                  = "${local.name}-https"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.web.id
  port_range            = "443"
  target                = google_compute_target_https_proxy.web[0].id
}

# Port 80: the app itself without domains, otherwise a redirect to HTTPS.
resource "google_compute_url_map" "redirect" {
  count = local.https ? 1 : 0

  name = "${local.name}-redirect"

  default_url_redirect {
    https_redirect         = true
    redirect_response_code = "MOVED_PERMANENTLY_DEFAULT"
    strip_query            = false
  }
}

resource "google_compute_target_http_proxy" "web" {
  name    = "${local.name}-http"
  url_map = local.https ? google_compute_url_map.redirect[0].id : google_compute_url_map.web.id
}

resource "google_compute_global_forwarding_rule" "http" {
  name                  = "${local.name}-http"
  load_balancing_scheme = "EXTERNAL_MANAGED"
  ip_address            = google_compute_global_address.web.id
  port_range            = "80"
  target                = google_compute_target_http_proxy.web.id
}
