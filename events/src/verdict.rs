//! DNS verdicts (contract §4): which questions to ask, and what the answers mean.
//! Pure: the DNS adapter asks the questions [`plan`] returns and hands the answers
//! to [`judge`].
//!
//! The rules, in short (the full list of decisions is in the DNS adapter's
//! `DECISIONS.md`):
//! - every expected record is judged on the answer for its own name and type; a
//!   question that failed there makes the record `lookup_failed`, whatever else
//!   was seen;
//! - values are compared by meaning: names without case and trailing dot, TXT as
//!   the concatenation of its strings with surrounding quotes removed, SPF term by
//!   term (an SPF record that authorizes everything the expected one does is
//!   `found`), DKIM and DMARC as tag lists (a DMARC policy at least as strict as
//!   the expected one is `found`), MX as host and priority;
//! - the auxiliary questions (the name with the zone appended, the apex, the other
//!   expected names, the wildcard under the apex, the addresses and flattened
//!   records at a CNAME name) only explain a record that is not `found`.

use std::collections::{BTreeMap, BTreeSet};

use crate::records::{
    Diagnosis, DiagnosisCode, DnsObservation, DnsQuestion, DnsRecord, DnsStatus, LookupAnswer,
    LookupError, ObservedRecord,
};

// ---------------------------------------------------------------------------
// plan

/// The questions whose answers [`judge`] needs for these expected records of the
/// registered domain `zone` (lower case, no trailing dot).
pub fn plan(zone: &str, expected: &[DnsRecord]) -> Vec<DnsQuestion> {
    let zone = norm_name(zone);
    let mut qs: BTreeSet<DnsQuestion> = BTreeSet::new();
    let mut ask = |name: &str, t: &str| {
        let name = norm_name(name);
        if !name.is_empty() {
            qs.insert(DnsQuestion { name, record_type: t.to_ascii_uppercase() });
        }
    };
    for r in expected {
        let n = norm_name(&r.name);
        let t = r.record_type.to_ascii_uppercase();
        ask(&n, &t);
        match t.as_str() {
            "TXT" => ask(&n, "CNAME"),
            "MX" => {
                ask(&n, "CNAME");
                // the MX host entered as a TXT value
                ask(&n, "TXT");
            }
            "CNAME" => {
                for other in ["A", "AAAA", "TXT", "MX"] {
                    ask(&n, other);
                }
                // what the target serves, to recognise flattening
                let target = norm_name(&r.value);
                if is_hostname(&target) {
                    ask(&target, "TXT");
                    ask(&target, "MX");
                }
            }
            _ => ask(&n, "CNAME"),
        }
        for appended in appended_names(&n, &zone) {
            ask(&appended, &t);
        }
        for place in other_places(&n, &t, &zone, expected) {
            ask(&place, &t);
        }
    }
    qs.into_iter().collect()
}

/// `<name>.<zone>`, and `<name>.<registrable domain>` when the zone is a subdomain
/// (the DNS host's zone is then usually the registrable domain).
fn appended_names(name: &str, zone: &str) -> Vec<String> {
    let mut out = vec![format!("{name}.{zone}")];
    let reg = registrable(zone);
    if reg != zone {
        out.push(format!("{name}.{reg}"));
    }
    out
}

/// The other names of the zone where the value may have been put by mistake: the
/// apex, the other expected names of the same type, the wildcard under the apex.
fn other_places(name: &str, rtype: &str, zone: &str, expected: &[DnsRecord]) -> Vec<String> {
    let mut out = Vec::new();
    if name != zone && rtype != "CNAME" {
        out.push(zone.to_string());
    }
    for other in expected {
        let m = norm_name(&other.name);
        if m != name && other.record_type.eq_ignore_ascii_case(rtype) && !out.contains(&m) {
            out.push(m);
        }
    }
    let wildcard = format!("*.{zone}");
    if name != wildcard {
        out.push(wildcard);
    }
    out
}

// ---------------------------------------------------------------------------
// judge

/// The expected records with `dns_status`, `observed` and `diagnosis` filled in.
pub fn judge(zone: &str, expected: &[DnsRecord], observation: &DnsObservation) -> Vec<DnsRecord> {
    let zone = norm_name(zone);
    expected.iter().map(|r| judge_one(&zone, r, expected, observation)).collect()
}

/// What kind of record is expected: decides how values compare and which other
/// records at the name count as "of the same kind".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Spf,
    Dkim,
    Dmarc,
    OtherTxt,
    Mx,
    Cname,
    Other,
}

