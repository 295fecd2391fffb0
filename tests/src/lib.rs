//! The test harness: every test gets its own nats-server (JetStream, a temporary
//! store, a free port), its own Postgres database, an authoritative DNS server on
//! loopback, the development provider over real HTTP, and the services themselves,
//! and tears all of it down at the end. Tests then speak only the contract.

use async_nats::jetstream;
use email_domain_events::outcome::Outcome;
use email_domain_events::Event;
use email_domain_events::{Policy, ReservedDomains};
use futures::StreamExt;
use runtime::{Config, Shutdown};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

pub use testdns::TestDns;

pub mod fixtures;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .unwrap()
        .port()
}

/// Sends every log line of the process, at TRACE level, to `sink` (instead of the
/// test writer). Call before starting a stack.
pub fn capture_logs(sink: Arc<std::sync::Mutex<Vec<u8>>>) {
    #[derive(Clone)]
    struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink(sink);
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
        .with_ansi(false)
        .with_writer(move || sink.clone())
        .try_init();
}

pub fn init_logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// A nats-server of the test's own.
pub struct Nats {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    options: NatsOptions,
}

/// How a test's nats-server differs from the default one.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// The server's `max_payload` (`None`: its default, 1 MiB).
    pub max_payload: Option<usize>,
    /// The deployment's users and permissions (`k8s/nats/accounts.conf`), each user's
    /// password [`Nats::password`]; [`Nats::url`] is then the `operator`'s.
    pub accounts: bool,
}

/// The deployment's NATS accounts and permissions.
const ACCOUNTS_CONF: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../k8s/nats/accounts.conf");

impl Nats {
    pub fn start() -> Nats {
        Self::start_with(NatsOptions::default())
    }

    pub fn start_with(options: NatsOptions) -> Nats {
        let dir = tempfile::tempdir().expect("temp dir");
        let port = free_port();
        let mut n = Nats {
            child: None,
            port,
            dir,
            options,
        };
        n.write_config();
        n.spawn();
        n
    }

    /// The password a test server gives `user` (with [`NatsOptions::accounts`]).
    pub fn password(user: &str) -> String {
        format!("test-password-of-{user}")
    }

    fn config_path(&self) -> std::path::PathBuf {
        self.dir.path().join("nats.conf")
    }

    fn write_config(&self) {
        let mut conf = String::new();
        if let Some(n) = self.options.max_payload {
            conf.push_str(&format!("max_payload: {n}\n"));
        }
        if self.options.accounts {
            std::fs::copy(ACCOUNTS_CONF, self.dir.path().join("accounts.conf"))
                .expect("k8s/nats/accounts.conf");
            conf.push_str("include ./accounts.conf\n");
        }
        std::fs::write(self.config_path(), conf).expect("nats.conf");
    }

