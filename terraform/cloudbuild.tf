# Cloud Build triggers on this repository, each with its own service account.
#
# A pull request's build runs the cloudbuild.yaml of the pull request: whoever opens it decides
# every command of the build. So pull-request builds run as an account that can only read (the
# plan needs to read the project and the state) and write its build logs; even a cloudbuild.yaml
# rewritten to run `terraform apply` or `gcloud` can change nothing. Only the main branch,
# after review, builds as the deployer, an administrator account made when the project is set
# up (terraform/README.md lists its roles) and never given to a pull request.

resource "google_service_account" "cloudbuild_pull_requests" {
  account_id   = "${var.name_prefix}-pr-checks"
  display_name = "Release pipeline pull-request checks (read-only)"
  description  = "Runs pull-request builds of cloudbuild.yaml: tests and terraform plan, nothing applied."

  depends_on = [google_project_service.required]
}

locals {
  # Everything the pull-request account holds on the project, all read-only: a viewer role for
  # each service whose resources this stack manages, so that `terraform plan` can refresh them,
  # `iam.securityReviewer` for their IAM policies, and `logging.logWriter` for the build's own
  # logs (the builds log to Cloud Logging only). No basic role: Viewer would also read what the
  # plan never needs.
  cloudbuild_pull_request_project_roles = [
    "roles/cloudbuild.builds.viewer",
    "roles/cloudfunctions.viewer",
    "roles/cloudscheduler.viewer",
    "roles/compute.viewer",
    "roles/datastore.viewer",
    "roles/eventarc.viewer",
    "roles/iam.securityReviewer",
    "roles/iam.workloadIdentityPoolViewer",
    "roles/logging.logWriter",
    "roles/pubsub.viewer",
    "roles/run.viewer",
    "roles/secretmanager.viewer",
    "roles/serviceusage.serviceUsageViewer",
    "roles/storage.bucketViewer",
  ]
}

resource "google_project_iam_member" "cloudbuild_pull_requests" {
  for_each = toset(local.cloudbuild_pull_request_project_roles)

  project = var.project_id
  role    = each.key
  member  = google_service_account.cloudbuild_pull_requests.member
}

# The state and this installation's tfvars: read, never written (the plan runs with -lock=false).
resource "google_storage_bucket_iam_member" "cloudbuild_pull_requests_read_state" {
  count = var.cloudbuild == null ? 0 : 1

  bucket = var.cloudbuild.state_bucket
  role   = "roles/storage.objectViewer"
  member = google_service_account.cloudbuild_pull_requests.member
}

resource "google_cloudbuild_trigger" "pull_request" {
  count = var.cloudbuild == null ? 0 : 1

  name            = "${var.name_prefix}-pull-request"
  location        = "global"
  description     = "Tests and terraform plan for pull requests; runs as the read-only account."
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.cloudbuild_pull_requests.id

  github {
    owner = var.cloudbuild.github_owner
    name  = var.cloudbuild.github_repository
    pull_request {
      branch = "^${var.cloudbuild.main_branch}$"
      # A pull request from outside the repository's collaborators builds only after a
      # collaborator comments /gcbrun.
      comment_control = "COMMENTS_ENABLED_FOR_EXTERNAL_CONTRIBUTORS_ONLY"
    }
  }

  substitutions = {
    _PLAN_ONLY    = "true"
    _STATE_BUCKET = var.cloudbuild.state_bucket
  }

  depends_on = [google_project_service.required]
}

resource "google_cloudbuild_trigger" "main" {
  count = var.cloudbuild == null ? 0 : 1

  name            = "${var.name_prefix}-main"
  location        = "global"
  description     = "Tests, plan and apply for the reviewed main branch; runs as the deployer."
  filename        = "cloudbuild.yaml"
  service_account = "projects/${var.project_id}/serviceAccounts/${var.cloudbuild.deployer_service_account}"

  github {
    owner = var.cloudbuild.github_owner
    name  = var.cloudbuild.github_repository
    push {
      branch = "^${var.cloudbuild.main_branch}$"
    }
  }

  substitutions = {
    _PLAN_ONLY    = "false"
    _STATE_BUCKET = var.cloudbuild.state_bucket
  }

  depends_on = [google_project_service.required]
}
