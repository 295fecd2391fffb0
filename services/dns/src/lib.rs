//! The DNS adapter: asks the questions the pure core plans
//! ([`email_domain_events::verdict::plan`]) and hands the answers to
//! [`email_domain_events::verdict::judge`]. It decides nothing about records.
//!
//! Every question is a real DNS query built with hickory-proto and sent over UDP
//! (EDNS, 1232 bytes), retried over TCP when the answer is truncated, so the
//! observation keeps what resolver libraries hide: NXDOMAIN vs NODATA (with the
//! SOA's negative TTL), SERVFAIL vs REFUSED vs a timeout, and CNAME chains (a
//! chain whose target the server did not resolve is followed by asking again).
//! Nothing is cached: each check sees the DNS as it is now. All questions of a
//! check go out concurrently.
//!
//! Where the questions go:
//! - `DNS_NAMESERVERS` set ([`DnsConfig::nameservers`] `Some`): only these servers,
//!   recursion desired;
//! - unset: the zone's authoritative servers (the NS of the registered domain or
//!   its nearest parent that has NS records, their addresses resolved through the
//!   system resolver), recursion not desired, and the system resolver
//!   (`/etc/resolv.conf`) beside them. The authority's answer decides; the system
//!   resolver is the fallback when no authority answers. Where the authority has a
//!   record that the system resolver still denies, the report says when that
//!   negative cache entry expires ([`CheckReport::negative_cache`]).
//!   Only global addresses of the authoritative servers are asked
//!   ([`is_global`]): the tenant writes its delegation, and loopback, private,
//!   link-local or cluster addresses in it would turn the check into a probe of
//!   our own network. With none left, the system resolver alone answers.

mod address;
mod cli;
pub mod kept;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use email_domain_events::records::{
    DnsObservation, DnsQuestion, DnsRecord, LookupAnswer, LookupError, ObservedRecord,
};
use email_domain_events::verdict;
use futures::future::join_all;
use hickory_proto::rr::RecordType;
use serde::{Deserialize, Serialize};

pub use address::is_global;
pub use cli::{infer_purpose, run_dns_check_cli, InputRecord};
pub use kept::escape_controls;

/// How CNAME chains are followed at most.
const MAX_CNAME_HOPS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("DNS_NAMESERVERS: `{0}` is not an ip:port address")]
    BadNameserver(String),
    #[error("no DNS resolver configured: {0}")]
    NoResolver(String),
}

/// Where and how DNS is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// `Some`: ask ONLY these servers (contract `DNS_NAMESERVERS`).
    pub nameservers: Option<Vec<SocketAddr>>,
    /// Per exchange (one UDP try, or the TCP retry). Default 3 s.
    pub timeout: Duration,
    /// Rounds over the servers before a question counts as failed. Default 2.
    pub attempts: usize,
    /// With `nameservers` unset: the recursive resolvers to use instead of those of
    /// `/etc/resolv.conf` (tests, containers).
    pub system_resolvers: Option<Vec<SocketAddr>>,
    /// With `nameservers` unset: also ask the zone's authoritative servers
    /// (default true).
    pub authoritative: bool,
    /// The port at which authoritative servers are asked (53; tests use another).
    pub authoritative_port: u16,
    /// Also ask authoritative servers whose address (learnt from the tenant's
    /// delegation) is not global: loopback, private, link-local, ... Default false:
    /// such a server is never asked (see [`is_global`]). Only for tests whose
    /// authorities run on loopback; nothing in the environment sets it.
    pub non_global_authorities: bool,
}

impl Default for DnsConfig {
    fn default() -> Self {
        DnsConfig {
            nameservers: None,
            timeout: Duration::from_secs(3),
            attempts: 2,
            system_resolvers: None,
            authoritative: true,
            authoritative_port: 53,
            non_global_authorities: false,
        }
    }
}

/// `ip:port`, `[v6]:port`, or a bare IP (port 53).
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, DnsError> {
    let s = s.trim();
    if let Ok(a) = s.parse::<SocketAddr>() {
        return Ok(a);
    }
    s.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| DnsError::BadNameserver(s.to_string()))
}

impl DnsConfig {
    /// The defaults, with `DNS_NAMESERVERS` (comma-separated `ip:port`) when set
    /// and not empty.
    pub fn from_env() -> Result<Self, DnsError> {
        let mut cfg = DnsConfig::default();
        if let Ok(v) = std::env::var("DNS_NAMESERVERS") {
            let list: Vec<SocketAddr> = v
                .split(',')
                .filter(|s| !s.trim().is_empty())
                .map(parse_nameserver)
                .collect::<Result<_, _>>()?;
            if !list.is_empty() {
                cfg.nameservers = Some(list);
            }
        }
        Ok(cfg)
    }

