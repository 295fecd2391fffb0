//! One DNS exchange with one server, as real packets: UDP with EDNS, TCP when the
//! answer comes back truncated. No answer is cached; connected UDP sockets are kept
//! for a few questions (see `sockets`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use email_domain_events::records::{LookupAnswer, LookupError, ObservedRecord};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The EDNS payload size we announce (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Room for one UDP answer (see `ask_once`): more than the EDNS payload we offer.
const UDP_BUFFER: usize = 4096;

fn next_id() -> u16 {
    static COUNTER: AtomicU16 = AtomicU16::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (nanos as u16) ^ COUNTER.fetch_add(0x9e37, Ordering::Relaxed)
}

/// Why an exchange produced no DNS message.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub error: LookupError,
    pub detail: String,
}

pub(crate) fn parse_type(t: &str) -> Option<RecordType> {
    t.to_ascii_uppercase().parse().ok()
}

fn build_query(name: &str, rtype: RecordType, rd: bool) -> Result<(u16, Vec<u8>), Failure> {
    let mut n = Name::from_str_relaxed(name).map_err(|e| Failure {
        error: LookupError::Other,
        detail: format!("`{name}` is not a DNS name: {e}"),
    })?;
    n.set_fqdn(true);
    let id = next_id();
    let mut msg = Message::new();
    msg.set_id(id)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(rd)
        .add_query(Query::query(n, rtype));
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    msg.set_edns(edns);
    let bytes = msg.to_vec().map_err(|e| Failure {
        error: LookupError::Other,
        detail: format!("cannot encode the query: {e}"),
    })?;
    Ok((id, bytes))
}

fn is_reply(msg: &Message, id: u16, name: &str, rtype: RecordType) -> bool {
    msg.id() == id
        && msg.message_type() == MessageType::Response
        && msg.queries().first().is_none_or(|q| {
            q.query_type() == rtype
                && q.name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(name.trim_end_matches('.'))
        })
}

/// One question to one server, within `timeout` (UDP, then TCP on truncation).
pub(crate) async fn exchange(
    server: SocketAddr,
    name: &str,
    rtype: RecordType,
    rd: bool,
    timeout: Duration,
) -> Result<Message, Failure> {
    let (id, packet) = build_query(name, rtype, rd)?;
    let to = |what: &str| Failure {
        error: LookupError::Timeout,
        detail: format!(
            "{server} did not answer {what} within {} ms",
            timeout.as_millis()
        ),
    };
    let io = |e: std::io::Error| Failure {
        error: LookupError::Other,
        detail: format!("{server}: {e}"),
    };
    let udp = async {
        // A kept socket whose send fails (say its runtime has ended) is dropped and a
        // fresh one asked instead.
        let sock = match sockets::take(server) {
            Some(s) if s.send(&packet).await.is_ok() => s,
            _ => {
                let s = sockets::Pooled::new(server).await.map_err(io)?;
                s.send(&packet).await.map_err(io)?;
                s
            }
        };
        // A server sends at most the EDNS payload we offered (1232); a bigger answer
        // comes truncated and is asked again over TCP. The buffer leaves room for
        // servers that ignore that, and a datagram that fills it is treated as cut.
        // (A 64 KiB zeroed buffer per query was a tenth of the CPU under load.)
        let mut buf = vec![0u8; UDP_BUFFER];
        loop {
            let n = match sock.recv(&mut buf).await {
                Ok(n) => n,
                // ICMP port unreachable and the like
                Err(e) => return Err(io(e)),
            };
            if n == buf.len() {
                return Ok(None);
            }
            if let Ok(msg) = Message::from_vec(&buf[..n]) {
                if is_reply(&msg, id, name, rtype) {
                    // Only a socket whose exchange ended cleanly goes back: after a
                    // timeout a late answer could still be on its way to it.
                    sockets::give_back(sock);
                    return Ok(Some(msg));
                }
            }
        }
    };
    let answer = tokio::time::timeout(timeout, udp)
        .await
        .map_err(|_| to("over UDP"))??;
    if let Some(msg) = answer.filter(|m| !m.truncated()) {
        return Ok(msg);
    }
    let tcp = async {
        let mut stream = TcpStream::connect(server).await.map_err(io)?;
        let mut out = (packet.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&packet);
        stream.write_all(&out).await.map_err(io)?;
        loop {
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.map_err(io)?;
            let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
            stream.read_exact(&mut buf).await.map_err(io)?;
            if let Ok(msg) = Message::from_vec(&buf) {
                if is_reply(&msg, id, name, rtype) {
                    return Ok(msg);
                }
            }
        }
    };
    tokio::time::timeout(timeout, tcp)
        .await
        .map_err(|_| to("over TCP after a truncated UDP answer"))?
}

