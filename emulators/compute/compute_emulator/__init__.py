"""A local Compute Engine: the subset of the v1 REST API the release pipeline uses.

Instances are real processes running a release artifact's `web:` command; backend services are
real HTTP load balancers that route only to healthy, attached instances and drain on detach.
"""
