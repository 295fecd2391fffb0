//! A real authoritative DNS server on loopback, for tests and the dev stack.
//!
//! `TestDns` answers real DNS packets (hickory-proto message types over tokio UDP
//! and TCP) from zones and records that a test adds at run time. It behaves like
//! an authoritative server where that matters to the DNS checks:
//! - a name outside every served zone is REFUSED;
//! - NXDOMAIN (the name does not exist) and NODATA (it exists, not with this type;
//!   empty non-terminals included) both carry the zone's SOA in the authority
//!   section, whose minimum is the negative TTL;
//! - a CNAME is answered together with the target's records of the asked type when
//!   the target lies in a served zone;
//! - `*.x` wildcards answer for names that do not exist below `x` (RFC 4592's
//!   closest encloser), with the asked name as owner;
//! - TXT values longer than 255 bytes are split into several character-strings;
//! - a UDP answer larger than 512 bytes (or than the query's EDNS size) is sent
//!   truncated (TC) so that the client retries over TCP;
//! - faults per name: SERVFAIL, REFUSED, or no answer at all (a timeout);
//! - hostile zones ([`TestDns::add_hostile_zone`]): every question under them is
//!   answered with the largest answer DNS allows (a TCP message of almost 64 KiB),
//!   full of control characters, as a tenant's own nameserver may.
//!
//! The `dev-dns` binary serves a JSON zone file with the same server.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, MX, NS, SOA, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;

/// How a name misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer SERVFAIL.
    ServFail,
    /// Answer REFUSED.
    Refused,
    /// Do not answer at all (the client times out).
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Data {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Txt(Vec<String>),
    Mx(u16, String),
    Cname(String),
    Ns(String),
}

impl Data {
    fn rtype(&self) -> RecordType {
        match self {
            Data::A(_) => RecordType::A,
            Data::Aaaa(_) => RecordType::AAAA,
            Data::Txt(_) => RecordType::TXT,
            Data::Mx(..) => RecordType::MX,
            Data::Cname(_) => RecordType::CNAME,
            Data::Ns(_) => RecordType::NS,
        }
    }
}

#[derive(Debug, Clone)]
struct Rec {
    data: Data,
    ttl: u32,
}

#[derive(Default)]
struct State {
    /// apex → SOA minimum
    zones: BTreeMap<String, u32>,
    records: HashMap<String, Vec<Rec>>,
    faults: HashMap<String, Fault>,
    delay: Option<Duration>,
    /// Apexes of hostile zones (see [`TestDns::add_hostile_zone`]).
    hostile: std::collections::BTreeSet<String>,
}

/// Where a query came from, as the server saw it (see [`TestDns::seen`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// The asker's address and source port.
    pub from: SocketAddr,
    /// The query's id.
    pub id: u16,
    pub udp: bool,
}

/// How many [`Seen`] queries are kept (the dev server runs for days).
const SEEN_KEPT: usize = 4096;

