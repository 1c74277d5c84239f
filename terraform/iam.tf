# One service account per function, each holding only what its function does.

resource "google_service_account" "function" {
  for_each = local.functions

  account_id   = "${var.name_prefix}-fn-${each.value.short}"
  display_name = "Release pipeline function ${each.key}"

  depends_on = [google_project_service.required]
}

# Every function reads the release records; those that change them (deployments, releases,
# environments, rejected and dead-lettered events, the notification ledger) may also write.
# Firestore has no per-collection IAM, so this is the finest split there is.
locals {
  firestore_roles = {
    read       = "roles/datastore.viewer"
    read_write = "roles/datastore.user"
  }
}

resource "google_project_iam_member" "function_firestore" {
  for_each = local.functions

  project = var.project_id
  role    = local.firestore_roles[each.value.firestore_access]
  member  = google_service_account.function[each.key].member
}

# Publishing rights per topic, not per project: a function can only emit the events of its step.
resource "google_pubsub_topic_iam_member" "function_publishes" {
  for_each = merge([
    for name, fn in local.functions : { for topic in fn.publishes : "${name}/${topic}" => { function = name, topic = topic } }
  ]...)

  topic  = google_pubsub_topic.topic[each.value.topic].name
  role   = "roles/pubsub.publisher"
  member = google_service_account.function[each.value.function].member
}

# Each Pub/Sub-triggered function's account is also its trigger's identity; it may invoke its
# own service and nothing else. A gen2 function runs as the Cloud Run service of its name.
resource "google_cloud_run_v2_service_iam_member" "trigger_invokes_function" {
  for_each = local.pubsub_functions

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = google_service_account.function[each.key].member
}

# Pub/Sub signs the push requests' OIDC tokens as the trigger account; granted per account
# rather than on the project.
resource "google_service_account_iam_member" "pubsub_signs_trigger_tokens" {
  for_each = local.pubsub_functions

  service_account_id = google_service_account.function[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}

# The HTTP functions: one group each may invoke them, nobody else. The functions then check the
# caller against the pipeline file (the environment's rollback_callers, promoters or approvers,
# and the two-person rule). The dashboard is opened by the team: the group that may roll back.
locals {
  http_invoker_groups = {
    rollback  = var.rollback_invoker_group
    promote   = var.promote_invoker_group
    approve   = var.approve_invoker_group
    dashboard = var.rollback_invoker_group
  }
}

resource "google_cloud_run_v2_service_iam_member" "http_invoker" {
  for_each = local.http_invoker_groups

  project  = var.project_id
  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].name
  role     = "roles/run.invoker"
  member   = "group:${each.value}"
}

# The bindings were one resource each before; existing state keeps them instead of replacing them.
moved {
  from = google_cloud_run_v2_service_iam_member.rollback_invoker
  to   = google_cloud_run_v2_service_iam_member.http_invoker["rollback"]
}

moved {
  from = google_cloud_run_v2_service_iam_member.promote_invoker
  to   = google_cloud_run_v2_service_iam_member.http_invoker["promote"]
}

moved {
  from = google_cloud_run_v2_service_iam_member.approve_invoker
  to   = google_cloud_run_v2_service_iam_member.http_invoker["approve"]
}

moved {
  from = google_cloud_run_v2_service_iam_member.dashboard_invoker
  to   = google_cloud_run_v2_service_iam_member.http_invoker["dashboard"]
}

# Compute permissions as custom roles: the predefined instanceAdmin / loadBalancerAdmin roles
# would also let a function delete any VM or rewrite any load balancer in the project.
locals {
  compute_roles = {
    provisioner = {
      title = "Release pipeline: create release templates and green groups"
      permissions = [
        # Green joins its environment's preview backend service (smoke checks) when it is made.
        "compute.backendServices.get",
        "compute.backendServices.update",
        "compute.globalOperations.get",
        "compute.instanceGroups.use",
        "compute.healthChecks.get",
        "compute.healthChecks.useReadOnly",
        "compute.images.useReadOnly",
        "compute.instanceGroupManagers.create",
        "compute.instanceGroupManagers.get",
        "compute.instanceGroupManagers.list",
        "compute.instanceGroups.get",
        "compute.instanceTemplates.create",
        "compute.instanceTemplates.get",
        "compute.instanceTemplates.list",
        "compute.instanceTemplates.useReadOnly",
        "compute.instances.get",
        "compute.instances.list",
        "compute.networks.get",
        "compute.regionOperations.get",
        "compute.regions.get",
        "compute.subnetworks.get",
        "compute.subnetworks.use",
        "compute.zoneOperations.get",
        "compute.zones.list",
      ]
    }
    switcher = {
      title = "Release pipeline: switch backends and retire groups"
      permissions = [
        "compute.backendServices.get",
        "compute.backendServices.update",
        "compute.globalOperations.get",
        "compute.healthChecks.get",
        "compute.instanceGroupManagers.delete",
        "compute.instanceGroupManagers.get",
        "compute.instanceGroupManagers.list",
        "compute.instanceGroups.get",
        "compute.instanceGroups.list",
        "compute.instanceGroups.use",
        "compute.instanceTemplates.delete",
        "compute.instanceTemplates.get",
        "compute.instanceTemplates.list",
        "compute.instances.get",
        "compute.instances.getGuestAttributes",
        "compute.instances.list",
        "compute.regionOperations.get",
        "compute.regions.get",
        "compute.zoneOperations.get",
        "compute.zones.list",
      ]
    }
  }
}

resource "google_project_iam_custom_role" "compute" {
  for_each = local.compute_roles

  project     = var.project_id
  role_id     = "${replace(var.name_prefix, "-", "_")}_${each.key}"
  title       = each.value.title
  permissions = each.value.permissions

  depends_on = [google_project_service.required]
}

# The bake step reads the load balancer's request counts for green's group.
resource "google_project_iam_member" "bake_reads_monitoring" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = google_service_account.function["on_bake_check"].member
}

resource "google_project_iam_member" "function_compute" {
  for_each = { for name, fn in local.functions : name => fn if fn.compute_role != null }

  project = var.project_id
  role    = google_project_iam_custom_role.compute[each.value.compute_role].id
  member  = google_service_account.function[each.key].member
}

# Green instances run as their environment's instance account; the provisioner must be able
# to act as it when it creates the group, and only it.
resource "google_service_account_iam_member" "provisioner_acts_as_instances" {
  for_each = module.environment

  service_account_id = each.value.instance_service_account_name
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.function["on_start_rolling_replace"].member
}

# Gen2 functions are built by Cloud Build; a dedicated builder account instead of the
# default compute account (which holds Editor in many projects).
resource "google_service_account" "function_builder" {
  account_id   = "${var.name_prefix}-fn-builder"
  display_name = "Release pipeline function builds"

  depends_on = [google_project_service.required]
}

resource "google_project_iam_member" "function_builder" {
  for_each = toset([
    "roles/logging.logWriter",
    "roles/artifactregistry.writer",
  ])

  project = var.project_id
  role    = each.key
  member  = google_service_account.function_builder.member
}

resource "google_storage_bucket_iam_member" "function_builder_reads_source" {
  bucket = google_storage_bucket.function_source.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.function_builder.member
}