fn kind_of(r: &DnsRecord) -> Kind {
    let t = r.record_type.to_ascii_uppercase();
    let name = norm_name(&r.name);
    let purpose = r.purpose.to_ascii_lowercase();
    match t.as_str() {
        "TXT" => {
            let v = unquote(&r.value);
            if purpose == "spf" || is_spf(&v) {
                Kind::Spf
            } else if purpose == "dkim" || name.contains("._domainkey.") {
                Kind::Dkim
            } else if purpose == "dmarc" || name.starts_with("_dmarc.") {
                Kind::Dmarc
            } else {
                Kind::OtherTxt
            }
        }
        "MX" => Kind::Mx,
        "CNAME" => Kind::Cname,
        _ => Kind::Other,
    }
}

struct Ctx<'a> {
    zone: &'a str,
    obs: &'a DnsObservation,
    rec: &'a DnsRecord,
    name: String,
    rtype: String,
    kind: Kind,
    /// `(code, message)` of every diagnosis that fits; the first in precedence wins.
    codes: Vec<(DiagnosisCode, String)>,
    observed: Vec<String>,
}

fn judge_one(zone: &str, rec: &DnsRecord, all: &[DnsRecord], obs: &DnsObservation) -> DnsRecord {
    let mut ctx = Ctx {
        zone,
        obs,
        rec,
        name: norm_name(&rec.name),
        rtype: rec.record_type.to_ascii_uppercase(),
        kind: kind_of(rec),
        codes: Vec::new(),
        observed: Vec::new(),
    };
    let found = match ctx.answer(&ctx.name.clone(), &ctx.rtype.clone()) {
        None => {
            ctx.codes.push((
                DiagnosisCode::LookupFailed,
                format!(
                    "`{}` ({}) was not looked up, so nothing can be said about it yet.",
                    ctx.name, ctx.rtype
                ),
            ));
            false
        }
        Some(LookupAnswer::Failed { error, detail }) => {
            let msg = lookup_failed_message(&ctx.name, &ctx.rtype, *error, detail);
            ctx.codes.push((DiagnosisCode::LookupFailed, msg));
            false
        }
        Some(answer) => {
            let answer = answer.clone();
            match ctx.kind {
                Kind::Cname => judge_cname(&mut ctx, &answer),
                _ => judge_value(&mut ctx, &answer),
            }
        }
    };
    if !found && ctx.codes.iter().all(|(c, _)| *c != DiagnosisCode::LookupFailed) {
        explain_elsewhere(&mut ctx, all);
    }
    let mut out = rec.clone();
    out.observed = ctx.observed;
    ctx.codes.sort_by_key(|(c, _)| *c);
    match ctx.codes.into_iter().next() {
        Some((code, message)) => {
            out.dns_status = code.status();
            out.diagnosis = Some(Diagnosis { code, message });
        }
        None => {
            out.dns_status = if found { DnsStatus::Found } else { DnsStatus::Missing };
            out.diagnosis = None;
        }
    }
    out
}

impl Ctx<'_> {
    fn answer(&self, name: &str, rtype: &str) -> Option<&LookupAnswer> {
        self.obs.answer(name, rtype)
    }

    /// Records of `rtype` served for the question `(name, rtype)`: at the end of the
    /// CNAME chain when there is one. Empty for a failed or negative answer.
    fn served(&self, name: &str, rtype: &str) -> Vec<ObservedRecord> {
        match self.answer(name, rtype) {
            Some(a) => served(a, name, rtype),
            None => Vec::new(),
        }
    }

    fn host(&self, name: &str) -> String {
        host_part(name, &registrable(self.zone))
    }

    fn expected_text(&self) -> String {
        match self.kind {
            Kind::Mx => match self.rec.priority {
                Some(p) => format!("{p} {}", norm_name(&self.rec.value)),
                None => norm_name(&self.rec.value),
            },
            Kind::Cname => norm_name(&self.rec.value),
            _ => unquote(&self.rec.value),
        }
    }
}

