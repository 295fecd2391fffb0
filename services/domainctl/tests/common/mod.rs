//! Test fixtures: a private nats-server, a fresh Postgres database, and real events.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use email_domain_events::event::{CheckTrigger, EventData};
use email_domain_events::records::{DnsRecord, DnsStatus};
use email_domain_events::{CommandId, DomainId, Event, EventId, TenantId};
use runtime::store::EventStore;
use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use uuid::Uuid;

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `nats-server -js` on a free port with its own store, killed on drop.
pub struct Nats {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl Nats {
    pub async fn start() -> Nats {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("dctl-nats-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH");
        let url = format!("nats://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Nats { child, dir, url }
    }

    pub async fn js(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(&self.url).await.unwrap();
        let js = runtime::jetstream(client);
        runtime::streams::ensure(&js, &Default::default())
            .await
            .unwrap();
        js
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A fresh database `dctl_<random>` on 127.0.0.1:5432, dropped on drop.
pub struct Db {
    pub name: String,
    pub url: String,
}

impl Db {
    pub async fn create() -> (Db, sqlx::PgPool) {
        let name = format!("dctl_{}", Uuid::new_v4().simple());
        let url = format!("postgres://postgres@127.0.0.1:5432/{name}");
        let pool = runtime::db::connect_and_migrate(&url, 6)
            .await
            .expect("Postgres on 127.0.0.1:5432");
        (Db { name, url }, pool)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-q",
                "-c",
            ])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 5, 9, 0, 0).unwrap() + Duration::microseconds(123_456)
}

pub fn records(domain: &str, status: DnsStatus) -> Vec<DnsRecord> {
    let r = |purpose: &str,
             t: &str,
             name: String,
             value: &str,
             priority: Option<u16>,
             required: bool| DnsRecord {
        purpose: purpose.into(),
        record_type: t.into(),
        name,
        value: value.into(),
        priority,
        required,
        dns_status: status,
        observed: if status == DnsStatus::Found {
            vec![value.into()]
        } else {
            vec![]
        },
        diagnosis: None,
    };
    vec![
        r(
            "spf",
            "TXT",
            format!("send.{domain}"),
            "v=spf1 include:amazonses.com ~all",
            None,
            true,
        ),
        r(
            "return_path",
            "MX",
            format!("send.{domain}"),
            "feedback-smtp.us-east-1.amazonses.com",
            Some(10),
            true,
        ),
        r(
            "dkim",
            "TXT",
            format!("resend._domainkey.{domain}"),
            "p=MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQC\\tab\"quote",
            None,
            true,
        ),
        r(
            "dmarc",
            "TXT",
            format!("_dmarc.{domain}"),
            "v=DMARC1; p=none;",
            None,
            false,
        ),
    ]
}

/// Writes events through the real event store, keeping each domain's version and
/// last stream sequence.
pub struct Writer {
    pub store: EventStore,
    last: HashMap<DomainId, (u64, u64)>,
    pub all: Vec<Event>,
}

impl Writer {
    pub async fn new(js: &async_nats::jetstream::Context) -> Writer {
        Writer {
            store: EventStore::open(js, 1000).await.unwrap(),
            last: HashMap::new(),
            all: Vec::new(),
        }
    }

    pub async fn append(
        &mut self,
        tenant: TenantId,
        domain_id: DomainId,
        name: &str,
        at: DateTime<Utc>,
        data: EventData,
    ) -> u64 {
        let (version, last_seq) = self.last.get(&domain_id).copied().unwrap_or((0, 0));
        let causation = CommandId(Uuid::new_v4());
        let event = Event {
            event_id: EventId::for_command(causation, domain_id, version + 1),
            tenant_id: tenant,
            domain_id,
            domain: name.into(),
            version: version + 1,
            occurred_at: at,
            causation_id: causation,
            correlation_id: causation.0,
            schema_version: 1,
            data,
        };
        let seq = self.store.append(&event, last_seq).await.unwrap();
        self.last.insert(domain_id, (version + 1, seq));
        self.all.push(event);
        seq
    }

    /// registered → provisioned → dns_checked (all found, verify) → provider_polled verified.
    pub async fn verified(
        &mut self,
        tenant: TenantId,
        name: &str,
        at: DateTime<Utc>,
        activates: bool,
    ) -> DomainId {
        let id = self.registered(tenant, name, at).await;
        self.append(
            tenant,
            id,
            name,
            at + Duration::seconds(2),
            EventData::DomainProvisioned {
                provider_id: "resend".into(),
                provider_domain_id: format!("pd-{name}"),
                region: Some("us-east-1".into()),
                records: records(name, DnsStatus::Pending),
                next_check_at: Some(at + Duration::seconds(302)),
                cleanup_required: false,
            },
        )
        .await;
        self.append(
            tenant,
            id,
            name,
            at + Duration::seconds(60),
            EventData::DnsChecked {
                trigger: CheckTrigger::DnsConfigured,
                records: records(name, DnsStatus::Found),
                all_required_found: true,
                request_verification: true,
                poll_provider: false,
                next_check_at: Some(at + Duration::seconds(90)),
                new_deadline_at: None,
                attempt: 0,
                drift_detected: false,
                drift_resolved: false,
                propagation: Vec::new(),
                provider_domain_id: Some(format!("pd-{name}")),
            },
        )
        .await;
        self.append(
            tenant,
            id,
            name,
            at + Duration::seconds(95),
            EventData::ProviderPolled {
                provider_status: "verified".into(),
                verified: true,
                activates,
                provider_failed: false,
                next_check_at: Some(at + Duration::days(1)),
                reason: None,
                failed_records: Vec::new(),
            },
        )
        .await;
        id
    }

    pub async fn registered(
        &mut self,
        tenant: TenantId,
        name: &str,
        at: DateTime<Utc>,
    ) -> DomainId {
        let id = DomainId(Uuid::new_v4());
        self.append(
            tenant,
            id,
            name,
            at,
            EventData::DomainRegistered {
                region: Some("us-east-1".into()),
                requested_by: Some("test".into()),
                deadline_at: at + Duration::days(7),
            },
        )
        .await;
        id
    }

    pub async fn deleted(&mut self, tenant: TenantId, id: DomainId, name: &str, at: DateTime<Utc>) {
        self.append(
            tenant,
            id,
            name,
            at,
            EventData::DomainDeleted {
                requested_by: Some("operator:test".into()),
                cleanup_required: true,
                provider_domain_id: Some(format!("pd-{name}")),
            },
        )
        .await;
    }
}

/// Runs `domainctl` in-process with the test's servers.
pub async fn ctl(nats: &str, db: &str, args: &[&str]) -> domainctl::Output {
    let mut all = vec!["domainctl", "--nats-url", nats, "--database-url", db];
    all.extend_from_slice(args);
    domainctl::run_args(all).await
}
