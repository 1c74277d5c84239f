# Every API the pipeline, its functions and its environments call. disable_on_destroy is
# off so that destroying this stack never breaks other workloads in a shared project.
locals {
  required_apis = toset([
    "artifactregistry.googleapis.com", # gen2 functions store their images here
    "cloudbuild.googleapis.com",       # gen2 functions are built by Cloud Build
    "cloudfunctions.googleapis.com",
    "cloudscheduler.googleapis.com", # the watchdog tick
    "compute.googleapis.com",        # instance templates, MIGs, load balancers
    "eventarc.googleapis.com",       # Pub/Sub triggers of the functions
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com", # workload identity federation for CircleCI
    "logging.googleapis.com",
    "monitoring.googleapis.com", # the bake window reads the load balancer's request counts
    "pubsub.googleapis.com",
    "run.googleapis.com", # gen2 functions run on Cloud Run
    "secretmanager.googleapis.com",
    "serviceusage.googleapis.com",
    "storage.googleapis.com",
    "sts.googleapis.com", # token exchange for workload identity federation
  ])
}

resource "google_project_service" "required" {
  for_each = local.required_apis

  project            = var.project_id
  service            = each.key
  disable_on_destroy = false
}

data "google_project" "this" {
  project_id = var.project_id
}
