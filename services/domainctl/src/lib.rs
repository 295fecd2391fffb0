//! `domainctl`: the operator's command line for the managed email domain service.
//!
//! Every subcommand is a library function too, so tests (and benchmarks) can run it
//! in-process: [`run_args`] parses a command line and returns the exit code and the
//! text it would have printed. Exit codes: see [`error`].
#![forbid(unsafe_code)]

pub mod commands;
pub mod connect;
pub mod dead_letters;
pub mod error;
pub mod inspect;
pub mod replay;
pub mod status;

use clap::{Args, Parser, Subcommand};
use connect::Endpoints;
use error::{CtlError, CtlResult};
use std::ffi::OsString;
use std::path::PathBuf;
use uuid::Uuid;

pub use replay::{replay, ReplayOptions, ReplaySummary, Target};

/// The operator's command line of the managed email domain service.
///
/// Exit status: 0 success; 1 the operation ran but the answer was negative (e.g. a
/// command was rejected); 2 usage error; 3 not found (unknown tenant, domain or dead
/// letter); 4 NATS or Postgres unreachable, or no service answered.
#[derive(Debug, Parser)]
#[command(
    name = "domainctl",
    version,
    about,
    long_about,
    propagate_version = true
)]
pub struct Cli {
    /// Machine-readable JSON on stdout instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
    /// NATS server URL [default: $NATS_URL, else nats://127.0.0.1:4222].
    #[arg(long, global = true, value_name = "URL")]
    pub nats_url: Option<String>,
    /// Postgres URL [default: $DATABASE_URL, else postgres://postgres@127.0.0.1:5432/email_domains].
    #[arg(long, global = true, value_name = "URL")]
    pub database_url: Option<String>,
    #[command(subcommand)]
    pub command: Cmd,
}

/// Names one domain registration of a tenant.
#[derive(Debug, Clone, Args)]
pub struct DomainRef {
    /// The tenant id (UUID).
    #[arg(long, value_name = "UUID")]
    pub tenant: Uuid,
    /// The domain name, in any case, with or without a trailing dot.
    #[arg(long, value_name = "NAME", required_unless_present = "domain_id")]
    pub domain: Option<String>,
    /// Pick one registration by id when the tenant registered the name more than once.
    #[arg(long, value_name = "UUID")]
    pub domain_id: Option<Uuid>,
}

/// How an operator command is sent and waited for.
#[derive(Debug, Clone, Args)]
pub struct SendOpts {
    /// Use this command id instead of a fresh one (e.g. to re-send a corrected command).
    #[arg(long, value_name = "UUID")]
    pub command_id: Option<Uuid>,
    /// Who is acting, recorded as `requested_by = operator:<NAME>` [default: $USER].
    #[arg(long, value_name = "NAME")]
    pub operator: Option<String>,
    /// Seconds to wait for the command's outcome.
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub timeout: f64,
    /// Publish and return without waiting for the outcome.
    #[arg(long)]
    pub no_wait: bool,
}