/// TXT, MX and other non-CNAME expectations.
fn judge_value(ctx: &mut Ctx<'_>, answer: &LookupAnswer) -> bool {
    let name = ctx.name.clone();
    let rtype = ctx.rtype.clone();
    let mut chain = cname_chain(answer, &name);
    if chain.is_empty() {
        // a CNAME seen only by the explicit CNAME question (a resolver that did not
        // return the chain with the answer)
        if let Some(LookupAnswer::Records { records }) = ctx.answer(&name, "CNAME") {
            chain = records
                .iter()
                .filter(|r| r.record_type.eq_ignore_ascii_case("CNAME") && norm_name(&r.name) == name)
                .map(|r| norm_name(&r.value))
                .take(1)
                .collect();
        }
    }
    let records = served(answer, &name, &rtype);
    for hop in &chain {
        ctx.observed.push(format!("CNAME {hop}"));
    }
    // every record of the asked type at the name, in presentation form
    let at_name: Vec<ObservedRecord> = if chain.is_empty() {
        records.clone()
    } else {
        Vec::new()
    };
    if rtype == "TXT" && !chain.is_empty() {
        // the records the CNAME target serves, for the owner to see
        ctx.observed.extend(records.iter().map(|r| format!("TXT {}", presentation(r))));
    } else {
        ctx.observed.extend(records.iter().map(presentation));
    }

    let matching: Vec<&ObservedRecord> = records.iter().filter(|r| matches(ctx, r)).collect();
    let found = !matching.is_empty();

    // multiple SPF records (also behind a CNAME: receivers see the target's set)
    if ctx.kind == Kind::Spf {
        let spfs: Vec<String> = records.iter().map(txt_text).filter(|t| is_spf(t)).collect();
        if spfs.len() > 1 {
            let merged = merge_spf(&ctx.expected_text(), &spfs);
            ctx.codes.push((
                DiagnosisCode::MultipleSpfRecords,
                format!(
                    "`{name}` has {} SPF records ({}); receiving mail servers then treat SPF as broken. \
                     Delete them and keep a single TXT record: `{merged}`.",
                    spfs.len(),
                    spfs.iter().map(|s| format!("`{s}`")).collect::<Vec<_>>().join(" and "),
                ),
            ));
        }
    }

    // the expected value, and a conflicting one of the same kind beside it
    if found && ctx.kind != Kind::Spf {
        let conflicting: Vec<&ObservedRecord> = records
            .iter()
            .filter(|r| same_kind(ctx, r) && !matches(ctx, r) && !same_mx_host(ctx, r))
            .collect();
        if !conflicting.is_empty() {
            let what = match ctx.kind {
                Kind::Dkim => "DKIM key",
                Kind::Dmarc => "DMARC record",
                Kind::Mx => "MX record",
                _ => "record of the same kind",
            };
            let others =
                conflicting.iter().map(|r| format!("`{}`", presentation(r))).collect::<Vec<_>>().join(", ");
            ctx.codes.push((
                DiagnosisCode::DuplicateRecords,
                format!(
                    "`{name}` has the right {rtype} record, but also another {what} beside it: {others}. \
                     Delete the other record{} and keep only `{}`.",
                    if conflicting.len() > 1 { "s" } else { "" },
                    ctx.expected_text()
                ),
            ));
        }
    }

    if found {
        return true;
    }

    if let Some(target) = chain.first() {
        let serves = if records.is_empty() {
            format!("which serves no {rtype} record")
        } else {
            format!("which serves another value ({})", quote_list(&records))
        };
        ctx.codes.push((
            DiagnosisCode::WrongType,
            format!(
                "`{name}` is a CNAME to `{target}`, {serves}; a CNAME hides every other record at its \
                 name. Delete the CNAME record for `{}` and add a {rtype} record with the value `{}`.",
                ctx.host(&name),
                ctx.expected_text()
            ),
        ));
        return false;
    }

    // the expected value entered under another type
    if ctx.kind == Kind::Mx {
        let want = norm_name(&ctx.rec.value);
        let txts = ctx.served(&name, "TXT");
        if let Some(t) = txts.iter().find(|t| mx_text_carries(&txt_text(t), &want)) {
            ctx.observed.push(format!("TXT {}", txt_text(t)));
            ctx.codes.push((
                DiagnosisCode::WrongType,
                format!(
                    "The mail server `{want}` was entered as a TXT record at `{name}`; it must be an MX \
                     record. Delete that TXT record and add an MX record: host `{}`, mail server \
                     `{want}`{}.",
                    ctx.host(&name),
                    ctx.rec.priority.map(|p| format!(", priority {p}")).unwrap_or_default()
                ),
            ));
        }
    }

    let same: Vec<&ObservedRecord> = at_name.iter().filter(|r| same_kind(ctx, r)).collect();
    if !same.is_empty() {
        let msg = mismatch_message(ctx, &same);
        ctx.codes.push((DiagnosisCode::ValueMismatch, msg));
    }
    false
}

