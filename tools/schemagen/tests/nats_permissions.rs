//! The per-service NATS permissions of the Kubernetes deployment
//! (`k8s/nats/accounts.conf`, the same file the cluster's ConfigMap carries) loaded
//! into a local nats-server: every forbidden publish is refused with a permissions
//! violation, the allowed ones pass.
//!
//! Speaks the NATS client protocol directly over TCP, so a refusal is seen as the
//! server's own `-ERR 'Permissions Violation ...'`, with no client library between.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const USERS: [&str; 13] = [
    "sys",
    "command-handler",
    "provider-worker",
    "scheduler",
    "projector-email-domains",
    "projector-tenant-settings",
    "analytics-emitter",
    "query",
    "platform",
    "gateway",
    "analytics-reader",
    "operator",
    "stream-admin",
];

fn password_var(user: &str) -> String {
    format!("NATS_PW_{}", user.to_uppercase().replace('-', "_"))
}

fn password(user: &str) -> String {
    format!("test-password-of-{user}")
}

struct Server {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_server() -> Server {
    let accounts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../k8s/nats/accounts.conf");
    let dir = std::env::temp_dir().join(format!(
        "schemagen-nats-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    // The same accounts file as the cluster's nats.conf includes; only the server part differs.
    std::fs::copy(&accounts, dir.join("accounts.conf")).expect("k8s/nats/accounts.conf");
    let store = dir.join("jetstream");
    let conf = dir.join("nats.conf");
    std::fs::write(
        &conf,
        format!(
            "host: 127.0.0.1\njetstream {{\n  store_dir: {:?}\n}}\ninclude ./accounts.conf\n",
            store.display().to_string()
        ),
    )
    .unwrap();
    let port = free_port();
    let mut cmd = Command::new("nats-server");
    cmd.arg("-c")
        .arg(&conf)
        .arg("-p")
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for u in USERS {
        cmd.env(password_var(u), password(u));
    }
    let child = cmd
        .spawn()
        .expect("nats-server on PATH (make test installs it)");
    let mut server = Server { child, port, dir };
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if let Ok(Some(status)) = server.child.try_wait() {
            let mut err = String::new();
            server
                .child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            panic!("nats-server exited ({status}): {err}");
        }
        assert!(Instant::now() < deadline, "nats-server did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
}

/// A raw protocol connection as one user.
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    user: String,
}

/// What came back before the PONG that follows an operation.
#[derive(Debug, Default)]
struct Reply {
    errors: Vec<String>,
    /// (subject, reply-to, payload) of the messages delivered.
    messages: Vec<(String, Option<String>, String)>,
}

impl Reply {
    fn refused(&self) -> bool {
        self.errors
            .iter()
            .any(|e| e.contains("Permissions Violation"))
    }
}

impl Conn {
    fn open(port: u16, user: &str) -> Conn {
        let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut c = Conn {
            reader: BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            user: user.into(),
        };
        let mut info = String::new();
        c.reader.read_line(&mut info).unwrap();
        assert!(info.starts_with("INFO"), "{info}");
        let connect = serde_json::json!({
            "user": user, "pass": password(user), "verbose": false, "pedantic": false,
            "protocol": 1, "echo": true, "headers": true, "name": format!("test-{user}"),
        });
        c.send(&format!("CONNECT {connect}\r\n"));
        let r = c.sync();
        assert!(r.errors.is_empty(), "{user} cannot connect: {:?}", r.errors);
        c
    }

    fn send(&mut self, s: &str) {
        self.writer.write_all(s.as_bytes()).unwrap();
    }

    /// PING, and everything the server said until its PONG.
    fn sync(&mut self) -> Reply {
        self.send("PING\r\n");
        let mut reply = Reply::default();
        loop {
            let mut line = String::new();
            let n = self
                .reader
                .read_line(&mut line)
                .unwrap_or_else(|e| panic!("{}: read: {e}", self.user));
            assert!(
                n > 0,
                "{}: the server closed the connection ({:?})",
                self.user,
                reply.errors
            );
            let line = line.trim_end();
            if line == "PONG" {
                return reply;
            } else if line == "PING" {
                self.send("PONG\r\n");
            } else if let Some(e) = line.strip_prefix("-ERR ") {
                reply.errors.push(e.to_string());
            } else if line.starts_with("MSG ") || line.starts_with("HMSG ") {
                let parts: Vec<&str> = line.split(' ').collect();
                let headers = line.starts_with("HMSG ");
                let size: usize = parts.last().unwrap().parse().unwrap();
                let reply_to = match (headers, parts.len()) {
                    (false, 5) | (true, 6) => Some(parts[3].to_string()),
                    _ => None,
                };
                let mut buf = vec![0u8; size + 2];
                self.reader.read_exact(&mut buf).unwrap();
                buf.truncate(size);
                reply.messages.push((
                    parts[1].to_string(),
                    reply_to,
                    String::from_utf8_lossy(&buf).into_owned(),
                ));
            }
        }
    }

    fn publish(&mut self, subject: &str, reply_to: Option<&str>, payload: &str) -> Reply {
        let r = reply_to.map(|r| format!(" {r}")).unwrap_or_default();
        self.send(&format!(
            "PUB {subject}{r} {}\r\n{payload}\r\n",
            payload.len()
        ));
        self.sync()
    }

    fn subscribe(&mut self, subject: &str, sid: u32) -> Reply {
        self.send(&format!("SUB {subject} {sid}\r\n"));
        self.sync()
    }

    /// A request to the JetStream API: the reply, or the refusal.
    fn js_api(&mut self, subject: &str, payload: &str) -> Result<serde_json::Value, Vec<String>> {
        let inbox = format!("_INBOX.test.{}", subject.replace(['$', '.'], "_"));
        let sub = self.subscribe(&inbox, 900);
        assert!(sub.errors.is_empty(), "{:?}", sub.errors);
        let mut r = self.publish(subject, Some(&inbox), payload);
        if r.refused() {
            return Err(r.errors);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while r.messages.is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
            r = self.sync();
        }
        self.send("UNSUB 900\r\n");
        let (_, _, body) = r
            .messages
            .first()
            .unwrap_or_else(|| panic!("{}: no reply to {subject}", self.user));
        Ok(serde_json::from_str(body).unwrap())
    }
}

fn assert_refused(c: &mut Conn, subject: &str) {
    let r = c.publish(subject, None, "{}");
    assert!(
        r.refused(),
        "{} may publish to {subject}, but must not ({r:?})",
        c.user
    );
}

fn assert_allowed(c: &mut Conn, subject: &str) {
    let r = c.publish(subject, None, "{}");
    assert!(
        !r.refused(),
        "{} may not publish to {subject}, but must ({:?})",
        c.user,
        r.errors
    );
}

#[test]
fn each_service_may_publish_only_what_it_must() {
    let server = start_server();
    let port = server.port;

    // The streams and KV buckets, created by the stream admin from the very configs
    // the k8s set-up Job uses (k8s/base/streams/*.json), with one replica here (a
    // single server) instead of three.
    let mut admin = Conn::open(port, "stream-admin");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../k8s/base/streams");
    let mut created = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let mut cfg: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(entry.path()).unwrap()).unwrap();
        let name = cfg["name"].as_str().unwrap().to_string();
        assert_eq!(
            entry.path().file_stem().unwrap().to_str(),
            Some(name.as_str())
        );
        assert_eq!(cfg["num_replicas"], 3, "{name} is replicated x3 in k8s");
        assert_eq!(cfg["storage"], "file", "{name} is on disk");
        cfg["num_replicas"] = 1.into();
        let r = admin
            .js_api(&format!("$JS.API.STREAM.CREATE.{name}"), &cfg.to_string())
            .expect("stream-admin creates streams");
        assert!(r.get("error").is_none(), "{name}: {r}");
        created.push(name);
    }
    created.sort();
    assert_eq!(
        created,
        [
            "EMAIL_DOMAIN_ANALYTICS",
            "EMAIL_DOMAIN_COMMANDS",
            "EMAIL_DOMAIN_DEAD_LETTERS",
            "EMAIL_DOMAIN_EVENTS",
            "EMAIL_DOMAIN_OUTCOMES",
            "EMAIL_DOMAIN_PARTITIONED_COMMANDS",
            "EMAIL_DOMAIN_PROVIDER_WORK",
            "KV_email_domain_leases",
            "KV_email_domain_names",
            "KV_email_domain_partitions",
            "KV_email_domain_provider_names",
            "KV_email_domain_snapshots",
            "KV_gateway_share_epochs",
        ]
    );
    assert_refused(&mut admin, "email_domains.commands.register_domain");

