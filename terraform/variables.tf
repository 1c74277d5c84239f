# Everything that differs between installations is a variable; nothing below has a project,
# an organisation or a secret baked in. See terraform.tfvars.example.

variable "project_id" {
  description = "Google Cloud project that hosts the pipeline and its environments."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a Google Cloud project id: 6-30 characters, lowercase letters, digits and hyphens."
  }
}

variable "region" {
  description = "Region of the functions, the Eventarc triggers, the scheduler job and the default region of environments."
  type        = string
  default     = "us-central1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must look like us-central1."
  }
}

variable "name_prefix" {
  description = "Prefix of the functions, service accounts and buckets this stack creates."
  type        = string
  default     = "release"

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,11}$", var.name_prefix))
    error_message = "name_prefix must be 2-12 characters: lowercase letters, digits, hyphens, starting with a letter."
  }
}

variable "labels" {
  description = "Labels added to every resource that supports them."
  type        = map(string)
  default     = {}
}

variable "firestore_location" {
  description = "Location of the Firestore database (a region such as us-central1, or a multi-region such as nam5). Cannot change after creation."
  type        = string
  default     = "nam5"

  validation {
    condition     = can(regex("^[a-z]+[0-9]*(-[a-z]+[0-9]+)?$", var.firestore_location))
    error_message = "firestore_location must be a Firestore location such as nam5, eur3 or us-central1."
  }
}

variable "function_bundle" {
  description = "Path of the functions bundle zip (main.py, functions/, shared/, config/, requirements.txt), built by the bundle step of cloudbuild.yaml."
  type        = string
  default     = "../build/functions.zip"

  validation {
    condition     = endswith(var.function_bundle, ".zip")
    error_message = "function_bundle must be a .zip file."
  }
}

variable "python_runtime" {
  description = "Cloud Functions runtime for the bundle."
  type        = string
  default     = "python312"

  validation {
    condition     = can(regex("^python3(1[1-9])$", var.python_runtime))
    error_message = "python_runtime must be python311 or newer (the code uses tomllib)."
  }
}

variable "pipeline_config_path" {
  description = "PIPELINE_CONFIG: where the functions find the pipeline file. Gen2 functions unpack the bundle in /workspace."
  type        = string
  default     = "/workspace/config/pipeline.toml"

  validation {
    condition     = endswith(var.pipeline_config_path, ".toml")
    error_message = "pipeline_config_path must name a .toml file."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of the functions."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "function_max_instances" {
  description = "Upper bound on concurrent instances of each function; also bounds the damage of a retry storm."
  type        = number
  default     = 10

  validation {
    condition     = var.function_max_instances >= 1 && var.function_max_instances <= 100
    error_message = "function_max_instances must be between 1 and 100."
  }
}

variable "function_request_concurrency" {
  description = "Requests one instance of a function serves at once. Every step waits on Compute Engine operations for seconds and spends little CPU, so a burst of releases (a hundred apps on a Monday morning) would otherwise queue behind function_max_instances requests in all. More than 1 needs a whole vCPU per instance, which Terraform then allocates."
  type        = number
  default     = 8

  validation {
    condition     = var.function_request_concurrency >= 1 && var.function_request_concurrency <= 80
    error_message = "function_request_concurrency must be between 1 and 80: each request is a server thread with its own clients' buffers, and the smallest functions have 256Mi."
  }
}

variable "rollback_invoker_group" {
  description = "Google group (e-mail) of the team: its members may call the rollback function (which also checks the per-environment allow-list of the pipeline file) and open the release dashboard."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[a-z]+$", var.rollback_invoker_group))
    error_message = "rollback_invoker_group must be a group e-mail address (never allUsers or allAuthenticatedUsers)."
  }
}

variable "promote_invoker_group" {
  description = "Google group (e-mail) whose members may call the promote function (people, and the CircleCI service account for the production promotion job). The function also checks the target environment's promoters in the pipeline file."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[a-z]+$", var.promote_invoker_group))
    error_message = "promote_invoker_group must be a group e-mail address (never allUsers or allAuthenticatedUsers)."
  }
}

variable "approve_invoker_group" {
  description = "Google group (e-mail) whose members may call the approve function. The function also checks the environment's approvers in the pipeline file, and refuses the deployment's own requester."
  type        = string

  validation {
    condition     = can(regex("^[^@\\s]+@[^@\\s]+\\.[a-z]+$", var.approve_invoker_group))
    error_message = "approve_invoker_group must be a group e-mail address (never allUsers or allAuthenticatedUsers)."
  }
}

variable "rollback_extra_audiences" {
  description = "Token audiences the rollback, promote and approve functions accept besides their own URLs. Add the Google Cloud CLI's OAuth client id (the audience of a person's `gcloud auth print-identity-token`) to let people call it with their own gcloud tokens; the invoker group and the pipeline file's rollback_callers still decide who may."
  type        = list(string)
  default     = []

  validation {
    # The function reads the audiences as one comma-separated variable.
    condition     = alltrue([for audience in var.rollback_extra_audiences : length(trimspace(audience)) > 0 && !strcontains(audience, ",")])
    error_message = "Each extra rollback audience must be non-empty and contain no comma."
  }
}