/// Asks `servers` in turn, `attempts` rounds, until one gives a usable answer
/// (anything but SERVFAIL, REFUSED, a timeout or a transport error). When none
/// does, the most telling failure: an error code beats a timeout.
pub(crate) async fn ask(
    servers: &[SocketAddr],
    name: &str,
    rtype: RecordType,
    rd: bool,
    timeout: Duration,
    attempts: usize,
) -> Result<Message, Failure> {
    let mut worst: Option<Failure> = None;
    // REFUSED is the server's policy, not bad luck: a server that refused is not asked
    // the same question again in a later round (SERVFAIL and timeouts are).
    let mut refused = vec![false; servers.len()];
    for _ in 0..attempts.max(1) {
        if refused.iter().all(|r| *r) && !servers.is_empty() {
            break;
        }
        for (i, server) in servers.iter().enumerate() {
            if refused[i] {
                continue;
            }
            let f = match exchange(*server, name, rtype, rd, timeout).await {
                Ok(msg) => match msg.response_code() {
                    ResponseCode::ServFail => Failure {
                        error: LookupError::ServFail,
                        detail: format!("SERVFAIL from {server}"),
                    },
                    ResponseCode::Refused => {
                        refused[i] = true;
                        Failure {
                            error: LookupError::Refused,
                            detail: format!("REFUSED by {server}"),
                        }
                    }
                    _ => return Ok(msg),
                },
                Err(f) => f,
            };
            let keep = match &worst {
                None => true,
                Some(w) => w.error == LookupError::Timeout || w.error == LookupError::Other,
            };
            if keep {
                worst = Some(f);
            }
        }
    }
    Err(worst.unwrap_or(Failure {
        error: LookupError::Other,
        detail: "no nameserver to ask".into(),
    }))
}

fn norm(s: &str) -> String {
    s.trim_end_matches('.').to_ascii_lowercase()
}

pub(crate) fn observed(r: &Record) -> Option<ObservedRecord> {
    let mut txt_strings = Vec::new();
    let mut priority = None;
    let value = match r.data() {
        RData::TXT(t) => {
            txt_strings = t
                .iter()
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            txt_strings.concat()
        }
        RData::MX(mx) => {
            priority = Some(mx.preference());
            norm(&mx.exchange().to_ascii())
        }
        RData::CNAME(c) => norm(&c.0.to_ascii()),
        RData::NS(n) => norm(&n.0.to_ascii()),
        RData::A(a) => a.0.to_string(),
        RData::AAAA(a) => a.0.to_string(),
        RData::OPT(_) => return None,
        other => other.to_string(),
    };
    if r.record_type() == RecordType::RRSIG {
        return None;
    }
    Some(ObservedRecord {
        name: norm(&r.name().to_ascii()),
        record_type: r.record_type().to_string(),
        value,
        txt_strings,
        priority,
        ttl: Some(r.ttl()),
    })
}

/// The negative TTL of a negative answer: min(SOA TTL, SOA minimum) (RFC 2308).
fn negative_ttl(msg: &Message) -> Option<u32> {
    msg.name_servers().iter().find_map(|r| match r.data() {
        RData::SOA(soa) => Some(r.ttl().min(soa.minimum())),
        _ => None,
    })
}

/// A DNS message as the core's [`LookupAnswer`]. `authoritative_only`: a reply
/// without the AA bit and without answers is a referral, not an answer.
pub(crate) fn to_answer(msg: &Message, authoritative_only: bool) -> LookupAnswer {
    let records: Vec<ObservedRecord> = msg.answers().iter().filter_map(observed).collect();
    match msg.response_code() {
        ResponseCode::NoError | ResponseCode::NXDomain if !records.is_empty() => {
            LookupAnswer::Records { records }
        }
        ResponseCode::NoError | ResponseCode::NXDomain
            if authoritative_only && !msg.authoritative() =>
        {
            LookupAnswer::Failed {
                error: LookupError::Other,
                detail: "the server is not authoritative for the name (a referral)".into(),
            }
        }
        ResponseCode::NoError => LookupAnswer::NoData {
            negative_ttl: negative_ttl(msg),
        },
        ResponseCode::NXDomain => LookupAnswer::NxDomain {
            negative_ttl: negative_ttl(msg),
        },
        ResponseCode::ServFail => LookupAnswer::Failed {
            error: LookupError::ServFail,
            detail: "SERVFAIL".into(),
        },
        ResponseCode::Refused => LookupAnswer::Failed {
            error: LookupError::Refused,
            detail: "REFUSED".into(),
        },
        other => LookupAnswer::Failed {
            error: LookupError::Other,
            detail: format!("response code {other}"),
        },
    }
}

/// Connected UDP sockets kept per server between exchanges. Opening, registering and
/// closing a socket for every question was a twelfth of the CPU of a burst of
/// registrations (the pre-flight asks about six). A socket serves at most
/// `MAX_USES` questions, one at a time, then is closed, so the source port still
/// changes often; an answer is only taken when its id and question match.
mod sockets {
    use std::collections::HashMap;
    use std::net::SocketAddr;
    use std::sync::Mutex;
    use tokio::net::UdpSocket;

