//! What receiving mail servers do with the exact bytes of a published SPF, DKIM or
//! DMARC record.
//!
//! [`crate::verdict`] compares a published record with the expected one *by
//! meaning*: letter case, white space, surrounding quotes and tag order are
//! normalised away, so that it can tell which record the owner meant and what to
//! say about it. Receivers are not that forgiving. They read the bytes the DNS
//! serves (a TXT record's strings concatenated without a separator: RFC 7208 §3.3,
//! RFC 6376 §3.6.2.2, RFC 7489 §6.6.3), and a record that breaks one of the rules
//! below is ignored or makes the check fail. So a record is `found` only when it
//! matches by meaning *and* [`check`] accepts its bytes; otherwise the verdict is
//! `value_mismatch` with the rule's reason and the value to enter instead.
//!
//! | Rule | Source | What receivers do | Our verdict |
//! |---|---|---|---|
//! | [`Rule::LiteralQuotes`]: no quote characters in the value | RFC 1035 §5.1 (quotes delimit a string in a zone file; a web form stores them as text) | the value no longer starts with `v=`, or its tag names and key are wrong: the record is not recognised | `value_mismatch`: the value without the quotes |
//! | a TXT record's strings are joined without a separator | RFC 7208 §3.3, RFC 6376 §3.6.2.2, RFC 1035 §3.3.14 | `"v=spf1 include:x.com" "~all"` is `include:x.com~all` to them | compared joined; when a space where two strings meet would make it the expected record, `value_mismatch` saying so ([`glued_message`]) |
//! | [`Rule::SpfVersion`]: starts with `v=spf1` followed by a space or the end (any case) | RFC 7208 §4.5 | any other TXT record is discarded: no SPF record at all | `value_mismatch` |
//! | [`Rule::SpfSeparator`]: terms separated by spaces only | RFC 7208 §12 (`1*SP`) | a tab or a non-breaking space glues two terms into one unknown term: permerror | `value_mismatch` |
//! | [`Rule::SpfTerm`]: every mechanism known, with a valid domain, address or prefix length | RFC 7208 §5, §4.6.1, §12 | permerror | `value_mismatch` |
//! | [`Rule::SpfDuplicateModifier`]: `redirect=` and `exp=` at most once each | RFC 7208 §6 | permerror | `value_mismatch` |
//! | [`Rule::SpfLookupLimit`]: at most 10 DNS-querying terms (`include`, `a`, `mx`, `ptr`, `exists`, `redirect`) in the record itself | RFC 7208 §4.6.4 | permerror (nested `include:`s count too; pre-flight counts those, this rule only sees the record) | `value_mismatch` |
//! | exactly one SPF record at the name | RFC 7208 §4.5 | permerror | `multiple_spf_records` (in `verdict`) |
//! | [`Rule::TagListSyntax`]: `name=value` pairs separated by `;` (one trailing `;` allowed), names `ALPHA *(ALPHA / DIGIT / "_")`, values printable ASCII with folding white space (space, tab, CR, LF) | RFC 6376 §3.2; DMARC uses the same syntax (RFC 7489 §6.3, §6.4) | the record is invalid (dkimpy raises on an empty tag or a tag without `=`; a non-breaking space pasted into a value is not white space to them) | `value_mismatch` |
//! | [`Rule::DuplicateTag`]: no tag twice | RFC 6376 §3.2 ("the entire tag-list is invalid") | the record is invalid | `value_mismatch` |
//! | [`Rule::DkimVersion`]: `v=`, when present, is the first tag and exactly `DKIM1` | RFC 6376 §3.6.1 | the key record is discarded (OpenDKIM compares `DKIM1` case-sensitively) | `value_mismatch` |
//! | [`Rule::DkimKey`]: `p=` present (tag names are case-sensitive: `P=` is an unknown tag), not empty (empty means revoked), base64 with folding white space, correctly padded | RFC 6376 §3.2, §3.6.1 | no key, a revoked key or one that cannot be decoded: the signature fails | `value_mismatch` |
//! | [`Rule::DkimKeyType`]: `k=` is `rsa` or `ed25519` | RFC 6376 §3.6.1, RFC 8463 | unknown key type: the signature fails | `value_mismatch` |
//! | [`Rule::DkimHash`]: `h=`, when present, includes `sha256` | RFC 6376 §3.6.1, RFC 8301 (sha1 no longer accepted) | the key cannot verify today's signatures | `value_mismatch` |
//! | [`Rule::DkimService`]: `s=`, when present, includes `email` or `*` | RFC 6376 §3.6.1 | the key is not for email | `value_mismatch` |
//! | `t=` flags, unknown tags, tag names in another case (`K=`) | RFC 6376 §3.2, §3.6.1 | ignored | accepted |
//! | one TXT record at a DKIM selector | RFC 6376 §3.6.2.2 ("the results are undefined"; OpenDKIM: "multiple keys found") | verification may fail | `duplicate_records` (in `verdict`), even for an equivalent copy |
//! | [`Rule::DmarcVersion`]: starts with exactly `v=DMARC1` (lower-case `v`, upper-case `DMARC1`), then `;`, a space or the end; tags separated by `;` | RFC 7489 §6.3 ("MUST be the first tag"), §6.4 (`%x44 %x4d %x41 %x52 %x43 %x31` is case-sensitive), §6.6.3 step 3 | any other TXT record at `_dmarc` is discarded. Stricter than the ABNF for `V=` and white space around `=`: receivers commonly test the literal prefix, and the fix costs the owner nothing | `value_mismatch` |
//! | [`Rule::DmarcPolicy`]: `p=` present and `none`, `quarantine` or `reject` (any case); `sp=` and `np=` likewise | RFC 7489 §6.3, §6.6.3 step 6, RFC 9091 | no valid policy: no DMARC, or `p=none` if `rua=` holds a valid address (a SHOULD we do not count on) | `value_mismatch` |
//! | [`Rule::DmarcTagValue`]: `adkim`/`aspf` `r` or `s`, `pct` 0 to 100, `ri` digits, `fo` from `0 1 d s`, `rf` `afrf` | RFC 7489 §6.3 | the RFC asks receivers to drop the bad tag, but OpenDMARC rejects the whole record (`DMARC_PARSE_ERROR_BAD_VALUE`) | `value_mismatch` |
//! | DMARC tag names other than `v` in another case (`P=none`), keyword values in any case (`p=Reject`) | RFC 7489 §6.4 (ABNF strings are case-insensitive) | accepted | accepted |
//! | one DMARC record at `_dmarc`, counting every TXT record that mentions `v=DMARC` | RFC 7489 §6.6.3 step 5; OpenDMARC takes the first TXT record that mentions `v=DMARC` | several: no DMARC policy at all, or whichever comes first, broken or not | `duplicate_records` (in `verdict`) |
//!
//! Pure, like the rest of the core: the bytes come in as an argument.

