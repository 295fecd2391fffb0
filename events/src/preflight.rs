//! Pre-flight: what will bite the owner later, found right after the domain is
//! provisioned (asynchronously: the registration's outcome never waits for it) and
//! kept in the row's `metadata.preflight_warnings`.
//!
//! - an SPF record already at the host the provider will use (two SPF records break SPF);
//! - a CNAME already at that host (it blocks the TXT and MX records);
//! - a domain with no nameservers at all (nothing can be published);
//! - an apex SPF record that would exceed SPF's 10-lookup limit if the owner merged
//!   the provider's `include:` into it (with the count).
//!
//! Pure: [`plan`] and [`follow_up`] say what to ask, [`judge`] what the answers mean.

use crate::records::{DnsObservation, DnsQuestion, DnsRecord, LookupAnswer};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
pub struct Warning {
    /// `existing_spf`, `blocking_cname`, `no_nameservers`, `spf_lookup_limit`.
    pub code: String,
    pub message: String,
}

/// SPF's limit on DNS-querying terms (RFC 7208 §4.6.4).
pub const SPF_LOOKUP_LIMIT: usize = 10;

/// How deep `include:` chains are followed.
pub const MAX_ROUNDS: usize = 4;

fn q(name: &str, t: &str) -> DnsQuestion {
    DnsQuestion {
        name: name.trim_end_matches('.').to_ascii_lowercase(),
        record_type: t.into(),
    }
}

/// Hosts where the provider's TXT/MX records go (not the apex: MX never goes there).
fn provider_hosts(zone: &str, records: &[DnsRecord]) -> BTreeSet<String> {
    records
        .iter()
        .filter(|r| {
            r.required && (r.record_type == "TXT" || r.record_type == "MX") && r.name != zone
        })
        .map(|r| r.name.clone())
        .collect()
}

fn spf_texts(obs: &DnsObservation, name: &str) -> Vec<String> {
    match obs.answer(name, "TXT") {
        Some(LookupAnswer::Records { records }) => records
            .iter()
            .filter(|r| {
                r.record_type.eq_ignore_ascii_case("TXT")
                    && r.name.trim_end_matches('.').eq_ignore_ascii_case(name)
            })
            .map(|r| r.value.clone())
            .filter(|v| v.trim_start().to_ascii_lowercase().starts_with("v=spf1"))
            .collect(),
        _ => Vec::new(),
    }
}

/// The first round of questions.
pub fn plan(zone: &str, records: &[DnsRecord]) -> Vec<DnsQuestion> {
    let mut qs = vec![q(zone, "NS"), q(zone, "TXT")];
    for host in provider_hosts(zone, records) {
        qs.push(q(&host, "TXT"));
        qs.push(q(&host, "CNAME"));
    }
    qs.sort();
    qs.dedup();
    qs
}

/// The domains an SPF record sends lookups to through `include:` and `redirect=`.
fn includes(spf: &str) -> Vec<String> {
    spf.split_whitespace()
        .filter_map(|term| {
            let t = term
                .trim_start_matches(['+', '-', '~', '?'])
                .to_ascii_lowercase();
            t.strip_prefix("include:")
                .or_else(|| t.strip_prefix("redirect="))
                .map(|d| d.trim_end_matches('.').to_string())
        })
        .filter(|d| !d.is_empty() && !d.contains('%'))
        .collect()
}

/// The include targets of the apex SPF and of the provider's SPF that were not asked yet.
pub fn follow_up(zone: &str, records: &[DnsRecord], obs: &DnsObservation) -> Vec<DnsQuestion> {
    let mut roots: Vec<String> = spf_texts(obs, zone);
    roots.extend(
        records
            .iter()
            .filter(|r| r.purpose == "spf")
            .map(|r| r.value.clone()),
    );
    let mut seen = BTreeSet::new();
    let mut todo: Vec<String> = roots.iter().flat_map(|s| includes(s)).collect();
    let mut out = Vec::new();
    while let Some(d) = todo.pop() {
        if !seen.insert(d.clone()) {
            continue;
        }
        match obs.answer(&d, "TXT") {
            None => out.push(q(&d, "TXT")),
            Some(_) => todo.extend(spf_texts(obs, &d).iter().flat_map(|s| includes(s))),
        }
    }
    out.sort();
    out.dedup();
    out
}