/// CNAME expectations.
fn judge_cname(ctx: &mut Ctx<'_>, answer: &LookupAnswer) -> bool {
    let name = ctx.name.clone();
    let want = norm_name(&ctx.rec.value);
    let chain = cname_chain(answer, &name);
    ctx.observed.extend(chain.iter().cloned());
    if chain.iter().any(|t| *t == want) {
        return true;
    }
    if let Some(first) = chain.first() {
        ctx.codes.push((
            DiagnosisCode::ValueMismatch,
            format!(
                "`{name}` is a CNAME to `{first}`, but it must point to `{want}`. Change the target of \
                 the CNAME record `{}` to `{want}`.",
                ctx.host(&name)
            ),
        ));
        return false;
    }
    // no CNAME at the name: proxied or flattened?
    let mut proxied: Vec<String> = Vec::new();
    for t in ["A", "AAAA"] {
        let own = own_records(ctx.answer(&name, t), &name, t);
        proxied.extend(own.iter().map(|r| format!("{t} {}", r.value)));
    }
    for t in ["TXT", "MX"] {
        let own = own_records(ctx.answer(&name, t), &name, t);
        let target_own = served_opt(ctx.answer(&want, t), &want, t);
        if !own.is_empty() && same_set(&own, &target_own) {
            proxied.extend(own.iter().map(|r| format!("{t} {}", presentation(r))));
        }
    }
    if !proxied.is_empty() {
        ctx.observed.extend(proxied.iter().cloned());
        ctx.codes.push((
            DiagnosisCode::ProxiedOrFlattened,
            format!(
                "`{name}` answers with {} instead of a CNAME to `{want}`: your DNS host proxies or \
                 flattens the record. Turn the proxy off for `{}` (at Cloudflare: \"DNS only\", the \
                 grey cloud) so that the CNAME itself is published.",
                proxied.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", "),
                ctx.host(&name)
            ),
        ));
    }
    // the target entered as a TXT value
    let txts = own_records(ctx.answer(&name, "TXT"), &name, "TXT");
    if let Some(t) = txts.iter().find(|t| norm_name(&txt_text(t)) == want) {
        ctx.observed.push(format!("TXT {}", txt_text(t)));
        ctx.codes.push((
            DiagnosisCode::WrongType,
            format!(
                "`{want}` was entered as a TXT record at `{name}`; it must be a CNAME record. Delete \
                 that TXT record and add a CNAME record: host `{}`, target `{want}`.",
                ctx.host(&name)
            ),
        ));
    }
    false
}

/// The record is not at its name: is it somewhere else?
fn explain_elsewhere(ctx: &mut Ctx<'_>, all: &[DnsRecord]) {
    let name = ctx.name.clone();
    let rtype = ctx.rtype.clone();
    let zone = ctx.zone.to_string();
    let wildcard = format!("*.{zone}");
    let wildcard_records = ctx.served(&wildcard, &rtype);
    for (appended, base) in appended_names(&name, &zone).into_iter().zip([zone.clone(), registrable(&zone)]) {
        let recs = ctx.served(&appended, &rtype);
        if recs.is_empty() || same_set(&recs, &wildcard_records) {
            // nothing there, or only what the wildcard under the apex synthesises
            continue;
        }
        let hit = recs.iter().any(|r| matches(ctx, r));
        let same = recs.iter().any(|r| same_kind(ctx, r));
        if hit || same {
            let host = host_part(&name, &base);
            ctx.codes.push((
                DiagnosisCode::AppendedDomain,
                format!(
                    "Your DNS host added the domain a second time: the record is at `{appended}`. Enter \
                     `{host}` as the host name, not `{name}`.{}",
                    if hit {
                        String::new()
                    } else {
                        format!(" Its value is also wrong: enter `{}`.", ctx.expected_text())
                    }
                ),
            ));
            return;
        }
    }
    for place in other_places(&name, &rtype, &zone, all) {
        if place == wildcard {
            continue;
        }
        let recs = ctx.served(&place, &rtype);
        if recs.iter().any(|r| matches(ctx, r)) {
            let where_ = if place == zone { format!("`{zone}` (the domain itself)") } else { format!("`{place}`") };
            ctx.codes.push((
                DiagnosisCode::WrongName,
                format!(
                    "The record is at {where_} instead of `{name}`. Add it with the host name `{}`{}.",
                    ctx.host(&name),
                    if place == zone && ctx.kind != Kind::Spf {
                        " (and delete it from the domain itself)".to_string()
                    } else if place == zone {
                        String::new()
                    } else {
                        format!(" and delete it from `{place}`")
                    }
                ),
            ));
            return;
        }
    }
    if wildcard_records.iter().any(|r| matches(ctx, r)) {
        ctx.codes.push((
            DiagnosisCode::WrongName,
            format!(
                "The record is at the wildcard `{wildcard}`, which does not answer for `{name}` (a \
                 wildcard never covers a name that has other records or names below it). Add it with \
                 the host name `{}`.",
                ctx.host(&name)
            ),
        ));
    }
}

fn lookup_failed_message(name: &str, rtype: &str, error: LookupError, detail: &str) -> String {
    let what = match error {
        LookupError::ServFail => "answered SERVFAIL (a server error)".to_string(),
        LookupError::Refused => "refused to answer".to_string(),
        LookupError::Timeout => "did not answer in time".to_string(),
        LookupError::Other => format!("could not be asked ({detail})"),
    };
    format!(
        "The DNS servers {what} for `{name}` ({rtype}). This is not proof that the record is missing; \
         the check will be repeated. If it persists, ask your DNS host whether the zone is served correctly."
    )
}

