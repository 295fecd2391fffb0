//! One DNS exchange with one server, as real packets: UDP with EDNS, TCP when the
//! answer comes back truncated. No answer is cached.
//!
//! Against off-path spoofing (RFC 5452) every question gets a random 16-bit id and
//! its own UDP socket bound to port 0, so that the operating system picks a fresh
//! ephemeral source port: a forger must guess both (about 2^31 combinations with
//! Linux's default port range), where an id from the clock on a socket kept for 64
//! questions left far fewer. A datagram is only taken
//! as the answer when it comes from the server (the socket is connected), carries
//! the query's id and repeats its question; anything else is dropped and the wait
//! goes on until the timeout.

use std::net::SocketAddr;
use std::time::Duration;

use email_domain_events::records::{LookupAnswer, LookupError, ObservedRecord};
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// The EDNS payload size we announce (the DNS flag day 2020 value).
const EDNS_PAYLOAD: u16 = 1232;
/// Room for one UDP answer (see `udp_answer`): more than the EDNS payload we offer.
const UDP_BUFFER: usize = 4096;

/// A query id nobody off the path can predict: from the thread's CSPRNG (rand's
/// `ThreadRng`, ChaCha reseeded from the OS), never from the clock or a counter.
fn next_id() -> u16 {
    rand::random()
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

/// Whether `msg` answers our query `id` for `name`/`rtype` (RFC 5452 §9.1): a
/// response with the same id and the same single question. A reply without a
/// question section is only believed when it carries no data (an error code such as
/// REFUSED or FORMERR, which some servers send bare): it can then make a lookup
/// fail, never make a record appear.
fn is_reply(msg: &Message, id: u16, name: &str, rtype: RecordType) -> bool {
    if msg.id() != id || msg.message_type() != MessageType::Response {
        return false;
    }
    match msg.queries() {
        [q] => {
            q.query_type() == rtype
                && q.query_class() == DNSClass::IN
                && q.name()
                    .to_ascii()
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(name.trim_end_matches('.'))
        }
        [] => {
            msg.answers().is_empty()
                && !matches!(
                    msg.response_code(),
                    ResponseCode::NoError | ResponseCode::NXDomain
                )
        }
        _ => false,
    }
}

/// A UDP socket of its own for one question: bound to port 0 (the OS picks a random
/// ephemeral port) and connected to `server`, so that the kernel drops datagrams
/// from any other address.
async fn fresh_socket(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let bind: SocketAddr = if server.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await?;
    sock.connect(server).await?;
    Ok(sock)
}

/// Datagrams from `sock` until one answers the query (`is_reply`); None when one
/// fills the buffer (cut: ask again over TCP). Others are dropped: a forged or late
/// answer must not end the wait.
async fn udp_answer(
    sock: &UdpSocket,
    id: u16,
    name: &str,
    rtype: RecordType,
) -> std::io::Result<Option<Message>> {
    // A server sends at most the EDNS payload we offered (1232); a bigger answer
    // comes truncated and is asked again over TCP. The buffer leaves room for
    // servers that ignore that, and a datagram that fills it is treated as cut.
    // (A 64 KiB zeroed buffer per query was a tenth of the CPU under load.)
    let mut buf = vec![0u8; UDP_BUFFER];
    loop {
        // an error here is ICMP port unreachable and the like
        let n = sock.recv(&mut buf).await?;
        if n == buf.len() {
            return Ok(None);
        }
        if let Ok(msg) = Message::from_vec(&buf[..n]) {
            if is_reply(&msg, id, name, rtype) {
                return Ok(Some(msg));
            }
        }
    }
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
        let sock = fresh_socket(server).await.map_err(io)?;
        sock.send(&packet).await.map_err(io)?;
        udp_answer(&sock, id, name, rtype).await.map_err(io)
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

#[cfg(test)]
mod unguessable {
    use super::*;
    use hickory_proto::rr::rdata::TXT;
    use std::collections::HashSet;
    use testdns::TestDns;

    const NAME: &str = "spoof.test";

    async fn server() -> TestDns {
        let dns = TestDns::start("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        dns.add_zone(NAME, 300);
        dns.add(NAME, "TXT", "v=spf1 -all", None, 300);
        dns
    }

    fn txt_of(r: Result<Message, Failure>) -> Vec<String> {
        match r {
            Ok(m) => m
                .answers()
                .iter()
                .filter_map(observed)
                .map(|o| o.value)
                .collect(),
            Err(f) => panic!("no answer: {}", f.detail),
        }
    }

    async fn ask(addr: SocketAddr, timeout: Duration) -> Result<Message, Failure> {
        exchange(addr, NAME, RecordType::TXT, false, timeout).await
    }

    #[test]
    fn query_ids_spread_over_the_whole_range_without_a_steady_step() {
        let ids: Vec<u16> = (0..1000).map(|_| next_id()).collect();
        let distinct: HashSet<u16> = ids.iter().copied().collect();
        // 1000 draws from 65536 collide about 8 times
        assert!(distinct.len() > 950, "{} distinct", distinct.len());
        let steps: Vec<u16> = ids.windows(2).map(|w| w[1].wrapping_sub(w[0])).collect();
        let distinct_steps: HashSet<u16> = steps.iter().copied().collect();
        assert!(distinct_steps.len() > 950, "{} steps", distinct_steps.len());
        // a clock or a counter moves in small steps; a random id jumps anywhere (a
        // step under 256 either way: about 8 in 1000)
        let small = steps
            .iter()
            .filter(|s| (**s).min(s.wrapping_neg()) < 256)
            .count();
        assert!(small < 40, "{small} small steps");
        // and every bit is set about half the time
        for bit in 0..16 {
            let ones = ids.iter().filter(|id| (*id >> bit) & 1 == 1).count();
            assert!((400..600).contains(&ones), "bit {bit} set {ones} times");
        }
    }

    #[tokio::test]
    async fn every_query_leaves_from_a_fresh_port_with_its_own_id() {
        let dns = server().await;
        for _ in 0..50 {
            let txt = txt_of(ask(dns.addr(), Duration::from_millis(500)).await);
            assert_eq!(txt, vec!["v=spf1 -all".to_string()]);
        }
        let seen = dns.seen();
        assert_eq!(seen.len(), 50);
        assert!(seen.iter().all(|s| s.udp && s.from.ip().is_loopback()));
        // the OS picks each ephemeral port at random: a repeat among 50 is rare, a
        // reused socket would show one port
        let ports: HashSet<u16> = seen.iter().map(|s| s.from.port()).collect();
        assert!(ports.len() >= 45, "{} ports for 50 queries", ports.len());
        let ids: HashSet<u16> = seen.iter().map(|s| s.id).collect();
        assert!(ids.len() >= 45, "{} ids for 50 queries", ids.len());
    }

    /// A response to `query` with `id` and `questions`, whose answer is `txt`.
    fn reply(query: &Message, id: u16, questions: &[Query], txt: &str) -> Vec<u8> {
        let name = query.queries()[0].name().clone();
        let mut m = Message::new();
        m.set_id(id)
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .add_queries(questions.to_vec())
            .add_answer(Record::from_rdata(
                name,
                300,
                RData::TXT(TXT::new(vec![txt.to_string()])),
            ));
        m.to_vec().unwrap()
    }

    /// What an off-path forger might send for `query`: every field but one right.
    fn forgeries(query: &Message) -> Vec<Vec<u8>> {
        let id = query.id();
        let q = query.queries()[0].clone();
        let mut other_name = q.clone();
        other_name.set_name(Name::from_ascii("other.test.").unwrap());
        let mut other_type = q.clone();
        other_type.set_query_type(RecordType::MX);
        vec![
            reply(
                query,
                id.wrapping_add(1),
                std::slice::from_ref(&q),
                "v=spf1 +all",
            ),
            reply(query, id, &[other_name], "v=spf1 +all"),
            reply(query, id, &[other_type], "v=spf1 +all"),
            // no question at all, but data
            reply(query, id, &[], "v=spf1 +all"),
            b"not a DNS message".to_vec(),
        ]
    }

    /// A server on loopback that answers one query with `forgeries` and then, when
    /// `honest`, with the real answer.
    async fn forger(honest: bool) -> SocketAddr {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = sock.local_addr().unwrap();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let (n, peer) = sock.recv_from(&mut buf).await.unwrap();
            let query = Message::from_vec(&buf[..n]).unwrap();
            for f in forgeries(&query) {
                sock.send_to(&f, peer).await.unwrap();
            }
            if honest {
                let real = reply(&query, query.id(), query.queries(), "v=spf1 -all");
                sock.send_to(&real, peer).await.unwrap();
            }
        });
        addr
    }

    #[tokio::test]
    async fn forged_answers_are_dropped_and_the_real_one_still_taken() {
        let addr = forger(true).await;
        let txt = txt_of(ask(addr, Duration::from_secs(2)).await);
        assert_eq!(txt, vec!["v=spf1 -all".to_string()]);
    }

    #[tokio::test]
    async fn only_forged_answers_are_a_timeout() {
        let addr = forger(false).await;
        let r = ask(addr, Duration::from_millis(300)).await;
        assert!(
            matches!(
                r,
                Err(Failure {
                    error: LookupError::Timeout,
                    ..
                })
            ),
            "{:?}",
            r.map(|m| m.answers().len())
        );
    }

    #[test]
    fn a_bare_error_reply_without_a_question_is_still_an_answer() {
        // some servers send REFUSED or FORMERR without echoing the question: it can
        // only make a lookup fail, so it is believed
        let mut m = Message::new();
        m.set_id(7)
            .set_message_type(MessageType::Response)
            .set_response_code(ResponseCode::Refused);
        assert!(is_reply(&m, 7, NAME, RecordType::TXT));
        assert!(!is_reply(&m, 8, NAME, RecordType::TXT));
        m.set_response_code(ResponseCode::NoError);
        assert!(!is_reply(&m, 7, NAME, RecordType::TXT));
    }
}
