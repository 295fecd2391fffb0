//! dns-check
