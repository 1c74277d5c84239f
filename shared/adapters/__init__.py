"""Adapters: the ports implemented on Google Cloud (Firestore, Compute Engine, Pub/Sub)."""
