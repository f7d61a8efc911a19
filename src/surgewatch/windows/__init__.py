"""Event-time windows: window arithmetic, watermarks, and the counting store that closes windows."""
