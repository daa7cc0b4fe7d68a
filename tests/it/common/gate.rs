//! A fault gate: a loopback HTTP/1.1 proxy in front of a test server (the embedded one or moto)
//! that does, per rule, what hostile networks and servers do: pass a request through, answer
//! `503 SlowDown` or `404 NoSuchUpload`, accept it and never answer, reset the connection (a
//! killed server), or cut the response body after some bytes and then go silent or reset. Rules
//! apply to the next N requests or to every N-th one (a share of the traffic).
//!
//! Structure: one upstream connection per request, `Connection: close` both ways, so a rule
//! applies to exactly one request and its effect is exact. Every request is recorded (method and
//! path), so a test can wait for a request to have been sent instead of sleeping. Connections are
//! aborted when the gate drops.

use super::Backend;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the gate does with a request that matches a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Forward it and its answer.
    Pass,
    /// Answer `503 SlowDown` (S3's throttling answer) without forwarding.
    SlowDown,
    /// Read the request and never answer (the connection stays open).
    Stall,
    /// Forward, then deliver the answer's headers and this many body bytes, then nothing more.
    CutBody(usize),
    /// Forward, deliver the headers and this many body bytes, then reset the connection.
    ResetBody(usize),
    /// Read the request and reset the connection without an answer (a server killed).
    Reset,
    /// Answer `404 NoSuchUpload` (a server that forgot a multipart upload).
    NoSuchUpload,
}

struct Rule {
    method: &'static str,
    /// Only requests whose path and query contain this.
    path_has: Option<&'static str>,
    action: Action,
    /// How many more requests the rule applies to; `None`: all.
    times: Option<u32>,
    /// Applies to every `every`-th matching request (1: each one); `matched` counts them.
    every: u32,
    matched: u32,
}

/// One request as the gate saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// Path and query.
    pub path: String,
    /// The `Content-MD5` header, if sent.
    pub content_md5: Option<String>,
    /// Body bytes.
    pub body_len: usize,
    /// The `Range` header, if sent.
    pub range: Option<String>,
    /// What the gate did with it.
    pub action: Action,
    /// Every header, names lower-cased.
    pub headers: Vec<(String, String)>,
}

#[derive(Default)]
struct State {
    rules: Vec<Rule>,
    /// Every request seen, in order.
    seen: Vec<Seen>,
}

