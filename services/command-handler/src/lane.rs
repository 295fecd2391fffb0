//! One lane: handles its commands strictly one after another. It owns a cache of the
//! domains and names it has seen (a name always maps to the same lane), so a warm
//! lane neither re-reads histories nor asks the name index again.

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use dns_check::{DnsChecker, DnsConfig};
use email_domain_events::event::{Event, EventData, SCHEMA_VERSION};
use email_domain_events::outcome::{seen_before, Outcome, SeenBefore, Verdict};
use email_domain_events::preflight;
use email_domain_events::{
    decide, decide_register, evolve, needs_dns_check, Command, CommandType, Decision, DomainId,
    DomainName, EventId, Rejection,
};
use runtime::names::{Claim, ClaimError, Holder, NameIndex};
use runtime::outcomes::Outcomes;
use runtime::store::{AppendError, EventStore, Loaded};
use runtime::{streams, Config};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// The adapters a lane uses, shared by all lanes.
pub struct Services {
    pub js: jetstream::Context,
    pub store: EventStore,
    pub names: NameIndex,
    pub outcomes: Outcomes,
    pub dns: DnsChecker,
    pub config: Config,
}

impl Services {
    pub async fn open(js: &jetstream::Context, config: &Config) -> anyhow::Result<Self> {
        let dns_config = match &config.dns_nameservers {
            Some(servers) => DnsConfig::only(servers.clone()),
            None => DnsConfig::default(),
        };
        Ok(Services {
            js: js.clone(),
            store: EventStore::open(js, config.snapshot_every).await?,
            names: NameIndex::new(js.get_key_value(streams::NAMES_BUCKET).await?),
            outcomes: Outcomes::open(js).await?,
            dns: DnsChecker::new(dns_config)?,
            config: config.clone(),
        })
    }
}

pub struct Work {
    pub msg: jetstream::Message,
    pub cmd: Command,
    /// When the handler took the command from the stream (for the latency histogram).
    pub received: std::time::Instant,
    /// The partition it came from, counted there until it is finished.
    pub partition: u32,
    pub in_flight: crate::partition::InFlightGuard,
}

/// How many domains a lane keeps warm.
const LANE_CACHE: usize = 1024;

pub struct Lane {
    services: Arc<Services>,
    shutdown: runtime::Shutdown,
    domains: HashMap<DomainId, Loaded>,
    names: HashMap<String, Claim>,
    prefetched: std::sync::Mutex<Option<(String, Option<Claim>)>>,
}

/// What handling a command ended in.
enum Handled {
    Outcome(Outcome),
    /// A repeated command id: publish the stored outcome again.
    Repeat(bytes::Bytes),
    /// Internal commands have no outcome.
    Silent,
    /// A command id another tenant used first: dead-lettered, no outcome.
    OtherTenantsId,
}

impl Handled {
    /// The `outcome` label of `email_domains_commands_total`.
    fn label(&self) -> &'static str {
        match self {
            Handled::Outcome(o) if o.outcome == Verdict::Accepted => "accepted",
            Handled::Outcome(_) => "rejected",
            Handled::Repeat(_) => "duplicate",
            Handled::Silent => "internal",
            Handled::OtherTenantsId => "invalid",
        }
    }
}

type Step<T> = Result<T, Retry>;

/// A failure. A transient one (NATS or DNS adapter unavailable, or a lost race): the
/// lane tries the same command again, so per-domain order holds. A permanent one (an
/// event the server can never take, see `runtime::retry`) ends the command instead.
struct Retry {
    why: String,
    permanent: bool,
}

impl Retry {
    fn permanent(why: String) -> Self {
        Retry {
            why,
            permanent: true,
        }
    }
}

impl<E: std::fmt::Display> From<E> for Retry {
    fn from(e: E) -> Self {
        Retry {
            why: e.to_string(),
            permanent: false,
        }
    }
}

impl Lane {
    pub fn new(services: Arc<Services>, shutdown: runtime::Shutdown) -> Lane {
        Lane {
            services,
            shutdown,
            domains: HashMap::new(),
            names: HashMap::new(),
            prefetched: Default::default(),
        }
    }

