//! Turning Resend's record list into provider-neutral records.
//!
//! Resend names records relative to the domain (`send`, `resend._domainkey`) and tags
//! them by use (`SPF`, `DKIM`, `Receiving`, `Tracking`). The rest of the service wants
//! full names and a purpose, and must never be asked to publish an inbound MX.

/// Lower case, no surrounding white space, no trailing dot.
pub(crate) fn normalize_name(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// The full name of a record given relative to `domain`.
///
/// `@` or an empty name is the apex; a name that already ends with the domain is kept.
pub(crate) fn full_record_name(relative: &str, domain: &str) -> String {
    let domain = normalize_name(domain);
    let name = normalize_name(relative);
    if name.is_empty() || name == "@" {
        return domain;
    }
    if name == domain || name.ends_with(&format!(".{domain}")) {
        return name;
    }
    format!("{name}.{domain}")
}

/// The purpose of a record, or `None` when the record must not be handed on (inbound
/// mail records, any MX at the apex).
pub(crate) fn record_purpose(
    tag: Option<&str>,
    record_type: &str,
    full_name: &str,
    domain: &str,
    value: &str,
) -> Option<String> {
    let tag = tag
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let record_type = record_type.to_ascii_uppercase();
    if tag == "receiving" {
        return None;
    }
    if record_type == "MX" && full_name == normalize_name(domain) {
        return None;
    }
    let purpose = match (tag.as_str(), record_type.as_str()) {
        ("spf", "MX") => "return_path",
        ("spf", _) => "spf",
        ("dkim", _) => "dkim",
        ("tracking", _) => "tracking",
        ("", "CNAME") => "tracking",
        // No tag at all: infer from the record itself rather than dropping it.
        ("", "MX") => "return_path",
        ("", "TXT") if value.trim().to_ascii_lowercase().starts_with("v=spf1") => "spf",
        ("", "TXT") if full_name.contains("._domainkey.") => "dkim",
        ("", "TXT") if full_name.starts_with("_dmarc.") => "dmarc",
        ("", _) => "unknown",
        (other, _) => other,
    };
    Some(purpose.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_names_get_the_domain_appended() {
        assert_eq!(full_record_name("send", "Example.COM."), "send.example.com");
        assert_eq!(
            full_record_name("resend._domainkey", "example.com"),
            "resend._domainkey.example.com"
        );
    }

    #[test]
    fn full_names_apex_and_trailing_dots_are_kept_once() {
        assert_eq!(
            full_record_name("SEND.example.com.", "example.com"),
            "send.example.com"
        );
        assert_eq!(full_record_name("@", "example.com"), "example.com");
        assert_eq!(full_record_name("", "example.com"), "example.com");
        assert_eq!(
            full_record_name("example.com", "example.com"),
            "example.com"
        );
        // Only a whole label suffix counts as "already full".
        assert_eq!(
            full_record_name("notexample.com", "example.com"),
            "notexample.com.example.com"
        );
    }

    #[test]
    fn purposes_follow_resend_tags_and_types() {
        let p = |tag, ty, name| record_purpose(tag, ty, name, "example.com", "x");
        assert_eq!(
            p(Some("SPF"), "MX", "send.example.com").as_deref(),
            Some("return_path")
        );
        assert_eq!(
            p(Some("SPF"), "TXT", "send.example.com").as_deref(),
            Some("spf")
        );
        assert_eq!(
            p(Some("DKIM"), "TXT", "r._domainkey.example.com").as_deref(),
            Some("dkim")
        );
        assert_eq!(
            p(Some("DKIM"), "CNAME", "r._domainkey.example.com").as_deref(),
            Some("dkim")
        );
        assert_eq!(
            p(Some("Tracking"), "CNAME", "links.example.com").as_deref(),
            Some("tracking")
        );
        assert_eq!(
            p(None, "CNAME", "links.example.com").as_deref(),
            Some("tracking")
        );
        assert_eq!(
            p(Some("TrackingCAA"), "CAA", "links.example.com").as_deref(),
            Some("trackingcaa")
        );
    }

    #[test]
    fn receiving_records_and_apex_mx_are_dropped() {
        assert_eq!(
            record_purpose(Some("Receiving"), "MX", "example.com", "example.com", "x"),
            None
        );
        assert_eq!(
            record_purpose(Some("SPF"), "MX", "example.com", "example.com", "x"),
            None
        );
        assert_eq!(
            record_purpose(None, "MX", "example.com", "example.com", "x"),
            None
        );
    }

    #[test]
    fn untagged_txt_records_are_inferred() {
        let p = |name, value| record_purpose(None, "TXT", name, "example.com", value);
        assert_eq!(p("example.com", "v=spf1 -all").as_deref(), Some("spf"));
        assert_eq!(
            p("s1._domainkey.example.com", "p=abc").as_deref(),
            Some("dkim")
        );
        assert_eq!(
            p("_dmarc.example.com", "v=DMARC1; p=none").as_deref(),
            Some("dmarc")
        );
    }
}
