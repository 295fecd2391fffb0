//! testdns