    /// The `NATS_PW_<USER>` variables accounts.conf reads.
    fn password_vars() -> Vec<(String, String)> {
        let text = std::fs::read_to_string(ACCOUNTS_CONF).expect("k8s/nats/accounts.conf");
        let mut vars: Vec<String> = text
            .split('$')
            .skip(1)
            .filter_map(|rest| {
                let var: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_uppercase() || *c == '_')
                    .collect();
                var.starts_with("NATS_PW_").then_some(var)
            })
            .collect();
        vars.sort();
        vars.dedup();
        vars.into_iter()
            .map(|v| {
                let user = v["NATS_PW_".len()..].to_lowercase().replace('_', "-");
                (v, Self::password(&user))
            })
            .collect()
    }

    /// Where the server writes its log (permission violations among it).
    pub fn log_path(&self) -> std::path::PathBuf {
        self.dir.path().join("nats.log")
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new("nats-server");
        cmd.arg("-c").arg(self.config_path());
        if self.options.accounts {
            cmd.envs(Self::password_vars());
        }
        let child = cmd
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("js"))
            .arg("-l")
            .arg(self.log_path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nats-server on PATH (apt-get install nats-server)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The URL every service of the stack uses (with accounts: as `operator`).
    pub fn url(&self) -> String {
        if self.options.accounts {
            self.url_as("operator")
        } else {
            format!("nats://127.0.0.1:{}", self.port)
        }
    }

    /// The URL for one user of accounts.conf.
    pub fn url_as(&self, user: &str) -> String {
        format!(
            "nats://{user}:{}@127.0.0.1:{}",
            Self::password(user),
            self.port
        )
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh database on the machine's Postgres, dropped at the end.
pub struct Db {
    pub name: String,
    admin: String,
}

impl Db {
    pub fn create() -> Db {
        let host = std::env::var("TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("edtest_{}", Uuid::new_v4().simple());
        // The services create it themselves (contract: created if missing); we only name it.
        Db { name, admin: host }
    }

    /// A database at a given URL (`postgres://…/<name>`), e.g. on a cluster of the
    /// test's own; dropped at the end like any other.
    pub fn at(url: &str) -> Db {
        let (admin, name) = url.rsplit_once('/').expect("postgres://host/name");
        Db {
            name: name.to_string(),
            admin: admin.to_string(),
        }
    }

    pub fn url(&self) -> String {
        format!("{}/{}", self.admin, self.name)
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([
                &format!("{}/postgres", self.admin),
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Which services a stack runs.
#[derive(Clone)]
pub struct StackOptions {
    pub handlers: usize,
    pub policy: Policy,
    pub reserved: &'static str,
    pub projector: projector::Options,
    pub provider_rate_limit: Option<f64>,
    pub command_dedup_window: Duration,
    pub provider_worker: bool,
    pub scheduler: bool,
    pub handler_lanes: usize,
    pub handler_workers: usize,
    /// Scheduled re-checks a handler starts a second (`None`: unlimited).
    pub handler_fleet_rate: Option<u32>,
    /// Partitions of the command work shared by the handler instances.
    pub handler_partitions: u32,
    /// Partitions of each Postgres projection, shared by its instances.
    pub projector_partitions: u32,
    /// Leases (handler partitions, the intake, single-instance services) run out after this.
    pub lease_ttl: Duration,
    pub projectors: bool,
    /// The provider key the services are given (the dev provider accepts any).
    pub api_key: Option<String>,
    /// Another Postgres database than a fresh one on the machine's cluster.
    pub database_url: Option<String>,
    /// Each service serves `/metrics`, `/healthz`, `/readyz` on a free port (see [`Stack::ops_addr`]).
    pub ops: bool,
    /// Run the services as processes of the binaries in this directory
    /// (`command-handler`, `provider-worker`, `scheduler`, `projector`, `query`), the
    /// way `make run` and `k8s/` run them; `None`: as tasks in this process.
    pub processes: Option<std::path::PathBuf>,
    /// The provider adapter's request timeout.
    pub provider_timeout: Duration,
    /// How the stack's nats-server differs from the default one.
    pub nats: NatsOptions,
}

impl StackOptions {
    /// NATS, Postgres, the test DNS, the dev provider and the query service only: the
    /// test starts the services it exercises itself.
    pub fn infrastructure_only() -> StackOptions {
        StackOptions {
            handlers: 0,
            provider_worker: false,
            scheduler: false,
            projectors: false,
            ..Default::default()
        }
    }
}

impl Default for StackOptions {
    fn default() -> Self {
        StackOptions {
            handlers: 1,
            policy: Policy {
                recheck_initial: chrono::Duration::seconds(300),
                recheck_max: chrono::Duration::seconds(3600),
                verification_deadline: chrono::Duration::days(7),
                monitor_interval: chrono::Duration::days(1),
            },
            reserved: "platform.example.com",
            projector: projector::Options::default(),
            provider_rate_limit: None,
            command_dedup_window: Duration::from_secs(120),
            provider_worker: true,
            scheduler: true,
            handler_lanes: 64,
            handler_workers: 16,
            handler_fleet_rate: Some(runtime::config::DEFAULT_FLEET_RATE),
            handler_partitions: 4,
            projector_partitions: 3,
            lease_ttl: Duration::from_millis(1500),
            projectors: true,
            api_key: None,
            database_url: None,
            ops: false,
            provider_timeout: Duration::from_secs(15),
            processes: None,
            nats: NatsOptions::default(),
        }
    }
}

pub struct Stack {
    pub nats: Nats,
    pub db: Db,
    pub dns: TestDns,
    pub provider_url: String,
    pub config: Config,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub pool: sqlx::PgPool,
    shutdown: Shutdown,
    projector_shutdown: Shutdown,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The ops address of each service started (with `StackOptions::ops`), in start order.
    pub ops: Vec<(&'static str, std::net::SocketAddr)>,
    serve_ops: bool,
    /// With `StackOptions::processes`: where the binaries are, and the services running.
    bin_dir: Option<std::path::PathBuf>,
    children: Vec<(&'static str, Child)>,
    /// Each process's output (`<name>-<pid>.log`), shown when a test fails.
    logs: tempfile::TempDir,
}

impl Stack {
    pub async fn start() -> Stack {
        Self::start_with(StackOptions::default()).await
    }

    pub async fn start_with(opts: StackOptions) -> Stack {
        init_logs();
        let nats = Nats::start_with(opts.nats.clone());
        let db = match &opts.database_url {
            Some(url) => Db::at(url),
            None => Db::create(),
        };
        let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
            .await
            .expect("test DNS");
        let (provider_addr, _provider) = dev_provider::spawn(dev_provider::DevProviderConfig {
            dns_nameservers: vec![dns.addr()],
            ..Default::default()
        })
        .await;
        let config = Config {
            nats_url: nats.url(),
            database_url: db.url(),
            resend_api_key: opts.api_key.clone(),
            resend_base_url: format!("http://{provider_addr}"),
            dns_nameservers: Some(vec![dns.addr()]),
            policy: opts.policy.clone(),
            sender_local_part: "notifications".into(),
            platform_from_address: "notifications@platform.invalid".into(),
            reserved_domains: ReservedDomains::parse(opts.reserved),
            provider_rate_limit: opts.provider_rate_limit,
            handler_lanes: opts.handler_lanes,
            handler_workers: opts.handler_workers,
            handler_fleet_rate: opts.handler_fleet_rate,
            handler_partitions: opts.handler_partitions,
            projector_partitions: opts.projector_partitions,
            snapshot_every: 4,
            lease_ttl: opts.lease_ttl,
            command_dedup_window: opts.command_dedup_window,
            ops_addr: None,
            provider_timeout: opts.provider_timeout,
        };
        let client = runtime::connect_nats(&config.nats_url, "test")
            .await
            .unwrap();
        let js = runtime::jetstream(client.clone());
        runtime::streams::ensure(
            &js,
            &runtime::streams::StreamSettings {
                command_dedup_window: opts.command_dedup_window,
            },
        )
        .await
        .unwrap();
        let pool = runtime::db::connect_and_migrate(&config.database_url, 4)
            .await
            .unwrap();
        let mut stack = Stack {
            nats,
            db,
            dns,
            provider_url: format!("http://{provider_addr}"),
            config: config.clone(),
            client,
            js,
            pool,
            shutdown: Shutdown::new(),
            projector_shutdown: Shutdown::new(),
            tasks: Vec::new(),
            ops: Vec::new(),
            serve_ops: opts.ops,
            bin_dir: opts.processes.clone(),
            children: Vec::new(),
            logs: tempfile::tempdir().expect("temp dir"),
        };
        if stack.bin_dir.is_some() {
            stack.start_processes(&opts);
            stack.wait_ready().await;
            return stack;
        }
        for _ in 0..opts.handlers {
            stack.start_handler();
        }
        if opts.provider_worker {
            let config = stack.service_config("provider-worker");
            stack.spawn(
                "provider-worker",
                provider_worker::run(config, stack.shutdown.clone()),
            );
        }
        if opts.scheduler {
            stack.start_scheduler();
        }
        let config = stack.service_config("query");
        stack.spawn("query", query::run(config, stack.shutdown.clone()));
        if opts.projectors {
            let _ = stack.start_projectors(opts.projector.clone());
        }
        stack.wait_ready().await;
        stack
    }

    /// The services as processes (`StackOptions::processes`).
    fn start_processes(&mut self, opts: &StackOptions) {
        for _ in 0..opts.handlers {
            self.start_handler_process();
        }
        if opts.provider_worker {
            self.start_process("provider-worker", "provider-worker", &[]);
        }
        if opts.scheduler {
            self.start_process("scheduler", "scheduler", &[]);
        }
        self.start_process("query", "query", &[]);
        if opts.projectors {
            for p in ["email_domains", "tenant_settings", "analytics"] {
                self.start_process("projector", "projector", &["--projection", p]);
            }
        }
    }

    /// One more command handler process (`StackOptions::processes`).
    pub fn start_handler_process(&mut self) -> u32 {
        self.start_process("command-handler", "command-handler", &[])
    }

    /// One more projector process for `projection` (shares its partitions).
    pub fn start_projector_process(&mut self, projection: &str) -> u32 {
        self.start_process("projector", "projector", &["--projection", projection])
    }

    fn start_process(&mut self, name: &'static str, bin: &str, args: &[&str]) -> u32 {
        let dir = self.bin_dir.as_ref().expect("StackOptions::processes");
        let log = tempfile::NamedTempFile::with_prefix_in(format!("{name}-"), self.logs.path())
            .and_then(|f| f.keep().map_err(|e| e.error))
            .expect("a log file")
            .0;
        let child = Command::new(dir.join(bin))
            .args(args)
            .env_clear()
            .envs(service_env(&self.config))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", dir.join(bin).display()));
        let pid = child.id();
        self.children.push((name, child));
        pid
    }

    /// Prints the end of each process's output (for a failed test's report).
    fn print_process_logs(&self) {
        let Ok(entries) = std::fs::read_dir(self.logs.path()) else {
            return;
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(PROCESS_LOG_TAIL)..];
            eprintln!(
                "--- {} (last {} of {} lines) ---",
                entry.file_name().to_string_lossy(),
                tail.len(),
                lines.len()
            );
            for line in tail {
                eprintln!("{line}");
            }
        }
    }
    /// Waits until `members` handler instances are alive and every partition has a live owner
    /// among them, each with an even share; how long it took.
    pub async fn wait_partitions(
        &self,
        partitions: u32,
        members: usize,
        within: Duration,
    ) -> Duration {
        let group = runtime::partitions::Group::handlers();
        self.wait_shared(group, partitions, members, within).await
    }

    /// [`Stack::wait_partitions`] for the instances of one projection.
    pub async fn wait_projection_partitions(
        &self,
        projection: &str,
        partitions: u32,
        members: usize,
        within: Duration,
    ) -> Duration {
        let group = runtime::partitions::Group::projection(projection);
        self.wait_shared(group, partitions, members, within).await
    }

    async fn wait_shared(
        &self,
        group: runtime::partitions::Group,
        partitions: u32,
        members: usize,
        within: Duration,
    ) -> Duration {
        let kv = self
            .js
            .get_key_value(runtime::partitions::BUCKET)
            .await
            .unwrap();
        let start = Instant::now();
        loop {
            let live = runtime::partitions::live_members(&kv, &group)
                .await
                .unwrap();
            let owners = runtime::partitions::owners(&kv, &group, partitions)
                .await
                .unwrap();
            let mut shares: std::collections::HashMap<String, usize> = Default::default();
            let all_owned = owners.iter().all(|o| match o {
                Some(o) if o.is_live() && live.contains_key(&o.holder) => {
                    *shares.entry(o.holder.clone()).or_default() += 1;
                    true
                }
                _ => false,
            });
            let even = shares.len() == members
                && shares.values().all(|&n| n >= partitions as usize / members);
            if live.len() == members && all_owned && even {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < within,
                "partitions not shared by {members} instances within {within:?}: members {live:?}, owners {owners:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Ends a service process with SIGKILL (nothing released, nothing acknowledged).
    pub fn kill_process(&mut self, pid: u32) {
        let i = self
            .children
            .iter()
            .position(|(_, c)| c.id() == pid)
            .expect("a service process of this stack");
        let (_, mut child) = self.children.remove(i);
        child.kill().expect("SIGKILL");
        let _ = child.wait();
    }

    /// The process ids of the services running as processes.
    pub fn service_pids(&self) -> Vec<u32> {
        self.children.iter().map(|(_, c)| c.id()).collect()
    }

    /// A signal of its own for one service instance, also triggered when the stack
    /// shuts down.
    fn linked_shutdown(&self) -> Shutdown {
        let own = Shutdown::new();
        let (all, mine) = (self.shutdown.clone(), own.clone());
        tokio::spawn(async move {
            all.wait().await;
            mine.trigger();
        });
        own
    }

    /// Starts one more scheduler instance; the returned signal stops just this one.
    pub fn start_scheduler(&mut self) -> Shutdown {
        let own = self.linked_shutdown();
        let f = scheduler::run(self.service_config("scheduler"), own.clone());
        self.spawn("scheduler", f);
        own
    }

    /// Starts one more command handler instance (it stands by while another holds the lease).
    pub fn start_handler(&mut self) {
        let f = command_handler::run(
            self.service_config("command-handler"),
            self.shutdown.clone(),
        );
        self.spawn("command-handler", f);
    }

    /// Starts one more command handler instance; the returned signal stops just this
    /// one (the stack's shutdown stops it too). Resolves when it has stopped.
    pub fn start_own_handler(&mut self) -> (Shutdown, tokio::task::JoinHandle<()>) {
        let own = self.linked_shutdown();
        let f = command_handler::run(self.service_config("command-handler"), own.clone());
        (own, service_task("command-handler", f))
    }

    /// Starts one more command handler on a runtime of its own, so that
    /// [`Instance::kill`] ends it the way SIGKILL ends a process: its tasks and
    /// connections gone at once, nothing released.
    pub fn start_handler_instance(&mut self) -> Instance {
        Instance::start(self.service_config("command-handler"), command_handler::run)
    }

    /// The config one service instance gets: with `StackOptions::ops`, its own ops port.
    fn service_config(&mut self, name: &'static str) -> Config {
        let mut config = self.config.clone();
        if self.serve_ops {
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
            config.ops_addr = Some(addr);
            self.ops.push((name, addr));
        }
        config
    }

    /// The ops address of the last started instance of `name` (`command-handler`,
    /// `provider-worker`, `scheduler`, `query`, or a projection's name).
    pub fn ops_addr(&self, name: &str) -> Option<std::net::SocketAddr> {
        self.ops
            .iter()
            .rev()
            .find(|(n, _)| *n == name)
            .map(|(_, a)| *a)
    }

    fn spawn(
        &mut self,
        name: &'static str,
        f: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    ) {
        self.tasks.push(service_task(name, f));
    }

    /// (Re)starts the three projectors, as separate services, with their own shutdown
    /// signal. Returns each one's count of redelivered events skipped by its checkpoint.
    pub fn start_projectors(
        &mut self,
        options: projector::Options,
    ) -> Vec<(projector::Projection, Arc<AtomicI64>)> {
        // Stopped projectors start again with a fresh signal; more instances beside
        // running ones share theirs.
        if self.projector_shutdown.is_triggered() {
            self.projector_shutdown = Shutdown::new();
        }
        let mut counters = Vec::new();
        for p in projector::Projection::ALL {
            let skipped = Arc::new(AtomicI64::new(0));
            counters.push((p, skipped.clone()));
            let crash = options
                .crash_after_commit
                .as_ref()
                .map(|n| crash_after(n.load(std::sync::atomic::Ordering::SeqCst)));
            let options = projector::Options {
                skipped: Some(skipped),
                crash_after_commit: crash,
            };
            let f = projector::run(
                self.service_config(p.name()),
                vec![p],
                self.projector_shutdown.clone(),
                options,
            );
            self.spawn(p.name(), f);
        }
        counters
    }

    pub fn stop_projectors(&self) {
        self.projector_shutdown.trigger();
    }

    /// Waits until the query service answers (the contract's "the stack is up").
    pub async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let req = json!({"tenant_id": Uuid::nil()});
            if let Ok(Ok(_)) = tokio::time::timeout(
                Duration::from_millis(500),
                self.client.request(
                    "email_domains.query.sender",
                    serde_json::to_vec(&req).unwrap().into(),
                ),
            )
            .await
            {
                return;
            }
            assert!(Instant::now() < deadline, "the stack did not come up");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Publishes a command body on `email_domains.commands.<type>` with the given
    /// `Nats-Msg-Id` (defaults to the body's command id).
    pub async fn publish(&self, command_type: &str, body: &Value, msg_id: Option<&str>) {
        let mut headers = async_nats::HeaderMap::new();
        let id = msg_id
            .map(str::to_string)
            .or_else(|| {
                body.get("command_id")
                    .and_then(|v| v.as_str())
                    .map(str::to_string)
            })
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        headers.insert("Nats-Msg-Id", id.as_str());
        self.js
            .publish_with_headers(
                format!("email_domains.commands.{command_type}"),
                headers,
                serde_json::to_vec(body).unwrap().into(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }

    /// Publishes each body on `email_domains.commands.<command_type>` with its
    /// `command_id` as `Nats-Msg-Id`, all in flight at once, then waits for every ack.
    pub async fn publish_all(&self, command_type: &str, bodies: impl IntoIterator<Item = Value>) {
        let subject = format!("email_domains.commands.{command_type}");
        let mut acks = Vec::new();
        for body in bodies {
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("Nats-Msg-Id", body["command_id"].as_str().unwrap());
            let payload = serde_json::to_vec(&body).unwrap().into();
            let ack = self
                .js
                .publish_with_headers(subject.clone(), headers, payload)
                .await
                .unwrap();
            acks.push(ack);
        }
        for ack in acks {
            ack.await.unwrap();
        }
    }

    /// Sends a command and waits for its outcome.
    pub async fn send(&self, command_type: &str, tenant: Uuid, domain: &str) -> Outcome {
        let body = json!({"command_id": Uuid::new_v4(), "tenant_id": tenant, "domain": domain, "requested_by": "test"});
        self.send_body(command_type, &body).await
    }

    pub async fn send_body(&self, command_type: &str, body: &Value) -> Outcome {
        let id = body["command_id"].as_str().expect("command_id").to_string();
        let mut sub = self
            .client
            .subscribe(format!("email_domains.outcomes.{id}"))
            .await
            .unwrap();
        self.publish(command_type, body, None).await;
        self.next_outcome(&mut sub, &id).await
    }

    pub async fn next_outcome(&self, sub: &mut async_nats::Subscriber, id: &str) -> Outcome {
        match tokio::time::timeout(Duration::from_secs(20), sub.next()).await {
            Ok(Some(m)) => serde_json::from_slice(&m.payload).unwrap(),
            _ => panic!("no outcome for command {id} within 20 s"),
        }
    }

    /// The stored outcome of a command id (from the outcome stream).
    pub async fn stored_outcome(&self, id: &str) -> Option<Value> {
        let stream = self.js.get_stream("EMAIL_DOMAIN_OUTCOMES").await.unwrap();
        match stream
            .direct_get_last_for_subject(format!("email_domains.outcomes.{id}"))
            .await
        {
            Ok(m) => Some(serde_json::from_slice(&m.payload).unwrap()),
            Err(_) => None,
        }
    }

    /// The tenant's rows through the contract's query.
    pub async fn domains(&self, tenant: Uuid) -> Vec<Value> {
        let req = serde_json::to_vec(&json!({"tenant_id": tenant})).unwrap();
        let reply = self
            .client
            .request("email_domains.query.domains", req.into())
            .await
            .unwrap();
        let v: Value = serde_json::from_slice(&reply.payload).unwrap();
        v["domains"].as_array().cloned().unwrap_or_default()
    }

    pub async fn sender(&self, tenant: Uuid) -> Value {
        let req = serde_json::to_vec(&json!({"tenant_id": tenant})).unwrap();
        let reply = self
            .client
            .request("email_domains.query.sender", req.into())
            .await
            .unwrap();
        serde_json::from_slice(&reply.payload).unwrap()
    }

    /// Waits until the tenant's sender (its own projection, with its own lag behind the
    /// rows) names `domain`, and returns it.
    pub async fn wait_sender(&self, tenant: Uuid, domain: &str) -> Value {
        self.wait_sender_until(tenant, domain, |s| s["domain"] == domain)
            .await
    }

    /// Waits until the tenant's sender satisfies `pred`, and returns it.
    pub async fn wait_sender_until(
        &self,
        tenant: Uuid,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let sender = self.sender(tenant).await;
            if pred(&sender) {
                return sender;
            }
            assert!(
                Instant::now() < deadline,
                "waited 30 s for the sender: {what}; it is {sender}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the tenant's row for `domain` satisfies `pred`, and returns it.
    pub async fn wait_row(
        &self,
        tenant: Uuid,
        domain: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let rows = self.domains(tenant).await;
            let newest = rows.iter().rfind(|r| r["domain_name"] == domain).cloned();
            if let Some(r) = &newest {
                if pred(r) {
                    return r.clone();
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "{domain}: waited 30 s for {what}; last row: {}",
                    newest.map(|r| r.to_string()).unwrap_or("none".into())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_status(&self, tenant: Uuid, domain: &str, status: &str) -> Value {
        self.wait_row(tenant, domain, &format!("status {status}"), |r| {
            r["status"] == status
        })
        .await
    }

    /// Waits until the service has nothing left to do: no command or provider work
    /// waiting, every event handed to the provider worker and projected into
    /// `email_domains`. Quiet twice in a row, since provider results come back as
    /// commands after their work item is gone.
    pub async fn settled(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut quiet = 0;
        while quiet < 2 {
            assert!(
                Instant::now() < deadline,
                "waited 30 s for the stack to settle"
            );
            quiet = if self.is_quiet().await { quiet + 1 } else { 0 };
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn is_quiet(&self) -> bool {
        let messages = |name: &'static str| async move {
            let mut s = self.js.get_stream(name).await.unwrap();
            s.info().await.unwrap().state.clone()
        };
        let events = messages("EMAIL_DOMAIN_EVENTS").await.last_sequence;
        if messages("EMAIL_DOMAIN_COMMANDS").await.messages > 0
            || messages("EMAIL_DOMAIN_PARTITIONED_COMMANDS").await.messages > 0
            || messages("EMAIL_DOMAIN_PROVIDER_WORK").await.messages > 0
        {
            return false;
        }
        let mut dispatch: jetstream::consumer::PullConsumer = self
            .js
            .get_stream("EMAIL_DOMAIN_EVENTS")
            .await
            .unwrap()
            .get_consumer(provider_worker::DISPATCH_CONSUMER)
            .await
            .unwrap();
        let d = dispatch.info().await.unwrap();
        if d.num_pending > 0 || d.num_ack_pending > 0 {
            return false;
        }
        projector::consume::checkpoint(&self.pool, "email_domains")
            .await
            .unwrap()
            == events
    }

    /// Puts a row's records into the test DNS server, as the owner would at their DNS host.
    pub fn publish_records(&self, zone: &str, row: &Value) {
        self.dns.add_zone(zone, 60);
        for r in row["dns_records"].as_array().expect("records") {
            let priority = r["priority"].as_u64().map(|p| p as u16);
            self.dns.add(
                r["name"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["value"].as_str().unwrap(),
                priority,
                60,
            );
        }
    }

    /// Every event of the log, in order.
    pub async fn events(&self) -> Vec<email_domain_events::Event> {
        let stream = self.js.get_stream("EMAIL_DOMAIN_EVENTS").await.unwrap();
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(m) = stream
            .direct_get_next_for_subject("email_domains.events.>", Some(seq))
            .await
        {
            out.push(email_domain_events::Event::from_json(&m.payload).unwrap());
            seq = m.sequence + 1;
        }
        out
    }

    /// Every message on an analytics subject pattern, in order.
    pub async fn analytics(&self) -> Vec<Value> {
        let stream = self.js.get_stream("EMAIL_DOMAIN_ANALYTICS").await.unwrap();
        let mut out = Vec::new();
        let mut seq = 1;
        while let Ok(m) = stream
            .direct_get_next_for_subject("analytics.email_domain.>", Some(seq))
            .await
        {
            out.push(serde_json::from_slice(&m.payload).unwrap());
            seq = m.sequence + 1;
        }
        out
    }

    /// The analytics messages once `pred` holds for them; the emitter is a separate
    /// consumer with its own lag behind the rows, so a test reads analytics through this.
    pub async fn analytics_until(&self, pred: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        for _ in 0..600 {
            let a = self.analytics().await;
            if pred(&a) {
                return a;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!(
            "analytics never arrived: {:?}",
            self.analytics()
                .await
                .iter()
                .map(|a| a["type"].clone())
                .collect::<Vec<_>>()
        );
    }

    pub async fn shutdown(mut self) {
        self.shutdown.trigger();
        self.projector_shutdown.trigger();
        self.stop_processes().await;
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), t).await;
        }
    }
}

impl Stack {
    /// SIGTERM to every service process, SIGKILL to any still there after 10 s.
    async fn stop_processes(&mut self) {
        for (_, c) in &self.children {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for (name, c) in &mut self.children {
            while matches!(c.try_wait(), Ok(None)) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if matches!(c.try_wait(), Ok(None)) {
                eprintln!("{name} did not stop on SIGTERM: killed");
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        self.children.clear();
    }
}

/// Lines of each process's output a failed test shows.
const PROCESS_LOG_TAIL: usize = 200;

impl Drop for Stack {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            self.print_process_logs();
        }
    }
}

/// Where the workspace's service binaries are (`target/debug` beside the test
/// binary); `make test` builds them first. Missing ones fail the test, saying so.
pub fn service_binaries() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    // target/debug/deps/<test> → target/debug
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/debug");
    service_binaries_in(dir, "`cargo build --workspace --bins`; `make test` does")
}

/// `dir`, once every service binary is there (else a panic saying how to build them).
pub fn service_binaries_in(dir: &std::path::Path, build: &str) -> std::path::PathBuf {
    for bin in [
        "command-handler",
        "provider-worker",
        "scheduler",
        "projector",
        "query",
    ] {
        assert!(
            dir.join(bin).exists(),
            "{} is missing: build the services first ({build})",
            dir.join(bin).display()
        );
    }
    dir.to_path_buf()
}

/// The environment a service process reads its [`Config`] from.
pub fn service_env(c: &Config) -> Vec<(String, String)> {
    let mut env = vec![
        ("NATS_URL", c.nats_url.clone()),
        ("DATABASE_URL", c.database_url.clone()),
        ("RESEND_BASE_URL", c.resend_base_url.clone()),
        (
            "RECHECK_INITIAL_SECS",
            c.policy.recheck_initial.num_seconds().to_string(),
        ),
        (
            "RECHECK_MAX_SECS",
            c.policy.recheck_max.num_seconds().to_string(),
        ),
        (
            "VERIFICATION_DEADLINE_SECS",
            c.policy.verification_deadline.num_seconds().to_string(),
        ),
        (
            "MONITOR_INTERVAL_SECS",
            c.policy.monitor_interval.num_seconds().to_string(),
        ),
        ("SENDER_LOCAL_PART", c.sender_local_part.clone()),
        ("PLATFORM_FROM_ADDRESS", c.platform_from_address.clone()),
        ("RESERVED_DOMAINS", c.reserved_domains.to_env()),
        (
            "PROVIDER_RATE_LIMIT",
            c.provider_rate_limit.map_or("0".into(), |r| r.to_string()),
        ),
        ("HANDLER_LANES", c.handler_lanes.to_string()),
        ("HANDLER_WORKERS", c.handler_workers.to_string()),
        (
            "HANDLER_FLEET_RATE",
            c.handler_fleet_rate.unwrap_or(0).to_string(),
        ),
        ("HANDLER_PARTITIONS", c.handler_partitions.to_string()),
        ("PROJECTOR_PARTITIONS", c.projector_partitions.to_string()),
        ("SNAPSHOT_EVERY", c.snapshot_every.to_string()),
        ("LEASE_TTL_MS", c.lease_ttl.as_millis().to_string()),
        (
            "COMMAND_DEDUP_WINDOW_SECS",
            c.command_dedup_window.as_secs().to_string(),
        ),
        (
            "PROVIDER_TIMEOUT_MS",
            c.provider_timeout.as_millis().to_string(),
        ),
        (
            "RUST_LOG",
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
        ("NO_COLOR", "1".into()),
    ];
    if let Some(servers) = &c.dns_nameservers {
        let list: Vec<String> = servers.iter().map(|s| s.to_string()).collect();
        env.push(("DNS_NAMESERVERS", list.join(",")));
    }
    if let Some(key) = &c.resend_api_key {
        env.push(("RESEND_API_KEY", key.clone()));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

/// A service instance on a tokio runtime of its own (two worker threads).
pub struct Instance {
    runtime: Option<tokio::runtime::Runtime>,
    shutdown: Shutdown,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Instance {
    pub fn start<F>(config: Config, service: impl FnOnce(Config, Shutdown) -> F) -> Instance
    where
        F: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("an instance's runtime");
        let shutdown = Shutdown::new();
        let f = service(config, shutdown.clone());
        let done = runtime.spawn(async move {
            if let Err(e) = f.await {
                tracing::error!(error = %e, "instance ended with an error");
            }
        });
        Instance {
            runtime: Some(runtime),
            shutdown,
            done: Some(done),
        }
    }

    /// Ends it at once, mid-work, like SIGKILL: no lease given up, nothing acknowledged.
    pub fn kill(mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }

    /// Stops it cleanly (it finishes what it took and gives up its leases).
    pub async fn stop(mut self) {
        self.shutdown.trigger();
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), done).await;
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.shutdown.trigger();
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs a service; an error it ends with is logged.
fn service_task(
    name: &'static str,
    f: impl std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if let Err(e) = f.await {
            tracing::error!(service = name, error = %e, "service ended with an error");
        }
    })
}

/// A counter for `projector::Options::crash_after_commit`.
pub fn crash_after(n: i64) -> Arc<AtomicI64> {
    Arc::new(AtomicI64::new(n))
}

/// The log's invariants: distinct event ids, versions 1..n per registration; returns
/// the events per domain id.
pub fn check_log(events: &[Event]) -> BTreeMap<Uuid, Vec<Event>> {
    let ids: HashSet<_> = events.iter().map(|e| e.event_id).collect();
    assert_eq!(
        ids.len(),
        events.len(),
        "an event id appears twice in the log"
    );
    let mut per: BTreeMap<Uuid, Vec<Event>> = BTreeMap::new();
    for e in events {
        per.entry(e.domain_id.0).or_default().push(e.clone());
    }
    for (d, es) in &per {
        let versions: Vec<u64> = es.iter().map(|e| e.version).collect();
        let want: Vec<u64> = (1..=es.len() as u64).collect();
        assert_eq!(versions, want, "domain {d}: versions not gapless in order");
    }
    per
}

/// The `email_domains` rows equal a fresh fold of the log.
pub async fn rows_equal_fold(stack: &Stack, per: &BTreeMap<Uuid, Vec<Event>>) {
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM email_domains")
        .fetch_one(&stack.pool)
        .await
        .unwrap();
    assert_eq!(rows as usize, per.len(), "one row per registration");
    for (d, es) in per {
        let row: Value =
            sqlx::query_scalar("SELECT to_jsonb(d) FROM email_domains d WHERE id = $1")
                .bind(d)
                .fetch_one(&stack.pool)
                .await
                .unwrap_or_else(|e| panic!("row {d}: {e}"));
        assert_eq!(
            row["version"].as_i64(),
            Some(es.len() as i64),
            "{d}: row version = its events"
        );
        let row: projector::email_domains::Row = serde_json::from_value(row).unwrap();
        let folded = email_domain_events::state::replay(es.iter()).unwrap();
        assert_eq!(
            row,
            projector::email_domains::Row::from_state(&folded),
            "{d}"
        );
    }
}
