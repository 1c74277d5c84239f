# A private network for the environments' instances: no public IPs; Cloud NAT for package
# installs, Private Google Access for Cloud Storage and the metadata-served credentials.
locals {
  environment_regions = toset([for env in values(var.environments) : coalesce(env.region, var.region)])
}

resource "google_compute_network" "pipeline" {
  name                    = "${var.name_prefix}-apps"
  auto_create_subnetworks = false

  depends_on = [google_project_service.required]
}

resource "google_compute_subnetwork" "region" {
  for_each = local.environment_regions

  name                     = "${var.name_prefix}-apps-${each.key}"
  region                   = each.key
  network                  = google_compute_network.pipeline.id
  ip_cidr_range            = var.subnet_cidrs[each.key]
  private_ip_google_access = true

  log_config {
    aggregation_interval = "INTERVAL_5_MIN"
    flow_sampling        = 0.5
    metadata             = "INCLUDE_ALL_METADATA"
  }

  lifecycle {
    precondition {
      condition     = contains(keys(var.subnet_cidrs), each.key)
      error_message = "subnet_cidrs has no range for region ${each.key}, which an environment uses."
    }
  }
}

resource "google_compute_router" "region" {
  for_each = local.environment_regions

  name    = "${var.name_prefix}-apps-${each.key}"
  region  = each.key
  network = google_compute_network.pipeline.id
}

resource "google_compute_router_nat" "region" {
  for_each = local.environment_regions

  name                               = "${var.name_prefix}-apps-${each.key}"
  router                             = google_compute_router.region[each.key].name
  region                             = each.key
  nat_ip_allocate_option             = "AUTO_ONLY"
  source_subnetwork_ip_ranges_to_nat = "ALL_SUBNETWORKS_ALL_IP_RANGES"

  log_config {
    enable = true
    filter = "ERRORS_ONLY"
  }
}

module "environment" {
  source   = "./modules/environment"
  for_each = var.environments

  project_id               = var.project_id
  app                      = each.value.app
  environment              = each.value.environment
  region                   = coalesce(each.value.region, var.region)
  network                  = google_compute_network.pipeline.id
  subnetwork               = google_compute_subnetwork.region[coalesce(each.value.region, var.region)].id
  machine_type             = each.value.machine_type
  health_path              = each.value.health_path
  draining_timeout_seconds = each.value.draining_timeout_seconds
  domains                  = each.value.domains
  artifact_bucket          = google_storage_bucket.artifacts.name

  depends_on = [google_project_service.required]
}