    let cmd = "email_domains.commands";
    let event = "email_domains.events.1c9d6e2a-0000-4000-8000-000000000001.3c83e420-74d8-5561-bc4f-7195a505f5d5";

    // The command handler: events, outcomes, dead letters, its KV buckets; never analytics or commands.
    let mut handler = Conn::open(port, "command-handler");
    assert_refused(&mut handler, "analytics.email_domain.registered");
    assert_refused(&mut handler, &format!("{cmd}.register_domain"));
    assert_refused(&mut handler, "$KV.some_other_bucket.key");
    assert_refused(&mut handler, "$KV.email_domain_provider_names.acme.example");
    assert_allowed(&mut handler, event);
    assert_allowed(
        &mut handler,
        "email_domains.outcomes.0b5e7c4e-8f0a-4b8e-9a43-000000000001",
    );
    assert_allowed(&mut handler, "email_domains.dead_letters.unreadable_json");
    assert_allowed(&mut handler, "$KV.email_domain_names.acme_example");
    assert_allowed(&mut handler, "$KV.email_domain_snapshots.x");
    assert_allowed(&mut handler, "$KV.email_domain_leases.command-handler");
    // The intake moves commands to their partitions; the instances lease them.
    assert_allowed(&mut handler, "email_domains.partitioned.3.register_domain");
    assert_allowed(&mut handler, "$KV.email_domain_partitions.partition.3");
    // The intake moves commands only as fast as their outcomes come; nothing else.
    assert!(!handler.subscribe("email_domains.outcomes.>", 11).refused());
    assert!(handler.subscribe("email_domains.commands.>", 12).refused());
    // JetStream: reads streams, never deletes or purges them.
    let info = handler
        .js_api("$JS.API.STREAM.INFO.EMAIL_DOMAIN_EVENTS", "")
        .expect("stream info");
    assert_eq!(info["config"]["name"], "EMAIL_DOMAIN_EVENTS", "{info}");
    assert!(
        handler
            .js_api("$JS.API.STREAM.DELETE.EMAIL_DOMAIN_EVENTS", "")
            .is_err(),
        "the handler may not delete the log"
    );
    assert!(
        handler
            .js_api("$JS.API.STREAM.PURGE.EMAIL_DOMAIN_EVENTS", "")
            .is_err(),
        "the handler may not purge the log"
    );
    assert_refused(&mut handler, "$JS.API.STREAM.UPDATE.EMAIL_DOMAIN_EVENTS");

