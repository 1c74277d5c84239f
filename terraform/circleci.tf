# CircleCI authenticates with its OIDC token (CIRCLE_OIDC_TOKEN_V2) through workload identity
# federation; there is no service account key anywhere.
resource "google_iam_workload_identity_pool" "circleci" {
  workload_identity_pool_id = "${var.name_prefix}-circleci"
  display_name              = "CircleCI"
  description               = "CircleCI pipelines that publish builds to the release pipeline."

  depends_on = [google_project_service.required]
}

resource "google_iam_workload_identity_pool_provider" "circleci" {
  workload_identity_pool_id          = google_iam_workload_identity_pool.circleci.workload_identity_pool_id
  workload_identity_pool_provider_id = "circleci-oidc"
  display_name                       = "CircleCI OIDC"

  # CircleCI tokens: iss https://oidc.circleci.com/org/<org id>, aud <org id>, and the
  # project in the oidc.circleci.com/project-id claim.
  oidc {
    issuer_uri        = "https://oidc.circleci.com/org/${var.circleci.org_id}"
    allowed_audiences = [var.circleci.org_id]
  }

  # CIRCLE_OIDC_TOKEN_V2's `sub` (org/<uuid>/project/<uuid>/user/<uuid>/vcs-origin/.../vcs-ref/...)
  # is longer than the 127 bytes google.subject allows, so the subject is built from the
  # project and the git ref instead; both claims exist only in V2 tokens, which the jobs use.
  attribute_mapping = {
    "google.subject"       = "assertion['oidc.circleci.com/project-id'] + ':' + assertion['oidc.circleci.com/vcs-ref']"
    "attribute.org_id"     = "assertion.aud"
    "attribute.project_id" = "assertion['oidc.circleci.com/project-id']"
    "attribute.vcs_ref"    = "assertion['oidc.circleci.com/vcs-ref']"
  }

  # Tokens from any other organisation or project (or, if configured, git ref) are refused
  # before any IAM check.
  attribute_condition = join(" && ", concat(
    [
      "assertion.aud == '${var.circleci.org_id}'",
      "assertion['oidc.circleci.com/project-id'] in ${jsonencode(var.circleci.project_ids)}",
    ],
    length(var.circleci.allowed_vcs_refs) > 0 ? ["assertion['oidc.circleci.com/vcs-ref'] in ${jsonencode(var.circleci.allowed_vcs_refs)}"] : [],
  ))
}

# The identity CircleCI impersonates: upload artifacts, publish build-succeeded. Nothing more.
resource "google_service_account" "circleci_publisher" {
  account_id   = "${var.name_prefix}-circleci"
  display_name = "CircleCI build publisher"

  depends_on = [google_project_service.required]
}

resource "google_service_account_iam_member" "circleci_impersonation" {
  for_each = toset(var.circleci.project_ids)

  service_account_id = google_service_account.circleci_publisher.name
  role               = "roles/iam.workloadIdentityUser"
  member             = "principalSet://iam.googleapis.com/${google_iam_workload_identity_pool.circleci.name}/attribute.project_id/${each.key}"
}

# The production promotion job calls the promote function with an identity token of this account
# (gcloud auth print-identity-token, impersonating it): the account may mint ID tokens for itself.
# It still needs membership of promote_invoker_group and the target environment's promoters.
resource "google_service_account_iam_member" "circleci_mints_its_id_tokens" {
  service_account_id = google_service_account.circleci_publisher.name
  role               = "roles/iam.serviceAccountOpenIdTokenCreator"
  member             = google_service_account.circleci_publisher.member
}

resource "google_storage_bucket_iam_member" "circleci_uploads_artifacts" {
  bucket = google_storage_bucket.artifacts.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.circleci_publisher.member
}

resource "google_pubsub_topic_iam_member" "circleci_publishes_builds" {
  topic  = google_pubsub_topic.topic["build-succeeded"].name
  role   = "roles/pubsub.publisher"
  member = google_service_account.circleci_publisher.member
}
