//! DNS verdicts (docs/interface.md §4): which questions to ask, and what the answers mean.
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
//! - an SPF, DKIM or DMARC record that matches by meaning is `found` only when
//!   receiving mail servers would use its bytes as served ([`crate::acceptance`]:
//!   quotes, version tags, tag syntax, policies, several DMARC or DKIM records);
//!   otherwise `value_mismatch` (or `duplicate_records`) naming what to enter;
//! - the auxiliary questions (the name with the zone appended, the apex, the other
//!   expected names, the wildcard under the apex, the addresses and flattened
//!   records at a CNAME name) only explain a record that is not `found`.

use std::collections::{BTreeMap, BTreeSet};

use crate::acceptance::{self, Family, Rejection};
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
            qs.insert(DnsQuestion {
                name,
                record_type: t.to_ascii_uppercase(),
            });
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
    expected
        .iter()
        .map(|r| judge_one(&zone, r, expected, observation))
        .collect()
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
    if !found
        && ctx
            .codes
            .iter()
            .all(|(c, _)| *c != DiagnosisCode::LookupFailed)
    {
        explain_elsewhere(&mut ctx, all);
    }
    let mut out = rec.clone();
    out.observed = ctx.observed;
    ctx.codes.sort_by_key(|(c, _)| *c);
    match ctx.codes.into_iter().next() {
        Some((code, message)) => {
            out.dns_status = code.status();
            // The record and its host as fields, so that no reader has to find them
            // in the message's words (the gateway shows them without a text filter).
            let record = norm_name(&rec.name);
            out.diagnosis = Some(Diagnosis {
                code,
                message,
                host: host_part(&record, &registrable(zone)),
                record,
                observed: out.observed.clone(),
            });
        }
        None => {
            out.dns_status = if found {
                DnsStatus::Found
            } else {
                DnsStatus::Missing
            };
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
                .filter(|r| {
                    r.record_type.eq_ignore_ascii_case("CNAME") && norm_name(&r.name) == name
                })
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
        ctx.observed
            .extend(records.iter().map(|r| format!("TXT {}", presentation(r))));
    } else {
        ctx.observed.extend(records.iter().map(presentation));
    }

    // the expected record by meaning, and of those the ones receivers use as published
    let matching: Vec<&ObservedRecord> = records.iter().filter(|r| matches(ctx, r)).collect();
    let accepted: Vec<&ObservedRecord> = matching
        .iter()
        .copied()
        .filter(|r| rejection(ctx, r).is_none())
        .collect();
    let found = !accepted.is_empty();

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

    let several_dmarc = ctx.kind == Kind::Dmarc && several_dmarc(ctx, &records, accepted.first());

    // the expected value, and a conflicting one of the same kind beside it
    if found && ctx.kind != Kind::Spf && !several_dmarc {
        let conflicting: Vec<&ObservedRecord> = records
            .iter()
            .filter(|r| conflicts(ctx, r, accepted[0]))
            .collect();
        if !conflicting.is_empty() {
            let what = match ctx.kind {
                Kind::Dkim => "DKIM key",
                Kind::Dmarc => "DMARC record",
                Kind::Mx => "MX record",
                _ => "record of the same kind",
            };
            let others = conflicting
                .iter()
                .map(|r| format!("`{}`", presentation(r)))
                .collect::<Vec<_>>()
                .join(", ");
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

    if let Some(msg) = published_so_receivers_miss_it(ctx, &records) {
        ctx.codes.push((DiagnosisCode::ValueMismatch, msg));
        return false;
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
    let mut chain = cname_chain(answer, &name);
    // a CNAME question gets one hop; the address and TXT questions show the whole
    // chain (a CNAME to a CNAME to the expected target is found)
    if !chain.is_empty() && !chain.contains(&want) {
        for t in ["A", "AAAA", "TXT"] {
            if let Some(a) = ctx.answer(&name, t) {
                let longer = cname_chain(a, &name);
                if longer.first() == chain.first() && longer.len() > chain.len() {
                    chain = longer;
                }
            }
        }
    }
    ctx.observed.extend(chain.iter().cloned());
    if chain.contains(&want) {
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
    for (appended, base) in appended_names(&name, &zone)
        .into_iter()
        .zip([zone.clone(), registrable(&zone)])
    {
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
        // the same value is expected there too: it belongs to that record
        let expected_there = all.iter().any(|o| {
            norm_name(&o.name) == place
                && o.record_type.eq_ignore_ascii_case(&rtype)
                && unquote(&o.value) == unquote(&ctx.rec.value)
        });
        if place == wildcard || expected_there {
            continue;
        }
        let recs = ctx.served(&place, &rtype);
        if recs.iter().any(|r| matches(ctx, r)) {
            let where_ = if place == zone {
                format!("`{zone}` (the domain itself)")
            } else {
                format!("`{place}`")
            };
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
                    merge_spf(&want, std::slice::from_ref(&spf))
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
            let exp_p = tag_list(&want)
                .and_then(|t| t.get("p").cloned())
                .unwrap_or_default();
            let got_p = tag_list(&got)
                .and_then(|t| t.get("p").cloned())
                .unwrap_or_default();
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
        _ => format!(
            "The {} record at `{name}` (host `{host}`) is {have}; replace its value with `{want}`.",
            ctx.rtype
        ),
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
        Kind::Spf => matches!(
            spf_compare(&txt_text(r), &unquote(exp)),
            SpfVerdict::Equal | SpfVerdict::Authorizes
        ),
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

/// Several DMARC records at the name (receivers then apply none, or the first they
/// come across): pushes `duplicate_records`, naming `accepted` (or the expected
/// value) as the one to keep.
fn several_dmarc(
    ctx: &mut Ctx<'_>,
    records: &[ObservedRecord],
    accepted: Option<&&ObservedRecord>,
) -> bool {
    let texts: Vec<String> = records.iter().map(txt_bytes).collect();
    let keep = accepted
        .map(|r| txt_bytes(r))
        .unwrap_or_else(|| ctx.expected_text());
    match acceptance::several_dmarc_records(&ctx.name, &texts, &keep) {
        Some(msg) => {
            ctx.codes.push((DiagnosisCode::DuplicateRecords, msg));
            true
        }
        None => false,
    }
}

/// The `value_mismatch` message when one of `records` is the expected record by
/// meaning (or once its mechanical faults are mended) but published so that
/// receivers ignore or reject it, or typed as several strings that meet without a
/// space.
fn published_so_receivers_miss_it(ctx: &Ctx<'_>, records: &[ObservedRecord]) -> Option<String> {
    let family = family(ctx.kind)?;
    let rejected = records.iter().find_map(|r| {
        let why = rejection(ctx, r)?;
        (matches(ctx, r) || mended(ctx, r).is_some()).then_some((r, why))
    });
    if let Some((r, why)) = rejected {
        let (bytes, fix) = (txt_bytes(r), corrected(ctx, r));
        return Some(acceptance::rejected_message(
            family, &ctx.name, &bytes, &why, &fix,
        ));
    }
    let r = records.iter().find(|r| glued(ctx, r))?;
    let spaced = r.txt_strings.join(" ");
    Some(acceptance::glued_message(
        family,
        &ctx.name,
        &r.txt_strings,
        &spaced,
    ))
}

/// A record beside the found one `kept` that breaks it: of the same kind and another
/// meaning; at a DKIM selector any other TXT record, equivalent or not (several key
/// records leave verifiers' results undefined, RFC 6376 §3.6.2.2).
fn conflicts(ctx: &Ctx<'_>, r: &ObservedRecord, kept: &ObservedRecord) -> bool {
    if std::ptr::eq(r, kept) {
        return false;
    }
    match ctx.kind {
        Kind::Dkim => same_kind(ctx, r),
        _ => same_kind(ctx, r) && !matches(ctx, r) && !same_mx_host(ctx, r),
    }
}

/// The record families whose bytes receivers parse (see [`acceptance`]).
fn family(kind: Kind) -> Option<Family> {
    match kind {
        Kind::Spf => Some(Family::Spf),
        Kind::Dkim => Some(Family::Dkim),
        Kind::Dmarc => Some(Family::Dmarc),
        _ => None,
    }
}

/// Why receivers would not use `r` exactly as it is served.
fn rejection(ctx: &Ctx<'_>, r: &ObservedRecord) -> Option<Rejection> {
    acceptance::check(family(ctx.kind)?, &txt_bytes(r)).err()
}

/// `r` served as several strings, which receivers join without a separator (RFC
/// 7208 §3.3), that would be the expected record with a space where they meet.
fn glued(ctx: &Ctx<'_>, r: &ObservedRecord) -> bool {
    if r.txt_strings.len() < 2 {
        return false;
    }
    let spaced = ObservedRecord {
        value: r.txt_strings.join(" "),
        txt_strings: Vec::new(),
        ..r.clone()
    };
    matches(ctx, &spaced) && rejection(ctx, &spaced).is_none()
}

/// The value to enter instead of `r`: the owner's own record mended (keeping their
/// stricter DMARC policy or their merged SPF), else the expected value.
fn corrected(ctx: &Ctx<'_>, r: &ObservedRecord) -> String {
    mended(ctx, r)
        .map(|m| m.value)
        .unwrap_or_else(|| ctx.expected_text())
}

/// `r` with its mechanical faults mended ([`acceptance::repair`]), when receivers
/// accept that and it means the expected record.
fn mended(ctx: &Ctx<'_>, r: &ObservedRecord) -> Option<ObservedRecord> {
    let family = family(ctx.kind)?;
    let m = ObservedRecord {
        value: acceptance::repair(family, &txt_bytes(r)),
        txt_strings: Vec::new(),
        ..r.clone()
    };
    (acceptance::check(family, &m.value).is_ok() && matches(ctx, &m)).then_some(m)
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
    !s.is_empty()
        && s.contains('.')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._*".contains(c))
}

fn registrable(zone: &str) -> String {
    psl::domain_str(zone)
        .map(str::to_string)
        .unwrap_or_else(|| zone.to_string())
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

/// A TXT record's bytes as receivers read them: its strings concatenated without a
/// separator, nothing trimmed or unquoted.
fn txt_bytes(r: &ObservedRecord) -> String {
    if r.txt_strings.is_empty() {
        r.value.clone()
    } else {
        r.txt_strings.concat()
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
        // as served: quotes stored by the DNS host are part of what the owner must see
        "TXT" => txt_bytes(r),
        "MX" => match r.priority {
            Some(p) => format!("{p} {}", norm_name(&r.value)),
            None => norm_name(&r.value),
        },
        "CNAME" | "NS" => norm_name(&r.value),
        _ => r.value.clone(),
    }
}

fn quote_list(rs: &[ObservedRecord]) -> String {
    rs.iter()
        .map(|r| format!("`{}`", presentation(r)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn quote_list_refs(rs: &[&ObservedRecord]) -> String {
    rs.iter()
        .map(|r| format!("`{}`", presentation(r)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn same_set(a: &[ObservedRecord], b: &[ObservedRecord]) -> bool {
    let key = |rs: &[ObservedRecord]| -> BTreeSet<String> {
        rs.iter()
            .map(|r| format!("{} {}", r.record_type.to_ascii_uppercase(), presentation(r)))
            .collect()
    };
    !a.is_empty() && key(a) == key(b)
}

/// `"..." "..."`: the value split into quoted strings of at most 255 characters.
fn split_quoted(v: &str) -> String {
    let bytes: Vec<char> = v.chars().collect();
    bytes
        .chunks(255)
        .map(|c| format!("\"{}\"", c.iter().collect::<String>()))
        .collect::<Vec<_>>()
        .join(" ")
}

// --- answers

/// The CNAME targets starting at `name`, in order.
fn cname_chain(answer: &LookupAnswer, name: &str) -> Vec<String> {
    let LookupAnswer::Records { records } = answer else {
        return Vec::new();
    };
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
    let LookupAnswer::Records { records } = answer else {
        return Vec::new();
    };
    if rtype.eq_ignore_ascii_case("CNAME") {
        return own_records(Some(answer), name, rtype);
    }
    let end = cname_chain(answer, name)
        .pop()
        .unwrap_or_else(|| norm_name(name));
    let of_type: Vec<ObservedRecord> = records
        .iter()
        .filter(|r| r.record_type.eq_ignore_ascii_case(rtype))
        .cloned()
        .collect();
    let at_end: Vec<ObservedRecord> = of_type
        .iter()
        .filter(|r| norm_name(&r.name) == end)
        .cloned()
        .collect();
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
    let Some(LookupAnswer::Records { records }) = answer else {
        return Vec::new();
    };
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
    WeakerAll {
        have: String,
        want: String,
    },
}

fn spf_terms(s: &str) -> Option<Vec<String>> {
    let terms: Vec<String> = unquote(s)
        .split_whitespace()
        .map(|t| t.to_ascii_lowercase())
        .collect();
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
            if !effective
                .iter()
                .any(|o| o == t || *o == format!("include:{d}"))
            {
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
            let show = |q: char| {
                if q == '+' {
                    "+all".to_string()
                } else {
                    format!("{q}all")
                }
            };
            return SpfVerdict::WeakerAll {
                have: if obs_all.is_some() {
                    show(have_q)
                } else {
                    "(no all term)".into()
                },
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
        .or_else(|| {
            records
                .iter()
                .filter_map(|r| spf_terms(r))
                .find_map(|ts| spf_all(&ts).map(|(i, _)| ts[i].clone()))
        })
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
    for (k, d) in [
        ("adkim", "r"),
        ("aspf", "r"),
        ("fo", "0"),
        ("rf", "afrf"),
        ("ri", "86400"),
        ("pct", "100"),
    ] {
        if t.get(k).map(String::as_str) == Some(d) {
            t.remove(k);
        }
    }
    if t.contains_key("sp") && t.get("sp") == t.get("p") {
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
    let sp =
        |m: &BTreeMap<String, String>| m.get("sp").map(|v| dmarc_rank(v)).unwrap_or_else(|| p(m));
    let pct = |m: &BTreeMap<String, String>| {
        m.get("pct")
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(100)
    };
    if !o.contains_key("p") || p(&o) < p(&e) || sp(&o) < sp(&e) || pct(&o) < pct(&e) {
        return false;
    }
    e.iter()
        .filter(|(k, _)| !["v", "p", "sp", "pct"].contains(&k.as_str()))
        .all(|(k, v)| o.get(k) == Some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZONE: &str = "acme.com";
    const SPF: &str = "v=spf1 include:amazonses.com ~all";
    const KEY: &str = "MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDLxKqJ7k9kVp0xL3Wn2QeX8vHb0Y4mTtR5sJ1aFhQ9gUo3EwXyZ7nC6iP2dLkAbCdEfGhIjKlMnOpQrStUvWxYz01234567AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQrStUvWxYz0123456789AbCdEfGhIjKlMnOpQIDAQAB";

    fn spf() -> DnsRecord {
        DnsRecord::required("spf", "TXT", "send.acme.com", SPF, None)
    }
    fn dkim() -> DnsRecord {
        DnsRecord::required(
            "dkim",
            "TXT",
            "resend._domainkey.acme.com",
            &format!("p={KEY}"),
            None,
        )
    }
    fn mx() -> DnsRecord {
        DnsRecord::required(
            "return_path",
            "MX",
            "send.acme.com",
            "feedback-smtp.us-east-1.amazonses.com",
            Some(10),
        )
    }
    fn dmarc() -> DnsRecord {
        DnsRecord::required("dmarc", "TXT", "_dmarc.acme.com", "v=DMARC1; p=none;", None)
    }
    fn tracking() -> DnsRecord {
        DnsRecord::required(
            "tracking",
            "CNAME",
            "links.acme.com",
            "track.provider.net",
            None,
        )
    }
    fn o(name: &str, t: &str, value: &str) -> ObservedRecord {
        ObservedRecord {
            name: name.into(),
            record_type: t.into(),
            value: value.into(),
            txt_strings: vec![],
            priority: None,
            ttl: Some(300),
        }
    }
    fn omx(name: &str, prio: u16, host: &str) -> ObservedRecord {
        ObservedRecord {
            priority: Some(prio),
            ..o(name, "MX", host)
        }
    }
    fn recs(rs: Vec<ObservedRecord>) -> LookupAnswer {
        LookupAnswer::Records { records: rs }
    }
    fn failed(e: LookupError) -> LookupAnswer {
        LookupAnswer::Failed {
            error: e,
            detail: "test".into(),
        }
    }
    const NX: LookupAnswer = LookupAnswer::NxDomain {
        negative_ttl: Some(300),
    };

    /// Every planned question answered NXDOMAIN, except the given answers.
    fn run(expected: &[DnsRecord], answers: Vec<(&str, &str, LookupAnswer)>) -> Vec<DnsRecord> {
        let qs = plan(ZONE, expected);
        let mut obs = DnsObservation::default();
        for q in qs {
            let a = answers
                .iter()
                .find(|(n, t, _)| *n == q.name && *t == q.record_type)
                .map(|(_, _, a)| a.clone())
                .unwrap_or(NX);
            obs.answers.push((q, a));
        }
        for (n, t, a) in &answers {
            assert!(
                obs.answer(n, t).is_some(),
                "the test answers a question the plan does not ask: {n} {t}"
            );
            let _ = a;
        }
        judge(ZONE, expected, &obs)
    }
    fn one(expected: DnsRecord, answers: Vec<(&str, &str, LookupAnswer)>) -> DnsRecord {
        run(&[expected], answers).remove(0)
    }
    fn code(r: &DnsRecord) -> Option<DiagnosisCode> {
        r.diagnosis.as_ref().map(|d| d.code)
    }
    fn msg(r: &DnsRecord) -> String {
        r.diagnosis
            .as_ref()
            .map(|d| d.message.clone())
            .unwrap_or_default()
    }
    fn assert_found(r: &DnsRecord) {
        assert_eq!(r.dns_status, DnsStatus::Found, "{r:?}");
        assert_eq!(r.diagnosis, None);
    }

    // --- plan

    #[test]
    fn plan_asks_what_the_diagnosis_needs() {
        let exp = [spf(), dkim(), mx(), dmarc(), tracking()];
        let qs = plan("ACME.com.", &exp);
        let has = |n: &str, t: &str| qs.iter().any(|q| q.name == n && q.record_type == t);
        assert!(has("send.acme.com", "TXT"));
        assert!(has("send.acme.com", "MX"));
        assert!(has("send.acme.com", "CNAME"));
        assert!(has("send.acme.com.acme.com", "TXT"));
        assert!(has("send.acme.com.acme.com", "MX"));
        assert!(has("acme.com", "TXT"));
        assert!(has("*.acme.com", "TXT"));
        assert!(has("resend._domainkey.acme.com", "TXT"));
        assert!(has("links.acme.com", "A"));
        assert!(has("links.acme.com", "AAAA"));
        assert!(has("links.acme.com", "CNAME"));
        assert!(has("track.provider.net", "TXT"));
        assert!(has("links.acme.com.acme.com", "CNAME"));
        let mut sorted = qs.clone();
        sorted.dedup();
        assert_eq!(sorted.len(), qs.len(), "no question twice");
    }

    #[test]
    fn plan_for_a_subdomain_zone_also_asks_the_registrable_domain_appended() {
        let r = DnsRecord::required("spf", "TXT", "send.mail.acme.com", SPF, None);
        let qs = plan("mail.acme.com", &[r]);
        assert!(qs
            .iter()
            .any(|q| q.name == "send.mail.acme.com.mail.acme.com"));
        assert!(qs.iter().any(|q| q.name == "send.mail.acme.com.acme.com"));
    }

    // --- found, comparison rules

    #[test]
    fn exact_spf_is_found_and_observed() {
        let r = one(
            spf(),
            vec![(
                "send.acme.com",
                "TXT",
                recs(vec![o("send.acme.com", "TXT", SPF)]),
            )],
        );
        assert_found(&r);
        assert_eq!(r.observed, vec![SPF.to_string()]);
    }

    #[test]
    fn names_compare_without_case_and_trailing_dot() {
        let mut e = mx();
        e.value = "Feedback-SMTP.us-east-1.amazonses.com.".into();
        let r = one(
            e,
            vec![(
                "send.acme.com",
                "MX",
                recs(vec![omx(
                    "SEND.acme.com.",
                    10,
                    "feedback-smtp.US-EAST-1.amazonses.com.",
                )]),
            )],
        );
        assert_found(&r);
    }

    #[test]
    fn txt_split_into_strings_compares_whole_and_expected_quotes_are_dropped() {
        let mut split = o("resend._domainkey.acme.com", "TXT", "");
        let full = format!("p={KEY}");
        split.txt_strings = vec![full[..255].to_string(), full[255..].to_string()];
        split.value = full.clone();
        let r = one(
            dkim(),
            vec![("resend._domainkey.acme.com", "TXT", recs(vec![split]))],
        );
        assert_found(&r);
        // (quotes *served* are text to receivers: see tests/receivers.rs)
        // and the expected value given with quotes
        let mut e = spf();
        e.value = format!("\"{SPF}\"");
        assert_found(&one(
            e,
            vec![(
                "send.acme.com",
                "TXT",
                recs(vec![o("send.acme.com", "TXT", SPF)]),
            )],
        ));
    }

    #[test]
    fn spf_terms_compare_case_insensitively_with_any_number_of_spaces() {
        // (only spaces: a tab or a leading space breaks SPF, see tests/receivers.rs)
        let seen = o(
            "send.acme.com",
            "TXT",
            "V=SPF1   Include:AmazonSES.com  ~ALL ",
        );
        assert_found(&one(
            spf(),
            vec![("send.acme.com", "TXT", recs(vec![seen]))],
        ));
        let plus = o("send.acme.com", "TXT", "v=spf1 +include:amazonses.com ~all");
        assert_found(&one(
            spf(),
            vec![("send.acme.com", "TXT", recs(vec![plus]))],
        ));
    }

    #[test]
    fn spf_with_the_include_merged_in_is_found() {
        let merged = o(
            "send.acme.com",
            "TXT",
            "v=spf1 include:_spf.google.com include:amazonses.com ~all",
        );
        assert_found(&one(
            spf(),
            vec![("send.acme.com", "TXT", recs(vec![merged]))],
        ));
        let stricter = o(
            "send.acme.com",
            "TXT",
            "v=spf1 ip4:1.2.3.4 include:amazonses.com -all",
        );
        assert_found(&one(
            spf(),
            vec![("send.acme.com", "TXT", recs(vec![stricter]))],
        ));
        let redirect = o(
            "send.acme.com",
            "TXT",
            "v=spf1 include:amazonses.com redirect=_spf.acme.com",
        );
        assert_found(&one(
            spf(),
            vec![("send.acme.com", "TXT", recs(vec![redirect]))],
        ));
    }

    #[test]
    fn spf_without_the_include_or_with_a_weaker_all_is_a_value_mismatch() {
        let other = o(
            "send.acme.com",
            "TXT",
            "v=spf1 include:_spf.google.com ~all",
        );
        let r = one(spf(), vec![("send.acme.com", "TXT", recs(vec![other]))]);
        assert_eq!(r.dns_status, DnsStatus::Mismatch);
        assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch));
        assert!(msg(&r).contains("include:amazonses.com"), "{}", msg(&r));
        assert!(
            msg(&r).contains("v=spf1 include:_spf.google.com include:amazonses.com ~all"),
            "{}",
            msg(&r)
        );
        assert_eq!(
            r.observed,
            vec!["v=spf1 include:_spf.google.com ~all".to_string()]
        );

        let after_all = o("send.acme.com", "TXT", "v=spf1 ~all include:amazonses.com");
        let r = one(spf(), vec![("send.acme.com", "TXT", recs(vec![after_all]))]);
        assert_eq!(
            code(&r),
            Some(DiagnosisCode::ValueMismatch),
            "terms after all never count"
        );

        for weaker in [
            "v=spf1 include:amazonses.com ?all",
            "v=spf1 include:amazonses.com +all",
            "v=spf1 include:amazonses.com",
        ] {
            let r = one(
                spf(),
                vec![(
                    "send.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com", "TXT", weaker)]),
                )],
            );
            assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch), "{weaker}");
            assert!(msg(&r).contains("~all"), "{}", msg(&r));
        }
    }

    #[test]
    fn unrelated_txt_beside_spf_is_no_conflict() {
        let r = one(
            spf(),
            vec![(
                "send.acme.com",
                "TXT",
                recs(vec![
                    o("send.acme.com", "TXT", "google-site-verification=abc"),
                    o("send.acme.com", "TXT", SPF),
                ]),
            )],
        );
        assert_found(&r);
        assert_eq!(r.observed.len(), 2);
    }

    #[test]
    fn unrelated_txt_alone_is_missing_not_a_mismatch() {
        let r = one(
            spf(),
            vec![(
                "send.acme.com",
                "TXT",
                recs(vec![o(
                    "send.acme.com",
                    "TXT",
                    "google-site-verification=abc",
                )]),
            )],
        );
        assert_eq!(r.dns_status, DnsStatus::Missing);
        assert_eq!(r.diagnosis, None);
    }

    #[test]
    fn dkim_compares_as_tag_list() {
        for seen in [
            format!("v=DKIM1; k=rsa; p={KEY}"),
            format!("p={KEY};"),
            format!("k=rsa;p={};", &KEY),
            format!("v=DKIM1;  p={} {} ;", &KEY[..100], &KEY[100..]),
            format!("K=RSA; p={KEY}"),
        ] {
            let r = one(
                dkim(),
                vec![(
                    "resend._domainkey.acme.com",
                    "TXT",
                    recs(vec![o("resend._domainkey.acme.com", "TXT", &seen)]),
                )],
            );
            assert_found(&r);
        }
        // a different key, or a different non-default tag, is not
        for seen in [
            format!("p={}", KEY.replace('A', "B")),
            format!("p={KEY}; t=y"),
            format!("k=ed25519; p={KEY}"),
        ] {
            let r = one(
                dkim(),
                vec![(
                    "resend._domainkey.acme.com",
                    "TXT",
                    recs(vec![o("resend._domainkey.acme.com", "TXT", &seen)]),
                )],
            );
            assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch), "{seen}");
        }
    }

    #[test]
    fn truncated_or_lower_cased_dkim_key_says_so() {
        let cut = format!("p={}", &KEY[..253]);
        let r = one(
            dkim(),
            vec![(
                "resend._domainkey.acme.com",
                "TXT",
                recs(vec![o("resend._domainkey.acme.com", "TXT", &cut)]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch));
        assert!(msg(&r).contains("cut off"), "{}", msg(&r));
        let lower = format!("p={}", KEY.to_ascii_lowercase());
        let r = one(
            dkim(),
            vec![(
                "resend._domainkey.acme.com",
                "TXT",
                recs(vec![o("resend._domainkey.acme.com", "TXT", &lower)]),
            )],
        );
        assert!(msg(&r).contains("case"), "{}", msg(&r));
    }

    #[test]
    fn dmarc_compares_as_tag_list_and_accepts_a_stricter_policy() {
        for seen in [
            "v=DMARC1; p=none",
            "v=DMARC1;p=none;adkim=r; pct=100",
            "v=DMARC1; P=None;",
            "v=DMARC1; p=quarantine; rua=mailto:d@acme.com",
            "v=DMARC1; p=reject",
        ] {
            let r = one(
                dmarc(),
                vec![(
                    "_dmarc.acme.com",
                    "TXT",
                    recs(vec![o("_dmarc.acme.com", "TXT", seen)]),
                )],
            );
            assert_found(&r);
        }
        let strict = DnsRecord::required(
            "dmarc",
            "TXT",
            "_dmarc.acme.com",
            "v=DMARC1; p=quarantine;",
            None,
        );
        for seen in [
            "v=DMARC1; p=none",
            "v=DMARC1; p=quarantine; sp=none",
            "v=DMARC1; p=quarantine; pct=10",
            "p=quarantine",
        ] {
            let r = one(
                strict.clone(),
                vec![(
                    "_dmarc.acme.com",
                    "TXT",
                    recs(vec![o("_dmarc.acme.com", "TXT", seen)]),
                )],
            );
            assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch), "{seen}");
        }
    }

    #[test]
    fn cname_whose_target_serves_the_value_is_found() {
        let r = one(
            dkim(),
            vec![(
                "resend._domainkey.acme.com",
                "TXT",
                recs(vec![
                    o(
                        "resend._domainkey.acme.com",
                        "CNAME",
                        "key1.dkim.provider.net.",
                    ),
                    o("key1.dkim.provider.net", "TXT", &format!("p={KEY}")),
                ]),
            )],
        );
        assert_found(&r);
        assert_eq!(r.observed[0], "CNAME key1.dkim.provider.net");
    }

    #[test]
    fn cname_chain_reaching_the_expected_target_is_found() {
        let r = one(
            tracking(),
            vec![(
                "links.acme.com",
                "CNAME",
                recs(vec![
                    o("links.acme.com", "CNAME", "links.acme.net"),
                    o("links.acme.net", "CNAME", "track.provider.net"),
                ]),
            )],
        );
        assert_found(&r);
        assert_eq!(r.observed, vec!["links.acme.net", "track.provider.net"]);
    }

    #[test]
    fn wildcard_answer_counts_as_the_names_own_record() {
        // the server synthesises the wildcard's record with the asked name as owner
        let r = one(
            spf(),
            vec![
                (
                    "send.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com", "TXT", SPF)]),
                ),
                ("*.acme.com", "TXT", recs(vec![o("*.acme.com", "TXT", SPF)])),
            ],
        );
        assert_found(&r);
    }

    // --- every code

    #[test]
    fn missing_without_explanation_has_no_diagnosis() {
        let r = one(spf(), vec![]);
        assert_eq!(r.dns_status, DnsStatus::Missing);
        assert_eq!(r.diagnosis, None);
        assert!(r.observed.is_empty());
        let r = one(
            mx(),
            vec![(
                "send.acme.com",
                "MX",
                LookupAnswer::NoData {
                    negative_ttl: Some(60),
                },
            )],
        );
        assert_eq!(r.dns_status, DnsStatus::Missing);
    }

    #[test]
    fn lookup_failed_for_servfail_refused_timeout() {
        for e in [
            LookupError::ServFail,
            LookupError::Refused,
            LookupError::Timeout,
            LookupError::Other,
        ] {
            let r = one(spf(), vec![("send.acme.com", "TXT", failed(e))]);
            assert_eq!(r.dns_status, DnsStatus::LookupFailed);
            assert_eq!(code(&r), Some(DiagnosisCode::LookupFailed));
            assert!(msg(&r).contains("not proof"));
        }
    }

    #[test]
    fn failed_auxiliary_question_does_not_hide_a_found_record() {
        let r = one(
            spf(),
            vec![
                (
                    "send.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com", "TXT", SPF)]),
                ),
                (
                    "send.acme.com.acme.com",
                    "TXT",
                    failed(LookupError::Timeout),
                ),
            ],
        );
        assert_found(&r);
    }

    #[test]
    fn appended_domain() {
        let r = one(
            spf(),
            vec![(
                "send.acme.com.acme.com",
                "TXT",
                recs(vec![o("send.acme.com.acme.com", "TXT", SPF)]),
            )],
        );
        assert_eq!(r.dns_status, DnsStatus::Missing);
        assert_eq!(code(&r), Some(DiagnosisCode::AppendedDomain));
        assert!(
            msg(&r).contains("enter `send` as the host name, not `send.acme.com`")
                || msg(&r).contains("Enter `send` as the host name, not `send.acme.com`"),
            "{}",
            msg(&r)
        );
        let r = one(
            tracking(),
            vec![(
                "links.acme.com.acme.com",
                "CNAME",
                recs(vec![o(
                    "links.acme.com.acme.com",
                    "CNAME",
                    "track.provider.net",
                )]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::AppendedDomain));
        let r = one(
            mx(),
            vec![(
                "send.acme.com.acme.com",
                "MX",
                recs(vec![omx(
                    "send.acme.com.acme.com",
                    10,
                    "feedback-smtp.us-east-1.amazonses.com",
                )]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::AppendedDomain));
    }

    #[test]
    fn a_wildcard_answering_for_the_appended_name_is_not_an_appended_record() {
        let r = one(
            dmarc(),
            vec![
                (
                    "_dmarc.acme.com.acme.com",
                    "TXT",
                    recs(vec![o(
                        "_dmarc.acme.com.acme.com",
                        "TXT",
                        "v=DMARC1; p=none",
                    )]),
                ),
                (
                    "*.acme.com",
                    "TXT",
                    recs(vec![o("*.acme.com", "TXT", "v=DMARC1; p=none")]),
                ),
            ],
        );
        // the wildcard does not answer for _dmarc.acme.com itself here (NXDOMAIN in
        // this observation), so the value sits at the wildcard: wrong_name
        assert_eq!(code(&r), Some(DiagnosisCode::WrongName));
    }

    #[test]
    fn wrong_name_apex_other_expected_name_wildcard() {
        let apex = o(
            "acme.com",
            "TXT",
            "v=spf1 include:_spf.google.com include:amazonses.com ~all",
        );
        let r = one(spf(), vec![("acme.com", "TXT", recs(vec![apex]))]);
        assert_eq!(r.dns_status, DnsStatus::Missing);
        assert_eq!(code(&r), Some(DiagnosisCode::WrongName));
        assert!(
            msg(&r).contains("`acme.com` (the domain itself)"),
            "{}",
            msg(&r)
        );
        assert!(msg(&r).contains("host name `send`"), "{}", msg(&r));

        // the DKIM key at the SPF name
        let r = run(
            &[spf(), dkim()],
            vec![(
                "send.acme.com",
                "TXT",
                recs(vec![
                    o("send.acme.com", "TXT", SPF),
                    o("send.acme.com", "TXT", &format!("p={KEY}")),
                ]),
            )],
        );
        assert_found(&r[0]);
        assert_eq!(code(&r[1]), Some(DiagnosisCode::WrongName));
        assert!(msg(&r[1]).contains("`send.acme.com`"));

        let r = one(
            dkim(),
            vec![(
                "*.acme.com",
                "TXT",
                recs(vec![o("*.acme.com", "TXT", &format!("p={KEY}"))]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::WrongName));
        assert!(msg(&r).contains("wildcard"));
    }

    #[test]
    fn multiple_spf_records() {
        let r = one(
            spf(),
            vec![(
                "send.acme.com",
                "TXT",
                recs(vec![
                    o("send.acme.com", "TXT", SPF),
                    o("send.acme.com", "TXT", "v=spf1 include:mailgun.org ~all"),
                ]),
            )],
        );
        assert_eq!(r.dns_status, DnsStatus::Mismatch);
        assert_eq!(code(&r), Some(DiagnosisCode::MultipleSpfRecords));
        assert!(
            msg(&r).contains("v=spf1 include:amazonses.com include:mailgun.org ~all"),
            "{}",
            msg(&r)
        );
        assert_eq!(r.observed.len(), 2);
    }

    #[test]
    fn duplicate_dkim_key_and_duplicate_mx_host() {
        let r = one(
            dkim(),
            vec![(
                "resend._domainkey.acme.com",
                "TXT",
                recs(vec![
                    o("resend._domainkey.acme.com", "TXT", &format!("p={KEY}")),
                    o("resend._domainkey.acme.com", "TXT", "p=OLDKEY"),
                ]),
            )],
        );
        assert_eq!(r.dns_status, DnsStatus::Mismatch);
        assert_eq!(code(&r), Some(DiagnosisCode::DuplicateRecords));
        assert!(msg(&r).contains("p=OLDKEY"));
        let r = one(
            mx(),
            vec![(
                "send.acme.com",
                "MX",
                recs(vec![
                    omx("send.acme.com", 10, "feedback-smtp.us-east-1.amazonses.com"),
                    omx("send.acme.com", 10, "mx.old-provider.com"),
                ]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::DuplicateRecords));
        assert!(msg(&r).contains("mx.old-provider.com"));
        // the same host a second time with another priority is harmless
        let r = one(
            mx(),
            vec![(
                "send.acme.com",
                "MX",
                recs(vec![
                    omx("send.acme.com", 10, "feedback-smtp.us-east-1.amazonses.com"),
                    omx("send.acme.com", 20, "feedback-smtp.us-east-1.amazonses.com"),
                ]),
            )],
        );
        assert_found(&r);
        // an equivalent second copy of the key is a conflict too: with several key
        // records verifiers' results are undefined (RFC 6376 §3.6.2.2)
        let r = one(
            dkim(),
            vec![(
                "resend._domainkey.acme.com",
                "TXT",
                recs(vec![
                    o("resend._domainkey.acme.com", "TXT", &format!("p={KEY}")),
                    o(
                        "resend._domainkey.acme.com",
                        "TXT",
                        &format!("v=DKIM1; p={KEY};"),
                    ),
                ]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::DuplicateRecords));
    }

    #[test]
    fn proxied_or_flattened() {
        let r = one(
            tracking(),
            vec![
                (
                    "links.acme.com",
                    "CNAME",
                    LookupAnswer::NoData { negative_ttl: None },
                ),
                (
                    "links.acme.com",
                    "A",
                    recs(vec![o("links.acme.com", "A", "104.16.1.1")]),
                ),
            ],
        );
        assert_eq!(r.dns_status, DnsStatus::Mismatch);
        assert_eq!(code(&r), Some(DiagnosisCode::ProxiedOrFlattened));
        assert!(r.observed.contains(&"A 104.16.1.1".to_string()));
        let r = one(
            tracking(),
            vec![
                (
                    "links.acme.com",
                    "TXT",
                    recs(vec![o("links.acme.com", "TXT", "v=spf1 -all")]),
                ),
                (
                    "track.provider.net",
                    "TXT",
                    recs(vec![o("track.provider.net", "TXT", "v=spf1 -all")]),
                ),
            ],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::ProxiedOrFlattened));
        // an unrelated TXT at the name is no flattening
        let r = one(
            tracking(),
            vec![
                (
                    "links.acme.com",
                    "TXT",
                    recs(vec![o("links.acme.com", "TXT", "hello")]),
                ),
                (
                    "track.provider.net",
                    "TXT",
                    recs(vec![o("track.provider.net", "TXT", "v=spf1 -all")]),
                ),
            ],
        );
        assert_eq!(r.dns_status, DnsStatus::Missing);
        assert_eq!(r.diagnosis, None);
    }

    #[test]
    fn wrong_type_cname_blocking_and_value_under_another_type() {
        let r = one(
            spf(),
            vec![
                (
                    "send.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com", "CNAME", "elsewhere.example.net")]),
                ),
                (
                    "send.acme.com",
                    "CNAME",
                    recs(vec![o("send.acme.com", "CNAME", "elsewhere.example.net")]),
                ),
            ],
        );
        assert_eq!(r.dns_status, DnsStatus::Mismatch);
        assert_eq!(code(&r), Some(DiagnosisCode::WrongType));
        assert!(msg(&r).contains("Delete the CNAME"));
        let r = one(
            mx(),
            vec![(
                "send.acme.com",
                "TXT",
                recs(vec![o(
                    "send.acme.com",
                    "TXT",
                    "10 feedback-smtp.us-east-1.amazonses.com",
                )]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::WrongType));
        assert!(msg(&r).contains("MX"));
        let r = one(
            tracking(),
            vec![(
                "links.acme.com",
                "TXT",
                recs(vec![o("links.acme.com", "TXT", "track.provider.net")]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::WrongType));
    }

    #[test]
    fn soa_ns_and_the_providers_other_records_never_count_as_wrong_type() {
        // send.acme.com has the SPF TXT the provider also asks for, and NS/SOA (a
        // delegated zone): the MX is just missing
        let r = run(
            &[spf(), mx()],
            vec![
                (
                    "send.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com", "TXT", SPF)]),
                ),
                (
                    "send.acme.com",
                    "MX",
                    LookupAnswer::NoData {
                        negative_ttl: Some(300),
                    },
                ),
            ],
        );
        assert_found(&r[0]);
        assert_eq!(r[1].dns_status, DnsStatus::Missing);
        assert_eq!(r[1].diagnosis, None);
    }

    #[test]
    fn value_mismatch_mx_priority_and_cname_target() {
        let r = one(
            mx(),
            vec![(
                "send.acme.com",
                "MX",
                recs(vec![omx(
                    "send.acme.com",
                    20,
                    "feedback-smtp.us-east-1.amazonses.com",
                )]),
            )],
        );
        assert_eq!(r.dns_status, DnsStatus::Mismatch);
        assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch));
        assert!(msg(&r).contains("priority 20"), "{}", msg(&r));
        assert_eq!(r.observed, vec!["20 feedback-smtp.us-east-1.amazonses.com"]);
        let r = one(
            tracking(),
            vec![(
                "links.acme.com",
                "CNAME",
                recs(vec![o("links.acme.com", "CNAME", "old.provider.net")]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch));
        let r = one(
            dkim(),
            vec![(
                "resend._domainkey.acme.com",
                "TXT",
                recs(vec![o("resend._domainkey.acme.com", "TXT", "p=OLDKEY")]),
            )],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch));
        assert_eq!(r.observed, vec!["p=OLDKEY"]);
    }

    // --- precedence and status mapping

    #[test]
    fn status_follows_the_code() {
        use DiagnosisCode::*;
        for (c, s) in [
            (LookupFailed, DnsStatus::LookupFailed),
            (MultipleSpfRecords, DnsStatus::Mismatch),
            (DuplicateRecords, DnsStatus::Mismatch),
            (ProxiedOrFlattened, DnsStatus::Mismatch),
            (WrongType, DnsStatus::Mismatch),
            (ValueMismatch, DnsStatus::Mismatch),
            (AppendedDomain, DnsStatus::Missing),
            (WrongName, DnsStatus::Missing),
        ] {
            assert_eq!(c.status(), s);
        }
        let mut all = [
            WrongName,
            AppendedDomain,
            ValueMismatch,
            WrongType,
            ProxiedOrFlattened,
            DuplicateRecords,
            MultipleSpfRecords,
            LookupFailed,
        ];
        all.sort();
        assert_eq!(all[0], LookupFailed);
        assert_eq!(all[7], WrongName);
    }

    #[test]
    fn precedence_first_code_wins() {
        // multiple SPF beats appended and wrong_name
        let r = one(
            spf(),
            vec![
                (
                    "send.acme.com",
                    "TXT",
                    recs(vec![
                        o("send.acme.com", "TXT", "v=spf1 a ~all"),
                        o("send.acme.com", "TXT", "v=spf1 mx ~all"),
                    ]),
                ),
                (
                    "send.acme.com.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com.acme.com", "TXT", SPF)]),
                ),
                ("acme.com", "TXT", recs(vec![o("acme.com", "TXT", SPF)])),
            ],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::MultipleSpfRecords));
        // value_mismatch beats appended_domain
        let r = one(
            mx(),
            vec![
                (
                    "send.acme.com",
                    "MX",
                    recs(vec![omx("send.acme.com", 10, "mx.other.com")]),
                ),
                (
                    "send.acme.com.acme.com",
                    "MX",
                    recs(vec![omx(
                        "send.acme.com.acme.com",
                        10,
                        "feedback-smtp.us-east-1.amazonses.com",
                    )]),
                ),
            ],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::ValueMismatch));
        // appended beats wrong_name
        let r = one(
            spf(),
            vec![
                (
                    "send.acme.com.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com.acme.com", "TXT", SPF)]),
                ),
                ("acme.com", "TXT", recs(vec![o("acme.com", "TXT", SPF)])),
            ],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::AppendedDomain));
        // proxied beats wrong_type
        let r = one(
            tracking(),
            vec![
                (
                    "links.acme.com",
                    "A",
                    recs(vec![o("links.acme.com", "A", "104.16.1.1")]),
                ),
                (
                    "links.acme.com",
                    "TXT",
                    recs(vec![o("links.acme.com", "TXT", "track.provider.net")]),
                ),
            ],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::ProxiedOrFlattened));
        // wrong_type (MX as TXT) beats value_mismatch (MX other host)
        let r = one(
            mx(),
            vec![
                (
                    "send.acme.com",
                    "MX",
                    recs(vec![omx("send.acme.com", 10, "mx.other.com")]),
                ),
                (
                    "send.acme.com",
                    "TXT",
                    recs(vec![o(
                        "send.acme.com",
                        "TXT",
                        "feedback-smtp.us-east-1.amazonses.com",
                    )]),
                ),
            ],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::WrongType));
        // lookup_failed beats everything
        let r = one(
            spf(),
            vec![
                ("send.acme.com", "TXT", failed(LookupError::ServFail)),
                ("acme.com", "TXT", recs(vec![o("acme.com", "TXT", SPF)])),
            ],
        );
        assert_eq!(code(&r), Some(DiagnosisCode::LookupFailed));
    }

    #[test]
    fn several_records_are_judged_independently_in_order() {
        let exp = [spf(), dkim(), mx(), dmarc()];
        let r = run(
            &exp,
            vec![
                (
                    "send.acme.com",
                    "TXT",
                    recs(vec![o("send.acme.com", "TXT", SPF)]),
                ),
                (
                    "send.acme.com",
                    "MX",
                    recs(vec![omx(
                        "send.acme.com",
                        10,
                        "feedback-smtp.us-east-1.amazonses.com",
                    )]),
                ),
                (
                    "resend._domainkey.acme.com",
                    "TXT",
                    failed(LookupError::Timeout),
                ),
            ],
        );
        assert_eq!(r.len(), 4);
        assert_eq!(r[0].purpose, "spf");
        assert_found(&r[0]);
        assert_eq!(r[1].dns_status, DnsStatus::LookupFailed);
        assert_found(&r[2]);
        assert_eq!(r[3].dns_status, DnsStatus::Missing);
    }

    #[test]
    fn spf_compare_unit() {
        assert_eq!(spf_compare(SPF, SPF), SpfVerdict::Equal);
        assert_eq!(spf_compare("not spf", SPF), SpfVerdict::NotSpf);
        assert_eq!(
            spf_compare("v=spf1 -all", SPF),
            SpfVerdict::Missing(vec!["include:amazonses.com".into()])
        );
        assert_eq!(
            spf_compare("v=spf1 include:amazonses.com -all", SPF),
            SpfVerdict::Authorizes
        );
        assert_eq!(
            spf_compare("v=spf1 include:x.com", "v=spf1 redirect=x.com"),
            SpfVerdict::Authorizes
        );
        assert!(!is_spf("v=spf10"));
    }

    #[test]
    fn unquote_unit() {
        assert_eq!(unquote(" \"abc\" "), "abc");
        assert_eq!(unquote("\"ab\" \"cd\""), "abcd");
        assert_eq!(unquote("\"a\\\"b\""), "a\"b");
        assert_eq!(unquote("plain"), "plain");
        assert_eq!(norm_name("Send.ACME.com."), "send.acme.com");
    }
}
