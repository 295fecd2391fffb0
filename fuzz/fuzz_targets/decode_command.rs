//! `email_domain_events::command::decode` on arbitrary bytes: it never panics, and it
//! answers either a command or one of the contract's dead-letter reasons (or
//! `invalid_command`). The first byte picks the subject's type token.
#![no_main]

use email_domain_events::command::{decode, MAX_COMMAND_BYTES};
use libfuzzer_sys::fuzz_target;

const TOKENS: &[&str] = &[
    "register_domain",
    "dns_configured",
    "refresh_status",
    "delete_domain",
    "recheck",
    "provider_result",
    "fail_domain",
    "transfer_domain",
];

const REASONS: &[&str] = &[
    "unreadable_json",
    "not_an_object",
    "missing_command_id",
    "unknown_command",
    "too_large",
    "invalid_command",
];

fuzz_target!(|data: &[u8]| {
    let (token, body) = match data.split_first() {
        Some((b, rest)) => (TOKENS[*b as usize % TOKENS.len()], rest),
        None => ("register_domain", data),
    };
    match decode(token, body) {
        Ok(c) => {
            assert!(body.len() <= MAX_COMMAND_BYTES);
            assert_eq!(c.command_type.as_str(), token);
            let again = decode(token, &serde_json::to_vec(&c.to_body()).unwrap());
            assert_eq!(
                again.as_ref(),
                Ok(&c),
                "a decoded command reads back the same"
            );
        }
        Err(f) => {
            assert!(
                REASONS.contains(&f.dead_letter_reason),
                "{}",
                f.dead_letter_reason
            );
            assert!(!f.error.is_empty());
            assert_eq!(
                f.dead_letter_reason == "too_large",
                body.len() > MAX_COMMAND_BYTES
            );
            if f.command_id.is_some() {
                assert!(matches!(
                    f.dead_letter_reason,
                    "invalid_command" | "unknown_command"
                ));
            }
        }
    }
});
