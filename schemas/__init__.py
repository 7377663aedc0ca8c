"""The bottom layer: settings, the database engine, tables, state machines, task payloads,
migrations. Imports nothing from `nlphub`, `tasks`, `scheduler` or `workers`."""