    pub async fn handle(&mut self, work: Work) {
        let Work {
            msg,
            cmd,
            received,
            in_flight,
            ..
        } = work;
        let span = tracing::info_span!(
            "command",
            command_id = %cmd.command_id,
            tenant = %cmd.tenant_id,
            domain = %cmd.domain,
            r#type = cmd.command_type.as_str()
        );
        // The publisher's trace, when it sent one, is this span's parent.
        runtime::trace::follow(&span, msg.headers.as_ref());
        // Instrumented, not entered: a guard held across awaits would put other tasks'
        // spans and log lines inside this command whenever this lane yields.
        self.handle_in_span(msg, cmd, received)
            .instrument(span)
            .await;
        drop(in_flight);
    }

    async fn handle_in_span(
        &mut self,
        msg: jetstream::Message,
        cmd: Command,
        received: std::time::Instant,
    ) {
        let mut delay = Duration::from_millis(50);
        loop {
            match self.try_handle(&cmd).await {
                Ok(Handled::OtherTenantsId) => {
                    crate::refuse_other_tenants_id(&self.services, &msg, &cmd).await;
                    runtime::ops::COMMANDS
                        .with_label_values(&[cmd.command_type.as_str(), "invalid"])
                        .inc();
                    break;
                }
                Ok(handled) => {
                    let outcome = handled.label();
                    if self.finish(&cmd, handled).await.is_ok() {
                        let kind = cmd.command_type.as_str();
                        runtime::ops::COMMANDS
                            .with_label_values(&[kind, outcome])
                            .inc();
                        runtime::ops::COMMAND_SECONDS
                            .with_label_values(&[kind])
                            .observe(received.elapsed().as_secs_f64());
                        break;
                    }
                }
                Err(Retry {
                    why,
                    permanent: true,
                }) => {
                    let failure = runtime::retry::Failure::permanent(why.clone());
                    runtime::retry::give_up("command", &failure);
                    crate::give_up(&self.services, &msg, &cmd, &why).await;
                    runtime::ops::COMMANDS
                        .with_label_values(&[cmd.command_type.as_str(), "invalid"])
                        .inc();
                    break;
                }
                Err(Retry { why, .. }) => {
                    tracing::warn!(error = %why, "command will be tried again");
                    // Forget cached state: the retry reads fresh.
                    self.domains.clear();
                    self.names.clear();
                }
            }
            if self.shutdown.is_triggered() {
                // Left unacknowledged: JetStream hands it to the next instance, as after
                // a crash (its effects are idempotent). Not retried against a server
                // that may be going away with us.
                tracing::info!("shutting down: the command is left to the next instance");
                return;
            }
            let _ = msg.ack_with(AckKind::Progress).await;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        let _ = msg.ack().await;
    }

    async fn finish(&self, cmd: &Command, handled: Handled) -> Result<(), ()> {
        let r = match handled {
            Handled::Outcome(o) => {
                tracing::info!(outcome = ?o.outcome, reason = ?o.reason.as_ref().map(|r| &r.code), "handled");
                self.services.outcomes.publish(&o).await
            }
            Handled::Repeat(bytes) => {
                self.services
                    .outcomes
                    .publish_raw(cmd.command_id, bytes)
                    .await
            }
            Handled::Silent | Handled::OtherTenantsId => Ok(()),
        };
        match r {
            Ok(()) => Ok(()),
            // The command took effect; only its outcome cannot be stored. Retrying
            // cannot change that, so the command is finished without one.
            Err(e) if e.is_permanent() => {
                runtime::retry::give_up("outcome", &e);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(error = %e, "outcome not published yet");
                Err(())
            }
        }
    }

    async fn try_handle(&mut self, cmd: &Command) -> Step<Handled> {
        if cmd.command_type.is_public() {
            // The ledger and the name index are independent reads: one round trip for both.
            let name = DomainName::parse(&cmd.domain, &self.services.config.reserved_domains).ok();
            let (stored, _) =
                futures::join!(self.services.outcomes.lookup(cmd.command_id), async {
                    if let Some(n) = &name {
                        let _ = self.prefetch_claim(n.as_str()).await;
                    }
                });
            if let Some(stored) = stored? {
                match seen_before(&stored, &cmd.tenant_id.to_string()) {
                    SeenBefore::Repeat => return Ok(Handled::Repeat(stored)),
                    SeenBefore::OtherTenant => return Ok(Handled::OtherTenantsId),
                    SeenBefore::NotSeen => {}
                }
            }
        }
        match cmd.command_type {
            CommandType::RegisterDomain => self.register(cmd).await,
            CommandType::Recheck | CommandType::ProviderResult | CommandType::Preflight => {
                self.internal(cmd).await
            }
            _ => self.owner_command(cmd).await,
        }
    }

    fn rejected(cmd: &Command, domain_id: Option<DomainId>, r: &Rejection) -> Handled {
        Handled::Outcome(Outcome::rejected(
            cmd.command_id,
            Some(cmd.tenant_id.to_string()),
            Some(cmd.domain.clone()),
            domain_id,
            r,
        ))
    }

    fn accepted(cmd: &Command, domain_id: DomainId) -> Handled {
        Handled::Outcome(Outcome::accepted(
            cmd.command_id,
            cmd.tenant_id.to_string(),
            cmd.domain.clone(),
            domain_id,
        ))
    }

    /// Reads a name's claim into a side slot (no `&mut self`, so it can run beside
    /// another read); `claim_of` takes it from there.
    async fn prefetch_claim(&self, name: &str) -> Step<()> {
        if self.names.contains_key(name) {
            return Ok(());
        }
        let claim = self.services.names.get(name).await?;
        *self.prefetched.lock().expect("prefetch slot") = Some((name.to_string(), claim));
        Ok(())
    }

    async fn claim_of(&mut self, name: &str) -> Step<Option<Claim>> {
        if let Some((n, claim)) = self.prefetched.lock().expect("prefetch slot").take() {
            if n == name {
                if let Some(c) = claim {
                    self.names.insert(n, c);
                }
                return Ok(claim);
            }
        }
        if let Some(c) = self.names.get(name) {
            return Ok(Some(*c));
        }
        let claim = self.services.names.get(name).await?;
        if let Some(c) = claim {
            self.names.insert(name.to_string(), c);
        }
        Ok(claim)
    }

    async fn load(&mut self, holder: Holder) -> Step<Loaded> {
        if let Some(l) = self.domains.get(&holder.domain_id) {
            return Ok(l.clone());
        }
        let loaded = self
            .services
            .store
            .load(holder.tenant_id, holder.domain_id)
            .await?;
        if self.domains.len() >= LANE_CACHE {
            self.domains.clear();
        }
        self.domains.insert(holder.domain_id, loaded.clone());
        Ok(loaded)
    }

    /// Appends one event for `cmd` to a domain at its loaded version.
    async fn append(
        &mut self,
        cmd: &Command,
        holder: Holder,
        name: &str,
        loaded: &Loaded,
        data: EventData,
    ) -> Result<(), AppendOutcome> {
        let version = loaded.state.as_ref().map(|s| s.version).unwrap_or(0) + 1;
        let event = Event {
            event_id: EventId::for_command(cmd.command_id, holder.domain_id, version),
            tenant_id: holder.tenant_id,
            domain_id: holder.domain_id,
            domain: name.to_string(),
            version,
            occurred_at: clock(),
            causation_id: cmd.command_id,
            correlation_id: cmd.correlation_id.unwrap_or(cmd.command_id.0),
            schema_version: SCHEMA_VERSION,
            data,
        };
        match self.services.store.append(&event, loaded.last_seq).await {
            Ok(seq) => {
                let state = evolve(loaded.state.clone(), &event);
                if let Some(s) = &state {
                    self.services.store.maybe_snapshot(s, seq).await;
                }
                self.domains.insert(
                    holder.domain_id,
                    Loaded {
                        state,
                        last_seq: seq,
                    },
                );
                tracing::debug!(event = event.data.type_name(), version, "appended");
                Ok(())
            }
            Err(AppendError::Conflict) => {
                runtime::ops::APPEND_CONFLICTS
                    .with_label_values(&[cmd.command_type.as_str()])
                    .inc();
                self.domains.remove(&holder.domain_id);
                Err(AppendOutcome::Conflict)
            }
            Err(AppendError::Other(e)) => Err(AppendOutcome::Retry(Retry::from(e))),
            Err(e @ AppendError::Permanent(_)) => {
                Err(AppendOutcome::Retry(Retry::permanent(e.to_string())))
            }
        }
    }

    async fn register(&mut self, cmd: &Command) -> Step<Handled> {
        let services = self.services.clone();
        let config = &services.config;
        let name = match DomainName::parse(&cmd.domain, &config.reserved_domains) {
            Ok(n) => n,
            Err(e) => return Ok(Self::rejected(cmd, None, &e.into())),
        };
        let new_id = DomainId::for_registration(cmd.command_id);
        let me = Holder {
            tenant_id: cmd.tenant_id,
            domain_id: new_id,
        };
        for _ in 0..16 {
            let claim = self.claim_of(name.as_str()).await?;
            let holder_state = match claim {
                Some(c) => self.load(c.holder).await?,
                None => Loaded::default(),
            };
            if claim.is_some_and(|c| c.holder == me) {
                // Delivered again after the name was claimed: finish the registration.
                if holder_state.state.is_none() {
                    let now = clock();
                    let plan =
                        decide_register(cmd.tenant_id, &name, cmd, None, now, &config.policy)
                            .map_err(|r| Retry::from(r.message))?;
                    match self
                        .append(cmd, me, name.as_str(), &holder_state, plan.registered)
                        .await
                    {
                        Ok(()) => {}
                        Err(AppendOutcome::Conflict) => continue,
                        Err(AppendOutcome::Retry(r)) => return Err(r),
                    }
                }
                return Ok(Self::accepted(cmd, new_id));
            }
            let now = clock();
            let plan = match decide_register(
                cmd.tenant_id,
                &name,
                cmd,
                holder_state.state.as_ref(),
                now,
                &self.services.config.policy,
            ) {
                Ok(p) => p,
                Err(r) => {
                    let own = holder_state
                        .state
                        .as_ref()
                        .filter(|s| s.tenant_id == cmd.tenant_id)
                        .map(|s| s.domain_id);
                    return Ok(Self::rejected(cmd, own, &r));
                }
            };
            if let (Some(release), Some(c)) = (plan.release.clone(), claim) {
                match self
                    .append(cmd, c.holder, name.as_str(), &holder_state, release)
                    .await
                {
                    Ok(()) => {}
                    Err(AppendOutcome::Conflict) => continue,
                    Err(AppendOutcome::Retry(r)) => return Err(r),
                }
            }
            match self
                .services
                .names
                .claim(name.as_str(), me, claim.as_ref())
                .await
            {
                Ok(c) => {
                    self.names.insert(name.as_str().to_string(), c);
                }
                Err(ClaimError::Conflict) => {
                    self.names.remove(name.as_str());
                    continue;
                }
                Err(ClaimError::Other(e)) => return Err(Retry::from(e)),
            }
            match self
                .append(cmd, me, name.as_str(), &Loaded::default(), plan.registered)
                .await
            {
                Ok(()) | Err(AppendOutcome::Conflict) => {
                    // A conflict on a brand-new subject means our own earlier attempt got
                    // there first (same command): the next round sees it.
                    continue;
                }
                Err(AppendOutcome::Retry(r)) => return Err(r),
            }
        }
        Err(Retry::from("too many concurrent changes to this name"))
    }

    async fn owner_command(&mut self, cmd: &Command) -> Step<Handled> {
        let name = match DomainName::parse(&cmd.domain, &self.services.config.reserved_domains) {
            Ok(n) => n,
            Err(e) => return Ok(Self::rejected(cmd, None, &e.into())),
        };
        let not_found = Rejection::not_found(name.as_str());
        let Some(claim) = self.claim_of(name.as_str()).await? else {
            return Ok(Self::rejected(cmd, None, &not_found));
        };
        if claim.holder.tenant_id != cmd.tenant_id {
            return Ok(Self::rejected(cmd, None, &not_found));
        }
        self.decide_and_append(cmd, claim.holder, name.as_str())
            .await
            .map(|r| match r {
                Ok(()) => Self::accepted(cmd, claim.holder.domain_id),
                Err(rej) => Self::rejected(cmd, Some(claim.holder.domain_id), &rej),
            })
    }

    /// The pre-flight lookups: the core's questions, then `include:` targets, a few rounds.
    async fn preflight(
        &self,
        zone: &str,
        records: &[email_domain_events::DnsRecord],
    ) -> Vec<preflight::Warning> {
        let mut observation = self
            .services
            .dns
            .observe(&preflight::plan(zone, records))
            .await;
        for _ in 0..preflight::MAX_ROUNDS {
            let more = preflight::follow_up(zone, records, &observation);
            if more.is_empty() {
                break;
            }
            observation
                .answers
                .extend(self.services.dns.observe(&more).await.answers);
        }
        // judged on the bytes served; kept bounded and escaped (dns_check::kept)
        preflight::judge(zone, records, &observation)
            .into_iter()
            .map(dns_check::kept::kept_warning)
            .collect()
    }

    async fn internal(&mut self, cmd: &Command) -> Step<Handled> {
        let Some(domain_id) = cmd.domain_id else {
            return Ok(Handled::Silent);
        };
        let holder = Holder {
            tenant_id: cmd.tenant_id,
            domain_id,
        };
        let name = cmd.domain.clone();
        match self.decide_and_append(cmd, holder, &name).await? {
            Ok(()) => {}
            Err(r) => tracing::debug!(reason = %r.message, "internal command refused"),
        }
        Ok(Handled::Silent)
    }

    /// Loads, runs the DNS check if the core wants one, decides, appends; on a
    /// conflicting append reads again and decides again.
    async fn decide_and_append(
        &mut self,
        cmd: &Command,
        holder: Holder,
        name: &str,
    ) -> Step<Result<(), Rejection>> {
        for _ in 0..16 {
            let loaded = self.load(holder).await?;
            let Some(state) = loaded.state.as_ref() else {
                return Ok(Err(Rejection::not_found(name)));
            };
            if state.has_seen(cmd.command_id) {
                return Ok(Ok(()));
            }
            let now = clock();
            let (dns, propagation) = if needs_dns_check(state, cmd, now) {
                let report = self
                    .services
                    .dns
                    .check_report(&state.domain, &state.records)
                    .await;
                let propagation = report
                    .negative_cache
                    .into_iter()
                    .map(|n| email_domain_events::records::Propagation {
                        name: n.name,
                        record_type: n.record_type,
                        resolver_answer: n.resolver_answer,
                        expires_in_secs: n.expires_in_secs,
                    })
                    .collect();
                (Some(report.records), propagation)
            } else {
                (None, Vec::new())
            };
            let now = clock();
            let decision = if cmd.command_type == CommandType::Preflight {
                if !preflight::wanted(state) {
                    return Ok(Ok(()));
                }
                let warnings = self.preflight(&state.domain, &state.records).await;
                Ok(preflight::decide(state, warnings))
            } else {
                decide(state, cmd, dns, now, &self.services.config.policy)
            };
            match decision {
                Err(r) => return Ok(Err(r)),
                Ok(Decision::Nothing) => return Ok(Ok(())),
                Ok(Decision::Append(data)) => {
                    let data = data.with_propagation(propagation);
                    let domain = state.domain.clone();
                    match self.append(cmd, holder, &domain, &loaded, data).await {
                        Ok(()) => return Ok(Ok(())),
                        Err(AppendOutcome::Conflict) => continue,
                        Err(AppendOutcome::Retry(r)) => return Err(r),
                    }
                }
            }
        }
        Err(Retry::from("too many concurrent changes to this domain"))
    }
}

enum AppendOutcome {
    Conflict,
    Retry(Retry),
}

/// The clock, to the microsecond (see `schedule::to_micros`).
fn clock() -> chrono::DateTime<Utc> {
    email_domain_events::schedule::to_micros(Utc::now())
}
