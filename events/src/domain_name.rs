//! Domain names a tenant may send from: parse, don't validate.
//!
//! A [`DomainName`] can only be built valid: lower-case ASCII (IDNs as punycode
//! A-labels, mapped by UTS #46 non-transitional), no trailing dot, a registrable
//! name (not a public suffix itself, not special-use, not reserved by the platform).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A validated, normalised domain name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DomainName(String);

/// Why a name was refused. Every variant maps to a contract rejection code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NameProblem {
    Empty,
    Syntax,
    TooLong,
    LabelTooLong,
    IpLiteral,
    SingleLabel,
    PublicSuffix,
    Underscore,
    SpecialUse,
    Reserved,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NameRejection {
    pub problem: NameProblem,
    pub message: String,
}

impl NameRejection {
    fn new(problem: NameProblem, message: impl Into<String>) -> Self {
        NameRejection {
            problem,
            message: message.into(),
        }
    }

    /// The contract's rejection code: `reserved_domain` or `invalid_domain`.
    pub fn code(&self) -> &'static str {
        match self.problem {
            NameProblem::Reserved => "reserved_domain",
            _ => "invalid_domain",
        }
    }
}

/// Special-use names that can never send mail (RFC 6761). `.test` is deliberately
/// absent: test set-ups register names under it, and so is `.example`, which the
/// contract itself uses in its examples.
const SPECIAL_USE: &[&str] = &["invalid", "localhost", "local", "onion", "arpa"];

/// Domains (and their subdomains) no tenant may register, e.g. the platform's own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReservedDomains(Vec<String>);

impl ReservedDomains {
    /// The list in its `RESERVED_DOMAINS` form (comma-separated).
    pub fn to_env(&self) -> String {
        self.0.join(",")
    }

    /// From the `RESERVED_DOMAINS` form: comma-separated, any case, optional trailing dots.
    /// Entries that are not valid names are kept in their lower-case form; they still match.
    pub fn parse(list: &str) -> Self {
        let mut names: Vec<String> = list
            .split(',')
            .map(|s| s.trim().trim_end_matches('.'))
            .filter(|s| !s.is_empty())
            .map(|s| idna::domain_to_ascii(s).unwrap_or_else(|_| s.to_ascii_lowercase()))
            .collect();
        names.sort();
        names.dedup();
        ReservedDomains(names)
    }

    pub fn covers(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|r| {
                name == r.as_str()
                    || name
                        .strip_suffix(r.as_str())
                        .is_some_and(|p| p.ends_with('.'))
            })
            .map(String::as_str)
    }
}

impl DomainName {
    /// Parses what a tenant typed, with the platform's reserved list.
    pub fn parse(input: &str, reserved: &ReservedDomains) -> Result<Self, NameRejection> {
        let trimmed = input.trim();
        let without_dot = trimmed.strip_suffix('.').unwrap_or(trimmed);
        if without_dot.is_empty() {
            return Err(NameRejection::new(
                NameProblem::Empty,
                "the domain is empty",
            ));
        }
        if without_dot.ends_with('.') || without_dot.starts_with('.') || without_dot.contains("..")
        {
            return Err(NameRejection::new(
                NameProblem::Syntax,
                format!("`{input}` has an empty label (two dots in a row, or a leading dot)"),
            ));
        }
        let bare = without_dot.trim_start_matches('[').trim_end_matches(']');
        if bare.parse::<std::net::IpAddr>().is_ok() || looks_like_ipv4(bare) {
            return Err(NameRejection::new(
                NameProblem::IpLiteral,
                format!("`{input}` is an IP address; mail is sent from a domain name"),
            ));
        }
        if without_dot.contains('_') {
            return Err(NameRejection::new(
                NameProblem::Underscore,
                format!("`{input}` contains an underscore, which a host name may not"),
            ));
        }
        let ascii = idna::domain_to_ascii(without_dot).map_err(|_| {
            NameRejection::new(
                NameProblem::Syntax,
                format!("`{input}` is not a valid host name (letters, digits and hyphens, separated by dots)"),
            )
        })?;
        // Lengths first, so the message can say which limit; then STD3 characters.
        if ascii.len() > 253 {
            return Err(NameRejection::new(
                NameProblem::TooLong,
                format!(
                    "the domain is {} characters long; the limit is 253",
                    ascii.len()
                ),
            ));
        }
        if let Some(label) = ascii.split('.').find(|l| l.len() > 63) {
            return Err(NameRejection::new(
                NameProblem::LabelTooLong,
                format!(
                    "the label `{label}` is {} characters long; the limit is 63",
                    label.len()
                ),
            ));
        }
        if !ascii
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        {
            return Err(NameRejection::new(
                NameProblem::Syntax,
                format!("`{input}` is not a valid host name (letters, digits and hyphens, separated by dots)"),
            ));
        }
        if ascii
            .split('.')
            .any(|l| l.is_empty() || l.starts_with('-') || l.ends_with('-'))
        {
            return Err(NameRejection::new(
                NameProblem::Syntax,
                format!("`{input}` has a label that starts or ends with a hyphen"),
            ));
        }
        if !ascii.contains('.') {
            return Err(NameRejection::new(
                NameProblem::SingleLabel,
                format!("`{ascii}` is a single label; register a domain such as `{ascii}.com`"),
            ));
        }
        if let Some(tld) = SPECIAL_USE
            .iter()
            .find(|s| ascii == **s || ascii.ends_with(&format!(".{s}")))
        {
            return Err(NameRejection::new(
                NameProblem::SpecialUse,
                format!("names under `.{tld}` are special-use and can never receive or send mail"),
            ));
        }
        if is_public_suffix(&ascii) {
            return Err(NameRejection::new(
                NameProblem::PublicSuffix,
                format!(
                    "`{ascii}` is a public suffix shared by many owners; register a name under it"
                ),
            ));
        }
        if let Some(r) = reserved.covers(&ascii) {
            return Err(NameRejection::new(
                NameProblem::Reserved,
                format!("`{ascii}` is reserved by the platform (`{r}`)"),
            ));
        }
        Ok(DomainName(ascii))
    }