use crate::preflight::SPF_LOOKUP_LIMIT;

/// The record families whose bytes receivers parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Spf,
    Dkim,
    Dmarc,
}

/// The rule a record breaks (see the table in the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    LiteralQuotes,
    SpfVersion,
    SpfSeparator,
    SpfTerm,
    SpfDuplicateModifier,
    SpfLookupLimit,
    TagListSyntax,
    DuplicateTag,
    DkimVersion,
    DkimKey,
    DkimKeyType,
    DkimHash,
    DkimService,
    DmarcVersion,
    DmarcPolicy,
    DmarcTagValue,
}

/// Why receivers would not use a record: the rule, and a sentence for the owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub rule: Rule,
    /// One or two sentences: what is wrong and what receivers then do.
    pub reason: String,
}

fn reject<T>(rule: Rule, reason: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection {
        rule,
        reason: reason.into(),
    })
}

/// Whether receivers use `text` (the record's strings concatenated, as served) as a
/// record of `family`.
pub fn check(family: Family, text: &str) -> Result<(), Rejection> {
    match check_bytes(family, text) {
        // The quotes are the cause when the value is fine without them: say so, since
        // that is the one thing to change.
        Err(_) if text.contains('"') && fine_without_quotes(family, text) => {
            reject(Rule::LiteralQuotes, quotes_reason(family))
        }
        other => other,
    }
}

/// The value is accepted once the quotes typed around it (or around each of several
/// strings typed into one field, `"ab" "cd"`) are gone.
fn fine_without_quotes(family: Family, text: &str) -> bool {
    [crate::verdict::unquote(text), text.replace('"', "")]
        .iter()
        .any(|t| check_bytes(family, t).is_ok())
}

fn check_bytes(family: Family, text: &str) -> Result<(), Rejection> {
    match family {
        Family::Spf => check_spf(text),
        Family::Dkim => check_dkim(text),
        Family::Dmarc => check_dmarc(text),
    }
}

fn quotes_reason(family: Family) -> String {
    let consequence = match family {
        Family::Spf => "do not recognise it as an SPF record",
        Family::Dkim => "cannot read the key",
        Family::Dmarc => "do not recognise it as a DMARC record",
    };
    format!(
        "It contains quote characters (`\"`): your DNS host stored the quotes as part of the \
         value, and receiving mail servers read them as text, so they {consequence}."
    )
}

/// A DMARC record as the RFC has receivers find it at `_dmarc` (RFC 7489 §6.6.3
/// step 3): a TXT record that starts with exactly `v=DMARC1`.
fn is_dmarc_record(text: &str) -> bool {
    text.strip_prefix("v=DMARC1")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with([';', ' ', '\t']))
}

/// `text` with every fault this module can mend mechanically mended: quotes and
/// `\;` escapes removed, other white space made plain spaces, SPF terms single-spaced,
/// DKIM/DMARC tags separated by `;`, known tag names lower case, `v=` first and
/// spelled exactly, keyword values lower case, repeated identical tags once. The
/// caller offers it only when [`check`] accepts it and it still means the expected
/// record.
pub fn repair(family: Family, text: &str) -> String {
    // `"ab" "cd"` typed into one field means `abcd`; any other quote goes
    let plain: String = crate::verdict::unquote(text)
        .replace('"', "")
        .replace("\\;", ";")
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    match family {
        Family::Spf => repair_spf(&plain),
        Family::Dkim | Family::Dmarc => repair_tags(family, &plain),
    }
}

/// The `value_mismatch` message for a record at `name` that means the expected one
/// but is `published` so that receivers do not use it: what they do, and exactly
/// what to enter instead (`corrected`).
pub fn rejected_message(
    family: Family,
    name: &str,
    published: &str,
    why: &Rejection,
    corrected: &str,
) -> String {
    let what = match family {
        Family::Spf => "SPF record",
        Family::Dkim => "DKIM key",
        Family::Dmarc => "DMARC record",
    };
    format!(
        "The {what} at `{name}` is published as `{published}`. {} Change it to `{corrected}`.",
        why.reason
    )
}

/// The `value_mismatch` message for a record at `name` served as `strings` that
/// receivers join without a separator (RFC 7208 §3.3, RFC 6376 §3.6.2.2), so that two
/// terms run together; `spaced` is the value with a space where they meet.
pub fn glued_message(family: Family, name: &str, strings: &[String], spaced: &str) -> String {
    let what = match family {
        Family::Spf => "SPF record",
        Family::Dkim => "DKIM key",
        Family::Dmarc => "DMARC record",
    };
    let quoted = strings
        .iter()
        .map(|s| format!("\"{s}\""))
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        "The {what} at `{name}` is published as {} strings ({quoted}), which receiving mail \
         servers join without a space: `{}`. If your DNS host splits long values into strings, \
         the space must be inside a string, at the end of one. Change it to `{spaced}`.",
        strings.len(),
        strings.concat()
    )
}

/// The `duplicate_records` message when more than one of `texts` (the TXT records at
/// `name`, as served) is a DMARC record to some receiver: receivers then apply no
/// DMARC policy at all (RFC 7489 §6.6.3 step 5), or the first one they come across,
/// which may be the broken one. `keep` is the record to keep.
pub fn several_dmarc_records(name: &str, texts: &[String], keep: &str) -> Option<String> {
    let dmarcs: Vec<&String> = texts.iter().filter(|t| looks_like_dmarc(t)).collect();
    if dmarcs.len() < 2 {
        return None;
    }
    let list = dmarcs
        .iter()
        .map(|t| format!("`{t}`"))
        .collect::<Vec<_>>()
        .join(" and ");
    Some(format!(
        "`{name}` has {} DMARC records ({list}); receiving mail servers then apply no DMARC \
         policy at all. Delete all but one and keep `{keep}`.",
        dmarcs.len()
    ))
}

/// A TXT record some receiver takes for a DMARC record: OpenDMARC takes the first
/// one in the answer that mentions `v=DMARC` anywhere, whatever its case or place.
fn looks_like_dmarc(text: &str) -> bool {
    text.to_ascii_lowercase().contains("v=dmarc")
}

// ---------------------------------------------------------------------------
// characters

/// A character as the owner would name it.
fn describe(c: char) -> String {
    match c {
        ' ' => "a space".into(),
        '\t' => "a tab".into(),
        '\r' | '\n' => "a line break".into(),
        '\u{a0}' => "a non-breaking space".into(),
        '\u{200b}' => "a zero-width space".into(),
        '\u{feff}' => "an invisible byte-order mark".into(),
        '\u{fffd}' => "bytes that are not text (invalid UTF-8)".into(),
        c if c.is_whitespace() => format!("an unusual space (U+{:04X})", c as u32),
        c if c.is_control() || !c.is_ascii() => format!("the character U+{:04X}", c as u32),
        c => format!("`{c}`"),
    }
}