    // The projectors: nothing but the JetStream API, acks and their own lease.
    for (user, lease, other) in [
        (
            "projector-email-domains",
            "email_domains",
            "tenant_settings",
        ),
        (
            "projector-tenant-settings",
            "tenant_settings",
            "email_domains",
        ),
    ] {
        let mut p = Conn::open(port, user);
        assert_allowed(
            &mut p,
            &format!("$KV.email_domain_leases.projector-{lease}"),
        );
        assert_refused(
            &mut p,
            &format!("$KV.email_domain_leases.projector-{other}"),
        );
        assert_refused(&mut p, "$KV.email_domain_leases.command-handler");
        assert_refused(&mut p, &format!("{cmd}.register_domain"));
        assert_refused(&mut p, &format!("{cmd}.recheck"));
        assert_refused(&mut p, event);
        assert_refused(&mut p, "analytics.email_domain.registered");
        assert_refused(&mut p, "email_domains.outcomes.x");
        assert_allowed(&mut p, "$JS.ACK.EMAIL_DOMAIN_EVENTS.projector.1.2.3.4.5");
        assert!(p
            .js_api("$JS.API.STREAM.INFO.EMAIL_DOMAIN_EVENTS", "")
            .is_ok());
    }

    // The analytics emitter: analytics, nothing else.
    let mut emitter = Conn::open(port, "analytics-emitter");
    assert_allowed(&mut emitter, "analytics.email_domain.registered");
    assert_allowed(&mut emitter, "$KV.email_domain_leases.projector-analytics");
    assert_refused(&mut emitter, "$KV.email_domain_leases.command-handler");
    assert_refused(&mut emitter, &format!("{cmd}.register_domain"));
    assert_refused(&mut emitter, event);

