//! Partitions of the command work, and which handler instance owns each.
//!
//! Commands arrive on the public subjects, which carry no key. One instance at a time
//! (the intake) moves them, in publish order, to `email_domains.partitioned.<p>.<type>`
//! in the `EMAIL_DOMAIN_PARTITIONED_COMMANDS` work queue, `p` a stable hash of the
//! domain name. Every partition is owned by one handler instance through a lease in the
//! `email_domain_partitions` bucket; the live instances (their `member.<id>` keys) share
//! the partitions evenly ([`assign`]). An instance that joins takes over a share; one
//! that dies stops renewing, and its partitions go to the others once its leases run
//! out (at most the lease TTL plus one renewal period).
//!
//! Nothing here needs more than nats-server 2.9: KV revisions, filtered consumers on a
//! work queue (one per partition, so they never overlap), direct gets.

use async_nats::jetstream::kv;
use email_domain_events::{Command, DomainName, ReservedDomains};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::mpsc;

/// The stream the intake moves commands to, one subject per partition and type.
pub const STREAM: &str = "EMAIL_DOMAIN_PARTITIONED_COMMANDS";
pub const SUBJECTS: &str = "email_domains.partitioned.>";
const PREFIX: &str = "email_domains.partitioned.";
/// Who owns which partition, and which instances are alive.
pub const BUCKET: &str = "email_domain_partitions";

/// The partition of a domain name (its normalised form): FNV-1a, so every version of
/// every service computes the same one.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in key.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// What commands are ordered by: the domain name as the core normalises it (case,
/// trailing dot, IDN to A-labels), whatever else is true of the name (reserved or
/// not); a name that does not parse, trimmed and lower-cased as written. So every
/// form of a name, from any tenant or service, lands in one partition and lane.
pub fn key(domain: &str) -> String {
    match DomainName::parse(domain, &ReservedDomains::default()) {
        Ok(n) => n.as_str().to_string(),
        Err(_) => domain.trim().trim_end_matches('.').to_ascii_lowercase(),
    }
}

/// Where a service sends an internal command (a re-check, a provider result, a
/// pre-flight): straight into its partition, past the intake, so that a fleet's
/// background work never queues at the intake in front of a person's command. (Order
/// against public commands is not needed: the core takes internal commands as facts
/// that may come late.)
pub fn internal_subject(cmd: &Command, partitions: u32) -> String {
    subject(
        partition_of(&key(&cmd.domain), partitions),
        cmd.command_type.as_str(),
    )
}

/// `email_domains.partitioned.<p>.<type>`.
pub fn subject(partition: u32, command_type: &str) -> String {
    format!("{PREFIX}{partition}.{command_type}")
}

/// The filter of one partition's consumer.
pub fn filter(partition: u32) -> String {
    format!("{PREFIX}{partition}.>")
}

/// The durable consumer of one partition.
pub fn consumer(partition: u32) -> String {
    format!("command-handler-p{partition}")
}

/// The command type of a public (`email_domains.commands.<type>`) or partitioned
/// command subject: everything after the prefix, so that a subject with more tokens
/// names no command type and is dead-lettered as `unknown_command`.
pub fn command_token(subject: &str) -> &str {
    if let Some(rest) = subject.strip_prefix(PREFIX) {
        return rest.split_once('.').map_or("", |(_, t)| t);
    }
    subject
        .strip_prefix("email_domains.commands.")
        .unwrap_or("")
}

/// The public subject a partitioned command was published on (dead letters keep it, so
/// an operator's retry goes through the front door again).
pub fn public_subject(subject: &str) -> String {
    match subject.strip_prefix(PREFIX) {
        Some(rest) => format!(
            "email_domains.commands.{}",
            rest.split_once('.').map_or(rest, |(_, t)| t)
        ),
        None => subject.to_string(),
    }
}

/// Which member owns each partition: members sorted, partition `p` to member `p mod n`.
/// Even shares (they differ by at most one), and every instance computes the same.
pub fn assign(partitions: u32, members: &[String]) -> Vec<Option<String>> {
    let mut sorted: Vec<&String> = members.iter().collect();
    sorted.sort();
    sorted.dedup();
    (0..partitions as usize)
        .map(|p| (!sorted.is_empty()).then(|| sorted[p % sorted.len()].clone()))
        .collect()
}