/// Printable ASCII but the space (`VCHAR`, RFC 5234).
fn is_vchar(c: char) -> bool {
    ('\x21'..='\x7e').contains(&c)
}

/// RFC 6376 folding white space: space, tab, CR, LF (and nothing else: a pasted
/// non-breaking space is not white space to a verifier).
fn is_fws(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

fn trim_fws(s: &str) -> &str {
    s.trim_matches(is_fws)
}

// ---------------------------------------------------------------------------
// SPF (RFC 7208)

/// What a valid SPF term contributes to the record-wide rules.
#[derive(Debug, PartialEq, Eq)]
enum SpfTerm {
    /// A mechanism that makes receivers query DNS (§4.6.4).
    Lookup,
    Redirect,
    Exp,
    Other,
}

fn check_spf(text: &str) -> Result<(), Rejection> {
    let rest = spf_after_version(text)?;
    let (mut lookups, mut redirects, mut exps) = (0, 0, 0);
    for term in rest.split(' ').filter(|t| !t.is_empty()) {
        match spf_term(term)? {
            SpfTerm::Lookup => lookups += 1,
            SpfTerm::Redirect => {
                lookups += 1;
                redirects += 1;
            }
            SpfTerm::Exp => exps += 1,
            SpfTerm::Other => {}
        }
    }
    if redirects > 1 || exps > 1 {
        let which = if redirects > 1 { "redirect=" } else { "exp=" };
        return reject(
            Rule::SpfDuplicateModifier,
            format!(
                "It has `{which}` more than once; receiving mail servers then fail SPF for all \
                 mail (permerror). Keep one."
            ),
        );
    }
    if lookups > SPF_LOOKUP_LIMIT {
        return reject(
            Rule::SpfLookupLimit,
            format!(
                "It has {lookups} terms that need DNS lookups (`include`, `a`, `mx`, `ptr`, \
                 `exists`, `redirect`), more than SPF's limit of {SPF_LOOKUP_LIMIT}; receiving \
                 mail servers then fail SPF for all mail (permerror). Remove the ones you no \
                 longer send from."
            ),
        );
    }
    Ok(())
}

/// The terms after `v=spf1`, when the record starts the way receivers demand.
fn spf_after_version(text: &str) -> Result<&str, Rejection> {
    let starts = text
        .as_bytes()
        .get(..6)
        .is_some_and(|b| b.eq_ignore_ascii_case(b"v=spf1"));
    // `v=spf1` matched as ASCII, so byte 6 is a character boundary.
    match text.get(6..) {
        Some(rest) if starts && (rest.is_empty() || rest.starts_with(' ')) => Ok(rest),
        _ => reject(Rule::SpfVersion, spf_version_reason(text)),
    }
}

fn spf_version_reason(text: &str) -> String {
    let head = text
        .as_bytes()
        .get(..6)
        .is_some_and(|b| b.eq_ignore_ascii_case(b"v=spf1"));
    // (with `head`, the first six bytes are ASCII: 6 is a character boundary)
    let next = if head { text[6..].chars().next() } else { None };
    let what = match (text.chars().next(), next) {
        (Some(c), _) if !is_vchar(c) => format!("it begins with {}", describe(c)),
        (_, Some(c)) => format!("`v=spf1` is followed by {}", describe(c)),
        _ => "it does not begin with `v=spf1`".into(),
    };
    format!(
        "Receiving mail servers read a TXT record as SPF only when it begins with exactly \
         `v=spf1` and a space, and {what}, so they ignore it."
    )
}

fn spf_term(term: &str) -> Result<SpfTerm, Rejection> {
    if let Some(c) = term.chars().find(|c| !is_vchar(*c)) {
        let rule = if c.is_whitespace() {
            Rule::SpfSeparator
        } else {
            Rule::SpfTerm
        };
        return reject(
            rule,
            format!(
                "`{term}` contains {}; SPF terms are separated by plain spaces only, and \
                 receiving mail servers fail SPF for all mail on anything else (permerror).",
                describe(c)
            ),
        );
    }
    let bad = |why: String| -> Result<SpfTerm, Rejection> {
        reject(
            Rule::SpfTerm,
            format!(
                "`{term}` is not a valid SPF term ({why}); receiving mail servers then fail SPF \
                 for all mail (permerror)."
            ),
        )
    };
    if let Some((name, value)) = spf_modifier(term) {
        return match name.to_ascii_lowercase().as_str() {
            "redirect" | "exp" if !domain_spec_ok(value) => {
                bad(format!("`{value}` is not a domain name"))
            }
            "redirect" => Ok(SpfTerm::Redirect),
            "exp" => Ok(SpfTerm::Exp),
            // unknown modifiers are ignored (§6), their value only has to be a
            // macro-string
            _ if !macros_ok(value) => bad("a `%` that starts no macro".into()),
            _ => Ok(SpfTerm::Other),
        };
    }
    let body = term.strip_prefix(['+', '-', '~', '?']).unwrap_or(term);
    let split = body.find([':', '/']).unwrap_or(body.len());
    let (name, arg) = body.split_at(split);
    match name.to_ascii_lowercase().as_str() {
        "all" if arg.is_empty() => Ok(SpfTerm::Other),
        "include" | "exists" => match arg.strip_prefix(':') {
            Some(d) if domain_spec_ok(d) => Ok(SpfTerm::Lookup),
            Some(d) => bad(format!("`{d}` is not a domain name")),
            None => bad(format!("`{name}` needs `:` and a domain")),
        },
        "a" | "mx" | "ptr" => match spf_domain_and_cidr(arg, name.eq_ignore_ascii_case("ptr")) {
            Ok(()) => Ok(SpfTerm::Lookup),
            Err(why) => bad(why),
        },
        "ip4" | "ip6" => match spf_address(name.eq_ignore_ascii_case("ip4"), arg) {
            Ok(()) => Ok(SpfTerm::Other),
            Err(why) => bad(why),
        },
        _ => bad(format!("`{name}` is not an SPF mechanism")),
    }
}

/// `name=value` when `name` is a modifier name (`ALPHA *( ALPHA / DIGIT / "-" / "_" / "." )`).
fn spf_modifier(term: &str) -> Option<(&str, &str)> {
    let (name, value) = term.split_once('=')?;
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    (first_ok && rest_ok).then_some((name, value))
}

/// The argument of `a`, `mx` (`[":" domain-spec] [dual-cidr-length]`) or `ptr`
/// (`[":" domain-spec]`).
fn spf_domain_and_cidr(arg: &str, ptr: bool) -> Result<(), String> {
    let (domain, cidr) = match arg.strip_prefix(':') {
        Some(rest) => match rest.find('/') {
            Some(i) if !ptr => (Some(&rest[..i]), &rest[i..]),
            _ => (Some(rest), ""),
        },
        None => (None, arg),
    };
    if let Some(d) = domain.filter(|d| !domain_spec_ok(d)) {
        return Err(format!("`{d}` is not a domain name"));
    }
    if cidr.is_empty() {
        return Ok(());
    }
    if ptr {
        return Err("`ptr` takes no prefix length".into());
    }
    // "/" ip4-cidr-length, "//" ip6-cidr-length, or both
    let (v4, v6) = match cidr.split_once("//") {
        Some((v4, v6)) => (v4.strip_prefix('/').or(Some(v4)), Some(v6)),
        None => (cidr.strip_prefix('/'), None),
    };
    let v4_ok = match v4 {
        Some("") => cidr.starts_with("//"),
        Some(n) => cidr_ok(n, 32),
        None => false,
    };
    let v6_ok = v6.is_none_or(|n| cidr_ok(n, 128));
    if v4_ok && v6_ok {
        Ok(())
    } else {
        Err(format!("`{cidr}` is not a prefix length"))
    }
}

/// `ip4:` / `ip6:` with an address and an optional prefix length.
fn spf_address(v4: bool, arg: &str) -> Result<(), String> {
    let Some(rest) = arg.strip_prefix(':') else {
        return Err("an address is missing after the `:`".into());
    };
    let (addr, cidr) = match rest.split_once('/') {
        Some((a, c)) => (a, Some(c)),
        None => (rest, None),
    };
    let (addr_ok, max) = if v4 {
        (addr.parse::<std::net::Ipv4Addr>().is_ok(), 32)
    } else {
        (addr.parse::<std::net::Ipv6Addr>().is_ok(), 128)
    };
    if !addr_ok {
        let family = if v4 { "IPv4" } else { "IPv6" };
        return Err(format!("`{addr}` is not an {family} address"));
    }
    match cidr {
        Some(c) if !cidr_ok(c, max) => Err(format!("`/{c}` is not a prefix length (0 to {max})")),
        _ => Ok(()),
    }
}

/// Digits without a leading zero, at most `max`.
fn cidr_ok(n: &str, max: u32) -> bool {
    !n.is_empty()
        && n.chars().all(|c| c.is_ascii_digit())
        && (n == "0" || !n.starts_with('0'))
        && n.parse::<u32>().is_ok_and(|v| v <= max)
}

/// `domain-spec` (RFC 7208 §7.1): a macro-string ending in `.` and a top label, or
/// in a macro. The top label is what a typo usually breaks (`amazonses.com,`).
fn domain_spec_ok(s: &str) -> bool {
    if s.is_empty() || !macros_ok(s) {
        return false;
    }
    if s.ends_with('}') {
        return true;
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    s.rsplit_once('.').is_some_and(|(_, top)| toplabel_ok(top))
}

/// `( *alphanum ALPHA *alphanum ) / ( 1*alphanum "-" *( alphanum / "-" ) alphanum )`.
fn toplabel_ok(l: &str) -> bool {
    !l.is_empty()
        && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !l.starts_with('-')
        && !l.ends_with('-')
        && l.chars().any(|c| c.is_ascii_alphabetic() || c == '-')
}

/// Every `%` starts a macro: `%%`, `%_`, `%-` or `%{` letter digits [`r`] delimiters `}`.
fn macros_ok(s: &str) -> bool {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            continue;
        }
        match chars.next() {
            Some('%' | '_' | '-') => {}
            Some('{') => {
                let letter = chars.next();
                if !letter.is_some_and(|l| "slodiphcrtv".contains(l.to_ascii_lowercase())) {
                    return false;
                }
                let inside: String = chars.by_ref().take_while(|c| *c != '}').collect();
                let transformers = inside.trim_start_matches(|c: char| c.is_ascii_digit());
                let delimiters = transformers
                    .strip_prefix(['r', 'R'])
                    .unwrap_or(transformers);
                if !delimiters.chars().all(|c| ".-+,/_=".contains(c)) {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

fn repair_spf(plain: &str) -> String {
    let mut terms: Vec<&str> = plain.split(' ').filter(|t| !t.is_empty()).collect();
    if terms
        .first()
        .is_some_and(|t| t.eq_ignore_ascii_case("v=spf1"))
    {
        terms[0] = "v=spf1";
    }
    terms.join(" ")
}

// ---------------------------------------------------------------------------
// tag lists (RFC 6376 §3.2, used by DMARC too)

/// A tag of a tag list, white space around name and value removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tag<'a> {
    name: &'a str,
    value: &'a str,
}

/// The tags of `text`, or the syntax error receivers would stop at.
fn tag_list(text: &str) -> Result<Vec<Tag<'_>>, Rejection> {
    let body = trim_fws(text);
    // one trailing `;` is allowed, an empty tag anywhere else is not
    let body = body.strip_suffix(';').unwrap_or(body);
    let mut tags = Vec::new();
    for spec in body.split(';') {
        tags.push(tag_spec(trim_fws(spec))?);
    }
    Ok(tags)
}

fn tag_spec(spec: &str) -> Result<Tag<'_>, Rejection> {
    let syntax = |what: String| -> Result<Tag<'_>, Rejection> {
        reject(
            Rule::TagListSyntax,
            format!(
                "{what}; receiving mail servers read the record as tags `name=value` separated \
                 by `;`, and reject it."
            ),
        )
    };
    if spec.is_empty() {
        return syntax("It has an empty tag (two `;` with nothing between them)".into());
    }
    let Some((name, value)) = spec.split_once('=') else {
        return syntax(format!("`{spec}` has no `=`"));
    };
    let (name, value) = (trim_fws(name), trim_fws(value));
    if !tag_name_ok(name) {
        return syntax(format!("`{name}` is not a tag name"));
    }
    if let Some(c) = value.chars().find(|c| !is_valchar(*c) && !is_fws(*c)) {
        return syntax(format!("The value of `{name}=` contains {}", describe(c)));
    }
    Ok(Tag { name, value })
}

/// `ALPHA *( ALPHA / DIGIT / "_" )`.
fn tag_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `VALCHAR`: printable ASCII but `;`.
fn is_valchar(c: char) -> bool {
    is_vchar(c) && c != ';'
}

/// The first tag named twice (`same` compares names).
fn duplicate_tag<'a>(tags: &[Tag<'a>], same: fn(&str, &str) -> bool) -> Option<&'a str> {
    tags.iter()
        .enumerate()
        .find(|(i, t)| tags[..*i].iter().any(|u| same(u.name, t.name)))
        .map(|(_, t)| t.name)
}

