"""The service layer: one module per pipeline step, driving the domain through the ports."""