/// A live instance: its `member.<id>` key, renewed with its leases.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Member {
    /// Where it runs (host name and process id), for operators.
    pub name: String,
    pub expires_at_ms: i64,
}

/// A partition's lease: `partition.<p>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Owner {
    pub holder: String,
    /// Empty in leases written before instances had names.
    #[serde(default)]
    pub name: String,
    pub expires_at_ms: i64,
}

/// Who shares a set of partitions: the command handlers, or the instances of one
/// projection. Each group keeps its keys in the bucket under its own prefix, so the
/// groups never see each other's members or leases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    prefix: String,
}

/// The prefix of every projection group's keys.
const PROJECTION_PREFIX: &str = "projector.";

impl Group {
    /// The command handlers: `member.<id>` and `partition.<p>` (the keys they had before
    /// there were groups).
    pub fn handlers() -> Group {
        Group {
            prefix: String::new(),
        }
    }

    /// The instances of one projection: `projector.<name>.member.<id>`, `….partition.<p>`.
    pub fn projection(name: &str) -> Group {
        Group {
            prefix: format!("{PROJECTION_PREFIX}{name}."),
        }
    }

    fn member_key(&self, id: &str) -> String {
        format!("{}member.{id}", self.prefix)
    }

    pub fn lease_key(&self, partition: u32) -> String {
        format!("{}{partition}", self.lease_prefix())
    }

    fn lease_prefix(&self) -> String {
        format!("{}partition.", self.prefix)
    }

    /// A bucket key without this group's prefix; `None` for another group's key.
    fn local<'k>(&self, key: &'k str) -> Option<&'k str> {
        if self.prefix.is_empty() {
            return (!key.starts_with(PROJECTION_PREFIX)).then_some(key);
        }
        key.strip_prefix(self.prefix.as_str())
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// This process, as operators see it: the host name (the pod's, in Kubernetes) and pid.
pub fn instance_name() -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown".into());
    format!("{host}:{}", std::process::id())
}

/// What the owner of partitions is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// The partition is ours: start at its first unfinished command.
    Acquired(u32),
    /// Another instance should have it: finish what was taken, then call
    /// [`Ownership::release`].
    Revoked(u32),
    /// The lease could not be kept (another instance may hold it now): stop at once.
    Lost(u32),
}

enum Request {
    Release(u32),
    Stop(tokio::sync::oneshot::Sender<()>),
}

/// This instance's side of the partition leases. Cheap to clone.
#[derive(Clone)]
pub struct Ownership {
    requests: mpsc::UnboundedSender<Request>,
    id: String,
}

