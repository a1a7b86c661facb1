"""Control plane: HTTP endpoints, metrics, systemd integration, admin API."""
