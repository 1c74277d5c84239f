variable "project_id" {
  description = "Project of the environment's resources."
  type        = string
}

variable "app" {
  description = "App name, as in config/pipeline.toml."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,29}$", var.app))
    error_message = "app must match ^[a-z][a-z0-9-]{0,29}$."
  }
}

variable "environment" {
  description = "Environment name, as in config/pipeline.toml."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,29}$", var.environment))
    error_message = "environment must match ^[a-z][a-z0-9-]{0,29}$."
  }
}

variable "region" {
  description = "Region of the release groups (regional MIGs) the pipeline creates."
  type        = string
}

variable "network" {
  description = "VPC network id the instances join."
  type        = string
}

variable "subnetwork" {
  description = "Subnetwork id (in var.region) the instances join."
  type        = string
}

variable "machine_type" {
  description = "Machine type of the instances."
  type        = string
  default     = "e2-small"
}

variable "source_image" {
  description = "Boot image; the startup script expects Debian or Ubuntu (apt, systemd, python3)."
  type        = string
  default     = "debian-cloud/debian-12"
}

variable "health_path" {
  description = "Path the health check requests; the app answers 200 there when healthy."
  type        = string
  default     = "/healthz"

  validation {
    condition     = startswith(var.health_path, "/")
    error_message = "health_path must start with '/'."
  }
}

variable "draining_timeout_seconds" {
  description = "Connection draining on the backend service: how long a detached group keeps serving its open requests."
  type        = number
  default     = 60

  validation {
    condition     = var.draining_timeout_seconds >= 0 && var.draining_timeout_seconds <= 3600
    error_message = "draining_timeout_seconds must be between 0 and 3600."
  }
}

variable "domains" {
  description = "Domains for a Google-managed certificate. Empty: plain HTTP on the address (fine for a first try; use HTTPS for anything real)."
  type        = list(string)
  default     = []
}

variable "artifact_bucket" {
  description = "Bucket holding release artifacts under <app>/; the instances may read only that prefix."
  type        = string
}

variable "app_port" {
  description = "Port the app listens on behind nginx (PORT)."
  type        = number
  default     = 8080
}