impl Ownership {
    /// Joins the members and starts keeping leases: the changes come on the receiver.
    pub fn start(
        kv: kv::Store,
        group: Group,
        partitions: u32,
        ttl: Duration,
    ) -> (Ownership, mpsc::UnboundedReceiver<Change>) {
        let id = uuid::Uuid::new_v4().to_string();
        let (requests, rx) = mpsc::unbounded_channel();
        let (changes, changes_rx) = mpsc::unbounded_channel();
        let keeper = Keeper {
            kv,
            group,
            id: id.clone(),
            name: instance_name(),
            partitions: partitions.max(1),
            ttl,
            held: BTreeMap::new(),
            changes,
        };
        tokio::spawn(keeper.run(rx));
        (Ownership { requests, id }, changes_rx)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// A revoked partition is finished with: its lease is given up at once.
    pub fn release(&self, partition: u32) {
        let _ = self.requests.send(Request::Release(partition));
    }

    /// Gives up every lease and leaves the members (a clean shutdown), so the others
    /// take over without waiting out the TTL.
    pub async fn stop(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.requests.send(Request::Stop(tx)).is_ok() {
            let _ = rx.await;
        }
    }
}

struct Held {
    revision: u64,
    renewed: tokio::time::Instant,
    revoked: bool,
}

struct Keeper {
    kv: kv::Store,
    group: Group,
    id: String,
    name: String,
    partitions: u32,
    ttl: Duration,
    held: BTreeMap<u32, Held>,
    changes: mpsc::UnboundedSender<Change>,
}

impl Keeper {
    async fn run(mut self, mut requests: mpsc::UnboundedReceiver<Request>) {
        let mut tick = tokio::time::interval(self.ttl / 3);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Joins, leaves and handovers are acted on at once; the ticks catch the rest
        // (an instance that died, a watch that broke).
        let mut watch = match self.kv.watch(format!("{}>", self.group.prefix)).await {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch the partition leases; acting on ticks only");
                None
            }
        };
        let mut known = std::collections::HashSet::new();
        loop {
            let news = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tick.tick() => self.round().await,
                entry = news => match entry {
                    Some(Ok(entry)) => {
                        if self.is_news(&entry, &mut known) {
                            self.rebalance().await;
                        }
                    }
                    _ => {
                        tracing::warn!("the partition lease watch ended; acting on ticks only");
                        watch = None;
                    }
                },
                r = requests.recv() => match r {
                    Some(Request::Release(p)) => self.give_up(p).await,
                    Some(Request::Stop(done)) => {
                        self.leave().await;
                        let _ = done.send(());
                        return;
                    }
                    None => {
                        self.leave().await;
                        return;
                    }
                },
            }
        }
    }

    /// Whether a change in the bucket moves partitions: another instance joined or
    /// left, or handed a partition over. Renewals are not news (acting on them would
    /// have the instances wake each other up for ever).
    fn is_news(&self, entry: &kv::Entry, known: &mut std::collections::HashSet<String>) -> bool {
        let Some(key) = self.group.local(&entry.key) else {
            return false;
        };
        if !matches!(entry.operation, kv::Operation::Put) {
            return true;
        }
        if let Some(id) = key.strip_prefix("member.") {
            if id == self.id {
                return false;
            }
            let left = serde_json::from_slice::<Member>(&entry.value)
                .map_or(true, |m| m.expires_at_ms <= now_ms());
            return if left {
                known.remove(id)
            } else {
                known.insert(id.to_string())
            };
        }
        serde_json::from_slice::<Owner>(&entry.value)
            .is_ok_and(|o| o.holder != self.id && o.expires_at_ms == 0)
    }

    /// One renewal period: say we are alive, keep what we hold, take our share.
    async fn round(&mut self) {
        if let Err(e) = self.heartbeat().await {
            tracing::warn!(error = %e, "partition membership not renewed");
        }
        self.renew().await;
        self.rebalance().await;
    }

    /// Takes the partitions that are ours and free; gives up those another live
    /// instance should have.
    async fn rebalance(&mut self) {
        let members = match live_members(&self.kv, &self.group).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the partition members");
                return;
            }
        };
        let mut ids: Vec<String> = members.into_keys().collect();
        if !ids.contains(&self.id) {
            // Our own heartbeat may not be readable yet; we are alive all the same.
            ids.push(self.id.clone());
        }
        let wanted = assign(self.partitions, &ids);
        for (p, owner) in wanted.iter().enumerate() {
            let p = p as u32;
            let mine = owner.as_deref() == Some(self.id.as_str());
            match (mine, self.held.get_mut(&p)) {
                (true, None) => self.try_take(p).await,
                (false, Some(h)) if !h.revoked => {
                    h.revoked = true;
                    tracing::info!(partition = p, "partition goes to another instance");
                    let _ = self.changes.send(Change::Revoked(p));
                }
                _ => {}
            }
        }
    }

    async fn heartbeat(&self) -> anyhow::Result<()> {
        let member = Member {
            name: self.name.clone(),
            expires_at_ms: now_ms() + self.ttl.as_millis() as i64,
        };
        self.kv
            .put(
                self.group.member_key(&self.id),
                serde_json::to_vec(&member)?.into(),
            )
            .await?;
        Ok(())
    }

    fn lease_value(&self, expires_at_ms: i64) -> bytes::Bytes {
        serde_json::to_vec(&Owner {
            holder: self.id.clone(),
            name: self.name.clone(),
            expires_at_ms,
        })
        .expect("lease value")
        .into()
    }

    /// Renews every held lease; one that cannot be kept is lost.
    async fn renew(&mut self) {
        let value = self.lease_value(now_ms() + self.ttl.as_millis() as i64);
        let mut lost = Vec::new();
        for (p, h) in self.held.iter_mut() {
            match self
                .kv
                .update(self.group.lease_key(*p), value.clone(), h.revision)
                .await
            {
                Ok(r) => {
                    h.revision = r;
                    h.renewed = tokio::time::Instant::now();
                }
                Err(e) => {
                    let taken = matches!(e.kind(), kv::UpdateErrorKind::WrongLastRevision);
                    if taken || h.renewed.elapsed() >= self.ttl * 2 / 3 {
                        tracing::warn!(partition = p, error = %e, "partition lease lost");
                        lost.push(*p);
                    }
                }
            }
        }
        for p in lost {
            self.held.remove(&p);
            let _ = self.changes.send(Change::Lost(p));
        }
    }

    /// Takes a partition whose lease is free, run out, or ours from before.
    async fn try_take(&mut self, p: u32) {
        let value = self.lease_value(now_ms() + self.ttl.as_millis() as i64);
        let key = self.group.lease_key(p);
        let taken = match self.kv.entry(key.clone()).await {
            Ok(None) => self.kv.create(key, value).await.ok(),
            Ok(Some(entry)) => {
                let free = match serde_json::from_slice::<Owner>(&entry.value) {
                    Ok(o) => o.holder == self.id || o.expires_at_ms < now_ms(),
                    Err(_) => true,
                };
                if free {
                    self.kv.update(key, value, entry.revision).await.ok()
                } else {
                    None
                }
            }
            Err(e) => {
                tracing::warn!(partition = p, error = %e, "cannot read a partition lease");
                None
            }
        };
        if let Some(revision) = taken {
            tracing::info!(partition = p, "partition taken");
            self.held.insert(
                p,
                Held {
                    revision,
                    renewed: tokio::time::Instant::now(),
                    revoked: false,
                },
            );
            let _ = self.changes.send(Change::Acquired(p));
        }
    }

    /// Marks a held lease run out, so the next owner need not wait for it.
    async fn give_up(&mut self, p: u32) {
        if let Some(h) = self.held.remove(&p) {
            let _ = self
                .kv
                .update(self.group.lease_key(p), self.lease_value(0), h.revision)
                .await;
            tracing::info!(partition = p, "partition handed over");
        }
    }

    async fn leave(&mut self) {
        let held: Vec<u32> = self.held.keys().copied().collect();
        for p in held {
            self.give_up(p).await;
        }
        let gone = Member {
            name: self.name.clone(),
            expires_at_ms: 0,
        };
        if let Ok(v) = serde_json::to_vec(&gone) {
            let _ = self.kv.put(self.group.member_key(&self.id), v.into()).await;
        }
    }
}