    /// A name already normalised (read back from our own event log).
    pub fn from_trusted(name: impl Into<String>) -> Self {
        DomainName(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn looks_like_ipv4(s: &str) -> bool {
    let parts: Vec<&str> = s.split('.').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 3 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// True when `name` is itself a suffix of the Public Suffix List (ICANN and private
/// sections), such as `co.uk` or `github.io`.
fn is_public_suffix(name: &str) -> bool {
    match psl::suffix(name.as_bytes()) {
        // Names under an unknown TLD (`.test`) hit the implicit `*` rule: the TLD alone
        // is the suffix, which the single-label check already refused.
        Some(suffix) => suffix.as_bytes() == name.as_bytes(),
        None => false,
    }
}

impl fmt::Display for DomainName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for DomainName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(DomainName)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<DomainName, NameProblem> {
        DomainName::parse(
            s,
            &ReservedDomains::parse("platform.example.com, Mail.Platform.io."),
        )
        .map_err(|e| e.problem)
    }

    #[test]
    fn names_are_normalised_to_lower_case_ascii_without_trailing_dot() {
        assert_eq!(parse("Acme.COM.").unwrap().as_str(), "acme.com");
        assert_eq!(parse("  mail.acme.com ").unwrap().as_str(), "mail.acme.com");
    }

    #[test]
    fn unicode_names_become_punycode_a_labels() {
        assert_eq!(parse("bücher.de").unwrap().as_str(), "xn--bcher-kva.de");
        // UTS #46 non-transitional: ß stays ß (xn--), it is not mapped to "ss".
        assert_eq!(parse("faß.de").unwrap().as_str(), "xn--fa-hia.de");
    }

    #[test]
    fn names_under_test_are_ordinary_names() {
        assert!(parse("acme.test").is_ok());
    }

    #[test]
    fn each_rejection_reason_is_named() {
        assert_eq!(parse(""), Err(NameProblem::Empty));
        assert_eq!(parse("."), Err(NameProblem::Empty));
        assert_eq!(parse("acme..com"), Err(NameProblem::Syntax));
        assert_eq!(parse("ac me.com"), Err(NameProblem::Syntax));
        assert_eq!(parse("-acme.com"), Err(NameProblem::Syntax));
        assert_eq!(parse("acme!.com"), Err(NameProblem::Syntax));
        assert_eq!(
            parse(&format!("{}.com", "a".repeat(64))),
            Err(NameProblem::LabelTooLong)
        );
        let long = vec!["abcdefghij"; 25].join(".") + ".com";
        assert_eq!(parse(&long), Err(NameProblem::TooLong));
        assert_eq!(parse("192.168.1.10"), Err(NameProblem::IpLiteral));
        assert_eq!(parse("[2001:db8::1]"), Err(NameProblem::IpLiteral));
        assert_eq!(parse("::1"), Err(NameProblem::IpLiteral));
        assert_eq!(parse("localhost"), Err(NameProblem::SingleLabel));
        assert_eq!(parse("acme"), Err(NameProblem::SingleLabel));
        assert_eq!(parse("co.uk"), Err(NameProblem::PublicSuffix));
        assert_eq!(
            parse("github.io"),
            Err(NameProblem::PublicSuffix),
            "private section counts"
        );
        assert_eq!(parse("_dmarc.acme.com"), Err(NameProblem::Underscore));
        assert_eq!(parse("acme.invalid"), Err(NameProblem::SpecialUse));
        assert_eq!(parse("host.localhost"), Err(NameProblem::SpecialUse));
        assert_eq!(parse("printer.local"), Err(NameProblem::SpecialUse));
        assert_eq!(parse("platform.example.com"), Err(NameProblem::Reserved));
        assert!(parse("acme.example").is_ok());
        assert_eq!(parse("mail.platform.io"), Err(NameProblem::Reserved));
        assert_eq!(parse("eu.mail.platform.io"), Err(NameProblem::Reserved));
    }

    #[test]
    fn a_registrable_name_under_a_public_suffix_is_fine() {
        assert!(parse("acme.co.uk").is_ok());
        assert!(parse("acme.github.io").is_ok());
        assert!(
            parse("mail.acme.com").is_ok(),
            "a subdomain is a name of its own"
        );
        assert!(
            parse("notplatform.io").is_ok(),
            "reserved covers subdomains, not look-alikes"
        );
    }

    #[test]
    fn rejection_codes_follow_the_contract() {
        let reserved = ReservedDomains::parse("platform.io");
        let err = DomainName::parse("x.platform.io", &reserved).unwrap_err();
        assert_eq!(err.code(), "reserved_domain");
        let err = DomainName::parse("co.uk", &reserved).unwrap_err();
        assert_eq!(err.code(), "invalid_domain");
    }
}
