"""Prometheus metrics read from Postgres (`queries`, bounded) and exposed by a
prometheus-client collector (`collector`); `nlphub metrics serve` serves them."""