/// The latest value of every key under `prefix`, read from the bucket's stream one
/// message at a time (a key keeps one message). Not `Store::keys`: its consumer can
/// wait seconds for the end of a bucket whose keys change all the time, as these do.
async fn scan(kv: &kv::Store, prefix: &str) -> anyhow::Result<BTreeMap<String, bytes::Bytes>> {
    let filter = format!("{}{prefix}>", kv.prefix);
    let mut out = BTreeMap::new();
    let mut seq = 1;
    loop {
        match kv
            .stream
            .direct_get_next_for_subject(&filter, Some(seq))
            .await
        {
            Ok(m) => {
                seq = m.sequence + 1;
                let deleted = m
                    .headers
                    .get("KV-Operation")
                    .is_some_and(|op| op.as_str() != "PUT");
                let key = m.subject.strip_prefix(kv.prefix.as_str()).unwrap_or("");
                if deleted {
                    out.remove(key);
                } else {
                    out.insert(key.to_string(), m.payload);
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    async_nats::jetstream::stream::DirectGetErrorKind::NotFound
                ) =>
            {
                return Ok(out)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The members of `group` whose heartbeat has not run out, by id.
pub async fn live_members(
    kv: &kv::Store,
    group: &Group,
) -> anyhow::Result<BTreeMap<String, Member>> {
    let now = now_ms();
    let prefix = group.member_key("");
    Ok(scan(kv, &prefix)
        .await?
        .into_iter()
        .filter_map(|(key, value)| {
            let id = key.strip_prefix(prefix.as_str())?.to_string();
            let m = serde_json::from_slice::<Member>(&value).ok()?;
            (m.expires_at_ms > now).then_some((id, m))
        })
        .collect())
}

/// The partitions of `group` ever leased (for operators: how many there are).
pub async fn leased(kv: &kv::Store, group: &Group) -> anyhow::Result<Vec<u32>> {
    let prefix = group.lease_prefix();
    Ok(scan(kv, &prefix)
        .await?
        .keys()
        .filter_map(|k| k.strip_prefix(prefix.as_str())?.parse().ok())
        .collect())
}

/// Each partition's lease as stored (`None`: never taken), for operators.
pub async fn owners(
    kv: &kv::Store,
    group: &Group,
    partitions: u32,
) -> anyhow::Result<Vec<Option<Owner>>> {
    let mut out = Vec::with_capacity(partitions as usize);
    for p in 0..partitions {
        let owner = kv
            .get(group.lease_key(p))
            .await?
            .and_then(|b| serde_json::from_slice::<Owner>(&b).ok());
        out.push(owner);
    }
    Ok(out)
}

impl Owner {
    /// Whether the lease is still held (not run out, not handed over).
    pub fn is_live(&self) -> bool {
        self.expires_at_ms > now_ms()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("m{i}")).collect()
    }

    #[test]
    fn given_three_members_when_eight_partitions_are_shared_then_shares_differ_by_at_most_one() {
        let owners = assign(8, &ids(3));
        let count = |m: &str| owners.iter().filter(|o| o.as_deref() == Some(m)).count();
        assert_eq!((count("m0"), count("m1"), count("m2")), (3, 3, 2));
    }

    #[test]
    fn given_members_in_any_order_then_every_instance_computes_the_same_owners() {
        let a = assign(8, &["b".into(), "a".into(), "c".into()]);
        let b = assign(8, &["c".into(), "b".into(), "a".into(), "a".into()]);
        assert_eq!(a, b);
    }

    #[test]
    fn given_no_members_then_no_partition_has_an_owner() {
        assert!(assign(4, &[]).iter().all(Option::is_none));
    }

    #[test]
    fn a_name_always_maps_to_the_same_partition_in_range() {
        for name in ["acme.com", "xn--bcher-kva.example", ""] {
            let p = partition_of(name, 8);
            assert!(p < 8);
            assert_eq!(p, partition_of(name, 8));
        }
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c: fixed across versions and processes.
        assert_eq!(partition_of("a", 1 << 16), 0xec8c);
    }

    #[test]
    fn many_names_spread_over_all_partitions() {
        let mut seen = [0u32; 8];
        for i in 0..8000 {
            seen[partition_of(&format!("tenant-{i}.example"), 8) as usize] += 1;
        }
        assert!(seen.iter().all(|&n| n > 800), "{seen:?}");
    }

    #[test]
    fn every_form_of_a_name_has_one_key_reserved_or_not() {
        for form in ["Bücher.Example.", "xn--bcher-kva.example", "BÜCHER.example"] {
            assert_eq!(key(form), "xn--bcher-kva.example", "{form}");
        }
        assert_eq!(key(" Not A Name!. "), "not a name!");
    }

    #[test]
    fn a_partitioned_subject_maps_back_to_its_public_subject() {
        let s = subject(3, "register_domain");
        assert_eq!(s, "email_domains.partitioned.3.register_domain");
        assert_eq!(command_token(&s), "register_domain");
        assert_eq!(public_subject(&s), "email_domains.commands.register_domain");
        assert_eq!(
            public_subject("email_domains.commands.recheck"),
            "email_domains.commands.recheck"
        );
        assert_eq!(command_token("email_domains.commands.recheck"), "recheck");
        // More tokens name no command type (dead-lettered as unknown_command).
        assert_eq!(
            command_token("email_domains.commands.x.register_domain"),
            "x.register_domain"
        );
        assert_eq!(command_token("elsewhere.register_domain"), "");
    }
}