/// A tenant and a domain name, for commands.
#[derive(Debug, Clone, Args)]
pub struct Target2 {
    /// The tenant id (UUID).
    #[arg(long, value_name = "UUID")]
    pub tenant: Uuid,
    /// The domain name, as the tenant would send it.
    #[arg(long, value_name = "NAME")]
    pub domain: String,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// A domain registration's events in order.
    History(DomainRef),
    /// A domain's state, rebuilt from its events.
    State(DomainRef),
    /// Check the DNS records of a JSON file and print their verdicts (docs/interface.md §5).
    DnsCheck {
        /// The domain the records belong to.
        #[arg(long, value_name = "NAME")]
        domain: String,
        /// A JSON array of {type, name, value, priority?, purpose?} with full names.
        #[arg(long, value_name = "FILE")]
        records: PathBuf,
        /// Ask only this DNS server (overrides DNS_NAMESERVERS).
        #[arg(long, value_name = "IP:PORT")]
        nameserver: Option<String>,
    },
    /// Show or re-queue dead letters (messages that could not be read as commands).
    #[command(subcommand)]
    DeadLetters(DeadLettersCmd),
    /// Register a domain for a tenant (register_domain).
    Register {
        #[command(flatten)]
        target: Target2,
        /// Provider region, e.g. us-east-1 or eu-west-1.
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        send: SendOpts,
    },
    /// Say the DNS records are in place: check now (dns_configured).
    DnsConfigured {
        #[command(flatten)]
        target: Target2,
        #[command(flatten)]
        send: SendOpts,
    },
    /// Force a DNS and provider re-check (refresh_status; on a failed domain a new window).
    Refresh {
        #[command(flatten)]
        target: Target2,
        #[command(flatten)]
        send: SendOpts,
    },
    /// Delete a domain (delete_domain).
    Delete {
        #[command(flatten)]
        target: Target2,
        #[command(flatten)]
        send: SendOpts,
    },
    /// Fail a domain by hand with a reason (fail_domain).
    Fail {
        #[command(flatten)]
        target: Target2,
        /// Why, in words the tenant will see.
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        send: SendOpts,
    },
    /// Release a domain: delete_domain by the operator, the reason logged.
    Release {
        #[command(flatten)]
        target: Target2,
        /// Why the operator releases it (logged in requested_by and reason).
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        send: SendOpts,
    },
    /// List domains from the email_domains projection: the stuck-domains view.
    Domains {
        /// Only this tenant's domains.
        #[arg(long, value_name = "UUID")]
        tenant: Option<Uuid>,
        /// Only this status (created, awaiting_dns, verifying, verified, failed, deactivated).
        #[arg(long, value_parser = inspect::parse_status)]
        status: Option<String>,
        /// Only rows not updated for this long, e.g. 3d, 12h, 30m, 1d12h.
        #[arg(long, value_name = "DURATION", value_parser = inspect::parse_duration)]
        older_than: Option<chrono::Duration>,
        /// Include deactivated domains (left out unless --status deactivated).
        #[arg(long)]
        include_deactivated: bool,
        /// At most this many rows (oldest first).
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Ask the query service for a tenant's sender address.
    Sender {
        /// The tenant id (UUID).
        #[arg(long, value_name = "UUID")]
        tenant: Uuid,
        /// Seconds to wait for the answer.
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        timeout: f64,
    },
    /// Who does the command work: the handler instances, and for the intake and each
    /// partition its owner, lag and oldest waiting command. Exit 1 when commands wait
    /// where no instance works.
    Status,
    /// Rebuild projections from the event log and swap them in atomically.
    Replay {
        /// email_domains, tenant_settings, analytics, or all (= email_domains and tenant_settings); comma-separated.
        #[arg(long, default_value = "all")]
        projection: String,
        /// Publish the analytics CloudEvents again (same ids as the first time).
        #[arg(long)]
        emit_analytics: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DeadLettersCmd {
    /// List dead letters, newest last.
    List {
        /// Only this reason (unreadable_json, not_an_object, missing_command_id, unknown_command, too_large, invalid_command, unprocessable).
        #[arg(long)]
        reason: Option<String>,
        /// At most this many (the newest).
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Re-publish a dead letter's body (or a corrected one) to its original subject.
    /// The dead letter stays where it is. A truncated letter (only the body's first
    /// bytes kept) needs --body.
    Retry {
        /// The dead letter's stream sequence (from `dead-letters list`).
        #[arg(long)]
        seq: u64,
        /// Publish this corrected body instead of the original.
        #[arg(long, value_name = "FILE")]
        body: Option<PathBuf>,
        /// Publish to this subject instead of the original one.
        #[arg(long)]
        subject: Option<String>,
        /// Seconds to wait for the command's outcome.
        #[arg(long, value_name = "SECS", default_value_t = 10.0)]
        timeout: f64,
        /// Publish and return without waiting for the outcome.
        #[arg(long)]
        no_wait: bool,
    },
}

/// What a run printed and its exit code.
#[derive(Debug, Default, Clone)]
pub struct Output {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// The output buffers handed to each subcommand.
#[derive(Debug, Default)]
pub struct Io {
    pub json: bool,
    pub out: String,
    pub err: String,
    /// Show progress bars (only on a terminal, never with `--json`).
    pub progress: bool,
}

/// `s` as it may reach a terminal: the control characters of each line escaped
/// ([`dns_check::escape_controls`], the one escaping function), the line breaks
/// kept. Stored events carry what tenants' DNS served (older ones raw), and a
/// terminal escape in a TXT record must not rewrite the operator's screen.
pub fn terminal_safe(s: &str) -> String {
    s.split('\n')
        .map(dns_check::escape_controls)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Io {
    /// A line of output: in text mode made [`terminal_safe`]; with `--json` the
    /// caller's JSON as it is (serde already escapes control characters, and an
    /// escape of ours would not be JSON).
    pub fn line(&mut self, s: impl AsRef<str>) {
        if self.json {
            self.out.push_str(s.as_ref());
        } else {
            self.out.push_str(&terminal_safe(s.as_ref()));
        }
        self.out.push('\n');
    }
    /// A line on stderr, always [`terminal_safe`].
    pub fn note(&mut self, s: impl AsRef<str>) {
        self.err.push_str(&terminal_safe(s.as_ref()));
        self.err.push('\n');
    }
    pub fn json_value(&mut self, v: &serde_json::Value) {
        self.out
            .push_str(&serde_json::to_string_pretty(v).unwrap_or_default());
        self.out.push('\n');
    }
}

fn endpoints(cli: &Cli) -> Endpoints {
    let env = runtime::Config::from_env().ok();
    let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
    Endpoints {
        nats_url: cli
            .nats_url
            .clone()
            .or_else(|| env.as_ref().map(|c| c.nats_url.clone()))
            .or_else(|| var("NATS_URL"))
            .unwrap_or_else(|| "nats://127.0.0.1:4222".into()),
        database_url: cli
            .database_url
            .clone()
            .or_else(|| env.as_ref().map(|c| c.database_url.clone()))
            .or_else(|| var("DATABASE_URL"))
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/email_domains".into()),
    }
}

/// Runs a parsed command line.
pub async fn run(cli: Cli, progress: bool) -> Output {
    let mut io = Io {
        json: cli.json,
        progress: progress && !cli.json,
        ..Default::default()
    };
    let ep = endpoints(&cli);
    let code = match dispatch(cli.command, &ep, &mut io).await {
        Ok(code) => code,
        Err(e) => {
            io.note(format!("error: {}", e.message));
            e.code
        }
    };
    Output {
        code,
        stdout: io.out,
        stderr: io.err,
    }
}

/// Parses `args` (the first is the program name) and runs them. `--help` and usage
/// errors come back as clap prints them (exit 0 and 2).
pub async fn run_args<I, T>(args: I) -> Output
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args) {
        Ok(cli) => run(cli, false).await,
        Err(e) => {
            let text = e.render().to_string();
            let code = e.exit_code();
            if code == 0 {
                Output {
                    code,
                    stdout: text,
                    stderr: String::new(),
                }
            } else {
                Output {
                    code,
                    stdout: String::new(),
                    stderr: text,
                }
            }
        }
    }
}

async fn dispatch(cmd: Cmd, ep: &Endpoints, io: &mut Io) -> CtlResult<i32> {
    match cmd {
        Cmd::History(d) => inspect::history(ep, io, &d).await,
        Cmd::Status => {
            // Only used when no partition was ever leased (the leases say how many).
            let partitions = std::env::var("HANDLER_PARTITIONS")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(8);
            status::status(ep, io, partitions).await
        }
        Cmd::State(d) => inspect::state(ep, io, &d).await,
        Cmd::DnsCheck {
            domain,
            records,
            nameserver,
        } => {
            let ns = match nameserver {
                Some(s) => Some(dns_check::parse_nameserver(&s).map_err(|e| {
                    CtlError::usage(format!("--nameserver {s:?} is not an ip:port: {e}"))
                })?),
                None => None,
            };
            let text = dns_check::run_dns_check_cli(&domain, &records, ns, io.json)
                .await
                .map_err(|e| CtlError::negative(format!("{e:#}")))?;
            io.line(text.strip_suffix('\n').unwrap_or(&text));
            Ok(error::OK)
        }
        Cmd::DeadLetters(DeadLettersCmd::List { reason, limit }) => {
            dead_letters::list(ep, io, reason.as_deref(), limit).await
        }
        Cmd::DeadLetters(DeadLettersCmd::Retry {
            seq,
            body,
            subject,
            timeout,
            no_wait,
        }) => {
            dead_letters::retry(
                ep,
                io,
                seq,
                body.as_deref(),
                subject.as_deref(),
                commands::wait_for(timeout, no_wait),
            )
            .await
        }
        Cmd::Register {
            target,
            region,
            send,
        } => commands::operator(ep, io, commands::Kind::Register { region }, &target, &send).await,
        Cmd::DnsConfigured { target, send } => {
            commands::operator(ep, io, commands::Kind::DnsConfigured, &target, &send).await
        }
        Cmd::Refresh { target, send } => {
            commands::operator(ep, io, commands::Kind::Refresh, &target, &send).await
        }
        Cmd::Delete { target, send } => {
            commands::operator(ep, io, commands::Kind::Delete, &target, &send).await
        }
        Cmd::Fail {
            target,
            reason,
            send,
        } => commands::operator(ep, io, commands::Kind::Fail { reason }, &target, &send).await,
        Cmd::Release {
            target,
            reason,
            send,
        } => commands::operator(ep, io, commands::Kind::Release { reason }, &target, &send).await,
        Cmd::Domains {
            tenant,
            status,
            older_than,
            include_deactivated,
            limit,
        } => {
            inspect::domains(
                ep,
                io,
                tenant,
                status,
                older_than,
                include_deactivated,
                limit,
            )
            .await
        }
        Cmd::Sender { tenant, timeout } => inspect::sender(ep, io, tenant, timeout).await,
        Cmd::Replay {
            projection,
            emit_analytics,
        } => replay::run_cli(ep, io, &projection, emit_analytics).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_output_escapes_control_characters_and_keeps_line_breaks() {
        let mut io = Io::default();
        io.line("      observed: v=spf1\u{1b}[2J\u{1b}]0;owned\u{7}\r\nsecond\u{9b}");
        io.note("warning: \u{1b}[31mred");
        assert_eq!(
            io.out,
            "      observed: v=spf1\\u{1b}[2J\\u{1b}]0;owned\\u{7}\\u{d}\nsecond\\u{9b}\n"
        );
        assert_eq!(io.err, "warning: \\u{1b}[31mred\n");
    }

    #[test]
    fn json_output_is_left_as_json() {
        let mut io = Io {
            json: true,
            ..Io::default()
        };
        let v = serde_json::json!({"observed": ["v=spf1\u{1b}[2J"]});
        io.json_value(&v);
        let back: serde_json::Value = serde_json::from_str(&io.out).unwrap();
        assert_eq!(back, v);
        assert!(!io.out.contains('\u{1b}'));
    }
}
