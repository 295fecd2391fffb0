//! svc-runtime