pub struct Gate {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Gate {
    /// A gate in front of `upstream` (an `http://host:port` endpoint).
    pub fn start(upstream: &str) -> Self {
        let up = upstream
            .strip_prefix("http://")
            .expect("the gate proxies plain http")
            .trim_end_matches('/')
            .to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let listener = super::block_on(TcpListener::bind("127.0.0.1:0")).unwrap();
        let addr = listener.local_addr().unwrap();
        let (st, ts) = (state.clone(), tasks.clone());
        let accept = super::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                let (st, up) = (st.clone(), up.clone());
                let h = tokio::spawn(async move {
                    let _ = serve(conn, &up, &st).await;
                });
                ts.lock().unwrap().push(h.abort_handle());
            }
        });
        tasks.lock().unwrap().push(accept);
        Self {
            endpoint: format!("http://{addr}"),
            state,
            tasks,
        }
    }

    /// The backend `b` reached through the gate.
    pub fn backend(&self, b: &Backend) -> Backend {
        Backend {
            endpoint: self.endpoint.clone(),
            ..b.clone()
        }
    }

    /// From now on, `action` for the next `times` requests with `method` (`*`: any; `None`:
    /// every one). Later rules are checked after earlier ones.
    pub fn rule(&self, method: &'static str, action: Action, times: Option<u32>) {
        self.state.lock().unwrap().rules.push(Rule {
            method,
            path_has: None,
            action,
            times,
            every: 1,
            matched: 0,
        });
    }

    /// From now on, `action` for every `every`-th request with `method` whose path and query
    /// contain `path_has` (a share of the traffic, deterministic).
    pub fn rule_every(
        &self,
        method: &'static str,
        path_has: Option<&'static str>,
        action: Action,
        every: u32,
    ) {
        self.state.lock().unwrap().rules.push(Rule {
            method,
            path_has,
            action,
            times: None,
            every: every.max(1),
            matched: 0,
        });
    }

    /// Removes every rule: all requests pass.
    pub fn clear(&self) {
        self.state.lock().unwrap().rules.clear();
    }

    /// Requests with `method` seen so far.
    pub fn count(&self, method: &str) -> usize {
        let st = self.state.lock().unwrap();
        st.seen.iter().filter(|r| r.method == method).count()
    }

    /// Every request seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Waits (up to `deadline`) until `n` requests with `method` were seen.
    pub fn wait_for(&self, method: &str, n: usize, deadline: std::time::Duration) {
        let start = std::time::Instant::now();
        while self.count(method) < n {
            assert!(
                start.elapsed() < deadline,
                "the gate saw {} {method} requests, not {n}, within {deadline:?}",
                self.count(method)
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Reads up to the end of the header block; returns (head, bytes after it).
async fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<(String, Vec<u8>)>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let rest = buf.split_off(i + 4);
            return Ok(Some((String::from_utf8_lossy(&buf).into_owned(), rest)));
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with any `Connection` and `Expect` header replaced by `Connection: close`.
fn closing(head: &str) -> String {
    let mut out = String::new();
    for l in head.trim_end_matches("\r\n").split("\r\n") {
        let name = l.split(':').next().unwrap_or("").trim();
        if name.eq_ignore_ascii_case("connection") || name.eq_ignore_ascii_case("expect") {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

async fn serve(mut conn: TcpStream, upstream: &str, st: &Mutex<State>) -> std::io::Result<()> {
    let Some((head, mut body)) = read_head(&mut conn).await? else {
        return Ok(());
    };
    let mut first = head.split_whitespace();
    let (method, path) = (
        first.next().unwrap_or("").to_string(),
        first.next().unwrap_or("").to_string(),
    );
    if header(&head, "expect").is_some_and(|v| v.eq_ignore_ascii_case("100-continue")) {
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
    }
    let len: usize = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while body.len() < len {
        let mut chunk = vec![0u8; (len - body.len()).min(1 << 20)];
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let action = {
        let mut st = st.lock().unwrap();
        let mut action = Action::Pass;
        for r in st.rules.iter_mut() {
            let applies = (r.method == "*" || r.method == method)
                && r.path_has.is_none_or(|p| path.contains(p))
                && r.times != Some(0);
            if !applies {
                continue;
            }
            r.matched += 1;
            if r.matched % r.every != 0 {
                continue;
            }
            if let Some(t) = &mut r.times {
                *t -= 1;
            }
            action = r.action;
            break;
        }
        st.seen.push(Seen {
            method: method.clone(),
            path,
            content_md5: header(&head, "content-md5").map(str::to_string),
            body_len: body.len(),
            range: header(&head, "range").map(str::to_string),
            action,
            headers: head
                .lines()
                .skip(1)
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect(),
        });
        action
    };
    match action {
        Action::SlowDown => {
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
            let answer = format!(
                "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            conn.write_all(answer.as_bytes()).await?;
            conn.shutdown().await
        }
        Action::NoSuchUpload => {
            let xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>NoSuchUpload</Code><Message>The specified upload does not exist.</Message></Error>";
            let answer = format!(
                "HTTP/1.1 404 Not Found\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{xml}",
                xml.len()
            );
            conn.write_all(answer.as_bytes()).await?;
            conn.shutdown().await
        }
        Action::Reset => {
            conn.set_zero_linger()?;
            Ok(())
        }
        Action::Stall => {
            // Hold the connection open with nothing to say, until the gate drops.
            std::future::pending::<()>().await;
            Ok(())
        }
        Action::Pass | Action::CutBody(_) | Action::ResetBody(_) => {
            let mut up = TcpStream::connect(upstream).await?;
            up.write_all(closing(&head).as_bytes()).await?;
            up.write_all(&body).await?;
            let Some((rhead, mut rest)) = read_head(&mut up).await? else {
                return Ok(());
            };
            conn.write_all(closing(&rhead).as_bytes()).await?;
            let mut budget = match action {
                Action::CutBody(n) | Action::ResetBody(n) => n,
                _ => usize::MAX,
            };
            loop {
                let n = rest.len().min(budget);
                conn.write_all(&rest[..n]).await?;
                budget -= n;
                if budget == 0 {
                    if let Action::ResetBody(_) = action {
                        conn.set_zero_linger()?;
                        return Ok(());
                    }
                    std::future::pending::<()>().await;
                }
                rest.resize(64 << 10, 0);
                let got = up.read(&mut rest).await?;
                if got == 0 {
                    return conn.shutdown().await;
                }
                rest.truncate(got);
            }
        }
    }
}
