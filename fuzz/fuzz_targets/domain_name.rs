//! `DomainName::parse` on arbitrary strings: it never panics; what it accepts is
//! lower-case ASCII, without a trailing dot, at most 253 characters, and parsing it
//! again gives the same name.
#![no_main]

use email_domain_events::{DomainName, ReservedDomains};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &str| {
    let reserved = ReservedDomains::parse("platform.example.com");
    if let Ok(name) = DomainName::parse(input, &reserved) {
        let s = name.as_str();
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'),
            "{input:?} → {s:?}"
        );
        assert!(!s.ends_with('.'), "{input:?} → {s:?}");
        assert!(s.len() <= 253, "{input:?} → {} chars", s.len());
        let again = DomainName::parse(s, &reserved).expect("a parsed name parses again");
        assert_eq!(again.as_str(), s, "idempotent for {input:?}");
    }
});