struct Inner {
    state: Mutex<State>,
    queries: AtomicU64,
    seen: Mutex<std::collections::VecDeque<Seen>>,
    addr: SocketAddr,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// A DNS server on a loopback address; cheap to clone. The server stops when the
/// last clone is dropped.
#[derive(Clone)]
pub struct TestDns {
    inner: Arc<Inner>,
}

/// One record of a zone file or a test corpus.
#[derive(Debug, Clone, Deserialize)]
pub struct RecordSpec {
    pub name: String,
    #[serde(rename = "type")]
    pub record_type: String,
    pub value: String,
    #[serde(default)]
    pub priority: Option<u16>,
    #[serde(default)]
    pub ttl: Option<u32>,
}

fn norm(name: &str) -> String {
    name.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// A value longer than 255 bytes as several character-strings of at most 255.
fn split_txt(value: &str) -> Vec<String> {
    if value.len() <= 255 {
        return vec![value.to_string()];
    }
    let mut out = Vec::new();
    let mut cur = String::new();
    for c in value.chars() {
        if cur.len() + c.len_utf8() > 255 {
            out.push(std::mem::take(&mut cur));
        }
        cur.push(c);
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

fn parse_data(rtype: &str, value: &str, priority: Option<u16>) -> Result<Data, String> {
    let v = value.trim();
    Ok(match rtype.to_ascii_uppercase().as_str() {
        "A" => Data::A(v.parse().map_err(|e| format!("A {v}: {e}"))?),
        "AAAA" => Data::Aaaa(v.parse().map_err(|e| format!("AAAA {v}: {e}"))?),
        "TXT" => Data::Txt(split_txt(value)),
        "MX" => Data::Mx(priority.unwrap_or(10), norm(v)),
        "CNAME" => Data::Cname(norm(v)),
        "NS" => Data::Ns(norm(v)),
        other => return Err(format!("record type {other} is not served")),
    })
}

fn name(s: &str) -> Name {
    let mut n = Name::from_str_relaxed(s).unwrap_or_else(|_| Name::root());
    n.set_fqdn(true);
    n
}

impl TestDns {
    /// Binds UDP and TCP on `addr` (port 0: one free port, the same for both).
    pub async fn start(addr: SocketAddr) -> io::Result<Self> {
        let (udp, tcp) = bind_pair(addr).await?;
        let addr = udp.local_addr()?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            queries: AtomicU64::new(0),
            seen: Mutex::new(std::collections::VecDeque::new()),
            addr,
            tasks: Mutex::new(Vec::new()),
        });
        let weak = Arc::downgrade(&inner);
        let udp = Arc::new(udp);
        let u = tokio::spawn(serve_udp(udp, weak.clone()));
        let t = tokio::spawn(serve_tcp(tcp, weak));
        inner.tasks.lock().unwrap().extend([u, t]);
        Ok(TestDns { inner })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap()
    }

    /// Be authoritative for `apex`: names under it that have no records are
    /// NXDOMAIN (or NODATA), with an SOA whose minimum is `soa_minimum`.
    pub fn add_zone(&self, apex: &str, soa_minimum: u32) {
        self.state().zones.insert(norm(apex), soa_minimum);
    }

    /// Adds a record. `rtype` one of A, AAAA, TXT, MX, CNAME, NS; TXT values over
    /// 255 bytes are split into several strings; `name` may be `*.x`. Panics on a
    /// value that does not parse (use [`TestDns::try_add`] for input from files).
    pub fn add(&self, name: &str, rtype: &str, value: &str, priority: Option<u16>, ttl: u32) {
        if let Err(e) = self.try_add(name, rtype, value, priority, ttl) {
            panic!("TestDns::add({name}, {rtype}, {value}): {e}");
        }
    }

    pub fn try_add(
        &self,
        name: &str,
        rtype: &str,
        value: &str,
        priority: Option<u16>,
        ttl: u32,
    ) -> Result<(), String> {
        let data = parse_data(rtype, value, priority)?;
        self.state()
            .records
            .entry(norm(name))
            .or_default()
            .push(Rec { data, ttl });
        Ok(())
    }

    /// A TXT record served as exactly these character-strings (each ≤ 255 bytes).
    pub fn add_txt_strings(&self, name: &str, strings: &[&str]) {
        let data = Data::Txt(strings.iter().map(|s| s.to_string()).collect());
        self.state()
            .records
            .entry(norm(name))
            .or_default()
            .push(Rec { data, ttl: 300 });
    }

    /// Removes the records of `name` (of one type, or all).
    pub fn remove(&self, name: &str, rtype: Option<&str>) {
        let mut st = self.state();
        let key = norm(name);
        match rtype {
            None => {
                st.records.remove(&key);
            }
            Some(t) => {
                let t = RecordType::from_str(&t.to_ascii_uppercase()).ok();
                if let Some(v) = st.records.get_mut(&key) {
                    v.retain(|r| Some(r.data.rtype()) != t);
                    if v.is_empty() {
                        st.records.remove(&key);
                    }
                }
            }
        }
    }

    /// Removes every record and fault (the zones stay).
    pub fn clear(&self) {
        let mut st = self.state();
        st.records.clear();
        st.faults.clear();
    }

    /// Replaces zones and records at once (the dev server's reload).
    pub fn replace_all(&self, zones: &[(String, u32)], records: &[RecordSpec]) -> Vec<String> {
        let mut errors = Vec::new();
        let mut map: HashMap<String, Vec<Rec>> = HashMap::new();
        for r in records {
            match parse_data(&r.record_type, &r.value, r.priority) {
                Ok(data) => map.entry(norm(&r.name)).or_default().push(Rec {
                    data,
                    ttl: r.ttl.unwrap_or(300),
                }),
                Err(e) => errors.push(format!("{} {}: {e}", r.name, r.record_type)),
            }
        }
        let mut st = self.state();
        st.zones = zones.iter().map(|(z, m)| (norm(z), *m)).collect();
        st.records = map;
        errors
    }

    /// Be a hostile authoritative server for `apex`, as a tenant that runs its own
    /// nameservers can be: every question for a name under it is answered NOERROR
    /// with the largest answer that fits a DNS message over TCP (almost 64 KiB):
    /// one TXT record of about 16 KiB and then as many small ones as fit, every
    /// string full of control characters and terminal escapes; A, AAAA and MX
    /// questions get as many records of their type as fit. Over UDP the answer is
    /// truncated, so the client asks again over TCP.
    pub fn add_hostile_zone(&self, apex: &str) {
        let mut st = self.state();
        st.zones.insert(norm(apex), 60);
        st.hostile.insert(norm(apex));
    }

    /// Queries for exactly this name misbehave until [`TestDns::heal`].
    pub fn fail(&self, name: &str, mode: Fault) {
        self.state().faults.insert(norm(name), mode);
    }

    pub fn heal(&self, name: &str) {
        self.state().faults.remove(&norm(name));
    }

    /// Every answer waits this long (None: answer at once). For concurrency tests.
    pub fn set_delay(&self, delay: Option<Duration>) {
        self.state().delay = delay;
    }

    /// How many queries arrived (UDP and TCP, answered or not).
    pub fn queries(&self) -> u64 {
        self.inner.queries.load(Ordering::SeqCst)
    }

    /// The source address and id of the latest queries (at most 4096), oldest
    /// first: what an off-path forger would have to guess.
    pub fn seen(&self) -> Vec<Seen> {
        self.inner.seen.lock().unwrap().iter().copied().collect()
    }
}

async fn bind_pair(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..20 {
        let udp = bind_udp(addr)?;
        let port = udp.local_addr()?.port();
        match TcpListener::bind(SocketAddr::new(addr.ip(), port)).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if addr.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

/// A UDP socket with a receive buffer large enough for a burst of queries: with the
/// default (about 200 KiB) a load of thousands of checks at once overflowed it, and
/// each dropped query cost its asker a timeout, which is not what a resolver does.
fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    let domain = if addr.is_ipv4() {
        socket2::Domain::IPV4
    } else {
        socket2::Domain::IPV6
    };
    let sock = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    // Capped by net.core.rmem_max; a smaller buffer only means more drops under load.
    let _ = sock.set_recv_buffer_size(8 << 20);
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

async fn serve_udp(sock: Arc<UdpSocket>, inner: std::sync::Weak<Inner>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Some(inner) = inner.upgrade() else { return };
        let req = buf[..n].to_vec();
        inner.saw(peer, &req, true);
        let sock = sock.clone();
        tokio::spawn(async move {
            if let Some(resp) = handle(&inner, &req, true).await {
                let _ = sock.send_to(&resp, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, inner: std::sync::Weak<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let Some(inner) = inner.upgrade() else { return };
        let weak = Arc::downgrade(&inner);
        drop(inner);
        tokio::spawn(serve_tcp_conn(stream, weak));
    }
}

async fn serve_tcp_conn(mut stream: TcpStream, inner: std::sync::Weak<Inner>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).await.is_err() {
            return;
        }
        let mut req = vec![0u8; u16::from_be_bytes(len) as usize];
        if stream.read_exact(&mut req).await.is_err() {
            return;
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Ok(peer) = stream.peer_addr() {
            inner.saw(peer, &req, false);
        }
        let Some(resp) = handle(&inner, &req, false).await else {
            // a dropped query: keep the connection silent
            continue;
        };
        let mut out = (resp.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&resp);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

impl Inner {
    fn saw(&self, from: SocketAddr, packet: &[u8], udp: bool) {
        let [a, b, ..] = *packet else { return };
        let mut seen = self.seen.lock().unwrap();
        if seen.len() == SEEN_KEPT {
            seen.pop_front();
        }
        seen.push_back(Seen {
            from,
            id: u16::from_be_bytes([a, b]),
            udp,
        });
    }
}

/// The answer to one packet; None: no answer at all.
async fn handle(inner: &Inner, packet: &[u8], udp: bool) -> Option<Vec<u8>> {
    inner.queries.fetch_add(1, Ordering::SeqCst);
    let req = Message::from_vec(packet).ok()?;
    let query = req.queries().first().cloned();
    let (delay, result) = {
        let st = inner.state.lock().unwrap();
        let result = query.as_ref().map(|q| answer(&st, q));
        (st.delay, result)
    };
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(false);
    if let Some(q) = &query {
        resp.add_query(q.clone());
    }
    let limit = match req.extensions() {
        Some(e) => {
            let mut edns = Edns::new();
            edns.set_max_payload(4096);
            resp.set_edns(edns);
            e.max_payload().max(512) as usize
        }
        None => 512,
    };
    match result {
        None => {
            resp.set_response_code(ResponseCode::FormErr);
        }
        Some(Answer::Fault(Fault::Drop)) => return None,
        Some(Answer::Fault(Fault::ServFail)) => {
            resp.set_response_code(ResponseCode::ServFail);
        }
        Some(Answer::Fault(Fault::Refused)) | Some(Answer::Refused) => {
            resp.set_response_code(ResponseCode::Refused);
        }
        Some(Answer::Response {
            rcode,
            answers,
            authority,
        }) => {
            resp.set_authoritative(true).set_response_code(rcode);
            resp.add_answers(answers);
            resp.add_name_servers(authority);
        }
    }
    let bytes = resp.to_vec().ok()?;
    if udp && bytes.len() > limit {
        let mut tc = Message::new();
        tc.set_id(req.id())
            .set_message_type(MessageType::Response)
            .set_op_code(OpCode::Query)
            .set_authoritative(true)
            .set_truncated(true)
            .set_recursion_desired(req.recursion_desired())
            .set_response_code(resp.response_code());
        if let Some(q) = &query {
            tc.add_query(q.clone());
        }
        return tc.to_vec().ok();
    }
    Some(bytes)
}

enum Answer {
    Fault(Fault),
    Refused,
    Response {
        rcode: ResponseCode,
        answers: Vec<Record>,
        authority: Vec<Record>,
    },
}

fn zone_of<'a>(st: &'a State, qname: &str) -> Option<(&'a String, u32)> {
    st.zones
        .iter()
        .filter(|(apex, _)| qname == apex.as_str() || qname.ends_with(&format!(".{apex}")))
        .max_by_key(|(apex, _)| apex.len())
        .map(|(a, m)| (a, *m))
}

fn soa_record(apex: &str, minimum: u32) -> Record {
    let soa = SOA::new(
        name(&format!("ns1.{apex}")),
        name(&format!("hostmaster.{apex}")),
        1,
        3600,
        600,
        86400,
        minimum,
    );
    Record::from_rdata(name(apex), minimum, RData::SOA(soa))
}

fn to_record(owner: &str, r: &Rec) -> Record {
    let rdata = match &r.data {
        Data::A(a) => RData::A(A(*a)),
        Data::Aaaa(a) => RData::AAAA(AAAA(*a)),
        Data::Txt(s) => RData::TXT(TXT::new(s.clone())),
        Data::Mx(p, h) => RData::MX(MX::new(*p, name(h))),
        Data::Cname(t) => RData::CNAME(CNAME(name(t))),
        Data::Ns(t) => RData::NS(NS(name(t))),
    };
    Record::from_rdata(name(owner), r.ttl, rdata)
}

/// The name exists: it has records, or names below it (an empty non-terminal), or
/// it is a zone apex.
fn exists(st: &State, n: &str) -> bool {
    st.zones.contains_key(n)
        || st.records.contains_key(n)
        || st.records.keys().any(|k| k.ends_with(&format!(".{n}")))
}

/// The records answering for `n`: its own, or a wildcard's (RFC 4592).
fn records_for<'a>(st: &'a State, n: &str, apex: &str) -> Option<&'a Vec<Rec>> {
    if let Some(v) = st.records.get(n) {
        return Some(v);
    }
    if exists(st, n) {
        return None;
    }
    // closest encloser: the nearest existing ancestor (at most the apex)
    let mut cur = n;
    while let Some((_, parent)) = cur.split_once('.') {
        if exists(st, parent) || parent == apex {
            return st.records.get(&format!("*.{parent}"));
        }
        if parent.len() < apex.len() {
            break;
        }
        cur = parent;
    }
    None
}

fn answer(st: &State, q: &Query) -> Answer {
    let qname = norm(&q.name().to_ascii());
    if let Some(f) = st.faults.get(&qname) {
        return Answer::Fault(*f);
    }
    if st
        .hostile
        .iter()
        .any(|apex| qname == *apex || qname.ends_with(&format!(".{apex}")))
    {
        return Answer::Response {
            rcode: ResponseCode::NoError,
            answers: hostile::flood(q),
            authority: vec![],
        };
    }
    let qtype = q.query_type();
    let Some((apex, minimum)) = zone_of(st, &qname) else {
        return Answer::Refused;
    };
    let (mut apex, mut minimum) = (apex.clone(), minimum);
    let mut answers = Vec::new();
    let mut cur = qname.clone();
    for _ in 0..8 {
        let recs = records_for(st, &cur, &apex);
        if recs.is_none() && !exists(st, &cur) {
            return Answer::Response {
                rcode: ResponseCode::NXDomain,
                answers,
                authority: vec![soa_record(&apex, minimum)],
            };
        }
        let recs: &[Rec] = recs.map(|v| v.as_slice()).unwrap_or(&[]);
        if qtype != RecordType::CNAME {
            if let Some(c) = recs.iter().find(|r| r.data.rtype() == RecordType::CNAME) {
                answers.push(to_record(&cur, c));
                let Data::Cname(target) = &c.data else {
                    unreachable!()
                };
                match zone_of(st, target) {
                    Some((a, m)) => {
                        apex = a.clone();
                        minimum = m;
                        cur = target.clone();
                        continue;
                    }
                    // out of every served zone: the resolver follows it
                    None => {
                        return Answer::Response {
                            rcode: ResponseCode::NoError,
                            answers,
                            authority: vec![],
                        }
                    }
                }
            }
        }
        let mut matching: Vec<Record> = recs
            .iter()
            .filter(|r| qtype == RecordType::ANY || r.data.rtype() == qtype)
            .map(|r| to_record(&cur, r))
            .collect();
        if cur == apex && (qtype == RecordType::SOA || qtype == RecordType::ANY) {
            matching.push(soa_record(&apex, minimum));
        }
        if matching.is_empty() {
            return Answer::Response {
                rcode: ResponseCode::NoError,
                answers,
                authority: vec![soa_record(&apex, minimum)],
            };
        }
        answers.extend(matching);
        return Answer::Response {
            rcode: ResponseCode::NoError,
            answers,
            authority: vec![],
        };
    }
    Answer::Fault(Fault::ServFail)
}

mod hostile {
    //! The largest answers a hostile authoritative server can give.

    use super::*;

    /// A DNS message over TCP has a 16-bit length: what is left of 65535 bytes
    /// after the header, the question, EDNS and some slack.
    const ANSWER_BUDGET: usize = 65535 - 600;
    /// The one big TXT record that comes first: about 16 KiB in 255-byte strings.
    const BIG_TXT_STRINGS: usize = 64;

    /// Terminal escapes (title, clear screen, colours, a fake prompt), C0 and C1
    /// controls, DEL, a bidi override: what must never reach a page or a terminal.
    const NASTY: &str = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[31mv=spf1 +all\u{1b}[0m\r\n$ \0\u{7f}\u{9b}6n\u{202e}lmth.\t";

    /// A string of at most `max` bytes of [`NASTY`] (cut at a character boundary),
    /// led by `tag` so that every string differs.
    fn nasty_string(tag: usize, max: usize) -> String {
        let mut s = format!("{tag:05}");
        for c in NASTY.chars().cycle() {
            if s.len() + c.len_utf8() > max {
                break;
            }
            s.push(c);
        }
        s
    }

    fn txt(owner: &Name, strings: Vec<String>) -> Record {
        Record::from_rdata(owner.clone(), 60, RData::TXT(TXT::new(strings)))
    }

    /// The `i`-th record of a flood for `qtype` at `owner`.
    fn one(owner: &Name, qtype: RecordType, i: usize) -> Record {
        let n = i as u32;
        match qtype {
            RecordType::A => Record::from_rdata(
                owner.clone(),
                60,
                RData::A(A(Ipv4Addr::from(0x0808_0000 | n))),
            ),
            RecordType::AAAA => Record::from_rdata(
                owner.clone(),
                60,
                RData::AAAA(AAAA(Ipv6Addr::from(
                    (0x2001_4860_u128 << 96) | u128::from(n),
                ))),
            ),
            RecordType::MX => Record::from_rdata(
                owner.clone(),
                60,
                RData::MX(MX::new(
                    i as u16,
                    name(&format!("mx{i}.{}", owner.to_ascii())),
                )),
            ),
            _ if i == 0 => txt(
                owner,
                (0..BIG_TXT_STRINGS).map(|t| nasty_string(t, 255)).collect(),
            ),
            _ => txt(owner, vec![nasty_string(i, 40)]),
        }
    }

    fn size(records: &[Record]) -> usize {
        let mut m = Message::new();
        m.add_answers(records.to_vec());
        m.to_vec().map(|b| b.len()).unwrap_or(usize::MAX)
    }

    /// As many records for `q` as fit in [`ANSWER_BUDGET`].
    pub(super) fn flood(q: &Query) -> Vec<Record> {
        let owner = q.name().clone();
        let mut records: Vec<Record> = Vec::new();
        // grow in steps, measuring the encoded size now and then (names compress)
        let mut step = 256;
        while step > 0 {
            let more: Vec<Record> = (records.len()..records.len() + step)
                .map(|i| one(&owner, q.query_type(), i))
                .collect();
            let mut next = records.clone();
            next.extend(more);
            if size(&next) <= ANSWER_BUDGET {
                records = next;
            } else {
                step /= 2;
            }
        }
        records
    }
}

// ---------------------------------------------------------------------------
// zone files (dev-dns)

/// A zone file: either a bare array of records (zones inferred: the last two
/// labels of every name), or `{"zones": [...], "records": [...]}` where a zone is
/// `"acme.test"` or `{"apex": "acme.test", "soa_minimum": 60}`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ZoneFile {
    Records(Vec<RecordSpec>),
    Full {
        #[serde(default)]
        zones: Vec<ZoneSpec>,
        #[serde(default)]
        records: Vec<RecordSpec>,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ZoneSpec {
    Apex(String),
    Full {
        apex: String,
        #[serde(default)]
        soa_minimum: Option<u32>,
    },
}

/// Default negative TTL of inferred zones and zones without `soa_minimum`.
pub const DEFAULT_SOA_MINIMUM: u32 = 60;

impl ZoneFile {
    pub fn parse(text: &str) -> Result<Self, serde_json::Error> {
        if text.trim().is_empty() {
            return Ok(ZoneFile::Records(Vec::new()));
        }
        serde_json::from_str(text)
    }

    /// The zones and records to serve.
    pub fn into_parts(self) -> (Vec<(String, u32)>, Vec<RecordSpec>) {
        let (zones, records) = match self {
            ZoneFile::Records(r) => (Vec::new(), r),
            ZoneFile::Full { zones, records } => (zones, records),
        };
        let mut out: Vec<(String, u32)> = zones
            .into_iter()
            .map(|z| match z {
                ZoneSpec::Apex(a) => (norm(&a), DEFAULT_SOA_MINIMUM),
                ZoneSpec::Full { apex, soa_minimum } => {
                    (norm(&apex), soa_minimum.unwrap_or(DEFAULT_SOA_MINIMUM))
                }
            })
            .collect();
        if out.is_empty() {
            for r in &records {
                let n = norm(&r.name);
                let labels: Vec<&str> = n.split('.').collect();
                let apex = labels[labels.len().saturating_sub(2)..].join(".");
                if !apex.is_empty() && !out.iter().any(|(a, _)| *a == apex) {
                    out.push((apex, DEFAULT_SOA_MINIMUM));
                }
            }
        }
        (out, records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_txt_is_split_at_255_bytes() {
        let v = "x".repeat(600);
        let parts = split_txt(&v);
        assert_eq!(
            parts.iter().map(String::len).collect::<Vec<_>>(),
            vec![255, 255, 90]
        );
        assert_eq!(parts.concat(), v);
    }

    #[test]
    fn zone_file_forms() {
        let (z, r) =
            ZoneFile::parse(r#"[{"name":"send.acme.test","type":"TXT","value":"v=spf1 -all"}]"#)
                .unwrap()
                .into_parts();
        assert_eq!(z, vec![("acme.test".to_string(), DEFAULT_SOA_MINIMUM)]);
        assert_eq!(r.len(), 1);
        let (z, _) = ZoneFile::parse(
            r#"{"zones":["a.test",{"apex":"b.test","soa_minimum":5}],"records":[]}"#,
        )
        .unwrap()
        .into_parts();
        assert_eq!(
            z,
            vec![("a.test".to_string(), 60), ("b.test".to_string(), 5)]
        );
    }
}