    /// Ask only `servers` (what `DNS_NAMESERVERS` does).
    pub fn only(servers: Vec<SocketAddr>) -> Self {
        DnsConfig {
            nameservers: Some(servers),
            ..DnsConfig::default()
        }
    }
}

/// A system resolver's answer that still denies a record the authority serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NegativeCache {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    /// `nx_domain` or `no_data`, as the resolver answered.
    pub resolver_answer: String,
    /// Seconds until the resolver's negative cache entry expires: the SOA's
    /// remaining TTL, capped by its minimum (RFC 2308). None: the resolver sent no SOA.
    pub expires_in_secs: Option<u32>,
}

/// Everything one observation saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observed {
    /// The answers the verdict uses (the authority's where it answered).
    pub observation: DnsObservation,
    /// The system resolver's own answers, when the authority was asked too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolver: Option<DnsObservation>,
    /// Where the resolver still denies what the authority serves.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub negative_cache: Vec<NegativeCache>,
    /// The authoritative servers asked (empty when none were).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub authoritative_servers: Vec<SocketAddr>,
}

/// A check's verdicts, with what the system resolver still lags behind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckReport {
    pub records: Vec<DnsRecord>,
    /// For expected records the authority serves but the system resolver still
    /// denies: when the resolver will see them.
    pub negative_cache: Vec<NegativeCache>,
    pub authoritative_servers: Vec<SocketAddr>,
}

#[derive(Debug)]
struct Inner {
    cfg: DnsConfig,
    /// The recursive servers: `DNS_NAMESERVERS`, or the system's.
    recursive: Vec<SocketAddr>,
    /// Also ask the authority.
    authoritative: bool,
}

/// Executes DNS checks; cheap to clone.
#[derive(Debug, Clone)]
pub struct DnsChecker {
    inner: Arc<Inner>,
}

/// Which servers a name is asked of.
#[derive(Clone, Copy)]
enum Route<'a> {
    Recursive,
    /// Names under `apex` go to the authority (no recursion); others recursive.
    Authority {
        apex: &'a str,
        servers: &'a [SocketAddr],
    },
}