fn mismatch_message(ctx: &Ctx<'_>, same: &[&ObservedRecord]) -> String {
    let name = &ctx.name;
    let want = ctx.expected_text();
    let have = quote_list_refs(same);
    let host = ctx.host(name);
    match ctx.kind {
        Kind::Spf => {
            let spf = txt_text(same[0]);
            match spf_compare(&spf, &unquote(&ctx.rec.value)) {
                SpfVerdict::Missing(terms) => format!(
                    "The SPF record at `{name}` is `{spf}`, which does not authorize this sender: add \
                     {} to it (before the `all` term), e.g. `{}`.",
                    terms.iter().map(|t| format!("`{t}`")).collect::<Vec<_>>().join(" and "),
                    merge_spf(&want, &[spf.clone()])
                ),
                SpfVerdict::WeakerAll { have, want: w } => format!(
                    "The SPF record at `{name}` is `{spf}`: it ends with `{have}`, which is weaker than \
                     `{w}`. Change `{have}` to `{w}`."
                ),
                _ => format!("The TXT record at `{name}` is `{spf}`; it must be `{want}`."),
            }
        }
        Kind::Dkim => {
            let got = txt_text(same[0]);
            let exp_p = tag_list(&want).and_then(|t| t.get("p").cloned()).unwrap_or_default();
            let got_p = tag_list(&got).and_then(|t| t.get("p").cloned()).unwrap_or_default();
            if !got_p.is_empty() && exp_p.len() > got_p.len() && exp_p.starts_with(&got_p) {
                format!(
                    "The DKIM key at `{name}` is cut off: it has {} of the {} characters of the key. \
                     Your DNS host probably limits TXT values to 255 characters: paste the whole value \
                     `{want}` (some hosts need it as several quoted strings of at most 255 characters \
                     each, e.g. {}).",
                    got_p.len(),
                    exp_p.len(),
                    split_quoted(&want)
                )
            } else if !got_p.is_empty() && got_p.eq_ignore_ascii_case(&exp_p) {
                format!(
                    "The DKIM key at `{name}` has its letters in another case than the key: your DNS \
                     host changed the value. Enter it exactly as given: `{want}`."
                )
            } else {
                format!("The TXT record at `{name}` (host `{host}`) is {have}; replace its value with `{want}`.")
            }
        }
        Kind::Mx => {
            let want_host = norm_name(&ctx.rec.value);
            if let Some(r) = same.iter().find(|r| norm_name(&r.value) == want_host) {
                format!(
                    "The MX record at `{name}` points to the right mail server `{want_host}` but has \
                     priority {}; set the priority to {}.",
                    r.priority.map(|p| p.to_string()).unwrap_or_else(|| "(none)".into()),
                    ctx.rec.priority.map(|p| p.to_string()).unwrap_or_default()
                )
            } else {
                format!(
                    "The MX record at `{name}` (host `{host}`) is {have}; it must be `{want}`. Replace it."
                )
            }
        }
        _ => format!("The {} record at `{name}` (host `{host}`) is {have}; replace its value with `{want}`.", ctx.rtype),
    }
}

// ---------------------------------------------------------------------------
// comparison

fn matches(ctx: &Ctx<'_>, r: &ObservedRecord) -> bool {
    if !r.record_type.eq_ignore_ascii_case(&ctx.rtype) {
        return false;
    }
    let exp = &ctx.rec.value;
    match ctx.kind {
        Kind::Spf => matches!(spf_compare(&txt_text(r), &unquote(exp)), SpfVerdict::Equal | SpfVerdict::Authorizes),
        Kind::Dkim => dkim_equal(&txt_text(r), &unquote(exp)),
        Kind::Dmarc => dmarc_ok(&txt_text(r), &unquote(exp)),
        Kind::OtherTxt => txt_text(r).trim() == unquote(exp).trim(),
        Kind::Mx => {
            norm_name(&r.value) == norm_name(exp)
                && (ctx.rec.priority.is_none() || r.priority == ctx.rec.priority)
        }
        Kind::Cname | Kind::Other => norm_name(&r.value) == norm_name(exp),
    }
}

/// Another record of the same kind as the expected one (a conflict beside it, or
/// the wrong value in its place). An unrelated TXT beside SPF is not of its kind;
/// at a DKIM selector or `_dmarc` name every TXT is.
fn same_kind(ctx: &Ctx<'_>, r: &ObservedRecord) -> bool {
    if !r.record_type.eq_ignore_ascii_case(&ctx.rtype) {
        return false;
    }
    match ctx.kind {
        Kind::Spf => is_spf(&txt_text(r)),
        Kind::Dkim | Kind::Dmarc => true,
        Kind::OtherTxt => match txt_key(&unquote(&ctx.rec.value)) {
            Some(k) => txt_key(&txt_text(r)).as_deref() == Some(k.as_str()),
            None => false,
        },
        Kind::Mx | Kind::Cname | Kind::Other => true,
    }
}

