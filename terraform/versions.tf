terraform {
  required_version = ">= 1.6, < 2.0"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.10, < 7.0"
    }
  }

  # Remote state in Cloud Storage. The bucket is not a variable on purpose: backends are
  # configured before variables exist, so it is passed at init time:
  #   terraform init -backend-config="bucket=<state bucket>"
  backend "gcs" {
    prefix = "release-pipeline"
  }
}

provider "google" {
  project = var.project_id
  region  = var.region

  default_labels = merge(var.labels, { "managed-by" = "terraform", "system" = "release-pipeline" })
}
