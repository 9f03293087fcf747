//! The tokio server: listeners, connections, command dispatch, signals.