variable "webhook_url_envs" {
  description = "Environment variables that carry notification webhook URLs, as named by `url_env` in config/pipeline.toml. Each becomes a Secret Manager secret; the values are added out of band, never through Terraform."
  type        = set(string)
  default     = ["SLACK_WEBHOOK_URL", "OPERATIONS_SLACK_WEBHOOK_URL"]

  validation {
    condition     = alltrue([for name in var.webhook_url_envs : can(regex("^[A-Z][A-Z0-9_]{0,62}$", name))])
    error_message = "Each webhook env var must be UPPER_SNAKE_CASE."
  }
}

variable "watchdog_schedule" {
  description = "Cron schedule (UTC) of the watchdog tick."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = can(regex("^\\S+( \\S+){4}$", var.watchdog_schedule))
    error_message = "watchdog_schedule must be a five-field cron expression."
  }
}

variable "artifact_nearline_after_days" {
  description = "Days after which a release artifact moves to the Nearline storage class (cheaper to keep, still read at once). Artifacts are never deleted by age: a live or retained release re-downloads its artifact whenever autohealing recreates an instance."
  type        = number
  default     = 30

  validation {
    condition     = var.artifact_nearline_after_days >= 30
    error_message = "artifact_nearline_after_days must be at least 30 (Nearline's minimum storage duration)."
  }
}

variable "circleci" {
  description = "CircleCI organisation and the projects allowed to publish builds, for OIDC workload identity federation. allowed_vcs_refs, when set, also limits the git refs (e.g. [\"refs/heads/develop\"])."
  type = object({
    org_id           = string
    project_ids      = list(string)
    allowed_vcs_refs = optional(list(string), [])
  })

  validation {
    condition     = can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", var.circleci.org_id))
    error_message = "circleci.org_id must be the organisation's UUID (Organization Settings > Overview)."
  }

  validation {
    condition     = length(var.circleci.project_ids) > 0 && alltrue([for id in var.circleci.project_ids : can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", id))])
    error_message = "circleci.project_ids must list at least one project UUID (Project Settings > Overview)."
  }

  validation {
    condition     = alltrue([for ref in var.circleci.allowed_vcs_refs : startswith(ref, "refs/")])
    error_message = "circleci.allowed_vcs_refs entries are full refs such as refs/heads/develop."
  }
}

variable "environments" {
  description = "Deployment targets, keyed by any unique name. app and environment must match config/pipeline.toml; the Compute resource names derive from them (<app>-<environment>-base, -hc, -backend)."
  type = map(object({
    app                      = string
    environment              = string
    region                   = optional(string)
    machine_type             = optional(string, "e2-small")
    health_path              = optional(string, "/healthz")
    draining_timeout_seconds = optional(number, 60)
    domains                  = optional(list(string), [])
  }))
  default = {}

  validation {
    condition = alltrue([
      for env in values(var.environments) :
      can(regex("^[a-z][a-z0-9-]{0,29}$", env.app)) && can(regex("^[a-z][a-z0-9-]{0,29}$", env.environment))
    ])
    error_message = "app and environment must match ^[a-z][a-z0-9-]{0,29}$ (CONTRACT §3)."
  }

  validation {
    condition     = alltrue([for env in values(var.environments) : startswith(env.health_path, "/")])
    error_message = "health_path must start with '/'."
  }

  validation {
    condition     = alltrue([for env in values(var.environments) : env.draining_timeout_seconds >= 0 && env.draining_timeout_seconds <= 3600])
    error_message = "draining_timeout_seconds must be between 0 and 3600."
  }

  validation {
    condition     = length(distinct([for env in values(var.environments) : "${env.app}-${env.environment}"])) == length(var.environments)
    error_message = "Each (app, environment) pair may appear only once."
  }
}

variable "subnet_cidrs" {
  description = "Primary range of the subnet the stack creates in each region that hosts an environment."
  type        = map(string)
  default     = { "us-central1" = "10.60.0.0/24" }

  validation {
    condition     = alltrue([for cidr in values(var.subnet_cidrs) : can(cidrhost(cidr, 0))])
    error_message = "Each subnet_cidrs value must be a CIDR range."
  }
}

variable "artifact_bucket_location" {
  description = "Location of the artifact bucket; defaults to the region."
  type        = string
  default     = null
}

variable "cloudbuild" {
  description = "Cloud Build triggers on the GitHub repository (connected to Cloud Build beforehand). Pull requests build as a read-only account this stack creates; the main branch builds as deployer_service_account, the administrator account made when the project was set up. null: no triggers."
  type = object({
    github_owner             = string
    github_repository        = string
    main_branch              = optional(string, "main")
    state_bucket             = string
    deployer_service_account = string
  })
  default = null

  validation {
    condition     = var.cloudbuild == null || can(regex("^[a-z0-9-]+@[a-z0-9-]+\\.iam\\.gserviceaccount\\.com$", var.cloudbuild.deployer_service_account))
    error_message = "cloudbuild.deployer_service_account must be a service account e-mail (NAME@PROJECT.iam.gserviceaccount.com)."
  }

  validation {
    condition     = var.cloudbuild == null || !startswith(var.cloudbuild.deployer_service_account, "${var.name_prefix}-pr-checks@")
    error_message = "cloudbuild.deployer_service_account must not be the read-only pull-request account."
  }
}
