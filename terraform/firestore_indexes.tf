# The composite indexes behind the queries the functions and releasectl run. Each entry names
# the query it serves; tests/infra compares this list with the queries declared in code
# (shared/queries.py). Single-field and equality-only queries need no entry: Firestore serves
# them from its automatic single-field indexes.
locals {
  firestore_indexes = {
    # releasectl releases / status: an environment's deployments, newest first.
    deployments_by_environment = {
      collection = "deployments"
      fields = [
        { field_path = "app", order = "ASCENDING" },
        { field_path = "environment", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }
    # watchdog: non-terminal deployments (status in [...]) not updated since the deadline.
    deployments_by_status_age = {
      collection = "deployments"
      fields = [
        { field_path = "status", order = "ASCENDING" },
        { field_path = "updated_at", order = "ASCENDING" },
      ]
    }
    # version resolution and rollback targets: an app's releases, newest first.
    releases_by_app = {
      collection = "releases"
      fields = [
        { field_path = "app", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }
  }
}