/// An MX to the expected host with another priority is no *other* host.
fn same_mx_host(ctx: &Ctx<'_>, r: &ObservedRecord) -> bool {
    ctx.kind == Kind::Mx && norm_name(&r.value) == norm_name(&ctx.rec.value)
}

/// `google-site-verification=...` → `google-site-verification`.
fn txt_key(s: &str) -> Option<String> {
    let i = s.find(['=', ':'])?;
    let k = s[..i].trim();
    (!k.is_empty() && !k.contains(char::is_whitespace)).then(|| k.to_ascii_lowercase())
}

fn mx_text_carries(text: &str, host: &str) -> bool {
    let t = text.trim();
    let t = t.trim_start_matches(|c: char| c.is_ascii_digit()).trim();
    norm_name(t) == host
}

/// Lower case, no trailing dot, no surrounding white space.
pub fn norm_name(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty() && s.contains('.') && s.chars().all(|c| c.is_ascii_alphanumeric() || "-._*".contains(c))
}

fn registrable(zone: &str) -> String {
    psl::domain_str(zone).map(str::to_string).unwrap_or_else(|| zone.to_string())
}

/// The host name to enter at a DNS host whose zone is `zone`: `@` for the apex.
fn host_part(name: &str, zone: &str) -> String {
    if name == zone {
        "@".into()
    } else if let Some(h) = name.strip_suffix(&format!(".{zone}")) {
        h.into()
    } else {
        name.into()
    }
}

/// A TXT value as entered: surrounding white space and quotes removed; a value
/// typed as several quoted strings (`"abc" "def"`) is their concatenation.
pub fn unquote(s: &str) -> String {
    let t = s.trim();
    if t.len() >= 2 && t.starts_with('"') && t.ends_with('"') {
        if let Some(parts) = parse_quoted_strings(t) {
            return parts.concat();
        }
        return t[1..t.len() - 1].to_string();
    }
    t.to_string()
}

fn parse_quoted_strings(s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some('"') => {}
            Some(_) => return None,
        }
        let mut cur = String::new();
        loop {
            match chars.next()? {
                '\\' => cur.push(chars.next()?),
                '"' => break,
                c => cur.push(c),
            }
        }
        out.push(cur);
    }
}

/// The TXT text of an observed record: its strings concatenated, quotes removed.
fn txt_text(r: &ObservedRecord) -> String {
    if r.txt_strings.is_empty() {
        unquote(&r.value)
    } else {
        unquote(&r.txt_strings.concat())
    }
}

fn presentation(r: &ObservedRecord) -> String {
    match r.record_type.to_ascii_uppercase().as_str() {
        "TXT" => txt_text(r),
        "MX" => match r.priority {
            Some(p) => format!("{p} {}", norm_name(&r.value)),
            None => norm_name(&r.value),
        },
        "CNAME" | "NS" => norm_name(&r.value),
        _ => r.value.clone(),
    }
}

fn quote_list(rs: &[ObservedRecord]) -> String {
    rs.iter().map(|r| format!("`{}`", presentation(r))).collect::<Vec<_>>().join(", ")
}

fn quote_list_refs(rs: &[&ObservedRecord]) -> String {
    rs.iter().map(|r| format!("`{}`", presentation(r))).collect::<Vec<_>>().join(", ")
}

fn same_set(a: &[ObservedRecord], b: &[ObservedRecord]) -> bool {
    let key = |rs: &[ObservedRecord]| -> BTreeSet<String> {
        rs.iter().map(|r| format!("{} {}", r.record_type.to_ascii_uppercase(), presentation(r))).collect()
    };
    !a.is_empty() && key(a) == key(b)
}

/// `"..." "..."`: the value split into quoted strings of at most 255 characters.
fn split_quoted(v: &str) -> String {
    let bytes: Vec<char> = v.chars().collect();
    bytes.chunks(255).map(|c| format!("\"{}\"", c.iter().collect::<String>())).collect::<Vec<_>>().join(" ")
}

// --- answers

/// The CNAME targets starting at `name`, in order.
fn cname_chain(answer: &LookupAnswer, name: &str) -> Vec<String> {
    let LookupAnswer::Records { records } = answer else { return Vec::new() };
    let mut out = Vec::new();
    let mut cur = norm_name(name);
    for _ in 0..16 {
        let Some(next) = records
            .iter()
            .find(|r| r.record_type.eq_ignore_ascii_case("CNAME") && norm_name(&r.name) == cur)
        else {
            break;
        };
        cur = norm_name(&next.value);
        if out.contains(&cur) {
            break;
        }
        out.push(cur.clone());
    }
    out
}

