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

  # A rollback needs the artifact of the version it returns to, so artifacts live for the
  # configured retention, and an overwritten object's old generation a further week.
  lifecycle_rule {
    condition {
      age = var.artifact_retention_days
    }
    action {
      type = "Delete"
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