/// DNS-querying terms of an SPF record, following `include:`/`redirect=` through what
/// was observed. `None` where a target was not observed (the count is then a minimum).
fn lookups(spf: &str, obs: &DnsObservation, depth: usize, complete: &mut bool) -> usize {
    let mut n = 0;
    for term in spf.split_whitespace().skip(1) {
        let t = term
            .trim_start_matches(['+', '-', '~', '?'])
            .to_ascii_lowercase();
        let name = t.split([':', '=', '/']).next().unwrap_or("");
        match name {
            "a" | "mx" | "ptr" | "exists" => n += 1,
            "include" | "redirect" => {
                n += 1;
                let target = t
                    .split_once([':', '='])
                    .map(|(_, d)| d.trim_end_matches('.'))
                    .unwrap_or("");
                if depth == 0 {
                    *complete = false;
                    continue;
                }
                match spf_texts(obs, target).first() {
                    Some(inner) => n += lookups(inner, obs, depth - 1, complete),
                    None if obs.answer(target, "TXT").is_none() => *complete = false,
                    None => {}
                }
            }
            _ => {}
        }
    }
    n
}

/// What the answers mean for the owner.
pub fn judge(zone: &str, records: &[DnsRecord], obs: &DnsObservation) -> Vec<Warning> {
    let mut out = Vec::new();
    if let Some(LookupAnswer::NxDomain { .. } | LookupAnswer::NoData { .. }) =
        obs.answer(zone, "NS")
    {
        out.push(Warning {
            code: "no_nameservers".into(),
            message: format!(
                "`{zone}` has no nameservers: no DNS record can be published for it yet. \
                 Check that the domain is registered and delegated to your DNS host."
            ),
        });
    }
    for host in provider_hosts(zone, records) {
        let relative = host
            .strip_suffix(&format!(".{zone}"))
            .unwrap_or(&host)
            .to_string();
        if let Some(LookupAnswer::Records { records: found }) = obs.answer(&host, "CNAME") {
            if let Some(c) = found
                .iter()
                .find(|r| r.record_type.eq_ignore_ascii_case("CNAME"))
            {
                out.push(Warning {
                    code: "blocking_cname".into(),
                    message: format!(
                        "`{host}` is a CNAME to `{}`: a name with a CNAME can hold no other record, so the \
                         TXT and MX records for sending cannot be added there. Remove the CNAME for `{relative}` first.",
                        c.value.trim_end_matches('.')
                    ),
                });
                continue;
            }
        }
        let existing = spf_texts(obs, &host);
        let ours: Vec<&str> = records
            .iter()
            .filter(|r| r.purpose == "spf" && r.name == host)
            .map(|r| r.value.as_str())
            .collect();
        if let Some(e) = existing.iter().find(|e| {
            !ours
                .iter()
                .any(|o| o.split_whitespace().eq(e.split_whitespace()))
        }) {
            out.push(Warning {
                code: "existing_spf".into(),
                message: format!(
                    "`{host}` already has an SPF record (`{e}`). A name may have only one: merge the \
                     provider's `include:` into it instead of adding a second `v=spf1` record."
                ),
            });
        }
    }
    if let Some(apex) = spf_texts(obs, zone).first() {
        let mut complete = true;
        let existing = lookups(apex, obs, MAX_ROUNDS, &mut complete);
        let provider: usize = records
            .iter()
            .filter(|r| r.purpose == "spf")
            .map(|r| lookups(&r.value, obs, MAX_ROUNDS, &mut complete))
            .max()
            .unwrap_or(0);
        let total = existing + provider;
        if total > SPF_LOOKUP_LIMIT {
            out.push(Warning {
                code: "spf_lookup_limit".into(),
                message: format!(
                    "The SPF record at `{zone}` already needs {existing} DNS lookups; merging the provider's \
                     include would make {}{total}, over SPF's limit of {SPF_LOOKUP_LIMIT}, and receivers would \
                     reject the mail. Keep the provider's SPF at its own host (as given) and do not merge it into the apex.",
                    if complete { "" } else { "at least " }
                ),
            });
        }
    }
    out
}

/// Whether a `preflight` command should look at all (a live, provisioned domain).
pub fn wanted(state: &crate::state::DomainState) -> bool {
    state.status.is_live() && state.is_provisioned() && !state.records.is_empty()
}