fn norm(s: &str) -> String {
    s.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn under(name: &str, apex: &str) -> bool {
    name == apex || name.ends_with(&format!(".{apex}"))
}

impl DnsChecker {
    pub fn new(cfg: DnsConfig) -> Result<Self, DnsError> {
        let (recursive, authoritative) = match &cfg.nameservers {
            Some(list) if list.is_empty() => {
                return Err(DnsError::NoResolver("DNS_NAMESERVERS is empty".into()))
            }
            Some(list) => (list.clone(), false),
            None => {
                let list = match &cfg.system_resolvers {
                    Some(l) => l.clone(),
                    None => {
                        let (conf, _) = hickory_resolver::system_conf::read_system_conf()
                            .map_err(|e| DnsError::NoResolver(format!("/etc/resolv.conf: {e}")))?;
                        let mut l: Vec<SocketAddr> =
                            conf.name_servers().iter().map(|n| n.socket_addr).collect();
                        l.dedup();
                        l
                    }
                };
                if list.is_empty() {
                    return Err(DnsError::NoResolver("the system has no nameserver".into()));
                }
                (list, cfg.authoritative)
            }
        };
        Ok(DnsChecker {
            inner: Arc::new(Inner {
                cfg,
                recursive,
                authoritative,
            }),
        })
    }

    pub fn config(&self) -> &DnsConfig {
        &self.inner.cfg
    }

    /// Answers every question, all concurrently, from the configured servers
    /// (no authority lookup: use [`DnsChecker::observe_zone`] for that).
    pub async fn observe(&self, questions: &[DnsQuestion]) -> DnsObservation {
        let answers = join_all(questions.iter().map(|q| self.resolve(q, Route::Recursive))).await;
        DnsObservation {
            answers: questions.iter().cloned().zip(answers).collect(),
        }
    }

    /// Like [`DnsChecker::observe`], and with `nameservers` unset also asks the
    /// authoritative servers of `zone` and compares.
    pub async fn observe_zone(&self, zone: &str, questions: &[DnsQuestion]) -> Observed {
        let authority = if self.inner.authoritative {
            self.find_authority(&norm(zone)).await
        } else {
            None
        };
        let Some((apex, servers)) = authority else {
            return Observed {
                observation: self.observe(questions).await,
                ..Observed::default()
            };
        };
        let route = Route::Authority {
            apex: &apex,
            servers: &servers,
        };
        let apex_ref: &str = &apex;
        let both = join_all(questions.iter().map(|q| async move {
            if under(&norm(&q.name), apex_ref) {
                let (a, r) =
                    futures::join!(self.resolve(q, route), self.resolve(q, Route::Recursive));
                (a, Some(r))
            } else {
                (self.resolve(q, Route::Recursive).await, None)
            }
        }))
        .await;
        let mut obs = DnsObservation::default();
        let mut res = DnsObservation::default();
        let mut negative_cache = Vec::new();
        for (q, (auth, rec)) in questions.iter().zip(both) {
            let chosen = match (&auth, &rec) {
                (LookupAnswer::Failed { .. }, Some(r)) => r.clone(),
                _ => auth.clone(),
            };
            if let (LookupAnswer::Records { records }, Some(r)) = (&auth, &rec) {
                let has_type = records
                    .iter()
                    .any(|x| x.record_type.eq_ignore_ascii_case(&q.record_type));
                let lag = match r {
                    LookupAnswer::NxDomain { negative_ttl } => Some(("nx_domain", *negative_ttl)),
                    LookupAnswer::NoData { negative_ttl } => Some(("no_data", *negative_ttl)),
                    _ => None,
                };
                if let (true, Some((kind, ttl))) = (has_type, lag) {
                    negative_cache.push(NegativeCache {
                        name: q.name.clone(),
                        record_type: q.record_type.clone(),
                        resolver_answer: kind.into(),
                        expires_in_secs: ttl,
                    });
                }
            }
            obs.answers.push((q.clone(), chosen));
            if let Some(r) = rec {
                res.answers.push((q.clone(), r));
            }
        }
        Observed {
            observation: obs,
            resolver: Some(res),
            negative_cache,
            authoritative_servers: servers,
        }
    }

    /// plan → observe → judge.
    pub async fn check(&self, zone: &str, expected: &[DnsRecord]) -> Vec<DnsRecord> {
        self.check_report(zone, expected).await.records
    }

    /// [`DnsChecker::check`] with the negative-cache lag of the system resolver.
    /// The records' observed values and diagnoses are as [`kept`] keeps them:
    /// bounded, control characters escaped.
    pub async fn check_report(&self, zone: &str, expected: &[DnsRecord]) -> CheckReport {
        let zone = norm(zone);
        let questions = verdict::plan(&zone, expected);
        let observed = self.observe_zone(&zone, &questions).await;
        // judged on the exact bytes served; kept bounded and escaped
        let records = verdict::judge(&zone, expected, &observed.observation)
            .into_iter()
            .map(kept::kept_record)
            .collect();
        let negative_cache = observed
            .negative_cache
            .into_iter()
            .filter(|n| {
                expected.iter().any(|r| {
                    norm(&r.name) == n.name && r.record_type.eq_ignore_ascii_case(&n.record_type)
                })
            })
            .collect();
        CheckReport {
            records,
            negative_cache,
            authoritative_servers: observed.authoritative_servers,
        }
    }

    /// The authoritative servers of `zone` or of its nearest parent with NS
    /// records: (apex, addresses at `authoritative_port`).
    async fn find_authority(&self, zone: &str) -> Option<(String, Vec<SocketAddr>)> {
        let mut candidate = zone.to_string();
        loop {
            let q = DnsQuestion {
                name: candidate.clone(),
                record_type: "NS".into(),
            };
            if let LookupAnswer::Records { records } = self.resolve(&q, Route::Recursive).await {
                let hosts: Vec<String> = records
                    .iter()
                    .filter(|r| r.record_type == "NS" && norm(&r.name) == candidate)
                    .map(|r| norm(&r.value))
                    .collect();
                if !hosts.is_empty() {
                    let port = self.inner.cfg.authoritative_port;
                    let lookups = join_all(hosts.iter().map(|h| async move {
                        let q = DnsQuestion {
                            name: h.clone(),
                            record_type: "A".into(),
                        };
                        match self.resolve(&q, Route::Recursive).await {
                            LookupAnswer::Records { records } => records
                                .iter()
                                .filter(|r| r.record_type == "A")
                                .filter_map(|r| r.value.parse::<IpAddr>().ok())
                                .collect::<Vec<_>>(),
                            _ => Vec::new(),
                        }
                    }))
                    .await;
                    let mut servers: Vec<SocketAddr> = self
                        .askable(lookups.into_iter().flatten())
                        .map(|ip| SocketAddr::new(ip, port))
                        .collect();
                    servers.sort();
                    servers.dedup();
                    if servers.is_empty() {
                        tracing::debug!(zone, "the zone's nameservers have no global addresses");
                        return None;
                    }
                    return Some((candidate, servers));
                }
            }
            // a registered domain is at least two labels; stop at the TLD
            match candidate.split_once('.') {
                Some((_, parent)) if parent.contains('.') => candidate = parent.to_string(),
                _ => return None,
            }
        }
    }

    /// The addresses of a delegation's nameservers that may be asked: the global
    /// ones (unless [`DnsConfig::non_global_authorities`]). A tenant names its own
    /// nameservers; an address inside our network would make the check a probe.
    fn askable(&self, ips: impl Iterator<Item = IpAddr>) -> impl Iterator<Item = IpAddr> {
        let any = self.inner.cfg.non_global_authorities;
        ips.filter(move |ip| {
            let ok = any || is_global(*ip);
            if !ok {
                tracing::info!(%ip, "a delegation names a non-global nameserver address: not asked");
            }
            ok
        })
    }

    fn servers_for<'a>(&'a self, name: &str, route: Route<'a>) -> (&'a [SocketAddr], bool) {
        match route {
            Route::Authority { apex, servers } if under(name, apex) => (servers, false),
            _ => (&self.inner.recursive, true),
        }
    }

    async fn ask_once(&self, name: &str, rtype: RecordType, route: Route<'_>) -> LookupAnswer {
        let (servers, rd) = self.servers_for(name, route);
        let cfg = &self.inner.cfg;
        match wire::ask(servers, name, rtype, rd, cfg.timeout, cfg.attempts).await {
            Ok(msg) => wire::to_answer(&msg, !rd),
            Err(f) => LookupAnswer::Failed {
                error: f.error,
                detail: f.detail,
            },
        }
    }

    /// One question, following a CNAME chain the server left unresolved.
    async fn resolve(&self, q: &DnsQuestion, route: Route<'_>) -> LookupAnswer {
        let name = norm(&q.name);
        let Some(rtype) = wire::parse_type(&q.record_type) else {
            return LookupAnswer::Failed {
                error: LookupError::Other,
                detail: format!("unknown record type {}", q.record_type),
            };
        };
        let first = self.ask_once(&name, rtype, route).await;
        if rtype == RecordType::CNAME {
            return first;
        }
        let LookupAnswer::Records { mut records } = first else {
            return first;
        };
        for _ in 0..MAX_CNAME_HOPS {
            let Some(end) = unresolved_end(&records, &name, &q.record_type) else {
                break;
            };
            match self.ask_once(&end, rtype, route).await {
                LookupAnswer::Records { records: more } => {
                    let before = records.len();
                    for r in more {
                        if !records.contains(&r) {
                            records.push(r);
                        }
                    }
                    if records.len() == before {
                        break;
                    }
                }
                LookupAnswer::NxDomain { .. } | LookupAnswer::NoData { .. } => break,
                // the servers are not responsible for the target: the chain is all
                // they can show
                LookupAnswer::Failed {
                    error: LookupError::Refused,
                    ..
                } => break,
                LookupAnswer::Failed { error, detail } => {
                    return LookupAnswer::Failed {
                        error,
                        detail: format!(
                            "{} is a CNAME to {end}, whose lookup failed: {detail}",
                            q.name
                        ),
                    }
                }
            }
        }
        LookupAnswer::Records { records }
    }
}

/// The end of the CNAME chain from `name` when the answer has no records there.
fn unresolved_end(records: &[ObservedRecord], name: &str, rtype: &str) -> Option<String> {
    let mut cur = name.to_string();
    let mut hops = 0;
    while let Some(c) = records
        .iter()
        .find(|r| r.record_type == "CNAME" && norm(&r.name) == cur)
    {
        cur = norm(&c.value);
        hops += 1;
        if hops > MAX_CNAME_HOPS {
            return None;
        }
    }
    if hops == 0 {
        return None;
    }
    let answered = records
        .iter()
        .any(|r| norm(&r.name) == cur && r.record_type.eq_ignore_ascii_case(rtype));
    (!answered).then_some(cur)
}