fn no_duplicate_tags(tags: &[Tag<'_>], same: fn(&str, &str) -> bool) -> Result<(), Rejection> {
    match duplicate_tag(tags, same) {
        Some(name) => reject(
            Rule::DuplicateTag,
            format!(
                "It has the tag `{name}=` twice; receiving mail servers reject a record with a \
                 repeated tag. Keep one."
            ),
        ),
        None => Ok(()),
    }
}

/// The items of a colon-separated tag value (`h=sha1:sha256`), white space removed.
fn colon_list(value: &str) -> impl Iterator<Item = &str> {
    value.split(':').map(trim_fws)
}

// ---------------------------------------------------------------------------
// DKIM (RFC 6376 §3.6.1)

fn check_dkim(text: &str) -> Result<(), Rejection> {
    let tags = tag_list(text)?;
    // tag names are case-sensitive (§3.2): `P=` and `p=` are two tags
    no_duplicate_tags(&tags, |a, b| a == b)?;
    dkim_version(&tags)?;
    dkim_key(&tags)?;
    dkim_key_type(&tags)?;
    dkim_hashes(&tags)?;
    dkim_services(&tags)
}

fn find<'a>(tags: &[Tag<'a>], name: &str) -> Option<Tag<'a>> {
    tags.iter().copied().find(|t| t.name == name)
}