    const MAX_USES: u32 = 64;
    const MAX_IDLE_PER_SERVER: usize = 64;
    const MAX_IDLE: usize = 256;

    pub(super) struct Pooled {
        sock: UdpSocket,
        server: SocketAddr,
        uses: u32,
    }

    impl std::ops::Deref for Pooled {
        type Target = UdpSocket;
        fn deref(&self) -> &UdpSocket {
            &self.sock
        }
    }

    impl Pooled {
        pub(super) async fn new(server: SocketAddr) -> std::io::Result<Pooled> {
            let bind: SocketAddr = if server.is_ipv4() {
                "0.0.0.0:0".parse().unwrap()
            } else {
                "[::]:0".parse().unwrap()
            };
            let sock = UdpSocket::bind(bind).await?;
            sock.connect(server).await?;
            Ok(Pooled {
                sock,
                server,
                uses: 0,
            })
        }
    }

    fn idle() -> &'static Mutex<HashMap<SocketAddr, Vec<Pooled>>> {
        static IDLE: std::sync::OnceLock<Mutex<HashMap<SocketAddr, Vec<Pooled>>>> =
            std::sync::OnceLock::new();
        IDLE.get_or_init(Default::default)
    }

    pub(super) fn take(server: SocketAddr) -> Option<Pooled> {
        let mut idle = idle().lock().unwrap_or_else(|e| e.into_inner());
        idle.get_mut(&server).and_then(Vec::pop)
    }

    pub(super) fn give_back(mut sock: Pooled) {
        sock.uses += 1;
        if sock.uses >= MAX_USES {
            return;
        }
        let mut idle = idle().lock().unwrap_or_else(|e| e.into_inner());
        idle.retain(|_, list| !list.is_empty());
        if idle.values().map(Vec::len).sum::<usize>() >= MAX_IDLE {
            return;
        }
        let list = idle.entry(sock.server).or_default();
        if list.len() < MAX_IDLE_PER_SERVER {
            list.push(sock);
        }
    }

    /// Sockets kept for `server` (for tests).
    #[cfg(test)]
    pub(super) fn idle_for(server: SocketAddr) -> usize {
        idle()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&server)
            .map_or(0, Vec::len)
    }
}

#[cfg(test)]
mod socket_reuse {
    use super::*;
    use testdns::TestDns;

    async fn server() -> TestDns {
        let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        dns.add_zone("reuse.test", 300);
        dns.add("reuse.test", "TXT", "v=spf1 -all", None, 300);
        dns
    }

    fn answered(r: Result<Message, Failure>) -> Message {
        match r {
            Ok(m) => m,
            Err(f) => panic!("no answer: {}", f.detail),
        }
    }

    /// The zone's TXT question to `addr`, answered within 500 ms.
    async fn ask(addr: SocketAddr) -> Message {
        answered(
            exchange(
                addr,
                "reuse.test",
                RecordType::TXT,
                false,
                Duration::from_millis(500),
            )
            .await,
        )
    }

    #[tokio::test]
    async fn a_socket_is_kept_after_a_clean_exchange_and_used_again() {
        let dns = server().await;
        assert_eq!(ask(dns.addr()).await.answers().len(), 1);
        assert_eq!(sockets::idle_for(dns.addr()), 1);
        // The next question takes the kept socket (none idle while it is out) and
        // brings it back.
        assert_eq!(ask(dns.addr()).await.answers().len(), 1);
        assert_eq!(sockets::idle_for(dns.addr()), 1);
        assert_eq!(dns.queries(), 2);
    }

    #[tokio::test]
    async fn a_socket_that_timed_out_is_not_kept() {
        let dns = server().await;
        dns.set_delay(Some(Duration::from_millis(300)));
        let r = exchange(
            dns.addr(),
            "reuse.test",
            RecordType::TXT,
            false,
            Duration::from_millis(50),
        )
        .await;
        assert!(matches!(
            r,
            Err(Failure {
                error: LookupError::Timeout,
                ..
            })
        ));
        assert_eq!(sockets::idle_for(dns.addr()), 0);
        // Its late answer reaches a closed socket, never the next question.
        dns.set_delay(None);
        assert_eq!(ask(dns.addr()).await.answers().len(), 1);
    }

    #[tokio::test]
    async fn a_socket_kept_by_an_ended_runtime_is_replaced() {
        let dns = server().await;
        let addr = dns.addr();
        // Another runtime asks, keeps the socket, and ends.
        tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(ask(addr));
        })
        .await
        .unwrap();
        assert_eq!(sockets::idle_for(addr), 1);
        assert_eq!(ask(addr).await.answers().len(), 1);
        assert_eq!(sockets::idle_for(addr), 1);
    }
}