    // The scheduler: `recheck` commands only.
    let mut scheduler = Conn::open(port, "scheduler");
    assert_refused(&mut scheduler, event);
    assert_refused(&mut scheduler, &format!("{cmd}.register_domain"));
    assert_refused(&mut scheduler, &format!("{cmd}.provider_result"));
    assert_refused(&mut scheduler, "analytics.email_domain.registered");
    assert_allowed(&mut scheduler, &format!("{cmd}.recheck"));
    assert_allowed(&mut scheduler, "email_domains.partitioned.5.recheck");
    assert_refused(
        &mut scheduler,
        "email_domains.partitioned.5.register_domain",
    );
    assert_refused(
        &mut scheduler,
        "email_domains.partitioned.5.provider_result",
    );

    // The provider worker: `provider_result` commands and its work queue.
    let mut worker = Conn::open(port, "provider-worker");
    assert_refused(&mut worker, event);
    assert_refused(&mut worker, &format!("{cmd}.recheck"));
    assert_refused(&mut worker, &format!("{cmd}.delete_domain"));
    assert_allowed(&mut worker, &format!("{cmd}.provider_result"));
    assert_allowed(&mut worker, "email_domains.provider_work.interactive");
    // Its internal commands go straight into the handler's partitions; public ones
    // only ever through the front door.
    assert_allowed(&mut worker, "email_domains.partitioned.0.provider_result");
    assert_allowed(&mut worker, "email_domains.partitioned.0.preflight");
    assert_refused(&mut worker, "email_domains.partitioned.0.register_domain");
    assert_refused(&mut worker, "email_domains.partitioned.0.recheck");
    assert_allowed(&mut worker, "$KV.email_domain_leases.provider-worker");
    assert_allowed(&mut worker, "$KV.email_domain_provider_names.acme.example");
    assert_refused(&mut worker, "$KV.email_domain_names.acme_example");

    // The platform: the public commands and the queries, not the internal commands.
    let mut platform = Conn::open(port, "platform");
    assert_allowed(&mut platform, &format!("{cmd}.register_domain"));
    assert_refused(&mut platform, &format!("{cmd}.recheck"));
    assert_refused(&mut platform, &format!("{cmd}.provider_result"));
    assert_refused(&mut platform, &format!("{cmd}.fail_domain"));
    assert_refused(&mut platform, event);

