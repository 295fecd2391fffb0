//! provider-worker
