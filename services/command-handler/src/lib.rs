//! command-handler