    // The gateway: exactly what it uses (services/gateway/tests/nats_permissions.rs
    // runs its whole flow as this user without a violation).
    let mut gateway = Conn::open(port, "gateway");
    for t in [
        "register_domain",
        "dns_configured",
        "refresh_status",
        "delete_domain",
    ] {
        assert_allowed(&mut gateway, &format!("{cmd}.{t}"));
    }
    for t in ["recheck", "provider_result", "preflight", "fail_domain"] {
        assert_refused(&mut gateway, &format!("{cmd}.{t}"));
    }
    assert_refused(&mut gateway, event);
    assert_refused(&mut gateway, "analytics.email_domain.registered");
    assert_refused(&mut gateway, "email_domains.outcomes.x");
    assert_refused(&mut gateway, "email_domains.dead_letters.unreadable_json");
    // It reads Postgres, not the query service.
    assert_refused(&mut gateway, "email_domains.query.sender");
    assert_refused(&mut gateway, "email_domains.query.domains");
    // Its own bucket of share-link epochs, and nobody else's.
    assert_allowed(&mut gateway, "$KV.gateway_share_epochs.some-domain");
    assert_refused(&mut gateway, "$KV.email_domain_names.acme.com");
    assert_refused(&mut gateway, "$KV.email_domain_leases.command-handler");
    // JetStream: stream info and names, Direct Gets of the log, the outcomes and its
    // bucket; its bucket's creation. No consumers, acks, other reads or admin.
    assert!(gateway
        .js_api("$JS.API.STREAM.INFO.EMAIL_DOMAIN_EVENTS", "")
        .is_ok());
    let names = gateway
        .js_api("$JS.API.STREAM.NAMES", "")
        .expect("stream names");
    assert!(names["streams"].is_array(), "{names}");
    // (Direct Gets answer with the message itself, not JSON: only the publish is checked.)
    assert_allowed(&mut gateway, "$JS.API.DIRECT.GET.EMAIL_DOMAIN_EVENTS");
    assert_allowed(
        &mut gateway,
        "$JS.API.DIRECT.GET.EMAIL_DOMAIN_OUTCOMES.email_domains.outcomes.x",
    );
    assert_allowed(
        &mut gateway,
        "$JS.API.DIRECT.GET.KV_gateway_share_epochs.$KV.gateway_share_epochs.x",
    );
    for refused in [
        "$JS.API.STREAM.DELETE.EMAIL_DOMAIN_EVENTS",
        "$JS.API.STREAM.CREATE.EMAIL_DOMAIN_EVENTS",
        "$JS.API.STREAM.MSG.GET.EMAIL_DOMAIN_EVENTS",
        "$JS.API.CONSUMER.CREATE.EMAIL_DOMAIN_EVENTS",
        "$JS.API.CONSUMER.DURABLE.CREATE.EMAIL_DOMAIN_EVENTS.x",
        "$JS.API.CONSUMER.MSG.NEXT.EMAIL_DOMAIN_EVENTS.x",
        "$JS.API.INFO",
    ] {
        assert!(
            gateway.js_api(refused, "").is_err(),
            "gateway may {refused}"
        );
    }
    assert_refused(&mut gateway, "$JS.ACK.EMAIL_DOMAIN_EVENTS.x.1.1.1.1.1");
    assert_refused(&mut gateway, "$JS.API.DIRECT.GET.EMAIL_DOMAIN_DEAD_LETTERS");
    assert_refused(
        &mut gateway,
        "$JS.API.DIRECT.GET.KV_email_domain_names.$KV.email_domain_names.acme_com",
    );

    // The query service: no publish at all, except the reply to a request it received.
    let mut query = Conn::open(port, "query");
    assert_refused(&mut query, &format!("{cmd}.register_domain"));
    assert_refused(&mut query, event);
    assert_refused(&mut query, "analytics.email_domain.registered");
    assert_refused(&mut query, "_INBOX.someone.else");
    assert!(
        query.subscribe(&format!("{cmd}.>"), 2).refused(),
        "query may not read commands"
    );
    assert!(!query.subscribe("email_domains.query.sender", 1).refused());
    assert!(!platform.subscribe("_INBOX.platform.1", 7).refused());
    assert!(!platform
        .publish(
            "email_domains.query.sender",
            Some("_INBOX.platform.1"),
            r#"{"tenant_id":"x"}"#
        )
        .refused());
    let mut got = query.sync();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.messages.is_empty() && Instant::now() < deadline {
        got = query.sync();
    }
    let (_, reply_to, _) = got
        .messages
        .first()
        .expect("the query service receives the request")
        .clone();
    let reply_to = reply_to.expect("a reply subject");
    assert_allowed(&mut query, &reply_to);
    let mut answer = platform.sync();
    let deadline = Instant::now() + Duration::from_secs(5);
    while answer.messages.is_empty() && Instant::now() < deadline {
        answer = platform.sync();
    }
    assert_eq!(answer.messages.len(), 1, "the platform gets the reply");

    drop(server);
}

#[test]
fn every_user_of_the_config_has_a_password_variable_in_the_k8s_secret() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let accounts = std::fs::read_to_string(root.join("k8s/nats/accounts.conf")).unwrap();
    let statefulset = std::fs::read_to_string(root.join("k8s/nats/statefulset.yaml")).unwrap();
    let overlay_secret =
        std::fs::read_to_string(root.join("k8s/overlays/example/kustomization.yaml")).unwrap();
    for u in USERS {
        let var = password_var(u);
        assert!(
            accounts.contains(&format!("${var}")),
            "accounts.conf has no password for {u}"
        );
        assert!(
            statefulset.contains(&var),
            "the NATS StatefulSet does not pass {var}"
        );
        assert!(
            overlay_secret.contains(&var),
            "the example overlay's secret has no {var}"
        );
    }
}
