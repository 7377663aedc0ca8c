"""The Spark NLP Models Hub: its protocol, catalogs, licences, downloads and updates.

Pure (no database, broker or network; `lint-imports` checks it): `metadata` (metadata.json
entries) and `licence`. With the database and the network: `catalog` and `sync` (reading hubs),
`service` (requests), `fetch` and `install` (downloads), `updates`, `defaults`; `mirror` and
`server` build and serve mirrors for air-gapped sites and tests.
"""