fn dkim_version(tags: &[Tag<'_>]) -> Result<(), Rejection> {
    let Some(pos) = tags.iter().position(|t| t.name == "v") else {
        return Ok(());
    };
    let value = tags[pos].value;
    if value != "DKIM1" {
        return reject(
            Rule::DkimVersion,
            format!(
                "Its version is `v={value}`, but it must be exactly `v=DKIM1` (upper case); \
                 receiving mail servers discard a key record with any other version."
            ),
        );
    }
    if pos != 0 {
        return reject(
            Rule::DkimVersion,
            "`v=DKIM1` is not its first tag; when a key record has `v=DKIM1` it must come \
             first, and receiving mail servers discard it otherwise.",
        );
    }
    Ok(())
}

fn dkim_key(tags: &[Tag<'_>]) -> Result<(), Rejection> {
    let Some(p) = find(tags, "p") else {
        let why = if find(tags, "P").is_some() {
            "Its key is tagged `P=`, but DKIM tag names are case-sensitive: receiving mail \
             servers read `P=` as an unknown tag and find no key (`p=`), so every signature fails."
        } else {
            "It has no key (`p=`), so receiving mail servers fail every signature."
        };
        return reject(Rule::DkimKey, why);
    };
    if p.value.is_empty() {
        return reject(
            Rule::DkimKey,
            "Its key `p=` is empty, which means the key is revoked: receiving mail servers fail \
             every signature.",
        );
    }
    if let Some(why) = base64_fault(p.value) {
        return reject(
            Rule::DkimKey,
            format!(
                "Its key (`p=`) is not valid base64 ({why}); receiving mail servers cannot \
                 decode it and fail every signature."
            ),
        );
    }
    Ok(())
}

/// Why `value` is not `base64string` (RFC 6376 §2.4: base64 with folding white space,
/// `=` padding only at the end). Decoders want whole groups of four.
fn base64_fault(value: &str) -> Option<String> {
    let b64: String = value.chars().filter(|c| !is_fws(*c)).collect();
    let data = b64.trim_end_matches('=');
    if b64.len() - data.len() > 2 {
        return Some("too much `=` padding".into());
    }
    if let Some(c) = data
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '+' || *c == '/'))
    {
        return Some(format!("it contains {}", describe(c)));
    }
    if !b64.len().is_multiple_of(4) {
        return Some(format!(
            "{} characters, not a multiple of four: part of it is missing or the padding is",
            b64.len()
        ));
    }
    None
}

