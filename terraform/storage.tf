# Release artifacts: written by CircleCI, read by the instances' startup script.
resource "google_storage_bucket" "artifacts" {
  name     = "${var.project_id}-${var.name_prefix}-artifacts"
  location = coalesce(var.artifact_bucket_location, var.region)

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"
  # Artifacts back the audit trail and rollbacks; never drop them with a destroy.
  force_destroy = false

  versioning {
    enabled = true
  }

  # No rule ever deletes a current artifact, whatever its age: a live release's instances
  # download it again whenever autohealing recreates one, and a retained or older release
  # needs it for a rollback. Age only moves an artifact to a colder storage class, where it
  # is still read at once. Artifact names are content-addressed and CI may only create
  # objects (roles/storage.objectCreator), so a current object is never replaced; the rule
  # below only clears generations that someone deleted or overwrote by hand, a week later.
  lifecycle_rule {
    condition {
      age = var.artifact_nearline_after_days
    }
    action {
      type          = "SetStorageClass"
      storage_class = "NEARLINE"
    }
  }

  lifecycle_rule {
    condition {
      days_since_noncurrent_time = 7
      with_state                 = "ARCHIVED"
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  depends_on = [google_project_service.required]
}

# Zipped function sources, one object per bundle content.
resource "google_storage_bucket" "function_source" {
  name     = "${var.project_id}-${var.name_prefix}-functions-src"
  location = var.region

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 30
    }
    action {
      type = "Delete"
    }
  }

  logging {
    log_bucket = google_storage_bucket.access_logs.name
  }

  depends_on = [google_project_service.required]
}

# Usage logs of the two buckets above: who fetched which artifact, and when.
resource "google_storage_bucket" "access_logs" {
  #checkov:skip=CKV_GCP_62:This is the access-log sink itself; logging it into itself would recurse.
  name     = "${var.project_id}-${var.name_prefix}-access-logs"
  location = coalesce(var.artifact_bucket_location, var.region)

  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  versioning {
    enabled = true
  }

  lifecycle_rule {
    condition {
      age = 365
    }
    action {
      type = "Delete"
    }
  }

  depends_on = [google_project_service.required]
}

# Cloud Storage writes usage logs as this group.
resource "google_storage_bucket_iam_member" "access_logs_writer" {
  bucket = google_storage_bucket.access_logs.name
  role   = "roles/storage.objectCreator"
  member = "group:cloud-storage-analytics@google.com"
}