fn served(answer: &LookupAnswer, name: &str, rtype: &str) -> Vec<ObservedRecord> {
    let LookupAnswer::Records { records } = answer else { return Vec::new() };
    if rtype.eq_ignore_ascii_case("CNAME") {
        return own_records(Some(answer), name, rtype);
    }
    let end = cname_chain(answer, name).pop().unwrap_or_else(|| norm_name(name));
    let of_type: Vec<ObservedRecord> =
        records.iter().filter(|r| r.record_type.eq_ignore_ascii_case(rtype)).cloned().collect();
    let at_end: Vec<ObservedRecord> = of_type.iter().filter(|r| norm_name(&r.name) == end).cloned().collect();
    if at_end.is_empty() {
        of_type
    } else {
        at_end
    }
}

fn served_opt(answer: Option<&LookupAnswer>, name: &str, rtype: &str) -> Vec<ObservedRecord> {
    answer.map(|a| served(a, name, rtype)).unwrap_or_default()
}

fn own_records(answer: Option<&LookupAnswer>, name: &str, rtype: &str) -> Vec<ObservedRecord> {
    let Some(LookupAnswer::Records { records }) = answer else { return Vec::new() };
    let name = norm_name(name);
    records
        .iter()
        .filter(|r| r.record_type.eq_ignore_ascii_case(rtype) && norm_name(&r.name) == name)
        .cloned()
        .collect()
}

// --- SPF

fn is_spf(text: &str) -> bool {
    let t = text.trim_start().to_ascii_lowercase();
    t == "v=spf1" || t.starts_with("v=spf1 ") || t.starts_with("v=spf1\t")
}

#[derive(Debug, PartialEq, Eq)]
enum SpfVerdict {
    NotSpf,
    Equal,
    /// Authorizes everything the expected record does (and maybe more).
    Authorizes,
    /// These expected terms are missing (or come after `all`).
    Missing(Vec<String>),
    /// The `all` term is weaker than the expected one.
    WeakerAll { have: String, want: String },
}

fn spf_terms(s: &str) -> Option<Vec<String>> {
    let terms: Vec<String> = unquote(s).split_whitespace().map(|t| t.to_ascii_lowercase()).collect();
    (terms.first().map(String::as_str) == Some("v=spf1")).then_some(terms)
}

/// `+include:x` → `include:x`.
fn spf_norm_term(t: &str) -> String {
    t.strip_prefix('+').unwrap_or(t).to_string()
}

fn spf_all(terms: &[String]) -> Option<(usize, char)> {
    terms.iter().enumerate().find_map(|(i, t)| {
        let (q, rest) = match t.chars().next() {
            Some(c @ ('+' | '-' | '~' | '?')) => (c, &t[1..]),
            _ => ('+', t.as_str()),
        };
        (rest == "all").then_some((i, q))
    })
}

fn strictness(q: char) -> u8 {
    match q {
        '-' => 3,
        '~' => 2,
        '?' => 1,
        _ => 0,
    }
}

/// Decision: the observed record is `found` when it has every mechanism of the
/// expected one before its `all`, and its `all` is at least as strict as the
/// expected one (`-all` ≥ `~all` ≥ `?all` ≥ `+all`; no `all` counts as `?all`
/// unless a `redirect=` decides). Expected `redirect=d` is met by `redirect=d`
/// or `include:d`.
fn spf_compare(observed: &str, expected: &str) -> SpfVerdict {
    let (Some(obs), Some(exp)) = (spf_terms(observed), spf_terms(expected)) else {
        return SpfVerdict::NotSpf;
    };
    let on: Vec<String> = obs.iter().map(|t| spf_norm_term(t)).collect();
    let en: Vec<String> = exp.iter().map(|t| spf_norm_term(t)).collect();
    if on == en {
        return SpfVerdict::Equal;
    }
    let obs_all = spf_all(&obs);
    let effective: &[String] = match obs_all {
        Some((i, _)) => &on[..i],
        None => &on[..],
    };
    let mut missing = Vec::new();
    for t in en.iter().skip(1) {
        let bare = t.trim_start_matches(['-', '~', '?']);
        if bare == "all" {
            continue;
        }
        if let Some(d) = t.strip_prefix("redirect=") {
            if !effective.iter().any(|o| o == t || *o == format!("include:{d}")) {
                missing.push(format!("include:{d}"));
            }
            continue;
        }
        if t.starts_with("exp=") {
            continue;
        }
        if !effective.contains(t) {
            missing.push(t.clone());
        }
    }
    if !missing.is_empty() {
        return SpfVerdict::Missing(missing);
    }
    if let Some((_, want_q)) = spf_all(&exp) {
        let have_q = match obs_all {
            Some((_, q)) => q,
            None if on.iter().any(|t| t.starts_with("redirect=")) => want_q,
            None => '?',
        };
        if strictness(have_q) < strictness(want_q) {
            let show = |q: char| if q == '+' { "+all".to_string() } else { format!("{q}all") };
            return SpfVerdict::WeakerAll {
                have: if obs_all.is_some() { show(have_q) } else { "(no all term)".into() },
                want: show(want_q),
            };
        }
    }
    SpfVerdict::Authorizes
}

