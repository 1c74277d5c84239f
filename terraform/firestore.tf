resource "google_firestore_database" "default" {
  project     = var.project_id
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  # The release records are the audit trail: recoverable for 7 days, and never deleted by
  # a careless destroy.
  point_in_time_recovery_enablement = "POINT_IN_TIME_RECOVERY_ENABLED"
  delete_protection_state           = "DELETE_PROTECTION_ENABLED"
  deletion_policy                   = "ABANDON"

  depends_on = [google_project_service.required]
}

resource "google_firestore_index" "composite" {
  for_each = local.firestore_indexes

  project     = var.project_id
  database    = google_firestore_database.default.name
  collection  = each.value.collection
  query_scope = "COLLECTION"

  dynamic "fields" {
    for_each = each.value.fields
    content {
      field_path = fields.value.field_path
      order      = fields.value.order
    }
  }
}

# No TTL policy: the idempotency key of a build is the deployment document itself (its id is
# derived from app, environment and build id), and deployments, releases and the other
# records are the audit trail, which must not expire. A TTL belongs only on a timestamp the
# code writes for that purpose; tests/infra checks that any TTL declared here is one.
