"""The Faust worker: app, topics, agents and web server around the pure ingest and window code."""