/// One SPF record authorizing what all of `records` and `expected` do: their
/// mechanisms in order without repeats, then the expected `all`.
fn merge_spf(expected: &str, records: &[String]) -> String {
    let mut terms: Vec<String> = vec!["v=spf1".into()];
    let mut push = |t: &str| {
        let n = spf_norm_term(&t.to_ascii_lowercase());
        let bare = n.trim_start_matches(['-', '~', '?']);
        if n != "v=spf1" && bare != "all" && !terms.contains(&n) {
            terms.push(n);
        }
    };
    for r in records {
        for t in unquote(r).split_whitespace() {
            push(t);
        }
    }
    for t in unquote(expected).split_whitespace() {
        push(t);
    }
    let exp_terms = spf_terms(expected).unwrap_or_default();
    let all = spf_all(&exp_terms)
        .map(|(i, _)| exp_terms[i].clone())
        .or_else(|| records.iter().filter_map(|r| spf_terms(r)).find_map(|ts| spf_all(&ts).map(|(i, _)| ts[i].clone())))
        .unwrap_or_else(|| "~all".into());
    terms.push(all);
    terms.join(" ")
}

// --- DKIM / DMARC tag lists

/// `a=1; b = 2 ;` → {a: "1", b: "2"}; values without white space. None when not a
/// tag list (a part without `=`, or a tag twice).
fn tag_list(s: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for part in unquote(s).split(';') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (k, v) = part.split_once('=')?;
        let k = k.trim().to_ascii_lowercase();
        let v: String = v.chars().filter(|c| !c.is_whitespace()).collect();
        if k.is_empty() || out.insert(k, v).is_some() {
            return None;
        }
    }
    (!out.is_empty()).then_some(out)
}

fn dkim_norm(s: &str) -> Option<BTreeMap<String, String>> {
    let mut t = tag_list(s)?;
    for (k, v) in t.iter_mut() {
        if k != "p" {
            *v = v.to_ascii_lowercase();
        }
    }
    t.remove("n");
    for (k, d) in [("v", "dkim1"), ("k", "rsa"), ("s", "*"), ("g", "*")] {
        if t.get(k).map(String::as_str) == Some(d) {
            t.remove(k);
        }
    }
    Some(t)
}

fn dkim_equal(observed: &str, expected: &str) -> bool {
    match (dkim_norm(observed), dkim_norm(expected)) {
        (Some(a), Some(b)) => a == b,
        _ => unquote(observed).trim() == unquote(expected).trim(),
    }
}

fn dmarc_norm(s: &str) -> Option<BTreeMap<String, String>> {
    let mut t = tag_list(s)?;
    for v in t.values_mut() {
        *v = v.to_ascii_lowercase();
    }
    if t.get("v").map(String::as_str) != Some("dmarc1") {
        return None;
    }
    for (k, d) in [("adkim", "r"), ("aspf", "r"), ("fo", "0"), ("rf", "afrf"), ("ri", "86400"), ("pct", "100")] {
        if t.get(k).map(String::as_str) == Some(d) {
            t.remove(k);
        }
    }
    if t.get("sp").is_some() && t.get("sp") == t.get("p") {
        t.remove("sp");
    }
    Some(t)
}

fn dmarc_rank(p: &str) -> u8 {
    match p {
        "reject" => 2,
        "quarantine" => 1,
        _ => 0,
    }
}

/// Equal as tag lists; or (decision) an existing DMARC policy at least as strict
/// as the expected one, for the domain, its subdomains and the share of mail, that
/// has every other expected tag with the same value.
fn dmarc_ok(observed: &str, expected: &str) -> bool {
    let (Some(o), Some(e)) = (dmarc_norm(observed), dmarc_norm(expected)) else {
        return unquote(observed).trim() == unquote(expected).trim();
    };
    if o == e {
        return true;
    }
    let p = |m: &BTreeMap<String, String>| m.get("p").map(|v| dmarc_rank(v)).unwrap_or(0);
    let sp = |m: &BTreeMap<String, String>| m.get("sp").map(|v| dmarc_rank(v)).unwrap_or_else(|| p(m));
    let pct = |m: &BTreeMap<String, String>| m.get("pct").and_then(|v| v.parse::<u32>().ok()).unwrap_or(100);
    if !o.contains_key("p") || p(&o) < p(&e) || sp(&o) < sp(&e) || pct(&o) < pct(&e) {
        return false;
    }
    e.iter().filter(|(k, _)| !["v", "p", "sp", "pct"].contains(&k.as_str())).all(|(k, v)| o.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
}