/// Records the warnings (an empty list too: it says the pre-flight ran).
pub fn decide(
    state: &crate::state::DomainState,
    warnings: Vec<Warning>,
) -> crate::decide::Decision {
    if wanted(state) {
        crate::decide::Decision::Append(crate::event::EventData::PreflightChecked { warnings })
    } else {
        crate::decide::Decision::Nothing
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::{DnsStatus, ObservedRecord};

    fn rec(purpose: &str, t: &str, name: &str, value: &str) -> DnsRecord {
        DnsRecord {
            purpose: purpose.into(),
            record_type: t.into(),
            name: name.into(),
            value: value.into(),
            priority: None,
            required: purpose != "dmarc",
            dns_status: DnsStatus::Pending,
            observed: vec![],
            diagnosis: None,
        }
    }

    fn records() -> Vec<DnsRecord> {
        vec![
            rec(
                "return_path",
                "MX",
                "send.acme.com",
                "feedback-smtp.us-east-1.amazonses.com",
            ),
            rec(
                "spf",
                "TXT",
                "send.acme.com",
                "v=spf1 include:amazonses.com ~all",
            ),
            rec("dkim", "TXT", "resend._domainkey.acme.com", "p=abc"),
        ]
    }

    fn txt(name: &str, v: &str) -> (DnsQuestion, LookupAnswer) {
        (
            q(name, "TXT"),
            LookupAnswer::Records {
                records: vec![ObservedRecord {
                    name: name.into(),
                    record_type: "TXT".into(),
                    value: v.into(),
                    txt_strings: vec![],
                    priority: None,
                    ttl: None,
                }],
            },
        )
    }

    fn codes(w: &[Warning]) -> Vec<&str> {
        w.iter().map(|w| w.code.as_str()).collect()
    }

    #[test]
    fn the_first_round_asks_for_nameservers_the_apex_spf_and_the_provider_hosts() {
        let qs = plan("acme.com", &records());
        assert!(qs.contains(&q("acme.com", "NS")));
        assert!(qs.contains(&q("acme.com", "TXT")));
        assert!(qs.contains(&q("send.acme.com", "CNAME")));
        assert!(qs.contains(&q("resend._domainkey.acme.com", "CNAME")));
    }

    #[test]
    fn an_existing_spf_at_the_provider_host_is_a_warning_but_our_own_is_not() {
        let obs = DnsObservation {
            answers: vec![txt("send.acme.com", "v=spf1 include:_spf.google.com ~all")],
        };
        assert_eq!(
            codes(&judge("acme.com", &records(), &obs)),
            vec!["existing_spf"]
        );
        let obs = DnsObservation {
            answers: vec![txt("send.acme.com", "v=spf1  include:amazonses.com ~all")],
        };
        assert!(judge("acme.com", &records(), &obs).is_empty());
    }

    #[test]
    fn a_cname_at_the_provider_host_blocks_it() {
        let obs = DnsObservation {
            answers: vec![(
                q("send.acme.com", "CNAME"),
                LookupAnswer::Records {
                    records: vec![ObservedRecord {
                        name: "send.acme.com".into(),
                        record_type: "CNAME".into(),
                        value: "elsewhere.example.".into(),
                        txt_strings: vec![],
                        priority: None,
                        ttl: None,
                    }],
                },
            )],
        };
        let w = judge("acme.com", &records(), &obs);
        assert_eq!(codes(&w), vec!["blocking_cname"]);
        assert!(w[0].message.contains("elsewhere.example"));
    }

    #[test]
    fn a_domain_without_nameservers_is_named() {
        let obs = DnsObservation {
            answers: vec![(
                q("acme.com", "NS"),
                LookupAnswer::NxDomain { negative_ttl: None },
            )],
        };
        assert_eq!(
            codes(&judge("acme.com", &records(), &obs)),
            vec!["no_nameservers"]
        );
    }

    #[test]
    fn an_apex_spf_near_the_limit_is_counted_through_its_includes() {
        let zone = "acme.com";
        let mut answers = vec![txt(
            zone,
            "v=spf1 include:a.example include:b.example mx a ~all",
        )];
        answers.push(txt(
            "a.example",
            "v=spf1 include:c.example ip4:1.2.3.4 ~all",
        ));
        answers.push(txt("b.example", "v=spf1 a mx ptr ~all"));
        answers.push(txt("c.example", "v=spf1 exists:x.example ~all"));
        answers.push(txt("amazonses.com", "v=spf1 ip4:199.255.192.0/22 ~all"));
        let obs = DnsObservation { answers };
        // a.example(1) + c.example(1) + exists(1) + b.example(1) + a mx ptr(3) + mx + a (2) = 9; + amazonses (1) = 10
        assert!(judge(zone, &records(), &obs).is_empty(), "10 is allowed");
        let mut obs2 = obs.clone();
        obs2.answers[0] = txt(
            zone,
            "v=spf1 include:a.example include:b.example mx a ptr ~all",
        );
        let w = judge(zone, &records(), &obs2);
        assert_eq!(codes(&w), vec!["spf_lookup_limit"]);
        assert!(w[0].message.contains("make 11"), "{}", w[0].message);
    }

    #[test]
    fn follow_up_asks_for_include_targets_not_seen_yet() {
        let obs = DnsObservation {
            answers: vec![txt("acme.com", "v=spf1 include:a.example ~all")],
        };
        let qs = follow_up("acme.com", &records(), &obs);
        assert!(qs.contains(&q("a.example", "TXT")));
        assert!(qs.contains(&q("amazonses.com", "TXT")));
    }
}
