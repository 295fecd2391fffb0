//! Keeping the email provider's name out of what the owner reads, without ever
//! touching a name.
//!
//! The owner must not see the provider's name in prose. But names are shown exactly,
//! because the owner enters them at a DNS host: the provider's DKIM selector is part
//! of a record's name (`resend._domainkey`), and a domain may hold the same letters
//! (`weresend.com`). A filter over whole texts rewrote both, so each kind of text the
//! page shows is treated by where it comes from:
//!
//! | text | written by | shown |
//! |---|---|---|
//! | diagnosis messages | the core's DNS verdicts | as written: the core's words never name the provider (the core does not know which one it is), and every name in them must stay exact; the record, its host and what was seen also come as fields |
//! | pre-flight warnings (notes, timeline) | the core | as written, for the same reasons |
//! | next steps, propagation notes, timeline titles | the gateway | our own words |
//! | failure reasons | the core, quoting an operator's reason or the provider's refusal | through [`without_provider`], with the domain's names kept |
//! | messages of a refused command | the core, quoting what the owner typed | through [`without_provider`], with the names typed and normalised kept |
//! | the provider's verification status (timeline) | the provider | our own words keyed by the status ([`provider_status_words`]) |

use email_domain_events::records::DnsRecord;

/// The provider's name as it appears in its own words (compared in any case).
const PROVIDER: &str = "resend";
/// What the owner reads instead.
const NEUTRAL: &str = "the email provider";

/// Names that reach the owner exactly, whatever text they stand in: the domain
/// (ASCII and Unicode), record names and hosts, values, what DNS answered.
#[derive(Debug, Clone, Default)]
pub struct Keep(Vec<String>);

impl Keep {
    /// Nothing kept yet.
    pub fn new() -> Self {
        Keep(Vec::new())
    }

    /// Keeps `name` (ignored when empty). Longer names are tried first, so a record
    /// name wins over the domain at its end.
    pub fn name(mut self, name: &str) -> Self {
        let name = name.trim();
        if !name.is_empty() && !self.0.iter().any(|k| k == name) {
            self.0.push(name.to_string());
            self.0.sort_by_key(|k| std::cmp::Reverse(k.len()));
        }
        self
    }

    /// Keeps a domain in its ASCII form and in the Unicode form people read.
    pub fn domain(self, domain: &str) -> Self {
        let unicode = crate::view::unicode_domain(domain);
        self.name(domain).name(&unicode)
    }

    /// Keeps every name and value of `records` (of the zone `zone`), and what DNS
    /// answered for them.
    pub fn records(mut self, zone: &str, records: &[DnsRecord]) -> Self {
        for r in records {
            self = self
                .name(&r.name)
                .name(&crate::view::relative_host(&r.name, zone))
                .name(&r.value);
            for o in &r.observed {
                self = self.name(o);
            }
            if let Some(d) = &r.diagnosis {
                self = self.name(&d.record).name(&d.host);
            }
        }
        self
    }

    /// The length of the longest kept name at byte `at` of `text` that ends where a
    /// word ends (so a short kept host like `send` never shields a longer word).
    fn at(&self, text: &str, at: usize) -> Option<usize> {
        self.0
            .iter()
            .find(|k| {
                text.get(at..at + k.len())
                    .is_some_and(|s| s.eq_ignore_ascii_case(k))
                    && word_ends(text, at + k.len())
            })
            .map(String::len)
    }
}

/// Characters of a host name: a "word" below is a run of these.
fn host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')
}

/// A word ends at `i`: the text ends, or the next character is not a host name's,
/// or it is a full stop ending the sentence.
fn word_ends(text: &str, i: usize) -> bool {
    let mut rest = text[i..].chars();
    match rest.next() {
        None => true,
        Some('.') => !rest.next().is_some_and(host_char),
        Some(c) => !host_char(c),
    }
}

/// The word starting at byte `at`: host name characters, without a full stop that
/// ends the sentence.
fn word_at(text: &str, at: usize) -> &str {
    let len = text[at..]
        .find(|c: char| !host_char(c))
        .unwrap_or(text.len() - at);
    text[at..at + len].trim_end_matches('.')
}

/// The provider's word: a label that starts with its name (`Resend`, `RESEND`,
/// `api.resend.com`, `ResendError`), not a word that merely holds the letters
/// (`weresend.com`).
fn is_providers(word: &str) -> bool {
    word.split('.').any(|label| {
        label
            .get(..PROVIDER.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(PROVIDER))
    })
}

