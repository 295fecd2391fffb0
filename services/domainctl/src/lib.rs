//! domainctl
