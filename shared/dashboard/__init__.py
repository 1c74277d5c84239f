"""The release dashboard: HTML rendering and its static assets (no build step)."""