/// The neutral words, capitalised where they begin a sentence.
fn neutral(before: &str) -> &'static str {
    let before = before.trim_end();
    if before.is_empty() || before.ends_with(['.', '!', '?']) {
        "The email provider"
    } else {
        NEUTRAL
    }
}

/// What starts at a word's first character.
enum Word {
    /// A kept name of this many bytes: copied exactly.
    Kept(usize),
    /// A word of the provider's of this many bytes: replaced.
    Providers(usize),
    /// Any other word of this many bytes: copied.
    Other(usize),
}

fn word(text: &str, at: usize, keep: &Keep) -> Word {
    if let Some(len) = keep.at(text, at) {
        return Word::Kept(len);
    }
    let w = word_at(text, at);
    if is_providers(w) {
        Word::Providers(w.len())
    } else {
        Word::Other(w.len())
    }
}

/// `text` with every word of the provider's (its name, its host names) replaced by
/// neutral words. Kept names are copied exactly, and so is every other word: a
/// domain that merely holds the provider's letters stays as it is.
pub fn without_provider(text: &str, keep: &Keep) -> String {
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while let Some(c) = text[i..].chars().next() {
        let word_start = i == 0 || !text[..i].ends_with(host_char);
        match word_start.then(|| word(text, i, keep)) {
            Some(Word::Providers(len)) => {
                out.push_str(neutral(&out));
                i += len;
            }
            Some(Word::Kept(len) | Word::Other(len)) if len > 0 => {
                out.push_str(&text[i..i + len]);
                i += len;
            }
            _ => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// The provider's verification status in our own words (the provider's word itself
/// is never shown: an unknown one could be anything).
pub fn provider_status_words(status: &str) -> &'static str {
    match status {
        "not_started" => "verification not started yet",
        "pending" => "verification in progress",
        "verified" => "verified",
        "failed" => "verification failed",
        "partially_verified" => "some records verified, others still in progress",
        "partially_failed" => "some records could not be verified",
        "temporary_failure" => "a temporary problem; verification will be retried",
        "not_found" => "the domain is not set up for sending yet",
        _ => "verification in progress",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keep(names: &[&str]) -> Keep {
        names.iter().fold(Keep::new(), |k, n| k.name(n))
    }

    #[test]
    fn the_providers_name_in_prose_is_replaced_in_any_case() {
        assert_eq!(
            without_provider(
                "Resend said no; RESEND again, resend's rules.",
                &Keep::new()
            ),
            "The email provider said no; the email provider again, the email provider's rules."
        );
    }

    #[test]
    fn the_providers_own_host_names_and_identifiers_are_replaced_whole() {
        assert_eq!(
            without_provider(
                "api.resend.com answered ResendError: try later.",
                &Keep::new()
            ),
            "The email provider answered the email provider: try later."
        );
    }

    #[test]
    fn a_domain_that_merely_holds_the_letters_is_left_as_it_is() {
        assert_eq!(
            without_provider("Resend refused weresend.test.", &Keep::new()),
            "The email provider refused weresend.test."
        );
    }

    #[test]
    fn kept_names_are_copied_exactly_even_when_they_start_with_the_providers_name() {
        let k = keep(&["resend._domainkey.weresend.test", "resend._domainkey"]);
        assert_eq!(
            without_provider(
                "Resend found a CNAME at RESEND._domainkey.weresend.test; delete `resend._domainkey`.",
                &k
            ),
            "The email provider found a CNAME at RESEND._domainkey.weresend.test; delete `resend._domainkey`."
        );
    }

    #[test]
    fn a_short_kept_name_inside_a_longer_word_does_not_shield_the_provider() {
        let k = keep(&["send", "re"]);
        assert_eq!(
            without_provider("resend.com and send", &k),
            "The email provider and send"
        );
    }

    #[test]
    fn unicode_text_and_kept_unicode_names_pass_through() {
        let k = Keep::new().domain("xn--bcher-shop-9db.test");
        assert_eq!(
            without_provider("Résumé: Resend refused bücher-shop.test – sorry", &k),
            "Résumé: the email provider refused bücher-shop.test – sorry"
        );
    }

    #[test]
    fn an_unknown_provider_status_is_not_shown_as_the_provider_wrote_it() {
        assert_eq!(
            provider_status_words("resend_internal_state"),
            "verification in progress"
        );
        assert_eq!(provider_status_words("pending"), "verification in progress");
    }
}
