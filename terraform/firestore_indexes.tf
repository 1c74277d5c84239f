# The composite indexes behind the queries the store runs. shared/queries.py declares every
# query; tests/infra checks that each one needing a composite index has one here, and that
# nothing here is unused (an unused index only costs writes). The other declared queries
# (release by commit, an app's releases, deployments by status, deployments due for cleanup,
# an environment's deployments in progress) filter on equality alone or on a single field,
# which Firestore's automatic single-field indexes serve.
locals {
  firestore_indexes = {
    # live_history. Rollback: an environment's releases in the order they went live, newest first.
    deployments_live_history = {
      collection = "deployments"
      fields = [
        { field_path = "app", order = "ASCENDING" },
        { field_path = "environment", order = "ASCENDING" },
        { field_path = "went_live_at", order = "DESCENDING" },
      ]
    }
    # environment_deployments. releasectl releases: an environment's deployments, newest first.
    # environment_deployments_since. Metrics and the dashboard: the same, from a given time.
    deployments_by_creation = {
      collection = "deployments"
      fields = [
        { field_path = "app", order = "ASCENDING" },
        { field_path = "environment", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }
    # app_deployments_since. releasectl metrics without --env: an app's deployments from a given time.
    deployments_of_app_by_creation = {
      collection = "deployments"
      fields = [
        { field_path = "app", order = "ASCENDING" },
        { field_path = "created_at", order = "DESCENDING" },
      ]
    }
  }
}