fn dkim_key_type(tags: &[Tag<'_>]) -> Result<(), Rejection> {
    match find(tags, "k") {
        Some(k) if k.value != "rsa" && k.value != "ed25519" => reject(
            Rule::DkimKeyType,
            format!(
                "Its key type is `k={}`; receiving mail servers know only `k=rsa` and \
                 `k=ed25519` (lower case) and fail every signature with another.",
                k.value
            ),
        ),
        _ => Ok(()),
    }
}

fn dkim_hashes(tags: &[Tag<'_>]) -> Result<(), Rejection> {
    match find(tags, "h") {
        Some(h) if !colon_list(h.value).any(|a| a == "sha256") => reject(
            Rule::DkimHash,
            format!(
                "It allows only the hash algorithms `h={}`; receiving mail servers accept \
                 signatures made with `sha256` only, so none can be verified with this key.",
                h.value
            ),
        ),
        _ => Ok(()),
    }
}

fn dkim_services(tags: &[Tag<'_>]) -> Result<(), Rejection> {
    match find(tags, "s") {
        Some(s) if !colon_list(s.value).any(|t| t == "email" || t == "*") => reject(
            Rule::DkimService,
            format!(
                "It is limited to the services `s={}`, which exclude email; receiving mail \
                 servers do not use it for mail.",
                s.value
            ),
        ),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// DMARC (RFC 7489 §6.3, §6.4)

/// DMARC tag names compare without case (ABNF strings), unlike DKIM's.
fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

fn check_dmarc(text: &str) -> Result<(), Rejection> {
    if !is_dmarc_record(text) {
        return reject(Rule::DmarcVersion, dmarc_version_reason(text));
    }
    let tags = tag_list(text)?;
    if tags[0].value != "DMARC1" {
        // `v=DMARC1 , p=none`: the prefix is right but the tags run into `v`'s value
        return reject(Rule::DmarcVersion, dmarc_version_reason(text));
    }
    no_duplicate_tags(&tags, same_name)?;
    dmarc_policy(&tags)?;
    dmarc_tag_values(&tags)
}

fn dmarc_version_reason(text: &str) -> String {
    let lower = text.trim().to_ascii_lowercase();
    let after_version = lower.strip_prefix("v=dmarc1").map(str::trim_start);
    let what = if after_version.is_some_and(|r| r.starts_with(',')) {
        "its tags are separated by `,`; DMARC tags are separated by `;`".to_string()
    } else if after_version.is_some() {
        match text.chars().next() {
            Some(c) if !is_vchar(c) => format!("it begins with {}", describe(c)),
            _ => "`v=DMARC1` must be written exactly so (lower-case `v`, upper-case `DMARC1`)"
                .to_string(),
        }
    } else if lower.contains("v=dmarc1") || lower.contains("v = dmarc1") {
        "`v=DMARC1` is not its first tag".to_string()
    } else {
        "it does not begin with `v=DMARC1`".to_string()
    };
    format!(
        "Receiving mail servers read a TXT record at `_dmarc` as DMARC only when it begins with \
         exactly `v=DMARC1`, and {what}, so they ignore it."
    )
}

const POLICIES: [&str; 3] = ["none", "quarantine", "reject"];

fn dmarc_policy(tags: &[Tag<'_>]) -> Result<(), Rejection> {
    let Some(p) = tags.iter().find(|t| same_name(t.name, "p")) else {
        return reject(
            Rule::DmarcPolicy,
            "It has no policy (`p=`); receiving mail servers then apply no DMARC policy (at best \
             `p=none`, and only when `rua=` holds a valid address).",
        );
    };
    for t in std::iter::once(p).chain(
        tags.iter()
            .filter(|t| same_name(t.name, "sp") || same_name(t.name, "np")),
    ) {
        if !POLICIES.iter().any(|k| k.eq_ignore_ascii_case(t.value)) {
            return reject(
                Rule::DmarcPolicy,
                format!(
                    "Its policy `{}={}` is not one receiving mail servers know (`none`, \
                     `quarantine` or `reject`), so they apply no DMARC policy.",
                    t.name, t.value
                ),
            );
        }
    }
    Ok(())
}

fn dmarc_tag_values(tags: &[Tag<'_>]) -> Result<(), Rejection> {
    match tags.iter().find(|t| !dmarc_value_ok(t.name, t.value)) {
        Some(t) => reject(
            Rule::DmarcTagValue,
            format!(
                "`{}={}` is not a valid value; some receiving mail servers reject the whole \
                 DMARC record for it.",
                t.name, t.value
            ),
        ),
        None => Ok(()),
    }
}

/// The syntax of the optional tags' values (RFC 7489 §6.3); other tags pass.
fn dmarc_value_ok(name: &str, v: &str) -> bool {
    let digits = !v.is_empty() && v.chars().all(|c| c.is_ascii_digit());
    let one_of = |allowed: &[&str], x: &str| allowed.iter().any(|k| k.eq_ignore_ascii_case(x));
    match name.to_ascii_lowercase().as_str() {
        "adkim" | "aspf" => one_of(&["r", "s"], v),
        "pct" => digits && v.parse::<u8>().is_ok_and(|n| n <= 100),
        "ri" => digits && v.parse::<u32>().is_ok(),
        "fo" => colon_list(v).all(|o| one_of(&["0", "1", "d", "s"], o)),
        "rf" => colon_list(v).all(|f| one_of(&["afrf", "iodef"], f)),
        _ => true,
    }
}

// ---------------------------------------------------------------------------
// repair

const DKIM_TAGS: [&str; 8] = ["v", "g", "h", "k", "n", "p", "s", "t"];
const DMARC_TAGS: [&str; 14] = [
    "v", "p", "sp", "np", "adkim", "aspf", "pct", "fo", "rf", "ri", "rua", "ruf", "psd", "t",
];

fn known_tags(family: Family) -> &'static [&'static str] {
    match family {
        Family::Dmarc => &DMARC_TAGS,
        _ => &DKIM_TAGS,
    }
}

fn repair_tags(family: Family, plain: &str) -> String {
    // (name, Some(value)) for a tag, (text, None) for a spec that is no tag: kept, so
    // that the repaired record still fails and the expected value is offered instead
    let mut specs: Vec<(String, Option<String>)> = Vec::new();
    for spec in split_specs(family, plain) {
        let spec = spec.trim();
        if spec.is_empty() {
            continue;
        }
        let repaired = match spec.split_once('=') {
            Some((n, v)) => {
                let (n, v) = repair_tag(family, n.trim(), v.trim());
                (n, Some(v))
            }
            None => (spec.to_string(), None),
        };
        if !specs.contains(&repaired) {
            specs.push(repaired);
        }
    }
    match specs.iter().position(|(n, v)| n == "v" && v.is_some()) {
        Some(i) => {
            let v = specs.remove(i);
            specs.insert(0, v);
        }
        None if family == Family::Dmarc => specs.insert(0, ("v".into(), Some("DMARC1".into()))),
        None => {}
    }
    specs
        .into_iter()
        .map(|(n, v)| match v {
            Some(v) => format!("{n}={v}"),
            None => n,
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The tag specs of `plain`: split at `;`, and for DMARC also at a `,` that starts a
/// known tag (`v=DMARC1, p=none`) while the commas between `rua=` addresses stay.
fn split_specs(family: Family, plain: &str) -> Vec<String> {
    let mut out = Vec::new();
    for spec in plain.split(';') {
        if family != Family::Dmarc {
            out.push(spec.to_string());
            continue;
        }
        let mut cur = String::new();
        for piece in spec.split(',') {
            let starts_tag = piece
                .split_once('=')
                .is_some_and(|(n, _)| DMARC_TAGS.contains(&n.trim().to_ascii_lowercase().as_str()));
            if starts_tag && !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            } else if !cur.is_empty() {
                cur.push(',');
            }
            cur.push_str(piece);
        }
        out.push(cur);
    }
    out
}

/// A known tag's name in lower case, `v=` spelled exactly, keyword values lower case.
fn repair_tag(family: Family, name: &str, value: &str) -> (String, String) {
    let lower = name.to_ascii_lowercase();
    if !known_tags(family).contains(&lower.as_str()) {
        return (name.to_string(), value.to_string());
    }
    let value = match (family, lower.as_str()) {
        (Family::Dkim, "v") if value.eq_ignore_ascii_case("dkim1") => "DKIM1".to_string(),
        (Family::Dmarc, "v") if value.eq_ignore_ascii_case("dmarc1") => "DMARC1".to_string(),
        (Family::Dkim, "k" | "h" | "s" | "t") => value.to_ascii_lowercase(),
        (Family::Dmarc, "p" | "sp" | "np" | "adkim" | "aspf") => value.to_ascii_lowercase(),
        _ => value.to_string(),
    };
    (lower, value)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDLxKqJ7k9kVp0xL3Wn2QeX8vHb0Y4mTtR5sJ1aFhQ9gUo3EwXyZ7nC6iP2dLkAbCdEfGhIjKlMnOpQrStUvWxYz01234567AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQIDAQAB";

    fn rule(family: Family, text: &str) -> Option<Rule> {
        check(family, text).err().map(|r| r.rule)
    }

    // --- what receivers accept

    #[test]
    fn well_formed_records_of_every_family_are_accepted() {
        for spf in [
            "v=spf1 include:amazonses.com ~all",
            "V=SPF1 Include:AmazonSES.com  -ALL ",
            "v=spf1",
            "v=spf1 a mx/24 a:mail.acme.com/28//64 ip4:192.0.2.1/32 ip6:2001:db8::/32 ptr exists:%{i}._spf.acme.com ?all",
            "v=spf1 redirect=_spf.acme.com",
            "v=spf1 include:_spf.google.com exp=explain._spf.%{d} ~all",
            "v=spf1 include:acme.com. foo=bar -all",
        ] {
            assert_eq!(check(Family::Spf, spf), Ok(()), "{spf}");
        }
        for dkim in [
            format!("p={KEY}"),
            format!("v=DKIM1; k=rsa; p={KEY};"),
            format!(
                "v=DKIM1; p={} {}\r\n\t{}",
                &KEY[..50],
                &KEY[50..100],
                &KEY[100..]
            ),
            format!("K=RSA; n=a note; t=y:s; h=sha1:sha256; s=email; p={KEY}"),
            format!("p={KEY}; k=ed25519; s=*"),
            "p=QUJD".to_string(),
            "p=QUI=".to_string(),
        ] {
            assert_eq!(check(Family::Dkim, &dkim), Ok(()), "{dkim}");
        }
        for dmarc in [
            "v=DMARC1; p=none;",
            "v=DMARC1;p=reject",
            "v=DMARC1; P=Quarantine; sp=none; np=reject; adkim=s; aspf=r; pct=50; fo=0:d; rf=afrf; ri=3600",
            "v=DMARC1; p=none; rua=mailto:d@acme.com,mailto:e@acme.com; x_unknown=1",
            "v=DMARC1 ; p = none",
        ] {
            assert_eq!(check(Family::Dmarc, dmarc), Ok(()), "{dmarc}");
        }
    }

    // --- quotes (RFC 1035 §5.1)

    #[test]
    fn quotes_stored_as_text_are_named_as_the_cause_in_every_family() {
        let spf = "\"v=spf1 include:amazonses.com ~all\"";
        let dkim = format!("\"v=DKIM1; k=rsa; p={KEY}\"");
        let dmarc = "\"v=DMARC1; p=none\"";
        assert_eq!(rule(Family::Spf, spf), Some(Rule::LiteralQuotes));
        assert_eq!(rule(Family::Dkim, &dkim), Some(Rule::LiteralQuotes));
        assert_eq!(rule(Family::Dmarc, dmarc), Some(Rule::LiteralQuotes));
        // typed as two quoted strings into one field: still text to receivers
        let two = "\"v=spf1 include:amazon\" \"ses.com ~all\"";
        assert_eq!(rule(Family::Spf, two), Some(Rule::LiteralQuotes));
        let why = check(Family::Spf, spf).unwrap_err().reason;
        assert!(why.contains("quote"), "{why}");
    }

    // --- SPF (RFC 7208)

    #[test]
    fn spf_must_begin_with_v_spf1_and_a_space() {
        for text in [
            " v=spf1 include:amazonses.com ~all",
            "v=spf1\tinclude:amazonses.com ~all",
            "v=spf10 include:amazonses.com ~all",
            "spf1 include:amazonses.com ~all",
            "\u{feff}v=spf1 -all",
        ] {
            assert_eq!(rule(Family::Spf, text), Some(Rule::SpfVersion), "{text:?}");
        }
        let why = check(Family::Spf, "v=spf1\tmx -all").unwrap_err().reason;
        assert!(why.contains("followed by a tab"), "{why}");
    }

    #[test]
    fn spf_terms_are_separated_by_plain_spaces_only() {
        for text in [
            "v=spf1 include:amazonses.com\t~all",
            "v=spf1 include:amazonses.com\u{a0}~all",
            "v=spf1 include:amazonses.com\n~all",
        ] {
            assert_eq!(
                rule(Family::Spf, text),
                Some(Rule::SpfSeparator),
                "{text:?}"
            );
        }
    }

    #[test]
    fn spf_with_an_unknown_mechanism_or_a_bad_argument_is_a_permerror() {
        for text in [
            "v=spf1 include:amazonses.com ~al",
            "v=spf1 inclde:amazonses.com ~all",
            "v=spf1 include: ~all",
            "v=spf1 include ~all",
            "v=spf1 include:amazonses.com, ~all",
            "v=spf1 include:amazonses.com~all",
            "v=spf1 ip4:192.0.2.300 ~all",
            "v=spf1 ip4:192.0.2.0/33 ~all",
            "v=spf1 ip6:2001:db8::/129 ~all",
            "v=spf1 a/024 ~all",
            "v=spf1 ptr/24 ~all",
            "v=spf1 +-all",
            "v=spf1 exists:%{z}.acme.com ~all",
            "v=spf1 foo=%x -all",
        ] {
            assert_eq!(rule(Family::Spf, text), Some(Rule::SpfTerm), "{text}");
        }
    }

    #[test]
    fn spf_with_redirect_or_exp_twice_is_a_permerror() {
        for text in [
            "v=spf1 redirect=a.acme.com redirect=b.acme.com",
            "v=spf1 -all exp=a.acme.com exp=b.acme.com",
        ] {
            assert_eq!(
                rule(Family::Spf, text),
                Some(Rule::SpfDuplicateModifier),
                "{text}"
            );
        }
    }

    #[test]
    fn spf_with_more_than_ten_lookup_terms_is_a_permerror() {
        let terms =
            |n: usize| -> String { (0..n).map(|i| format!(" include:s{i}.acme.com")).collect() };
        let ten = format!("v=spf1{} ~all", terms(10));
        assert_eq!(check(Family::Spf, &ten), Ok(()));
        let eleven = format!("v=spf1{} ~all", terms(11));
        assert_eq!(rule(Family::Spf, &eleven), Some(Rule::SpfLookupLimit));
        // a, mx, ptr, exists and redirect count; ip4 and all do not
        let mixed = format!("v=spf1{} a mx ip4:192.0.2.1 redirect=x.acme.com", terms(8));
        assert_eq!(rule(Family::Spf, &mixed), Some(Rule::SpfLookupLimit));
    }

    // --- tag lists (RFC 6376 §3.2)

    #[test]
    fn a_tag_list_with_an_empty_or_nameless_tag_is_invalid() {
        for text in [
            format!("v=DKIM1;; p={KEY}"),
            format!("v=DKIM1; rsa; p={KEY}"),
            format!("v=DKIM1; 1k=rsa; p={KEY}"),
            "".to_string(),
        ] {
            assert_eq!(
                rule(Family::Dkim, &text),
                Some(Rule::TagListSyntax),
                "{text}"
            );
        }
        assert_eq!(
            rule(Family::Dmarc, "v=DMARC1;; p=none"),
            Some(Rule::TagListSyntax)
        );
        // a pasted non-breaking space is not folding white space
        let nbsp = format!("v=DKIM1; p={}\u{a0}{}", &KEY[..100], &KEY[100..]);
        let why = check(Family::Dkim, &nbsp).unwrap_err();
        assert_eq!(why.rule, Rule::TagListSyntax);
        assert!(why.reason.contains("non-breaking space"), "{}", why.reason);
    }

    #[test]
    fn a_tag_twice_makes_the_record_invalid() {
        let dkim = format!("v=DKIM1; p={KEY}; p={KEY}");
        assert_eq!(rule(Family::Dkim, &dkim), Some(Rule::DuplicateTag));
        // DMARC names compare without case: `p` and `P` are the same tag
        assert_eq!(
            rule(Family::Dmarc, "v=DMARC1; p=none; P=reject"),
            Some(Rule::DuplicateTag)
        );
    }

    // --- DKIM (RFC 6376 §3.6.1)

    #[test]
    fn dkim_version_must_come_first_and_be_exactly_dkim1() {
        for text in [
            format!("k=rsa; v=DKIM1; p={KEY}"),
            format!("v=dkim1; p={KEY}"),
            format!("v=DKIM2; p={KEY}"),
        ] {
            assert_eq!(rule(Family::Dkim, &text), Some(Rule::DkimVersion), "{text}");
        }
    }

    #[test]
    fn dkim_tag_names_are_case_sensitive_so_a_capital_p_is_no_key() {
        let text = format!("V=DKIM1; P={KEY}");
        let why = check(Family::Dkim, &text).unwrap_err();
        assert_eq!(why.rule, Rule::DkimKey);
        assert!(why.reason.contains("`P=`"), "{}", why.reason);
    }

    #[test]
    fn dkim_key_must_be_present_non_empty_and_base64() {
        for text in [
            "v=DKIM1; k=rsa".to_string(),
            "v=DKIM1; p=".to_string(),
            format!("p={}-{}", &KEY[..10], &KEY[10..]),
            format!("p={}", &KEY[..KEY.len() - 1]),
            format!("p={}=={}", &KEY[..100], &KEY[100..]),
            "p=QUJD===".to_string(),
        ] {
            assert_eq!(rule(Family::Dkim, &text), Some(Rule::DkimKey), "{text}");
        }
    }

    #[test]
    fn dkim_key_type_hash_and_service_must_allow_email_signatures() {
        for (text, want) in [
            (format!("k=RSA; p={KEY}"), Rule::DkimKeyType),
            (format!("k=dsa; p={KEY}"), Rule::DkimKeyType),
            (format!("h=sha1; p={KEY}"), Rule::DkimHash),
            (format!("h=md5:sha512; p={KEY}"), Rule::DkimHash),
            (format!("s=tlsrpt; p={KEY}"), Rule::DkimService),
        ] {
            assert_eq!(rule(Family::Dkim, &text), Some(want), "{text}");
        }
    }

    // --- DMARC (RFC 7489)

    #[test]
    fn dmarc_must_begin_with_exactly_v_dmarc1() {
        for (text, hint) in [
            ("p=none; v=DMARC1", "not its first tag"),
            ("v=dmarc1; p=none", "written exactly"),
            ("V=DMARC1; p=none", "written exactly"),
            (" v=DMARC1; p=none", "begins with"),
            (
                "v=DMARC1, p=none, rua=mailto:d@acme.com",
                "separated by `,`",
            ),
            ("v=DMARC1 , p=none", "separated by `,`"),
            ("p=none", "does not begin"),
        ] {
            let why = check(Family::Dmarc, text).unwrap_err();
            assert_eq!(why.rule, Rule::DmarcVersion, "{text}");
            assert!(why.reason.contains(hint), "{text}: {}", why.reason);
        }
        assert!(is_dmarc_record("v=DMARC1"));
        assert!(!is_dmarc_record("v=DMARC10; p=none"));
    }

    #[test]
    fn dmarc_needs_a_known_policy() {
        for text in [
            "v=DMARC1; rua=mailto:d@acme.com",
            "v=DMARC1; p=monitor",
            "v=DMARC1; p=",
            "v=DMARC1; p=none; sp=rejected",
            "v=DMARC1; p=none; np=block",
        ] {
            assert_eq!(rule(Family::Dmarc, text), Some(Rule::DmarcPolicy), "{text}");
        }
    }

    #[test]
    fn dmarc_tag_values_outside_their_syntax_are_rejected() {
        for text in [
            "v=DMARC1; p=none; pct=101",
            "v=DMARC1; p=none; pct=50%",
            "v=DMARC1; p=none; adkim=strict",
            "v=DMARC1; p=none; aspf=x",
            "v=DMARC1; p=none; ri=1d",
            "v=DMARC1; p=none; fo=2",
            "v=DMARC1; p=none; rf=xml",
        ] {
            assert_eq!(
                rule(Family::Dmarc, text),
                Some(Rule::DmarcTagValue),
                "{text}"
            );
        }
    }

    // --- repair

    #[test]
    fn repair_mends_what_is_mechanical_and_the_result_is_accepted() {
        for (family, text, want) in [
            (
                Family::Spf,
                "\"v=spf1 include:amazonses.com ~all\"",
                "v=spf1 include:amazonses.com ~all",
            ),
            (
                Family::Spf,
                " V=SPF1\tinclude:amazonses.com\u{a0} ~all",
                "v=spf1 include:amazonses.com ~all",
            ),
            (Family::Dmarc, "p=none; v=DMARC1", "v=DMARC1; p=none"),
            (Family::Dmarc, "V=dmarc1; P=Reject", "v=DMARC1; p=reject"),
            (
                Family::Dmarc,
                "v=DMARC1, p=none, rua=mailto:a@acme.com,mailto:b@acme.com",
                "v=DMARC1; p=none; rua=mailto:a@acme.com,mailto:b@acme.com",
            ),
            (Family::Dmarc, "p=quarantine", "v=DMARC1; p=quarantine"),
            (
                Family::Dkim,
                "k=RSA; v=dkim1; P=QUJD",
                "v=DKIM1; k=rsa; p=QUJD",
            ),
            (Family::Dkim, "v=DKIM1\\; p=QUJD\\;", "v=DKIM1; p=QUJD"),
            (Family::Dkim, "p=QUJD; p=QUJD", "p=QUJD"),
        ] {
            let fixed = repair(family, text);
            assert_eq!(fixed, want, "{text}");
            assert_eq!(check(family, &fixed), Ok(()), "{fixed}");
        }
        // what cannot be mended stays broken, so that the caller offers the expected value
        let broken = repair(Family::Dmarc, "v=DMARC1; p=monitor");
        assert!(check(Family::Dmarc, &broken).is_err(), "{broken}");
        let broken = repair(Family::Dkim, "v=DKIM1; rsa; p=QUJD");
        assert!(check(Family::Dkim, &broken).is_err(), "{broken}");
    }
}
